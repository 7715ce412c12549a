// Images written by the library (no FUSE) from real files, judged by qemu-img.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "qcow/export/export_layout.h"
#include "qcow/export/export_reader.h"
#include "qcow/sources/open_source.h"
#include "test_util.h"

namespace {

using qcowfs_test::Quote;
using qcowfs_test::RandomBytes;
using qcowfs_test::Sh;
using qcowfs_test::TempDir;
using qcowfs_test::WriteAt;

void WriteImage(const std::string& source_path, uint32_t bits, const std::string& out,
                bool scan_zeros = false) {
  auto source = qcow::OpenSource(source_path, {});
  auto map = source->Allocation(bits);
  if (scan_zeros) map = qcow::DropZeroClusters(*source, map, bits, nullptr);
  qcow::ExportLayout layout(source->size(), bits, std::move(map));
  qcow::ExportReader reader(layout, *source);
  int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> buf(4 << 20);
  for (uint64_t off = 0; off < layout.image_size(); off += buf.size()) {
    uint64_t n = reader.Read(off, buf.data(), buf.size());
    ASSERT_EQ(pwrite(fd, buf.data(), n, off), static_cast<ssize_t>(n));
  }
  close(fd);
}

void ExpectQemuAccepts(const std::string& raw, const std::string& image) {
  auto check = Sh("qemu-img check " + Quote(image));
  EXPECT_EQ(check.status, 0) << check.output;
  auto cmp = Sh("qemu-img compare -f raw -F qcow2 " + Quote(raw) + " " + Quote(image));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
}

class ClusterSizeInterop : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ClusterSizeInterop, SparseUnalignedSourceIsCleanAndEqual) {
  TempDir dir;
  const uint32_t bits = GetParam();
  const std::string raw = dir / "src.raw";
  // Data at odd byte offsets, one piece spanning several clusters, size not a multiple of
  // 512 so that the virtual size rounds up.
  WriteAt(raw, 12345, RandomBytes(3000, 1));
  WriteAt(raw, (5u << 20) + 77, RandomBytes(700'000, 2));
  WriteAt(raw, (40u << 20) + 3, RandomBytes(10, 3));
  ASSERT_EQ(truncate(raw.c_str(), (48u << 20) + 333), 0);
  WriteImage(raw, bits, dir / "out.qcow2");
  ExpectQemuAccepts(raw, dir / "out.qcow2");
}

INSTANTIATE_TEST_SUITE_P(AllClusterSizes, ClusterSizeInterop, ::testing::Range(9u, 22u),
                         [](const auto& info) { return "bits" + std::to_string(info.param); });

TEST(ExportInterop, EmptySource) {
  TempDir dir;
  const std::string raw = dir / "empty.raw";
  WriteAt(raw, 0, {});
  WriteImage(raw, 16, dir / "out.qcow2");
  ExpectQemuAccepts(raw, dir / "out.qcow2");
  auto info = Sh("qemu-img info --output=json " + Quote(dir / "out.qcow2"));
  EXPECT_NE(info.output.find("\"virtual-size\": 0"), std::string::npos) << info.output;
}

TEST(ExportInterop, ScanZerosLeavesZeroClustersOut) {
  TempDir dir;
  const std::string raw = dir / "src.raw";
  // Written zeros are data to SEEK_DATA but not to --scan-zeros.
  WriteAt(raw, 0, std::vector<uint8_t>(8 << 20, 0));
  WriteAt(raw, 3 << 20, RandomBytes(100, 4));
  WriteImage(raw, 16, dir / "all.qcow2");
  WriteImage(raw, 16, dir / "scanned.qcow2", true);
  ExpectQemuAccepts(raw, dir / "all.qcow2");
  ExpectQemuAccepts(raw, dir / "scanned.qcow2");
  auto all = Sh("stat -c %s " + Quote(dir / "all.qcow2"));
  auto scanned = Sh("stat -c %s " + Quote(dir / "scanned.qcow2"));
  EXPECT_GT(std::stoull(all.output), 8u << 20);
  EXPECT_LT(std::stoull(scanned.output), 1u << 20);
}

TEST(ExportInterop, QemuImgMapAgreesOnAllocation) {
  TempDir dir;
  const std::string raw = dir / "src.raw";
  WriteAt(raw, 1 << 20, RandomBytes(1, 5));
  ASSERT_EQ(truncate(raw.c_str(), 64 << 20), 0);
  WriteImage(raw, 16, dir / "out.qcow2");
  // Exactly one 64 KiB data cluster is allocated, at guest offset 1 MiB.
  auto map = Sh("qemu-img map --output=json " + Quote(dir / "out.qcow2"));
  ASSERT_EQ(map.status, 0) << map.output;
  EXPECT_NE(map.output.find("\"start\": 1048576, \"length\": 65536, \"depth\": 0, "
                            "\"present\": true, \"zero\": false, \"data\": true"),
            std::string::npos)
      << map.output;
}

}  // namespace
