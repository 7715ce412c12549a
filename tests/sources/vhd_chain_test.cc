// Chains of differencing VHDs exported as qcow2 through the qcowfs binary (no FUSE): the
// export equals what libvhdi reads from the chain, holds exactly the clusters some layer
// allocates, and deltas over each layer rebase onto that layer's content; broken chains are
// refused with one line.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "chain_recipes.h"
#include "test_util.h"
#include "vhd_chains.h"
#include "vhd_writer.h"

namespace {

using qcowfs_test::MappedClusters;
using qcowfs_test::QcowfsBinary;
using qcowfs_test::Quote;
using qcowfs_test::ReadFile;
using qcowfs_test::Sh;
using qcowfs_test::TempDir;
using qcowfs_test::VhdChain;
using qcowfs_test::VhdChainCase;
using qcowfs_test::VhdClusters;
using qcowfs_test::VhdImage;
using qcowfs_test::VhdQuirks;

std::string Qcowfs() { return QcowfsBinary(); }

class VhdChainExport : public ::testing::TestWithParam<VhdChainCase> {};

TEST_P(VhdChainExport, EqualsLibvhdiAndHoldsOnlyAllocatedClusters) {
  TempDir dir;
  const VhdChain chain = qcowfs_test::BuildVhdChain(dir, GetParam());
  ASSERT_FALSE(HasFailure());
  const std::string out = dir / "out.qcow2";
  const auto r = Sh(Qcowfs() + " stream --source " + Quote(chain.top) + chain.path_option +
                    " --destination " + Quote(out));
  ASSERT_EQ(r.status, 0) << r.output;
  qcowfs_test::ExpectExportsChain(chain, out);
  // So is every 512-byte cluster: the export is as sparse as the chain's sectors.
  const auto fine = Sh(Qcowfs() + " stream --cluster-size 512 --source " + Quote(chain.top) +
                       chain.path_option + " --destination " + Quote(dir / "fine.qcow2"));
  ASSERT_EQ(fine.status, 0) << fine.output;
  qcowfs_test::ExpectExportsChain(chain, dir / "fine.qcow2", 9);
}

// The delta over each layer below the top holds the clusters the layers above it allocate,
// names the layer as its backing file, and over that layer's content reads as the top.
TEST_P(VhdChainExport, DeltaOverEachLayerRebasesOntoItsContent) {
  TempDir dir;
  const VhdChain chain = qcowfs_test::BuildVhdChain(dir, GetParam());
  ASSERT_FALSE(HasFailure());
  for (size_t d = 1; d < chain.files.size(); ++d) {
    SCOPED_TRACE("relative to layer " + std::to_string(d));
    const std::string delta = dir / "delta.qcow2", base = dir / "base.raw";
    qcowfs_test::WriteAt(base, 0, chain.layers[d].Expected());
    const auto r = Sh(Qcowfs() + " stream --source " + Quote(chain.top) + chain.path_option +
                      " --relative-to " + Quote(chain.files[d]) + " --destination " + Quote(delta) +
                      " && qemu-img info --output=json " + Quote(delta));
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(qcowfs_test::JsonValues(r.output, "backing-filename-format"),
              std::vector<std::string>{"vpc"});
    const auto rebased =
        Sh("qemu-img rebase -u -f qcow2 -b " + Quote(base) + " -F raw " + Quote(delta) +
           " && qemu-img compare -f raw -F qcow2 " + Quote(chain.reference) + " " + Quote(delta));
    EXPECT_EQ(rebased.status, 0) << rebased.output;
    // What the delta itself holds (depth 0; qemu-img map also shows its backing file).
    const auto map = Sh("qemu-img map --output=json " + Quote(delta));
    EXPECT_EQ(qcowfs_test::ClustersOfMap(map.output, 16, true, 1),
              VhdClusters(chain.layers, d, 16));
    unlink(delta.c_str());
    unlink(base.c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(Chains, VhdChainExport, ::testing::ValuesIn(qcowfs_test::VhdChainCases()),
                         [](const auto& info) { return std::string(info.param.name); });

// `info --json` of a differencing VHD lists its parents.
TEST(VhdChainInspect, InfoListsTheParents) {
  TempDir dir;
  const VhdChain chain = qcowfs_test::BuildVhdChain(dir, qcowfs_test::VhdChainCases()[1]);
  ASSERT_FALSE(HasFailure());
  const auto info = Sh(Qcowfs() + " info --json " + Quote(chain.top));
  ASSERT_EQ(info.status, 0) << info.output;
  EXPECT_EQ(qcowfs_test::JsonValues(info.output, "disk-type"),
            (std::vector<std::string>{"differencing", "differencing", "dynamic"}));
  EXPECT_EQ(qcowfs_test::JsonValues(info.output, "filename"),
            (std::vector<std::string>{chain.files[0], chain.files[1], chain.files[2]}));
}

// Broken chains: refused with exit 3 and one line naming the fault, nothing written.
class VhdChainRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = VhdImage::Dynamic(8 << 20);
    base_.Write(1000, std::vector<uint8_t>(70000, 0x42));
  }
  // A child of base_ saved as top.vhd, naming "base.vhd".
  VhdImage Child() {
    VhdImage c = VhdImage::Differencing(base_, "base.vhd");
    c.Write(5000, std::vector<uint8_t>(3000, 0x17));
    return c;
  }
  void ExpectRefused(const std::string& says, const std::string& source = "top.vhd") {
    const auto r = Sh(Qcowfs() + " stream --source " + Quote(dir_ / source) + " --destination " +
                      Quote(dir_ / "out.qcow2"));
    EXPECT_EQ(r.status, 3) << r.output;
    EXPECT_NE(r.output.find(says), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_NE(access((dir_ / "out.qcow2").c_str(), F_OK), 0) << "nothing written on refusal";
  }
  TempDir dir_;
  VhdImage base_ = VhdImage::Fixed(512);
};

TEST_F(VhdChainRefusal, MissingParent) {
  Child().Save(dir_ / "top.vhd");
  ExpectRefused("its parent " + qcowfs_test::UuidString(base_.uuid()) +
                " ('base.vhd') is not found (looked at " + dir_ / "base.vhd");
}

TEST_F(VhdChainRefusal, ParentUuidMismatch) {
  base_.Save(dir_ / "base.vhd");
  VhdQuirks q;
  q.parent_unique_id = qcowfs_test::RandomVhdUuid();
  Child().Save(dir_ / "top.vhd", q);
  ExpectRefused(dir_ / "base.vhd has unique id " + qcowfs_test::UuidString(base_.uuid()));
}

TEST_F(VhdChainRefusal, NoLocatorNamesAParent) {
  base_.Save(dir_ / "base.vhd");
  VhdImage c = Child();
  c.SetLocators({});
  c.SetParentUnicodeName("");
  c.Save(dir_ / "top.vhd");
  ExpectRefused("is not found (looked at nothing: no parent locator names a file)");
}

TEST_F(VhdChainRefusal, Loop) {
  // a.vhd's parent is b.vhd, whose parent is a.vhd again (same unique id).
  VhdImage a = VhdImage::Differencing(base_, "b.vhd");
  qcowfs_test::VhdOptions o = base_.options();
  o.unique_id = base_.uuid();
  o.disk_type = qcowfs_test::kVhdTypeDifferencing;
  VhdImage b(o, a, "a.vhd", {qcowfs_test::VhdLocatorKind::kMacX});
  a.Save(dir_ / "a.vhd");
  b.Save(dir_ / "b.vhd");
  ExpectRefused("the VHD chain loops", "a.vhd");
}

TEST_F(VhdChainRefusal, DamagedParent) {
  VhdQuirks q;
  q.bad_header_checksum = true;
  base_.Save(dir_ / "base.vhd", q);
  Child().Save(dir_ / "top.vhd");
  ExpectRefused("cannot be read: " + dir_ / "base.vhd" + ": dynamic disk header checksum");
}

TEST_F(VhdChainRefusal, BatEntryPastTheEndOfAChild) {
  base_.Save(dir_ / "base.vhd");
  VhdQuirks q;
  q.bat_overrides[3] = 0x00ffffff;
  Child().Save(dir_ / "top.vhd", q);
  ExpectRefused("BAT entry 3 (guest offset 6291456) points to");
}

// A locator whose data would end past 2^64 is refused naming its fields, whatever its
// platform code (one of an unknown code is not read, but its place is still checked).
TEST_F(VhdChainRefusal, LocatorDataPastTwoToThe64) {
  base_.Save(dir_ / "base.vhd");
  VhdImage c = Child();
  std::vector<qcowfs_test::VhdLocator> locators = c.locators();
  locators.push_back({0x57693272, "..\\base.vhd"});  // "Wi2r", deprecated
  c.SetLocators(locators);
  std::vector<uint8_t> bytes = c.Serialize();
  // The new entry's platform_data_offset (at 16 in the 24-byte entries from 576 of the
  // dynamic header) set to 2^64 - 16, and the header's checksum (at 36) made right again.
  const uint64_t h = c.Layout().header_offset, entry = h + 576 + 24 * (locators.size() - 1);
  const uint64_t offset = UINT64_MAX - 15;
  for (int i = 0; i < 8; ++i) bytes[entry + 16 + i] = static_cast<uint8_t>(offset >> (56 - 8 * i));
  std::fill_n(&bytes[h + 36], 4, 0);
  uint32_t sum = 0;
  for (uint64_t i = 0; i < 1024; ++i) sum += bytes[h + i];
  for (int i = 0; i < 4; ++i) bytes[h + 36 + i] = static_cast<uint8_t>(~sum >> (24 - 8 * i));
  qcowfs_test::WriteAt(dir_ / "top.vhd", 0, bytes);
  ExpectRefused("top.vhd: the VHD parent locator " + std::to_string(locators.size() - 1) +
                ": platform_data_offset 18446744073709551600 plus platform_data_length 22 pass "
                "2^64");
}

}  // namespace
