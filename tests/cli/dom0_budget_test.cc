// Sized for dom0: 8 imports of metadata-last images (every data byte arrives before the
// tables that map it, so each must be held or spooled) and 8 exports, all at once with the
// default options, fit in 1 GiB together, and every target and image is right.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "crafted_image.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

constexpr uint64_t kCluster = 64 << 10;
constexpr uint64_t kDataClusters = 1536;  // 96 MiB: more than an import may hold
constexpr uint64_t kDiskSize = 128 << 20;

// Starts the qcowfs binary with args; returns its pid.
pid_t Start(const std::vector<std::string>& args) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    const std::string bin = QcowfsBinary();
    argv.push_back(const_cast<char*>(bin.c_str()));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

TEST(Dom0Budget, EightImportsAndEightExportsAtOnceFitInOneGiB) {
  TempDir dir;
  // The image: data clusters first, then the L2 table, then the L1 table. Built in a child
  // process: children forked later would count this process's pages in their peak RSS
  // (Linux keeps the largest across exec).
  const std::string image = dir / "last.qcow2";
  const pid_t builder = fork();
  if (builder == 0) {
    CraftedOptions o;
    o.cluster_bits = 16;
    o.virtual_size = kDiskSize;
    o.tables_first = false;
    CraftedImage im(o);
    std::vector<uint64_t> host;
    for (uint64_t k = 0; k < kDataClusters; ++k) host.push_back(im.AddDataCluster(k));
    im.AddL2Table(0);
    for (uint64_t k = 0; k < kDataClusters; ++k) im.MapData((k * 5 % 2048) * kCluster, host[k]);
    im.PlaceL1(im.Allocate());
    WriteAt(image, 0, im.Build());
    _exit(0);
  }
  int built = -1;
  ASSERT_EQ(waitpid(builder, &built, 0), builder);
  ASSERT_TRUE(WIFEXITED(built) && WEXITSTATUS(built) == 0);
  // The export source: the image's guest view, as a raw disk.
  const std::string source = dir / "source.raw";
  ASSERT_EQ(Sh("qemu-img convert -f qcow2 -O raw " + Quote(image) + " " + Quote(source)).status, 0);

  std::vector<pid_t> imports, exports;
  for (int i = 0; i < 8; ++i) {
    const std::string target = dir / ("target" + std::to_string(i));
    WriteAt(target, 0, {});
    ASSERT_EQ(truncate(target.c_str(), kDiskSize), 0);
    imports.push_back(
        Start({"serve", "--source", image, "--destination", target, "--spool-dir", dir.path()}));
    exports.push_back(Start({"stream", "--source", source, "--destination",
                             dir / ("export" + std::to_string(i) + ".qcow2")}));
  }
  long total_kib = 0, largest_import_kib = 0, largest_export_kib = 0;
  auto reap = [&](const std::vector<pid_t>& pids, long* largest, const char* what) {
    for (pid_t pid : pids) {
      int status = 0;
      struct rusage ru {};
      ASSERT_EQ(wait4(pid, &status, 0, &ru), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << what << " failed: " << status;
      total_kib += ru.ru_maxrss;
      *largest = std::max(*largest, ru.ru_maxrss);
    }
  };
  reap(imports, &largest_import_kib, "an import");
  reap(exports, &largest_export_kib, "an export");
  std::printf(
      "8 imports + 8 exports at once: peak RSS %ld MiB in all (the sum of each one's "
      "peak); largest import %ld MiB, largest export %ld MiB\n",
      total_kib >> 10, largest_import_kib >> 10, largest_export_kib >> 10);
  EXPECT_LT(total_kib, 1L << 20);
  // An import cannot have held its 96 MiB of data: it spooled to the file.
  EXPECT_LT(largest_import_kib, static_cast<long>(kDataClusters * kCluster >> 10));
  for (int i = 0; i < 8; ++i) {
    const CommandResult r = Sh(
        "qemu-img compare -q -f qcow2 -F raw " + Quote(image) + " " +
        Quote(dir / ("target" + std::to_string(i))) + " && qemu-img compare -q -f qcow2 -F raw " +
        Quote(dir / ("export" + std::to_string(i) + ".qcow2")) + " " + Quote(source));
    EXPECT_EQ(r.status, 0) << i << ": " << r.output;
  }
}

}  // namespace
