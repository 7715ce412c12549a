// VHD sources exported as qcow2 through the qcowfs binary (no FUSE): fixed and dynamic VHDs
// written by qemu-img, judged by qemu-img (compare, check, map); damaged VHDs refused with
// one line naming what is wrong.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "chain_recipes.h"
#include "qcow/format/byte_order.h"
#include "test_util.h"
#include "vhd_writer.h"

namespace {

using qcowfs_test::QcowfsBinary;
using qcowfs_test::Quote;
using qcowfs_test::ReadFile;
using qcowfs_test::Sh;
using qcowfs_test::TempDir;
using qcowfs_test::WriteAt;

std::string Qcowfs() { return QcowfsBinary(); }

struct QemuVhdCase {
  const char* name;
  const char* create;  // qemu-img convert options for the VHD
  const char* size;    // of the raw source
  const char* writes;  // qemu-io commands on the raw source
  // Compared with the raw source only: qemu-img compare -f vpc walks every block of a
  // 2 TiB VHD for minutes.
  bool huge = false;
};

// Data at odd sector offsets and lengths, sizes that are not a multiple of the block size
// (qemu-img rounds them to a CHS geometry unless force_size=on keeps them).
const std::vector<QemuVhdCase>& QemuVhdCases() {
  static const std::vector<QemuVhdCase> cases = {
      {"dynamic", "-o subformat=dynamic", "100M",
       "-c 'write -P 0x11 1M 3M' -c 'write -P 0x22 50000512 700000' -c 'write -P 0x33 99M 1M'"},
      {"dynamic_exact_odd_size", "-o subformat=dynamic,force_size=on", "67109376",
       "-c 'write -P 0x44 512 1024' -c 'write -P 0x55 33554944 65536' "
       "-c 'write -P 0x66 67108864 512'"},
      {"dynamic_empty", "-o subformat=dynamic", "20M", ""},
      {"dynamic_full", "-o subformat=dynamic,force_size=on", "6M", "-c 'write -P 0x77 0 6M'"},
      // The VHD size limit, data in the first and the last sector.
      {"dynamic_2040G", "-o subformat=dynamic,force_size=on", "2040G",
       "-c 'write -P 0x78 0 512' -c 'write -P 0x79 2190433320448 512'", true},
      {"fixed", "-o subformat=fixed", "100M",
       "-c 'write -P 0x11 1M 3M' -c 'write -P 0x22 50000512 700000' -c 'write -P 0x33 99M 1M'"},
      {"fixed_exact_odd_size", "-o subformat=fixed,force_size=on", "67109376",
       "-c 'write -P 0x44 512 1024' -c 'write -P 0x66 67108864 512'"},
  };
  return cases;
}

class QemuVhdExport : public ::testing::TestWithParam<QemuVhdCase> {
 protected:
  TempDir dir_;
};

TEST_P(QemuVhdExport, EqualsSourceAndMapsOnlyAllocatedClusters) {
  const QemuVhdCase& c = GetParam();
  const std::string vhd = dir_ / "src.vhd", out = dir_ / "out.qcow2";
  const auto made =
      Sh("cd " + Quote(dir_.path()) + " && qemu-img create -q -f raw src.raw " + c.size +
         (std::string(c.writes).empty()
              ? std::string()
              : " && qemu-io -f raw " + std::string(c.writes) + " src.raw >/dev/null") +
         " && qemu-img convert -f raw -O vpc " + c.create + " src.raw src.vhd");
  ASSERT_EQ(made.status, 0) << made.output;
  const auto r = Sh(Qcowfs() + " stream --source " + Quote(vhd) + " --destination " + Quote(out));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto check = Sh("qemu-img check " + Quote(out));
  EXPECT_EQ(check.status, 0) << check.output;
  const auto cmp =
      Sh("qemu-img compare -f raw -F qcow2 " + Quote(dir_ / "src.raw") + " " + Quote(out) +
         (c.huge ? "" : " && qemu-img compare -f vpc -F qcow2 " + Quote(vhd) + " " + Quote(out)));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
  const auto info = Sh("qemu-img info --output=json -f vpc " + Quote(vhd) + " && qemu-img info " +
                       "--output=json " + Quote(out));
  const auto sizes = qcowfs_test::JsonValues(info.output, "virtual-size");
  ASSERT_EQ(sizes.size(), 2u) << info.output;
  EXPECT_EQ(sizes[0], sizes[1]);
  // The export holds the clusters the VHD allocates (qemu-img map of the VHD: its allocated
  // blocks, every sector of which qemu-img writes), no more.
  // (-f vpc: probed, a fixed VHD passes for raw with its footer.)
  const auto vhd_map = Sh("qemu-img map --output=json -f vpc " + Quote(vhd));
  ASSERT_EQ(vhd_map.status, 0) << vhd_map.output;
  EXPECT_EQ(qcowfs_test::MappedClusters(out, 16, true),
            qcowfs_test::ClustersOfMap(vhd_map.output, 16, true));
  // Auto-detection and --source-format vhd agree.
  const auto named =
      Sh(Qcowfs() + " stream --source-format vhd --source " + Quote(vhd) + " --destination " +
         Quote(dir_ / "named.qcow2") + " && cmp " + Quote(out) + " " + Quote(dir_ / "named.qcow2"));
  EXPECT_EQ(named.status, 0) << named.output;
}

INSTANTIATE_TEST_SUITE_P(Images, QemuVhdExport, ::testing::ValuesIn(QemuVhdCases()),
                         [](const auto& info) { return std::string(info.param.name); });

// `info --json` and `map --json` of a dynamic VHD.
TEST(VhdInspect, InfoAndMapDescribeTheVhd) {
  TempDir dir;
  const auto made = Sh("cd " + Quote(dir.path()) +
                       " && qemu-img create -q -f raw src.raw 40M && qemu-io -f raw -c 'write "
                       "-P 0x11 5M 1M' src.raw >/dev/null && qemu-img convert -f raw -O vpc -o "
                       "subformat=dynamic,force_size=on src.raw src.vhd");
  ASSERT_EQ(made.status, 0) << made.output;
  const auto info = Sh(Qcowfs() + " info --json " + Quote(dir / "src.vhd"));
  ASSERT_EQ(info.status, 0) << info.output;
  EXPECT_EQ(qcowfs_test::JsonValues(info.output, "format"), std::vector<std::string>{"vpc"});
  EXPECT_EQ(qcowfs_test::JsonValues(info.output, "disk-type"), std::vector<std::string>{"dynamic"});
  EXPECT_EQ(qcowfs_test::JsonValues(info.output, "virtual-size"),
            std::vector<std::string>{"41943040"});
  // qemu-img allocates the one 2 MiB block that holds the data.
  EXPECT_EQ(qcowfs_test::JsonValues(info.output, "allocated-bytes"),
            std::vector<std::string>{"2097152"});
  const auto map = Sh(Qcowfs() + " map --json " + Quote(dir / "src.vhd"));
  ASSERT_EQ(map.status, 0) << map.output;
  EXPECT_EQ(qcowfs_test::ClustersOfMap(map.output, 16, true),
            qcowfs_test::MappedClusters(dir / "src.vhd", 16, true));
}

// Damaged VHDs: each refused with exit 3 and one line naming the fault.
class VhdRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto r = Sh("cd " + Quote(dir_.path()) +
                      " && qemu-img create -q -f raw src.raw 8M && qemu-io -f raw -c 'write -P "
                      "0x11 0 5M' src.raw >/dev/null && qemu-img convert -f raw -O vpc -o "
                      "subformat=dynamic,force_size=on src.raw d.vhd");
    ASSERT_EQ(r.status, 0) << r.output;
    size_ = ReadFile(dir_ / "d.vhd").size();
  }
  // Stores value (bytes wide, big-endian) at offset of d.vhd.
  void Put(uint64_t offset, uint64_t value, int bytes) {
    std::vector<uint8_t> b(8);
    qcow::StoreBe64(b.data(), value);
    WriteAt(dir_ / "d.vhd", offset, std::vector<uint8_t>(b.end() - bytes, b.end()));
  }
  // Recomputes the checksum of the structure of `n` bytes at offset (checksum at +at).
  void FixChecksum(uint64_t offset, size_t n, size_t at) {
    const auto f = ReadFile(dir_ / "d.vhd");
    uint32_t sum = 0;
    for (size_t i = 0; i < n; ++i) {
      if (i < at || i >= at + 4) sum += f[offset + i];
    }
    Put(offset + at, ~sum, 4);
  }
  void ExpectRefused(const std::string& says) {
    const auto r = Sh(Qcowfs() + " stream --source " + Quote(dir_ / "d.vhd") + " --destination " +
                      Quote(dir_ / "out.qcow2"));
    EXPECT_EQ(r.status, 3) << r.output;
    EXPECT_NE(r.output.find(says), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_NE(access((dir_ / "out.qcow2").c_str(), F_OK), 0) << "nothing written on refusal";
  }
  uint64_t Bat() const { return 1536; }  // qemu-img's dynamic VHD: BAT after the header
  TempDir dir_;
  uint64_t size_ = 0;
};

TEST_F(VhdRefusal, FooterChecksum) {
  Put(size_ - 512 + 48, 12345, 8);  // the current size, checksum left stale
  ExpectRefused("footer checksum");
}

TEST_F(VhdRefusal, DynamicHeaderChecksum) {
  Put(512 + 28, 3, 4);  // max table entries
  ExpectRefused("dynamic disk header checksum");
}

TEST_F(VhdRefusal, UnknownDiskType) {
  for (const uint64_t footer : {uint64_t{0}, size_ - 512}) {
    Put(footer + 60, 5, 4);
    FixChecksum(footer, 512, 64);
  }
  ExpectRefused("disk type is 5");
}

TEST_F(VhdRefusal, BatEntryPastTheEnd) {
  Put(Bat() + 4, size_ / 512 + 8, 4);
  ExpectRefused("ends past the file");
}

TEST_F(VhdRefusal, BatEntryIntoTheHeader) {
  Put(Bat(), 1, 4);
  ExpectRefused("overlaps the VHD's metadata");
}

TEST_F(VhdRefusal, BatEntriesSharingABlock) {
  const auto f = ReadFile(dir_ / "d.vhd");
  Put(Bat() + 4, qcow::LoadBe32(&f[Bat()]), 4);
  ExpectRefused("overlapping blocks");
}

TEST_F(VhdRefusal, TruncatedFile) {
  ASSERT_EQ(truncate((dir_ / "d.vhd").c_str(), static_cast<off_t>(size_ - 3 * 512 * 1024)), 0);
  // The footer at the end is gone; the copy at offset 0 describes blocks past the end.
  ExpectRefused("ends past the file");
}

// A damaged copy of the footer at offset 0 does not matter: the footer at the end counts.
TEST_F(VhdRefusal, DamagedFooterCopyIsIgnored) {
  Put(48, 999, 8);
  const auto r = Sh(Qcowfs() + " stream --source " + Quote(dir_ / "d.vhd") + " --destination " +
                    Quote(dir_ / "out.qcow2") + " && qemu-img compare -f raw " +
                    Quote(dir_ / "src.raw") + " " + Quote(dir_ / "out.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
}

TEST_F(VhdRefusal, BatTooSmallForTheSize) {
  Put(512 + 28, 1, 4);  // max table entries: one 2 MiB block for an 8 MiB disk
  FixChecksum(512, 1024, 36);
  ExpectRefused("Block Allocation Table has 1 entries of 2097152 bytes, too few");
}

TEST_F(VhdRefusal, PastTheVhdSizeLimit) {
  for (const uint64_t footer : {uint64_t{0}, size_ - 512}) {
    Put(footer + 48, (uint64_t{2040} << 30) + 512, 8);
    FixChecksum(footer, 512, 64);
  }
  ExpectRefused("past the VHD limit of 2040 GiB");
}

TEST_F(VhdRefusal, BlocksSmallerThan4096Bytes) {
  qcowfs_test::VhdImage img = qcowfs_test::VhdImage::Dynamic(1 << 20, 2048);
  img.Write(0, std::vector<uint8_t>(4096, 0x33));
  img.Save(dir_ / "d.vhd");
  ExpectRefused("the VHD block size is 2048 bytes");
}

// A differencing VHD whose parent locator names a FIFO: refused at once, not waited on.
TEST_F(VhdRefusal, ParentThatIsAFifo) {
  ASSERT_EQ(mkfifo((dir_ / "fifo.vhd").c_str(), 0600), 0);
  const qcowfs_test::VhdImage base = qcowfs_test::VhdImage::Dynamic(1 << 20);
  qcowfs_test::VhdImage::Differencing(base, "fifo.vhd").Save(dir_ / "d.vhd");
  const auto r = Sh("timeout 20 " + Qcowfs() + " stream --source " + Quote(dir_ / "d.vhd") +
                    " --destination " + Quote(dir_ / "out.qcow2"));
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("fifo.vhd is neither a regular file nor a block device"),
            std::string::npos)
      << r.output;
}

// The creator decides whether the footer's current size or its geometry sizes the disk, as
// QEMU decides; a current size that is not whole sectors counts whole sectors.
TEST_F(VhdRefusal, SizeAsQemuReadsIt) {
  const std::string creators[] = {std::string("tap\0", 4), "vbox", "tap ", "win ", "vpc "};
  for (const std::string& creator : creators) {
    SCOPED_TRACE(creator);
    for (const uint64_t footer : {uint64_t{0}, size_ - 512}) {
      WriteAt(dir_ / "d.vhd", footer + 28, std::vector<uint8_t>(creator.begin(), creator.end()));
      Put(footer + 48, (8 << 20) - 100, 8);  // current size
      FixChecksum(footer, 512, 64);
    }
    const auto r = Sh(Qcowfs() + " stream --source " + Quote(dir_ / "d.vhd") + " --destination " +
                      Quote(dir_ / "out.qcow2") + " && qemu-img info --output=json -f vpc " +
                      Quote(dir_ / "d.vhd") + " && qemu-img info --output=json " +
                      Quote(dir_ / "out.qcow2") + " && qemu-img compare -f vpc -F qcow2 " +
                      Quote(dir_ / "d.vhd") + " " + Quote(dir_ / "out.qcow2"));
    EXPECT_EQ(r.status, 0) << r.output;
    const auto sizes = qcowfs_test::JsonValues(r.output, "virtual-size");
    ASSERT_EQ(sizes.size(), 2u) << r.output;
    EXPECT_EQ(sizes[0], sizes[1]);
    unlink((dir_ / "out.qcow2").c_str());
  }
}

// A raw disk whose last sector happens to be a fixed VHD's footer (its guest may write one
// there) keeps its size: named .raw it is read raw, unnamed it is refused as ambiguous, and
// only a name or --source-format makes it a VHD.
TEST(VhdDetection, FixedFooterAtTheEndOfARawDiskDoesNotMakeItAVhd) {
  TempDir dir;
  const auto made = Sh("cd " + Quote(dir.path()) +
                       " && qemu-img create -q -f vpc -o subformat=fixed,force_size=on f.vhd 1M "
                       "&& truncate -s 3M disk.raw && cat f.vhd >> disk.raw && cp disk.raw disk "
                       "&& cp disk.raw named.vhd");
  ASSERT_EQ(made.status, 0) << made.output;
  const auto size_of = [&](const std::string& source, const std::string& options) {
    const auto r = Sh(Qcowfs() + " stream " + options + " --source " + Quote(source) +
                      " --destination " + Quote(dir / "out.qcow2") +
                      " && qemu-img info --output=json " + Quote(dir / "out.qcow2"));
    EXPECT_EQ(r.status, 0) << r.output;
    const auto sizes = qcowfs_test::JsonValues(r.output, "virtual-size");
    return sizes.empty() ? std::string() : sizes.front();
  };
  const std::string raw_size = std::to_string(4 * 1024 * 1024 + 512);  // 3M, then f.vhd
  EXPECT_EQ(size_of(dir / "disk.raw", ""), raw_size);
  EXPECT_EQ(size_of(dir / "disk", "--source-format raw"), raw_size);
  EXPECT_EQ(size_of(dir / "named.vhd", ""), "1048576");
  EXPECT_EQ(size_of(dir / "disk", "--source-format vhd"), "1048576");
  const auto r = Sh(Qcowfs() + " stream --source " + Quote(dir / "disk") + " --destination null:");
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("looks like a VHD image, but its name does not say so"),
            std::string::npos)
      << r.output;
}

// --source-format vhd on a file that is not one.
TEST_F(VhdRefusal, NotAVhd) {
  const auto r = Sh(Qcowfs() + " stream --source-format vhd --source " + Quote(dir_ / "src.raw") +
                    " --destination " + Quote(dir_ / "out.qcow2"));
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("is not a VHD"), std::string::npos) << r.output;
}

}  // namespace
