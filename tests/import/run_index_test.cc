#include "qcow/import/run_index.h"

#include <gtest/gtest.h>

#include <map>
#include <tuple>
#include <vector>

namespace {

using Piece = std::tuple<uint64_t, uint64_t, uint64_t>;  // host_lo, host_hi, guest_lo

std::vector<Piece> All(const qcow::RunIndex& r, uint64_t a, uint64_t b) {
  std::vector<Piece> out;
  r.ForEach(a, b, [&](uint64_t lo, uint64_t hi, uint64_t g) { out.emplace_back(lo, hi, g); });
  return out;
}

TEST(RunIndex, ContiguousRunsMergeAndQueriesClip) {
  qcow::RunIndex r;
  r.Add(1000, 0, 100);
  r.Add(1100, 100, 100);  // continues both host and guest: one segment
  r.Add(1200, 900, 50);   // continues the host only
  EXPECT_EQ(r.segments(), 2u);
  EXPECT_EQ(All(r, 1050, 1210), (std::vector<Piece>{{1050, 1200, 50}, {1200, 1210, 900}}));
  EXPECT_TRUE(r.Overlaps(1249, 1250));
  EXPECT_FALSE(r.Overlaps(1250, 2000));
  EXPECT_FALSE(r.Overlaps(0, 1000));
}

// Found by the crafted-image tests: more than a chunk's worth of guests sharing one host
// cluster lost the segments of the chunk that split off (its key clashed).
TEST(RunIndex, ManyGuestsSharingOneHostRangeAreAllKept) {
  qcow::RunIndex r;
  for (uint64_t g = 0; g < 1536; ++g) r.Add(4096, g * 4096 * 7, 4096);
  const auto pieces = All(r, 0, 1 << 20);
  ASSERT_EQ(pieces.size(), 1536u);
  std::map<uint64_t, int> guests;
  for (const auto& [lo, hi, g] : pieces) {
    EXPECT_EQ(lo, 4096u);
    EXPECT_EQ(hi, 8192u);
    ++guests[g];
  }
  EXPECT_EQ(guests.size(), 1536u);
  // And shared ranges that overlap only in part are cut into identical pieces.
  r.Add(6144, 1ull << 40, 4096);
  EXPECT_EQ(All(r, 8192, 10240), (std::vector<Piece>{{8192, 10240, (1ull << 40) + 2048}}));
  EXPECT_EQ(All(r, 6144, 8192).size(), 1537u);
  EXPECT_EQ(All(r, 4096, 6144).size(), 1536u);
}

TEST(RunIndex, ScatteredRunsInAnyOrderAreFoundByHost) {
  qcow::RunIndex r;
  // Reverse layout: host increasing, guest decreasing (one segment per cluster).
  for (uint64_t i = 0; i < 5000; ++i) r.Add((9999 - i) * 512, i * 512, 512);
  EXPECT_EQ(r.segments(), 5000u);
  for (uint64_t i = 0; i < 5000; i += 777) {
    const uint64_t host = (9999 - i) * 512;
    EXPECT_EQ(All(r, host + 10, host + 20),
              (std::vector<Piece>{{host + 10, host + 20, i * 512 + 10}}));
  }
  EXPECT_LT(r.memory_bytes(), 5000u * 40);
}

}  // namespace
