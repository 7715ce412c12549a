// The import spool: what it holds stays readable, and its memory stays within the budget
// however its pieces are cut.
#include "qcow/import/spool.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "qcow/import/stream_decoder.h"
#include "test_util.h"

namespace {

using qcowfs_test::RandomBytes;
using qcowfs_test::TempDir;

// Erasing small spans out of the middle of large pieces splits each one in two; the copies
// that makes must not take memory past the budget (they go to the spool file instead), and
// every byte still held must read back as it was put.
TEST(Spool, SplittingPiecesKeepsMemoryWithinTheBudget) {
  TempDir dir;
  const uint64_t budget = 8 << 20;
  qcow::Spool spool({.memory = budget, .dir = dir.path(), .limit = 1ull << 30});
  const auto data = RandomBytes(32 << 20, 7);
  // Sequential 64 KiB writes, as a pipe delivers them: they coalesce into 1 MiB pieces.
  for (uint64_t off = 0; off < data.size(); off += 64 << 10) {
    spool.Put(off, std::span(data).subspan(off, 64 << 10));
  }
  EXPECT_LE(spool.memory_bytes(), budget);
  std::map<uint64_t, uint64_t> erased;  // start -> end
  std::mt19937_64 rng(3);
  for (int i = 0; i < 2000; ++i) {
    const uint64_t at = rng() % (data.size() - 600), n = 100 + rng() % 500;
    spool.Erase(at, at + n);
    erased[at] = at + n;
    ASSERT_LE(spool.memory_bytes(), budget) << "after " << i + 1 << " erases";
  }
  // What remains reads back intact, and nothing erased is visited.
  std::vector<uint8_t> seen(data.size(), 0);
  spool.Visit(0, data.size(), [&](uint64_t off, std::span<const uint8_t> bytes) {
    ASSERT_TRUE(std::equal(bytes.begin(), bytes.end(), data.begin() + off)) << off;
    std::fill(seen.begin() + off, seen.begin() + off + bytes.size(), 1);
  });
  uint64_t held = 0;
  for (uint8_t s : seen) held += s;
  EXPECT_EQ(held, spool.bytes());
  for (const auto& [a, b] : erased) {
    for (uint64_t p = a; p < b; ++p) ASSERT_EQ(seen[p], 0) << "erased byte " << p << " held";
  }
}

// Past its limit the spool refuses with a message that counts what the import needed to
// hold, the piece that did not fit included.
TEST(Spool, RefusalCountsTheBytesThatDidNotFit) {
  TempDir dir;
  qcow::Spool spool({.memory = 64 << 10, .dir = dir.path(), .limit = 1 << 20});
  const auto data = RandomBytes(3 << 20, 5);
  spool.Put(0, std::span(data).first(512 << 10));
  try {
    spool.Put(4 << 20, std::span(data).subspan(512 << 10, 2 << 20));
    FAIL() << "a spool of 1 MiB took 2.5 MiB";
  } catch (const qcow::SpoolFullError& e) {
    EXPECT_NE(std::string(e.what()).find("waiting for the tables that place them: " +
                                         std::to_string((512 << 10) + (2 << 20)) + " bytes"),
              std::string::npos)
        << e.what();
  }
}

// Pieces at image offsets far past any file system's largest file (ext4's is 16 TiB) are
// spooled at offsets of the temp file's own: the file stays the size of what it holds.
TEST(Spool, FileIsCompactWhateverTheImageOffsets) {
  TempDir dir;
  qcow::Spool spool({.memory = 64 << 10, .dir = dir.path(), .limit = 1ull << 30});
  const auto data = RandomBytes(4 << 20, 11);
  std::mt19937_64 rng(5);
  std::map<uint64_t, uint64_t> held;  // image offset -> offset in data
  for (int i = 0; i < 400; ++i) {
    const uint64_t n = 1 + rng() % (256 << 10), from = rng() % (data.size() - n);
    const uint64_t at = (rng() % (1ull << 20)) << 40 | (rng() % (1 << 20));  // up to 2^60
    spool.Put(at, std::span(data).subspan(from, n));
    held[at] = from;
    if (i % 3 == 2) {  // forget a piece, or part of one
      auto it = std::next(held.begin(), static_cast<long>(rng() % held.size()));
      spool.Erase(it->first, it->first + 1 + rng() % (256 << 10));
    }
    ASSERT_LE(spool.file_size(), spool.peak_bytes()) << "after " << i + 1 << " puts";
  }
  // What is still held reads back as it was put.
  uint64_t seen = 0;
  spool.Visit(0, UINT64_MAX, [&](uint64_t off, std::span<const uint8_t> bytes) {
    auto it = std::prev(held.upper_bound(off));
    ASSERT_TRUE(std::equal(bytes.begin(), bytes.end(),
                           data.begin() + static_cast<long>(it->second + (off - it->first))))
        << off;
    seen += bytes.size();
  });
  EXPECT_EQ(seen, spool.bytes());
}

// An image whose L2 table and data cluster sit past 16 TiB in the image file, and arrive
// before the header (so they wait in the spool, here in its file): decoded, not refused
// for the spool file's size.
TEST(Spool, TablesPast16TiBInTheImage) {
  const uint64_t c = 64 << 10, far = 17ull << 40;
  const auto data = RandomBytes(c, 13);
  std::vector<uint8_t> head(4 * c, 0), l2(c, 0);
  auto be = [](std::vector<uint8_t>& v, uint64_t at, uint64_t x, int bytes) {
    for (int i = 0; i < bytes; ++i) v[at + i] = static_cast<uint8_t>(x >> (8 * (bytes - 1 - i)));
  };
  // qcow2 version 3: 64 KiB clusters, 1 MiB, the refcount table in cluster 1 (its block in
  // cluster 2), the L1 table in cluster 3 naming the L2 table far away.
  be(head, 0, 0x514649fb, 4);
  be(head, 4, 3, 4);
  be(head, 20, 16, 4);       // cluster_bits
  be(head, 24, 1 << 20, 8);  // size
  be(head, 36, 1, 4);        // l1_size
  be(head, 40, 3 * c, 8);    // l1_table_offset
  be(head, 48, c, 8);        // refcount_table_offset
  be(head, 56, 1, 4);        // refcount_table_clusters
  be(head, 96, 4, 4);        // refcount_order
  be(head, 100, 112, 4);     // header_length
  be(head, c, 2 * c, 8);     // refcount block
  for (int i = 0; i < 4; ++i) be(head, 2 * c + 2 * i, 1, 2);
  be(head, 3 * c, far | 1ull << 63, 8);  // L1[0], COPIED
  be(l2, 0, (far + c) | 1ull << 63, 8);  // L2[0]: the data cluster after it

  struct Sink : qcow::ImageSink {
    std::vector<uint8_t> disk = std::vector<uint8_t>(1 << 20, 0xa5);
    void Write(uint64_t off, const uint8_t* d, uint64_t n) override {
      std::copy(d, d + n, disk.begin() + static_cast<long>(off));
    }
    void Zero(uint64_t off, uint64_t n) override {
      std::fill_n(disk.begin() + static_cast<long>(off), n, 0);
    }
    void Read(uint64_t off, uint8_t* out, uint64_t n) override {
      std::copy_n(disk.begin() + static_cast<long>(off), n, out);
    }
  } sink;
  TempDir dir;
  qcow::DecoderOptions options;
  options.spool = {.memory = 4096, .dir = dir.path(), .limit = 1 << 30};
  qcow::StreamDecoder decoder(sink, options);
  decoder.Feed(far, l2);
  decoder.Feed(far + c, data);
  decoder.Feed(0, head);
  decoder.Finish();
  EXPECT_TRUE(std::equal(data.begin(), data.end(), sink.disk.begin()));
  EXPECT_TRUE(std::all_of(sink.disk.begin() + c, sink.disk.end(), [](uint8_t b) { return !b; }));
}

}  // namespace
