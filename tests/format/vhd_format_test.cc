// The VHD footer and dynamic disk header decoders, on VHDs written by qemu-img.
#include <gtest/gtest.h>

#include "qcow/format/errors.h"
#include "qcow/format/vhd.h"
#include "test_util.h"

namespace {

using qcowfs_test::Quote;
using qcowfs_test::ReadFile;
using qcowfs_test::Sh;
using qcowfs_test::TempDir;

uint64_t QemuVirtualSize(const std::string& image) {
  const auto info = Sh("qemu-img info --output=json " + Quote(image));
  const auto sizes = qcowfs_test::JsonValues(info.output, "virtual-size");
  EXPECT_EQ(sizes.size(), 1u) << info.output;
  return sizes.empty() ? 0 : std::stoull(sizes[0]);
}

TEST(VhdFormat, DynamicVhdFromQemuImg) {
  TempDir dir;
  const std::string vhd = dir / "d.vhd";
  ASSERT_EQ(Sh("qemu-img create -q -f vpc -o subformat=dynamic " + Quote(vhd) + " 100M").status, 0);
  const auto bytes = ReadFile(vhd);
  const auto tail = std::span(bytes).last(qcow::kVhdFooterSize);
  const qcow::VhdFooter footer = qcow::DecodeVhdFooter(tail);
  EXPECT_EQ(footer.disk_type, qcow::kVhdDynamic);
  EXPECT_EQ(footer.current_size, QemuVirtualSize(vhd));
  // Dynamic disks keep a copy of the footer at offset 0.
  EXPECT_EQ(qcow::DecodeVhdFooter(bytes).unique_id, footer.unique_id);
  const qcow::VhdDynamicHeader h =
      qcow::DecodeVhdDynamicHeader(std::span(bytes).subspan(footer.data_offset));
  EXPECT_EQ(h.block_size, 2u << 20);
  EXPECT_GE(uint64_t{h.max_table_entries} * h.block_size, footer.current_size);
  EXPECT_LT(h.table_offset, bytes.size());
  EXPECT_EQ(h.parent_unicode_name, "");
}

TEST(VhdFormat, FixedVhdFromQemuImg) {
  TempDir dir;
  const std::string vhd = dir / "f.vhd";
  ASSERT_EQ(Sh("qemu-img create -q -f vpc -o subformat=fixed " + Quote(vhd) + " 10M").status, 0);
  const auto bytes = ReadFile(vhd);
  const qcow::VhdFooter footer = qcow::DecodeVhdFooter(std::span(bytes).last(512));
  EXPECT_EQ(footer.disk_type, qcow::kVhdFixed);
  EXPECT_EQ(footer.data_offset, ~uint64_t{0});
  EXPECT_EQ(footer.current_size, bytes.size() - 512);
}

TEST(VhdFormat, DamageIsRefused) {
  TempDir dir;
  const std::string vhd = dir / "d.vhd";
  ASSERT_EQ(Sh("qemu-img create -q -f vpc " + Quote(vhd) + " 10M").status, 0);
  const auto bytes = ReadFile(vhd);
  std::vector<uint8_t> footer(bytes.end() - 512, bytes.end());
  auto bad = footer;
  bad[48] ^= 1;  // current size
  EXPECT_THROW(qcow::DecodeVhdFooter(bad), qcow::FormatError);
  bad = footer;
  bad[0] = 'C';
  EXPECT_THROW(qcow::DecodeVhdFooter(bad), qcow::FormatError);
  const qcow::VhdFooter f = qcow::DecodeVhdFooter(footer);
  std::vector<uint8_t> header(bytes.begin() + f.data_offset, bytes.begin() + f.data_offset + 1024);
  EXPECT_NO_THROW(qcow::DecodeVhdDynamicHeader(header));
  header[33] ^= 0x40;  // block size
  EXPECT_THROW(qcow::DecodeVhdDynamicHeader(header), qcow::FormatError);
}

TEST(VhdFormat, Utf16Names) {
  // "ab" then U+1F600 as a surrogate pair, then NUL and garbage after it.
  const std::vector<uint8_t> be = {0, 'a', 0, 'b', 0xd8, 0x3d, 0xde, 0x00, 0, 0, 0, 'x'};
  EXPECT_EQ(qcow::Utf16ToUtf8(be, true), "ab\xf0\x9f\x98\x80");
  const std::vector<uint8_t> le = {'.', 0, '/', 0, 0xe9, 0, 0x00, 0xd8};  // lone surrogate
  EXPECT_EQ(qcow::Utf16ToUtf8(le, false), "./\xc3\xa9\xef\xbf\xbd");
}

}  // namespace
