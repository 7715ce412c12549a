#include "qcow/import/range_set.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace {

std::vector<std::pair<uint64_t, uint64_t>> Gaps(const qcow::RangeSet& s, uint64_t a, uint64_t b) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  s.ForEachGap(a, b, [&](uint64_t x, uint64_t y) { out.emplace_back(x, y); });
  return out;
}

TEST(RangeSet, InsertMergesOverlappingAndTouchingRanges) {
  qcow::RangeSet s;
  s.Insert(10, 20);
  s.Insert(30, 40);
  EXPECT_FALSE(s.Covers(10, 40));
  s.Insert(20, 30);  // touches both
  EXPECT_TRUE(s.Covers(10, 40));
  EXPECT_FALSE(s.Covers(9, 40));
  EXPECT_FALSE(s.Covers(10, 41));
  s.Insert(5, 12);   // overlaps the start
  s.Insert(15, 16);  // inside
  s.Insert(7, 7);    // empty
  EXPECT_TRUE(s.Covers(5, 40));
  EXPECT_TRUE(s.Covers(3, 3));  // an empty range is always covered
  EXPECT_EQ(Gaps(s, 0, 50), (std::vector<std::pair<uint64_t, uint64_t>>{{0, 5}, {40, 50}}));
}

TEST(RangeSet, ForEachGapSeesOnlyWhatIsMissing) {
  qcow::RangeSet s;
  s.Insert(100, 200);
  s.Insert(300, 400);
  EXPECT_EQ(Gaps(s, 150, 350), (std::vector<std::pair<uint64_t, uint64_t>>{{200, 300}}));
  EXPECT_TRUE(Gaps(s, 120, 180).empty());
  EXPECT_EQ(Gaps(s, 0, 50), (std::vector<std::pair<uint64_t, uint64_t>>{{0, 50}}));
  EXPECT_EQ(Gaps(s, 390, 500), (std::vector<std::pair<uint64_t, uint64_t>>{{400, 500}}));
}

}  // namespace
