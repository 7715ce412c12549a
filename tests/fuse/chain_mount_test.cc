// qcow2 chains exported through a real FUSE mount: qemu-img reads disk.qcow2 in place, cat
// reads it whole, and both agree with `qcowfs stream` and the chain's own guest content.
#include <gtest/gtest.h>

#include "chain_recipes.h"
#include "mount_fixture.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

class ChainMount : public ::testing::TestWithParam<ChainRecipe> {};

TEST_P(ChainMount, DiskQcow2IsTheTopsGuestView) {
  TempDir dir;
  const ChainRecipe& r = GetParam();
  const std::string top = BuildChain(dir, r);
  const std::string path = *r.search_dir.c_str() ? " --path " + Quote(dir / r.search_dir) : "";
  Mount m(dir / "mnt", "--export " + Quote(top) + path);
  ASSERT_TRUE(m.ok()) << m.result().output;
  const auto check = Sh("qemu-img check " + Quote(m / "disk.qcow2"));
  EXPECT_EQ(check.status, 0) << check.output;
  const auto cmp = Sh("qemu-img compare -f raw -F qcow2 " + Quote(dir / "reference.raw") + " " +
                      Quote(m / "disk.qcow2"));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
  // Spliced and copied replies (cat, 1 MiB requests) give what stream writes.
  const auto same = Sh(Quote(QcowfsBinary()) + " stream --source " + Quote(top) + path +
                       " --destination " + Quote(dir / "streamed.qcow2") + " && cat " +
                       Quote(m / "disk.qcow2") + " | cmp - " + Quote(dir / "streamed.qcow2"));
  EXPECT_EQ(same.status, 0) << same.output;
}

// xapi's shape: tapdisk's device (a loop device holding the top's guest content) with the
// allocation from the chain, or from qemu-img map's JSON.
TEST_P(ChainMount, DeviceWithAllocationFromTheChain) {
  TempDir dir;
  const ChainRecipe& r = GetParam();
  const std::string top = BuildChain(dir, r);
  const std::string path = *r.search_dir.c_str() ? " --path " + Quote(dir / r.search_dir) : "";
  const auto bytes = ReadFile(dir / "map.json");
  const std::string map(bytes.begin(), bytes.end());
  LoopDevice loop(dir / "reference.raw");
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  for (const std::string& meta : {top, dir / "map.json"}) {
    SCOPED_TRACE(meta);
    Mount m(dir / "mnt",
            "--export " + Quote(loop.device()) + " --allocation-from " + Quote(meta) + path);
    ASSERT_TRUE(m.ok()) << m.result().output;
    const auto cmp = Sh("qemu-img compare -f raw -F qcow2 " + Quote(dir / "reference.raw") + " " +
                        Quote(m / "disk.qcow2") + " && qemu-img check " + Quote(m / "disk.qcow2"));
    EXPECT_EQ(cmp.status, 0) << cmp.output;
    EXPECT_EQ(MappedClusters(m / "disk.qcow2", 16, false), ClustersOfMap(map, 16, meta != top));
  }
}

// A restore through the mount: the delta over the layer below the top, written into
// import.qcow2 of a --delta mount whose target holds that layer's disk, gives the top.
class ChainDeltaMount : public ::testing::TestWithParam<ChainRecipe> {};

TEST_P(ChainDeltaMount, DeltaImportThroughTheMount) {
  TempDir dir;
  const ChainRecipe& r = GetParam();
  const std::string top = BuildChain(dir, r);
  const std::string path = *r.search_dir.c_str() ? " --path " + Quote(dir / r.search_dir) : "";
  const std::string base = dir / r.bases[0], target = dir / "target.raw";
  const uint64_t top_size = ReadFile(dir / "reference.raw").size();
  ASSERT_EQ(Sh(Quote(QcowfsBinary()) + " stream --source " + Quote(top) + path + " --relative-to " +
               Quote(base) + " --destination " + Quote(dir / "delta.qcow2") +
               " && qemu-img convert -O raw " + Quote(base) + " " + Quote(target) +
               " && truncate -s " + std::to_string(top_size) + " " + Quote(target))
                .status,
            0);
  Mount m(dir / "mnt", "--import " + Quote(target) + " --delta");
  ASSERT_TRUE(m.ok()) << m.result().output;
  const auto run = Sh("cat " + Quote(dir / "delta.qcow2") + " > " + Quote(m / "import.qcow2") +
                      " && cat " + Quote(m / "import.status"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("state: done\nmode: delta\n"), std::string::npos) << run.output;
  ASSERT_TRUE(m.Unmount());
  const auto cmp = Sh("cmp " + Quote(target) + " " + Quote(dir / "reference.raw"));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
}

INSTANTIATE_TEST_SUITE_P(Chains, ChainMount, ::testing::ValuesIn(ChainRecipes()),
                         [](const auto& info) { return std::string(info.param.name); });
INSTANTIATE_TEST_SUITE_P(Chains, ChainDeltaMount, ::testing::ValuesIn(LayeredChainRecipes()),
                         [](const auto& info) { return std::string(info.param.name); });

// An incremental export through the mount: the delta over a middle layer of a ten-layer
// chain, copied out with cp and rebased onto it, reads as the top.
TEST(ChainMount, DeltaOverAMiddleLayer) {
  TempDir dir;
  const ChainRecipe* depth10 = nullptr;
  for (const auto& r : ChainRecipes()) {
    if (std::string(r.name) == "depth10") depth10 = &r;
  }
  ASSERT_NE(depth10, nullptr);
  const std::string top = BuildChain(dir, *depth10);
  const std::string base = dir / "l4.qcow2";
  Mount m(dir / "mnt", "--export " + Quote(top) + " --relative-to " + Quote(base));
  ASSERT_TRUE(m.ok()) << m.result().output;
  const auto r =
      Sh("cp " + Quote(m / "disk.qcow2") + " " + Quote(dir / "delta.qcow2") +
         " && qemu-img check " + Quote(dir / "delta.qcow2") + " && " + Quote(QcowfsBinary()) +
         " stream --source " + Quote(top) + " --relative-to " + Quote(base) +
         " --destination - | cmp - " + Quote(dir / "delta.qcow2") + " && qemu-img rebase -u -b " +
         Quote(base) + " -F qcow2 " + Quote(dir / "delta.qcow2") + " && qemu-img compare " +
         Quote(top) + " " + Quote(dir / "delta.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
}

// qemu-img map of a mounted delta (its backing name leading to the base) is what
// `qcowfs map` says of the same export.
TEST(ChainMount, MapOfAMountedDelta) {
  TempDir dir;
  for (const auto& r : ChainRecipes()) {
    if (std::string(r.name) != "extended_l2") continue;
    const std::string top = BuildChain(dir, r), base = dir / r.bases[0];
    const std::string args = "--export " + Quote(top) + " --relative-to " + Quote(base) +
                             " --backing-name " + Quote(base);
    Mount m(dir / "mnt", args);
    ASSERT_TRUE(m.ok()) << m.result().output;
    const auto want = Sh("qemu-img map --output=json " + Quote(m / "disk.qcow2"));
    ASSERT_EQ(want.status, 0) << want.output;
    const auto got = Sh(Quote(QcowfsBinary()) + " map --json " + Quote(top) + " --relative-to " +
                        Quote(base) + " --backing-name " + Quote(base));
    EXPECT_EQ(got.output, want.output);
    return;
  }
  FAIL() << "no extended_l2 recipe";
}

// Layers on block devices: map agrees with qemu-img (which cannot look for holes there).
TEST(ChainMount, MapOfLayersOnBlockDevices) {
  TempDir dir;
  ASSERT_EQ(Sh("cd " + Quote(dir.path()) +
               " && qemu-img create -q -f qcow2 img.qcow2 8M && qemu-io -c 'write -P 1 0 1M' "
               "-c 'write -z 2M 64k' img.qcow2 >/dev/null && truncate -s 16M dev.img && "
               "dd if=img.qcow2 of=dev.img conv=notrunc status=none")
                .status,
            0);
  LoopDevice loop(dir / "dev.img");
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  ASSERT_EQ(
      Sh("cd " + Quote(dir.path()) + " && qemu-img create -q -f qcow2 -b " + Quote(loop.device()) +
         " -F qcow2 top.qcow2 8M && qemu-io -c 'write -P 2 4M 64k' "
         "top.qcow2 >/dev/null")
          .status,
      0);
  // A block device is an image only by the caller's word (--source-format); the top names
  // its format for the device below it.
  for (const auto& [image, format] :
       {std::pair{loop.device(), std::string(" --source-format qcow2")},
        std::pair{dir / "top.qcow2", std::string()}}) {
    const auto want = Sh("qemu-img map -f qcow2 --output=json " + Quote(image));
    ASSERT_EQ(want.status, 0) << want.output;
    const auto got = Sh(Quote(QcowfsBinary()) + " map --json" + format + " " + Quote(image));
    EXPECT_EQ(got.output, want.output) << image;
  }
}

TEST(ChainMount, RefusedChainDoesNotMount) {
  TempDir dir;
  ASSERT_EQ(Sh("cd " + Quote(dir.path()) +
               " && qemu-img create -q -f qcow2 base.qcow2 1M"
               " && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 && rm base.qcow2")
                .status,
            0);
  Mount m(dir / "mnt", "--export " + Quote(dir / "top.qcow2"));
  EXPECT_EQ(m.result().status, 3) << m.result().output;
  EXPECT_NE(m.result().output.find("backing file 'base.qcow2' cannot be opened"), std::string::npos)
      << m.result().output;
  EXPECT_FALSE(IsMounted(dir / "mnt"));
}

}  // namespace
