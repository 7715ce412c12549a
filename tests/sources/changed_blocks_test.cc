// The CBT bitmap reader (--changed-blocks): base64 text as xapi prints it and the raw bits,
// their lengths against the disk's, and the delta planned from them.
#include "qcow/sources/changed_blocks.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "qcow/format/errors.h"
#include "qcow/sources/json_text.h"
#include "test_util.h"
#include "tracked_disk.h"

namespace {

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;
constexpr uint64_t kBlock = qcow::kChangedBlockSize;
using qcowfs_test::Base64;

qcow::DataRanges Read(const std::string& input, uint64_t disk_size) {
  return qcow::ReadChangedBlocks(qcow::PullFromText(input), "bitmap", disk_size);
}

// Returns the message ReadChangedBlocks refuses input with ("" when it takes it).
std::string Refusal(const std::string& input, uint64_t disk_size) {
  try {
    Read(input, disk_size);
  } catch (const qcow::FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(ChangedBlocks, BitmapBytesFollowTheDiskSize) {
  EXPECT_EQ(qcow::ChangedBitmapBytes(0), 0u);
  EXPECT_EQ(qcow::ChangedBitmapBytes(1), 1u);
  EXPECT_EQ(qcow::ChangedBitmapBytes(8 * kBlock), 1u);
  EXPECT_EQ(qcow::ChangedBitmapBytes(8 * kBlock + 1), 2u);
  EXPECT_EQ(qcow::ChangedBitmapBytes(uint64_t{16} << 40), 32u << 20);  // 16 TiB: 32 MiB
}

TEST(ChangedBlocks, TheFirstByteMostSignificantBitIsBlockZero) {
  const uint64_t size = 16 * kBlock;
  EXPECT_EQ(Read(std::string("\x80\x00", 2), size).ranges, (Ranges{{0, kBlock}}));
  EXPECT_EQ(Read(std::string("\x01\x00", 2), size).ranges, (Ranges{{7 * kBlock, kBlock}}));
  EXPECT_EQ(Read(std::string("\x00\x80", 2), size).ranges, (Ranges{{8 * kBlock, kBlock}}));
  // Runs across bytes come out whole; separate runs stay apart.
  EXPECT_EQ(Read(std::string("\x03\xc1", 2), size).ranges,
            (Ranges{{6 * kBlock, 4 * kBlock}, {15 * kBlock, kBlock}}));
  EXPECT_EQ(Read(std::string("\xff\xff", 2), size).ranges, (Ranges{{0, size}}));
  EXPECT_EQ(Read(std::string("\x00\x00", 2), size).ranges, Ranges{});
}

TEST(ChangedBlocks, Base64AsXapiPrintsItWithOrWithoutNewlineOrWrapped) {
  const uint64_t size = 100 * kBlock;  // 13 bytes
  std::string bits(13, '\0');
  bits[0] = '\x80';
  bits[5] = '\x0f';
  bits[12] = '\x10';  // block 99, the last one
  const Ranges want{{0, kBlock}, {44 * kBlock, 4 * kBlock}, {99 * kBlock, kBlock}};
  const std::string text = Base64(bits);
  ASSERT_EQ(text.size(), 20u);
  EXPECT_EQ(Read(text, size).ranges, want);
  EXPECT_EQ(Read(text + "\n", size).ranges, want);
  EXPECT_EQ(Read(text + "\r\n", size).ranges, want);
  EXPECT_EQ(Read(text.substr(0, 8) + "\n" + text.substr(8) + "\n", size).ranges, want);
  EXPECT_EQ(Read(bits, size).ranges, want);  // the raw bits
  EXPECT_EQ(Read(text, size).size, size);
}

TEST(ChangedBlocks, EveryPaddingLengthOfBase64) {
  for (uint64_t bytes : {1, 2, 3, 4, 5, 6}) {
    const uint64_t size = bytes * 8 * kBlock;
    const std::string bits(bytes, '\xff');
    EXPECT_EQ(Read(Base64(bits) + "\n", size).ranges, (Ranges{{0, size}})) << bytes;
  }
}

TEST(ChangedBlocks, TheShortLastBlockAndPaddingBits) {
  // 10 blocks, the last one 100 bytes long: 2 bytes, 6 bits of padding.
  const uint64_t size = 9 * kBlock + 100;
  EXPECT_EQ(Read(std::string("\x00\x40", 2), size).ranges, (Ranges{{9 * kBlock, 100}}));
  // Bits past the last block name nothing.
  EXPECT_EQ(Read(std::string("\x00\x3f", 2), size).ranges, Ranges{});
  EXPECT_EQ(Read(Base64(std::string("\x00\x7f", 2)), size).ranges, (Ranges{{9 * kBlock, 100}}));
}

TEST(ChangedBlocks, ALengthForAnotherDiskIsRefusedWithBothNumbers) {
  const uint64_t size = 64 * kBlock;  // 8 bytes
  std::string e = Refusal(Base64(std::string(16, '\xff')), size);
  EXPECT_TRUE(qcowfs_test::Has(e, "16 bytes")) << e;
  EXPECT_TRUE(qcowfs_test::Has(e, "4194304 bytes")) << e;
  EXPECT_TRUE(qcowfs_test::Has(e, "takes 8 bytes")) << e;
  e = Refusal(Base64(std::string(7, '\xff')) + "\n", size);
  EXPECT_TRUE(qcowfs_test::Has(e, "7 bytes") && qcowfs_test::Has(e, "takes 8 bytes")) << e;
  e = Refusal(std::string(7, '\x01'), size);  // raw, one byte short
  EXPECT_TRUE(qcowfs_test::Has(e, "raw bitmap of 8 bytes (it has 7 bytes)")) << e;
  e = Refusal(std::string(9, '\x01'), size);  // raw, one byte long
  EXPECT_TRUE(qcowfs_test::Has(e, "raw bitmap of 8 bytes (it has more than 8 bytes)")) << e;
  e = Refusal("", size);
  EXPECT_TRUE(qcowfs_test::Has(e, "0 bytes") && qcowfs_test::Has(e, "takes 8 bytes")) << e;
  EXPECT_EQ(qcowfs_test::Lines(e), 0) << e;
}

TEST(ChangedBlocks, TextThatIsNotBase64IsRefused) {
  const uint64_t size = 800 * kBlock;  // 100 bytes: no text here is as long
  EXPECT_TRUE(qcowfs_test::Has(Refusal("QUJD.RA==", size), "'.', which base64 has not, at byte 4"));
  EXPECT_TRUE(qcowfs_test::Has(Refusal("QUJD-A==", size), "'-'"));
  EXPECT_TRUE(qcowfs_test::Has(Refusal("QUJDR===", size), "misplaced '='"));
  EXPECT_TRUE(qcowfs_test::Has(Refusal("QUJDRA==QUJD", size), "a digit after '='"));
  EXPECT_TRUE(qcowfs_test::Has(Refusal("QUJDRAB", size), "group of 3 digits"));
  EXPECT_TRUE(qcowfs_test::Has(Refusal(std::string("QUJD\0", 5), size), "byte 0x00"));
}

TEST(ChangedBlocks, TextAsLongAsTheRawBitmapIsStillReadAsText) {
  // 72 blocks: 9 bytes of bits. "AAAAAAAA\n" is 9 bytes long too, but it is the text of a
  // 6-byte bitmap: another disk's, refused, not taken as raw bits.
  const uint64_t size = 72 * kBlock;
  std::string e = Refusal("AAAAAAAA\n", size);
  EXPECT_TRUE(qcowfs_test::Has(e, "bitmap of 6 bytes") && qcowfs_test::Has(e, "takes 9 bytes"))
      << e;
  // Line breaks alone are no bitmap either.
  e = Refusal(std::string(9, '\n'), size);
  EXPECT_TRUE(qcowfs_test::Has(e, "bitmap of 0 bytes")) << e;
  // Raw bits that are not whole text stay raw bits.
  const qcow::DataRanges raw = Read("AAAAAAAA=", size);  // 'A' is 0x41: blocks 1 and 7
  ASSERT_FALSE(raw.ranges.empty());
  EXPECT_EQ(raw.ranges.front(), (std::pair<uint64_t, uint64_t>{kBlock, kBlock}));
  // White space and line breaks anywhere in text, as decoders take it.
  EXPECT_EQ(Read(" " + Base64(std::string(9, '\xff')) + " \t\r\n\n\n\n\n\n\n", size).ranges,
            (Ranges{{0, size}}));
}

TEST(ChangedBlocks, InputThatNeverEndsIsRefusedSoon) {
  const uint64_t size = 8 * kBlock;  // 1 byte; its text is 4 digits
  uint64_t pulled = 0;
  auto endless = [&](char* buf, size_t n) {
    std::fill(buf, buf + n, 'A');
    pulled += n;
    return n;
  };
  try {
    qcow::ReadChangedBlocks(endless, "bitmap", size);
    ADD_FAILURE() << "an endless bitmap was taken";
  } catch (const qcow::FormatError& e) {
    EXPECT_TRUE(qcowfs_test::Has(e.what(), "longer than any bitmap")) << e.what();
  }
  EXPECT_LE(pulled, 1u << 20);
}

TEST(ChangedBlocks, ManyRunsStayBoundedAndCoverEveryChangedBlock) {
  // Every other block changed on a 512 GiB disk: 4 Mi runs, more than DataRanges holds.
  const uint64_t bytes = 1 << 20, size = bytes * 8 * kBlock;
  const qcow::DataRanges r = Read(std::string(bytes, '\xaa'), size);
  EXPECT_LE(r.ranges.size(), qcow::kMaxDataRanges);
  EXPECT_GT(r.granularity, kBlock);
  // Every changed block (the even ones) is inside a range.
  size_t at = 0;
  for (uint64_t block = 0; block < bytes * 8; block += 2) {
    const uint64_t offset = block * kBlock;
    while (at < r.ranges.size() && r.ranges[at].first + r.ranges[at].second <= offset) ++at;
    ASSERT_LT(at, r.ranges.size()) << block;
    ASSERT_LE(r.ranges[at].first, offset) << block;
    ASSERT_GE(r.ranges[at].first + r.ranges[at].second, offset + kBlock) << block;
  }
}

TEST(ChangedBlocks, TheDeltaHoldsWholeClustersDataWhereAllocatedZeroElsewhere) {
  // Clusters of 128 KiB (two blocks each): the source allocates clusters 0-3.
  const uint32_t bits = 17;
  const uint64_t size = 16 * (uint64_t{1} << bits);
  qcow::ClusterMap::Builder allocated;
  allocated.Add(0, 4);
  const qcowfs_test::PatternSource source(size, bits, allocated.Build());
  // Blocks 1 (cluster 0), 6 (cluster 3) and 9-12 (clusters 4-6).
  const qcow::DataRanges changed = Read(std::string("\x42\x78\x00\x00", 4), size);
  const qcow::DeltaPlan plan = qcow::ChangedBlocksDelta(source, changed, bits);
  ASSERT_EQ(plan.data.runs().size(), 2u);
  EXPECT_EQ(plan.data.runs()[0].first, 0u);
  EXPECT_EQ(plan.data.runs()[0].count, 1u);
  EXPECT_EQ(plan.data.runs()[1].first, 3u);
  EXPECT_EQ(plan.data.runs()[1].count, 1u);
  // Every changed cluster is in the zero map; the layout writes those also in data as data.
  EXPECT_TRUE(plan.delta.zero.Contains(0) && plan.delta.zero.Contains(3));
  EXPECT_TRUE(plan.delta.zero.Contains(4) && plan.delta.zero.Contains(6));
  EXPECT_FALSE(plan.delta.zero.Contains(1) || plan.delta.zero.Contains(7));
  EXPECT_EQ(plan.delta.zero.size(), 5u);
  // Clusters of 4 KiB: a changed block is 16 of them.
  const qcow::DeltaPlan small = qcow::ChangedBlocksDelta(source, changed, 12);
  EXPECT_EQ(small.delta.zero.size(), 6u * 16);
}

}  // namespace
