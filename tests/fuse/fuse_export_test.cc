// The export through a real FUSE mount, used the way xapi, admins and qemu-img use it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>

#include "mount_fixture.h"
#include "qcow/export/export_layout.h"
#include "qcow/format/errors.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

// Creates the source inside dir and returns its path (a file or a block device).
struct SourceCase {
  const char* name;
  std::function<std::string(TempDir&)> make;
  std::string mount_args;  // beyond --export SRC
  // When non-zero, the image may be at most this large: proves holes are left out and
  // metadata does not grow with the virtual size.
  uint64_t max_image_size = 0;
};

// Loop devices made by cases, kept until the test ends.
std::vector<std::unique_ptr<LoopDevice>>& Loops() {
  static std::vector<std::unique_ptr<LoopDevice>> loops;
  return loops;
}

std::string MakeLoop(TempDir& dir, uint64_t size) {
  const std::string file = dir / "loop.img";
  WriteAt(file, 0, RandomBytes(1 << 20, 21));
  WriteAt(file, 9 << 20, RandomBytes(3 << 20, 22));
  EXPECT_EQ(truncate(file.c_str(), size), 0);
  Loops().push_back(std::make_unique<LoopDevice>(file));
  EXPECT_FALSE(Loops().back()->device().empty()) << "losetup failed";
  return Loops().back()->device();
}

const std::vector<SourceCase>& Cases() {
  static const std::vector<SourceCase> cases = {
      {"dense",
       [](TempDir& d) {
         WriteAt(d / "src", 0, RandomBytes(12 << 20, 1));
         return d / "src";
       },
       ""},
      {"sparse_unaligned",
       [](TempDir& d) {
         WriteAt(d / "src", 77777, RandomBytes(5000, 2));
         WriteAt(d / "src", (7 << 20) + 4097, RandomBytes(300'000, 3));
         WriteAt(d / "src", (30 << 20) + 1, RandomBytes(1, 4));
         EXPECT_EQ(truncate((d / "src").c_str(), 64 << 20), 0);
         return d / "src";
       },
       ""},
      {"size_not_multiple_of_cluster",
       [](TempDir& d) {
         WriteAt(d / "src", 0, RandomBytes(3 * 65536 + 1000 + 7, 5));
         return d / "src";
       },
       ""},
      {"empty",
       [](TempDir& d) {
         WriteAt(d / "src", 0, {});
         return d / "src";
       },
       ""},
      {"sparse_8tib",
       [](TempDir& d) {
         for (uint64_t i = 0; i < 16; ++i) {
           WriteAt(d / "src", i * (511ull << 30) + i * 12345, RandomBytes(256 << 10, 6 + i));
         }
         EXPECT_EQ(truncate((d / "src").c_str(), 8ull << 40), 0);
         return d / "src";
       },
       "", 8 << 20},
      {"many_extents",
       [](TempDir& d) {
         // 30,000 data extents of 4 KiB separated by 4 KiB holes (100,000 took 15-50 s of the
         // serial FUSE stage).
         const std::string path = d / "src";
         int fd = open(path.c_str(), O_WRONLY | O_CREAT, 0644);
         auto block = RandomBytes(4096, 7);
         for (uint64_t i = 0; i < 30'000; ++i) {
           block[i % 4096] ^= 0x5a;
           EXPECT_EQ(pwrite(fd, block.data(), 4096, i * 8192), 4096);
         }
         close(fd);
         return path;
       },
       "--cluster-size 4K", 30'000 * 4096 + (2 << 20)},
      {"loop_device", [](TempDir& d) { return MakeLoop(d, 32 << 20); }, ""},
      {"loop_device_scan_zeros_direct", [](TempDir& d) { return MakeLoop(d, 32 << 20); },
       "--scan-zeros --direct --cluster-size 2M"},
      {"cluster_512",
       [](TempDir& d) {
         WriteAt(d / "src", 1000, RandomBytes(100'000, 8));
         EXPECT_EQ(truncate((d / "src").c_str(), 3 << 20), 0);
         return d / "src";
       },
       "--cluster-size 512"},
  };
  return cases;
}

class FuseExport : public ::testing::TestWithParam<size_t> {
 protected:
  void TearDown() override { Loops().clear(); }
};

TEST_P(FuseExport, ServesACleanEqualImage) {
  const SourceCase& c = Cases()[GetParam()];
  TempDir dir;
  const std::string src = c.make(dir);
  ASSERT_FALSE(src.empty());
  Mount m(dir / "mnt", "--export " + Quote(src) + " " + c.mount_args);
  ASSERT_TRUE(m.ok()) << m.result().output;
  const std::string img = m / "disk.qcow2";

  // Size known before the first byte is read.
  struct stat st;
  ASSERT_EQ(stat(img.c_str(), &st), 0);
  EXPECT_EQ(st.st_blocks, (st.st_size + 511) / 512);
  struct stat src_st;
  ASSERT_EQ(stat(src.c_str(), &src_st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, src_st.st_mtim.tv_sec);
  // The disk's owner and permissions, without write bits.
  EXPECT_EQ(st.st_mode & 07777, src_st.st_mode & 0555);
  EXPECT_EQ(st.st_uid, src_st.st_uid);
  EXPECT_EQ(st.st_gid, src_st.st_gid);
  if (c.max_image_size) {
    EXPECT_LE(static_cast<uint64_t>(st.st_size), c.max_image_size);
  }

  // Two readers at once on a fresh mount get identical bytes, as long as stat said.
  auto two = Sh("cat " + Quote(img) + " > " + Quote(dir / "a") + " & cat " + Quote(img) + " > " +
                Quote(dir / "b") + "; wait; cmp " + Quote(dir / "a") + " " + Quote(dir / "b"));
  ASSERT_EQ(two.status, 0) << two.output;
  const auto full = ReadFile(dir / "a");
  ASSERT_EQ(full.size(), static_cast<size_t>(st.st_size));

  // Reads at odd offsets and lengths equal the same slices of the full read; direct I/O
  // makes each one reach the daemon instead of the page cache.
  std::mt19937_64 rng(GetParam());
  for (int i = 0; i < 12 && !full.empty(); ++i) {
    uint64_t off = rng() % full.size();
    uint64_t len = 1 + rng() % std::min<uint64_t>(3 << 20, full.size() - off);
    for (const char* flags : {"skip_bytes,count_bytes", "direct,skip_bytes,count_bytes"}) {
      auto r = Sh("dd if=" + Quote(img) + " of=" + Quote(dir / "slice") +
                  " bs=1M skip=" + std::to_string(off) + " count=" + std::to_string(len) +
                  " iflag=" + flags + " status=none");
      ASSERT_EQ(r.status, 0) << r.output;
      auto slice = ReadFile(dir / "slice");
      ASSERT_EQ(slice.size(), len) << flags << " at " << off;
      ASSERT_TRUE(std::equal(slice.begin(), slice.end(), full.begin() + off))
          << flags << " slice " << off << "+" << len;
    }
  }

  // At, past and across the end of the file, straight to the daemon (O_DIRECT).
  {
    int dfd = open(img.c_str(), O_RDONLY | O_DIRECT);
    ASSERT_GE(dfd, 0);
    void* mem = nullptr;
    ASSERT_EQ(posix_memalign(&mem, 4096, 1 << 16), 0);
    const off_t end = st.st_size;
    EXPECT_EQ(pread(dfd, mem, 4096, end + 4096 * 3), 0);
    if (end % 4096 == 0) {
      EXPECT_EQ(pread(dfd, mem, 4096, end), 0);
    }
    if (end >= 8192) {
      EXPECT_EQ(pread(dfd, mem, 1 << 16, end - 8192), 8192);
      EXPECT_TRUE(std::equal(static_cast<uint8_t*>(mem), static_cast<uint8_t*>(mem) + 8192,
                             full.end() - 8192));
    }
    free(mem);
    close(dfd);
  }

  auto check = Sh("qemu-img check " + Quote(img));
  EXPECT_EQ(check.status, 0) << check.output;
  auto cmp = Sh("qemu-img compare -f raw -F qcow2 " + Quote(src) + " " + Quote(img));
  EXPECT_EQ(cmp.status, 0) << cmp.output;

  // Writes are refused.
  int fd = open(img.c_str(), O_WRONLY);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(errno, EROFS);
  if (fd >= 0) close(fd);
  EXPECT_NE(Sh("echo x > " + Quote(m / "new")).status, 0);
  EXPECT_NE(Sh("truncate -s 0 " + Quote(img)).status, 0);

  EXPECT_TRUE(m.Unmount());
}

INSTANTIATE_TEST_SUITE_P(Sources, FuseExport, ::testing::Range<size_t>(0, Cases().size()),
                         [](const auto& info) { return Cases()[info.param].name; });

TEST(FuseMount, ScanZerosShrinksTheImageOfABlockDevice) {
  TempDir dir;
  const std::string dev = MakeLoop(dir, 32 << 20);
  ASSERT_FALSE(dev.empty());
  Mount all(dir / "all", "--export " + Quote(dev));
  Mount scanned(dir / "scanned", "--export " + Quote(dev) + " --scan-zeros");
  ASSERT_TRUE(all.ok()) << all.result().output;
  ASSERT_TRUE(scanned.ok()) << scanned.result().output;
  EXPECT_NE(scanned.result().output.find("scanning"), std::string::npos)
      << "no progress on stderr: " << scanned.result().output;
  struct stat a, s;
  ASSERT_EQ(stat((all / "disk.qcow2").c_str(), &a), 0);
  ASSERT_EQ(stat((scanned / "disk.qcow2").c_str(), &s), 0);
  EXPECT_GT(a.st_size, 32 << 20);
  EXPECT_LT(s.st_size, 6 << 20);
  auto cmp = Sh("qemu-img compare -f qcow2 -F qcow2 " + Quote(all / "disk.qcow2") + " " +
                Quote(scanned / "disk.qcow2"));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
  Loops().clear();
}

TEST(FuseMount, ExportNameRenamesTheFile) {
  TempDir dir;
  WriteAt(dir / "src", 0, RandomBytes(4096, 9));
  Mount m(dir / "mnt", "--export " + Quote(dir / "src") + " --export-name vm-42.qcow2");
  ASSERT_TRUE(m.ok()) << m.result().output;
  auto ls = Sh("ls " + Quote(m.path()));
  EXPECT_EQ(ls.output, "vm-42.qcow2\n");
  EXPECT_EQ(Sh("qemu-img check " + Quote(m / "vm-42.qcow2")).status, 0);
}

// An exception that is not a std::exception, met inside a callback, becomes an errno and
// the daemon goes on serving. tests/tools/throw_once.cc, preloaded into the daemon, throws
// an int from the first operator new after the test creates its trigger file.
TEST(FuseMount, ExceptionOfAnyTypeIsAnErrnoNotTheEnd) {
  TempDir dir;
  WriteAt(dir / "src", 0, RandomBytes(1 << 20, 12));
  ::setenv("LD_PRELOAD", THROW_ONCE_LIB, 1);
  ::setenv("QCOWFS_TEST_THROW_ONCE", (dir / "throw").c_str(), 1);
  Mount m(dir / "mnt", "--export " + Quote(dir / "src"));
  ::unsetenv("LD_PRELOAD");
  ::unsetenv("QCOWFS_TEST_THROW_ONCE");
  ASSERT_TRUE(m.ok()) << m.result().output;
  ASSERT_EQ(Sh("touch " + Quote(dir / "throw")).status, 0);
  // The listing meets the exception (readdir allocates) and gets EIO.
  const auto first = Sh("ls " + Quote(m.path()));
  EXPECT_NE(first.status, 0) << first.output;
  EXPECT_NE(first.output.find("Input/output error"), std::string::npos) << first.output;
  const auto again = Sh("ls " + Quote(m.path()));
  EXPECT_EQ(again.output, "disk.qcow2\n");
  const auto cmp =
      Sh("qemu-img compare -f raw -F qcow2 " + Quote(dir / "src") + " " + Quote(m / "disk.qcow2"));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
}

TEST(FuseMount, SigtermAndSigintUnmountCleanly) {
  for (int sig : {SIGTERM, SIGINT}) {
    TempDir dir;
    WriteAt(dir / "src", 0, RandomBytes(4096, 10));
    Mount m(dir / "mnt", "--export " + Quote(dir / "src"));
    ASSERT_TRUE(m.ok()) << m.result().output;
    const int pid = DaemonPid(dir / "src");
    ASSERT_GT(pid, 0);
    ASSERT_EQ(kill(pid, sig), 0);
    for (int i = 0; i < 100 && (IsMounted(m.path()) || DaemonPid(dir / "src") > 0); ++i) {
      usleep(50'000);
    }
    EXPECT_FALSE(IsMounted(m.path())) << strsignal(sig);
    EXPECT_EQ(DaemonPid(dir / "src"), -1) << "daemon still running after " << strsignal(sig);
  }
}

TEST(FuseMount, ForegroundModeServesUntilUnmounted) {
  TempDir dir;
  WriteAt(dir / "src", 0, RandomBytes(4096, 11));
  Sh("mkdir " + Quote(dir / "mnt"));
  // The foreground daemon runs in the background of a shell; fusermount3 -u ends it.
  auto r = Sh("timeout 60 " + QcowfsBinary() + " mount -f --export " + Quote(dir / "src") + " " +
              Quote(dir / "mnt") + " 2> " + Quote(dir / "log") + " & pid=$!; " +
              "for i in $(seq 100); do [ -e " + Quote(dir / "mnt/disk.qcow2") +
              " ] && break; sleep 0.05; done; qemu-img check " + Quote(dir / "mnt/disk.qcow2") +
              " && fusermount3 -u " + Quote(dir / "mnt") + " && wait $pid");
  if (IsMounted(dir / "mnt")) Sh("fusermount3 -u " + Quote(dir / "mnt"));
  EXPECT_EQ(r.status, 0) << r.output;
  auto log = ReadFile(dir / "log");
  EXPECT_NE(std::string(log.begin(), log.end()).find("serving"), std::string::npos);
}

TEST(FuseMount, BadArgumentsFailWithOneLine) {
  TempDir dir;
  Sh("mkdir " + Quote(dir / "mnt"));
  WriteAt(dir / "src", 0, RandomBytes(4096, 12));
  struct Bad {
    std::string args;
    int status;
    std::string says;
  };
  const Bad bad[] = {
      {"--export " + Quote(dir / "missing") + " " + Quote(dir / "mnt"), 1, "No such file"},
      {"--export " + Quote(dir / "src") + " --cluster-size 3000 " + Quote(dir / "mnt"), 2,
       "--cluster-size is 3000"},
      {"--export " + Quote(dir / "src") + " " + Quote(dir / "nodir"), 1, "mountpoint"},
      {"--export " + Quote(dir.path()) + " " + Quote(dir / "mnt"), 2, "neither a regular file"},
      {"--export " + Quote(dir / "src") + " --export-name a/b " + Quote(dir / "mnt"), 2,
       "plain file name"},
  };
  for (const auto& b : bad) {
    auto r = Sh(QcowfsBinary() + " mount " + b.args);
    EXPECT_EQ(r.status, b.status) << b.args << ": " << r.output;
    EXPECT_NE(r.output.find(b.says), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_FALSE(IsMounted(dir / "mnt"));
  }
}

// A fully allocated disk (a block device) with 512-byte clusters needs a refcount table that
// grows with the disk: the largest one qcowfs accepts opens in qemu-img, a larger disk is
// refused with the cluster size to use instead.
TEST(FuseMount, RefcountTablesStayWithinWhatQemuOpens) {
  auto fits = [](uint64_t bytes) {
    qcow::ClusterMap::Builder b;
    b.Add(0, bytes / 512);
    try {
      qcow::ExportLayout(bytes, 9, b.Build());
      return true;
    } catch (const qcow::UsageError&) {
      return false;
    }
  };
  uint64_t largest = 100ull << 30;
  while (fits(largest + (1ull << 30))) largest += 1ull << 30;
  ASSERT_LT(largest, 128ull << 30);
  TempDir dir;
  for (const uint64_t size : {largest, largest + (uint64_t{1} << 30)}) {
    ASSERT_EQ(Sh("truncate -s " + std::to_string(size) + " " + Quote(dir / "disk")).status, 0);
    LoopDevice loop(dir / "disk");
    ASSERT_FALSE(loop.device().empty()) << loop.output();
    Mount m(dir / "mnt", "--export " + loop.device() + " --cluster-size 512");
    if (size == largest) {
      ASSERT_TRUE(m.ok()) << m.result().output;
      auto info = Sh("timeout 120 qemu-img info " + Quote(m / "disk.qcow2"));
      EXPECT_EQ(info.status, 0) << info.output;
    } else {
      EXPECT_FALSE(m.ok()) << "a refcount table QEMU cannot open was accepted";
      EXPECT_NE(m.result().output.find("refcount table"), std::string::npos) << m.result().output;
      EXPECT_NE(m.result().output.find("at least 1 KiB"), std::string::npos) << m.result().output;
    }
  }
}

}  // namespace
