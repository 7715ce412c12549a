// VHD chains through real mounts and loop devices: disk.qcow2 of a VHD chain, of a VHD on a
// block device, of a device whose allocation comes from the chain (hybrid, also in
// vhd-tool's own command-line spelling), and of a delta; judged by qemu-img against what
// libvhdi reads from the chain.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "chain_recipes.h"
#include "mount_fixture.h"
#include "vhd_chains.h"

namespace {

using qcowfs_test::LoopDevice;
using qcowfs_test::Mount;
using qcowfs_test::QcowfsBinary;
using qcowfs_test::Quote;
using qcowfs_test::Sh;
using qcowfs_test::TempDir;
using qcowfs_test::VhdChain;
using qcowfs_test::VhdChainCase;
using qcowfs_test::VhdClusters;

// The chain cases a mount adds something to: plain, found with --path, in an LV layout.
std::vector<VhdChainCase> MountCases() {
  std::vector<VhdChainCase> out;
  for (const auto& c : qcowfs_test::VhdChainCases()) {
    const std::string name = c.name;
    if (name == "depth2" || name == "depth2_search_path" || name == "depth2_lv_padding") {
      out.push_back(c);
    }
  }
  return out;
}

class VhdMount : public ::testing::TestWithParam<VhdChainCase> {};

TEST_P(VhdMount, DiskQcow2IsTheChainsGuestView) {
  TempDir dir;
  const VhdChain chain = qcowfs_test::BuildVhdChain(dir, GetParam());
  ASSERT_FALSE(HasFailure());
  Mount m(dir / "mnt", "--export " + Quote(chain.top) + chain.path_option);
  ASSERT_TRUE(m.ok()) << m.result().output;
  qcowfs_test::ExpectExportsChain(chain, m / "disk.qcow2");
}

// The device tapdisk would show (here a loop device over the chain's content), exported
// with the chain's allocation: --allocation-from, and vhd-tool's command line.
TEST_P(VhdMount, HybridDeviceWithTheChainsAllocation) {
  TempDir dir;
  const VhdChain chain = qcowfs_test::BuildVhdChain(dir, GetParam());
  ASSERT_FALSE(HasFailure());
  LoopDevice loop(chain.reference);
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  {
    Mount m(dir / "mnt", "--export " + Quote(loop.device()) + " --allocation-from " +
                             Quote(chain.top) + chain.path_option);
    ASSERT_TRUE(m.ok()) << m.result().output;
    qcowfs_test::ExpectExportsChain(chain, m / "disk.qcow2");
  }
  // As xapi runs vhd-tool for a VHD-backed VDI, with qcow2 asked for: the descriptor passed
  // by number, --path searched by name (the parents are not on it unless a case needs it).
  const std::string path = chain.path_option.empty() ? "/dev/mapper:." : dir / "store" + ":.";
  const std::string out = dir / "out.qcow2";
  const auto r = Sh("cd " + Quote(dir.path()) + " && " + Quote(QcowfsBinary()) +
                    " stream --source-protocol none --source-format hybrid --source " +
                    Quote(loop.device() + ":" + chain.top) +
                    " --destination-protocol none --destination-format qcow2 --destination-fd 9 "
                    "--tar-filename-prefix '' --progress --machine --direct --path " +
                    Quote(path) + " 9>" + Quote(out));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("100"), std::string::npos) << r.output;
  qcowfs_test::ExpectExportsChain(chain, out);
}

// The top VHD on a block device (as on an LVM SR: a block device is read as an image only
// when the caller says so), its parents found with --path.
TEST_P(VhdMount, TopOnABlockDevice) {
  TempDir dir;
  const VhdChain chain = qcowfs_test::BuildVhdChain(dir, GetParam());
  ASSERT_FALSE(HasFailure());
  // Every layer a volume, as on an LVM SR: the parents are links to block devices in one
  // directory (/dev/VG_XenStorage-SR), found with --path.
  std::vector<std::unique_ptr<LoopDevice>> loops;
  ASSERT_EQ(Sh("mkdir " + Quote(dir / "vg")).status, 0);
  for (const std::string& file : chain.files) {
    loops.push_back(std::make_unique<LoopDevice>(file));
    ASSERT_FALSE(loops.back()->device().empty()) << loops.back()->output();
    const std::string name = file.substr(file.rfind('/') + 1);
    ASSERT_EQ(
        Sh("ln -s " + Quote(loops.back()->device()) + " " + Quote(dir / ("vg/" + name))).status, 0);
  }
  Mount m(dir / "mnt", "--export " + Quote(loops.front()->device()) +
                           " --source-format vhd --path " + Quote(dir / "vg"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  const auto cmp = Sh("qemu-img compare -f raw -F qcow2 " + Quote(chain.reference) + " " +
                      Quote(m / "disk.qcow2"));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
  // Parents that are files (not volumes) are not reached from a volume.
  Mount files(dir / "mnt2", "--export " + Quote(loops.front()->device()) +
                                " --source-format vhd --path " +
                                Quote(chain.path_option.empty() ? dir.path() : dir / "store"));
  if (chain.files.size() > 1) {
    EXPECT_EQ(files.result().status, 3) << files.result().output;
    EXPECT_NE(files.result().output.find("is not a block device in"), std::string::npos)
        << files.result().output;
  }
}

// The delta of the top over the layer below it, read from the mount, rebased onto that
// layer's content.
TEST_P(VhdMount, DeltaOverTheLayerBelow) {
  TempDir dir;
  const VhdChain chain = qcowfs_test::BuildVhdChain(dir, GetParam());
  ASSERT_FALSE(HasFailure());
  qcowfs_test::WriteAt(dir / "base.raw", 0, chain.layers[1].Expected());
  Mount m(dir / "mnt", "--export " + Quote(chain.top) + " --relative-to " + Quote(chain.files[1]) +
                           chain.path_option);
  ASSERT_TRUE(m.ok()) << m.result().output;
  const auto r = Sh("cp " + Quote(m / "disk.qcow2") + " " + Quote(dir / "delta.qcow2") +
                    " && qemu-img rebase -u -f qcow2 -b " + Quote(dir / "base.raw") + " -F raw " +
                    Quote(dir / "delta.qcow2") + " && qemu-img compare -f raw " +
                    Quote(chain.reference) + " " + Quote(dir / "delta.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
  const auto map = Sh("qemu-img map --output=json " + Quote(dir / "delta.qcow2"));
  EXPECT_EQ(qcowfs_test::ClustersOfMap(map.output, 16, true, 1), VhdClusters(chain.layers, 1, 16));
}

// A dynamic VHD in a logical volume larger than itself, whose last sector still holds the
// footer of a fixed VHD that used the volume before: the VHD is the one its footer copy at
// offset 0 describes, not the stale fixed disk with the old bytes behind it.
TEST(VhdVolume, AStaleFixedFooterAtTheEndIsNotTheVhds) {
  TempDir dir;
  const auto made =
      Sh("cd " + Quote(dir.path()) +
         " && qemu-img create -q -f vpc -o subformat=dynamic v.vhd 8M"
         " && qemu-io -f vpc -c 'write -P 0x42 0 2M' v.vhd >/dev/null"
         " && cp v.vhd lv.img && truncate -s 16M lv.img"
         " && python3 -c \"f=open('lv.img','r+b');f.seek(4<<20);f.write(b'STALE-BYTES'*100000)\""
         " && qemu-img create -q -f vpc -o subformat=fixed,force_size=on f.vhd 15M"
         " && tail -c 512 f.vhd | dd of=lv.img bs=512 seek=32767 conv=notrunc status=none");
  ASSERT_EQ(made.status, 0) << made.output;
  LoopDevice loop(dir / "lv.img");
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  const auto r =
      Sh(QcowfsBinary() + " stream --source-format vhd --source " + Quote(loop.device()) +
         " --destination " + Quote(dir / "o.qcow2") + " && qemu-img compare -f vpc -F qcow2 " +
         Quote(dir / "v.vhd") + " " + Quote(dir / "o.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
}

INSTANTIATE_TEST_SUITE_P(Chains, VhdMount, ::testing::ValuesIn(MountCases()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
