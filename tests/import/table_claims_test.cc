// The decoder's first stage on its own: tables in, claims out, clipped to the disk.
#include "qcow/import/table_claims.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"

namespace {

using Kind = qcow::Claim::Kind;

qcow::ImageInfo Info(uint64_t virtual_size, bool extended = false, uint32_t version = 3) {
  qcow::ImageInfo in;
  in.header.version = version;
  in.header.cluster_bits = 16;
  in.cluster_size = 1 << 16;
  in.virtual_size = virtual_size;
  in.extended_l2 = extended;
  in.l2_entry_size = extended ? 16 : 8;
  in.l2_entries = in.cluster_size / in.l2_entry_size;
  return in;
}

void Put(std::vector<uint8_t>& table, uint64_t index, uint64_t word) {
  qcow::StoreBe64(&table[index * 8], word);
}

std::vector<qcow::Claim> L1(const qcow::ImageInfo& in, const std::vector<uint8_t>& t) {
  std::vector<qcow::Claim> out;
  qcow::ClaimL1(in, t, [&](const qcow::Claim& c) { out.push_back(c); });
  return out;
}

std::vector<qcow::Claim> L2(const qcow::ImageInfo& in, const std::vector<uint8_t>& t,
                            uint64_t l1_index) {
  std::vector<qcow::Claim> out;
  qcow::ClaimL2(in, t, l1_index, [&](const qcow::Claim& c) {
    // Unallocated clusters without a host are most of a table: keep the test readable.
    if (c.kind != Kind::kUnallocated || c.host_end) out.push_back(c);
  });
  return out;
}

std::string Error(const std::function<void()>& f) {
  try {
    f();
  } catch (const qcow::FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(TableClaims, L1NamesTablesAndUnallocatedRangesClippedToTheDisk) {
  const uint64_t span = uint64_t{8192} << 16;  // 512 MiB per L2 table
  const qcow::ImageInfo in = Info(span + 4096);
  std::vector<uint8_t> l1(8 * 4, 0);
  Put(l1, 0, 0x50000 | qcow::kOflagCopied);
  Put(l1, 2, 0x60000);  // past the disk: not read
  const std::vector<qcow::Claim> c = L1(in, l1);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].kind, Kind::kL2Table);
  EXPECT_EQ(c[0].host, 0x50000u);
  EXPECT_EQ(c[0].host_end, 0x60000u);
  EXPECT_EQ(c[0].length, span);
  EXPECT_EQ(c[1].kind, Kind::kUnallocated);
  EXPECT_EQ(c[1].guest, span);
  EXPECT_EQ(c[1].length, 4096u);
  Put(l1, 1, 0x70200);
  EXPECT_EQ(Error([&] { L1(in, l1); }),
            "L1 entry 1 points to an L2 table at 0x70200, not aligned to the 65536-byte "
            "cluster size");
}

TEST(TableClaims, L2EntriesBecomeDataZeroAndCompressedClaims) {
  const qcow::ImageInfo in = Info(uint64_t{1} << 30);
  std::vector<uint8_t> l2(1 << 16, 0);
  Put(l2, 0, 0x100000 | qcow::kOflagCopied);                            // data
  Put(l2, 1, qcow::kOflagZero);                                         // zero, no host cluster
  Put(l2, 2, 0x200000 | qcow::kOflagZero);                              // preallocated zero
  Put(l2, 3, qcow::kOflagCompressed | 0x300100 | (uint64_t{3} << 54));  // 4 sectors
  const std::vector<qcow::Claim> c = L2(in, l2, 1);
  const uint64_t base = uint64_t{8192} << 16;  // L1 entry 1
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(c[0].kind, Kind::kData);
  EXPECT_EQ(c[0].guest, base);
  EXPECT_EQ(c[0].host, 0x100000u);
  EXPECT_EQ(c[0].host_end, 0x110000u);
  EXPECT_EQ(c[1].kind, Kind::kZero);
  EXPECT_EQ(c[1].host_end, 0u);
  EXPECT_EQ(c[2].kind, Kind::kZero);
  EXPECT_EQ(c[2].host_end, 0x210000u);  // the preallocated cluster is part of the file
  EXPECT_EQ(c[3].kind, Kind::kCompressed);
  EXPECT_EQ(c[3].guest, base + 3 * 65536);
  EXPECT_EQ(c[3].host, 0x300100u);
  EXPECT_EQ(c[3].host_end, 0x300000u + 4 * 512);
}

TEST(TableClaims, TheDisksLastClusterIsClipped) {
  const qcow::ImageInfo in = Info(65536 + 1000);
  std::vector<uint8_t> l2(1 << 16, 0);
  Put(l2, 0, 0x100000);
  Put(l2, 1, 0x110000);
  Put(l2, 2, 0x120000);  // past the disk: not read
  const std::vector<qcow::Claim> c = L2(in, l2, 0);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1].length, 1000u);
  EXPECT_EQ(c[1].host_end, 0x120000u);
}

TEST(TableClaims, SubclustersOfOneKindAreMerged) {
  const qcow::ImageInfo in = Info(uint64_t{1} << 30, /*extended=*/true);
  std::vector<uint8_t> l2(1 << 16, 0);
  // Subclusters 0-3 allocated, 4-7 zero, the rest left to the backing file.
  Put(l2, 0, 0x400000);
  Put(l2, 1, 0x0000000fULL | (0x000000f0ULL << 32));
  const std::vector<qcow::Claim> c = L2(in, l2, 0);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].kind, Kind::kData);
  EXPECT_EQ(c[0].length, 4u * 2048);
  EXPECT_EQ(c[1].kind, Kind::kZero);
  EXPECT_EQ(c[1].guest, 4u * 2048);
  EXPECT_EQ(c[1].length, 4u * 2048);
  EXPECT_EQ(c[2].kind, Kind::kUnallocated);
  EXPECT_EQ(c[2].guest, 8u * 2048);
  EXPECT_EQ(c[2].length, 24u * 2048);
  EXPECT_EQ(c[2].host_end, 0x410000u);
}

TEST(TableClaims, ABadEntryIsNamedAfterTheClaimsBeforeIt) {
  const qcow::ImageInfo in = Info(uint64_t{1} << 30, false, /*version=*/2);
  std::vector<uint8_t> l2(1 << 16, 0);
  Put(l2, 0, 0x100000);
  Put(l2, 5, qcow::kOflagZero);
  std::vector<qcow::Claim> got;
  const std::string e =
      Error([&] { qcow::ClaimL2(in, l2, 0, [&](const qcow::Claim& c) { got.push_back(c); }); });
  EXPECT_EQ(e,
            "L2 entry 5 of L1 entry 0 (guest offset 327680) has the zero bit set, which "
            "version 2 does not allow");
  EXPECT_EQ(got.size(), 5u);  // entries 0-4
}

}  // namespace
