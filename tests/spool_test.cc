// The import spool: what it holds stays readable, and its memory stays within the budget
// however its pieces are cut.
#include "qcow/import/spool.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

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

}  // namespace
