#include "qcow/export/cluster_map.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

namespace {

using qcow::ClusterMap;

TEST(ClusterMap, EmptyMapAnswersEveryQuery) {
  ClusterMap m = ClusterMap::Builder().Build();
  EXPECT_EQ(m.size(), 0u);
  EXPECT_FALSE(m.Contains(0));
  EXPECT_EQ(m.Rank(12345), 0u);
  EXPECT_TRUE(m.runs().empty());
}

TEST(ClusterMap, MergesUnsortedOverlappingAndTouchingRuns) {
  ClusterMap::Builder b;
  b.Add(10, 5);   // 10..14
  b.Add(0, 2);    // 0..1
  b.Add(15, 1);   // touches 10..14
  b.Add(12, 10);  // overlaps: 12..21
  b.Add(1, 0);    // ignored
  b.Add(30, 1);
  ClusterMap m = b.Build();
  ASSERT_EQ(m.runs().size(), 3u);
  EXPECT_EQ(m.runs()[0].first, 0u);
  EXPECT_EQ(m.runs()[0].count, 2u);
  EXPECT_EQ(m.runs()[1].first, 10u);
  EXPECT_EQ(m.runs()[1].count, 12u);
  EXPECT_EQ(m.runs()[1].rank, 2u);
  EXPECT_EQ(m.runs()[2].rank, 14u);
  EXPECT_EQ(m.size(), 15u);
}

TEST(ClusterMap, RankSelectContainsAgreeWithASet) {
  std::mt19937_64 rng(7);
  std::set<uint64_t> truth;
  ClusterMap::Builder b;
  for (int i = 0; i < 2000; ++i) {
    uint64_t first = rng() % 100000, count = 1 + rng() % 40;
    b.Add(first, count);
    for (uint64_t c = first; c < first + count; ++c) truth.insert(c);
  }
  ClusterMap m = b.Build();
  ASSERT_EQ(m.size(), truth.size());
  std::vector<uint64_t> sorted(truth.begin(), truth.end());
  for (uint64_t k = 0; k < sorted.size(); k += 7) EXPECT_EQ(m.Select(k), sorted[k]);
  for (uint64_t i = 0; i < 100100; i += 13) {
    EXPECT_EQ(m.Contains(i), truth.count(i) == 1) << i;
    uint64_t rank = std::lower_bound(sorted.begin(), sorted.end(), i) - sorted.begin();
    EXPECT_EQ(m.Rank(i), rank) << i;
  }
}

TEST(ClusterMap, AddBytesCoversEveryTouchedCluster) {
  ClusterMap::Builder b;
  b.AddBytes(1000, 1, 9);      // cluster 1
  b.AddBytes(4095, 2, 9);      // clusters 7 and 8
  b.AddBytes(10 * 512, 0, 9);  // nothing
  b.AddBytes(20 * 512, 512, 9);
  ClusterMap m = b.Build();
  EXPECT_EQ(m.size(), 4u);
  EXPECT_TRUE(m.Contains(1));
  EXPECT_TRUE(m.Contains(7));
  EXPECT_TRUE(m.Contains(8));
  EXPECT_TRUE(m.Contains(20));
  EXPECT_FALSE(m.Contains(21));
}

TEST(ClusterMap, CoarsenGivesTheTablesTheRunsNeed) {
  ClusterMap::Builder b;
  b.Add(5, 1);
  b.Add(1000, 3000);  // tables 1..3 for divisor 1024
  b.Add(10000, 1);    // table 9
  ClusterMap t = b.Build().Coarsen(1024);
  EXPECT_EQ(t.size(), 5u);
  for (uint64_t i : {0, 1, 2, 3, 9}) EXPECT_TRUE(t.Contains(i)) << i;
}

}  // namespace

TEST(ClusterMap, UnionAndIntersection) {
  auto make = [](std::initializer_list<std::pair<uint64_t, uint64_t>> runs) {
    qcow::ClusterMap::Builder b;
    for (auto [first, count] : runs) b.Add(first, count);
    return b.Build();
  };
  auto runs = [](const qcow::ClusterMap& m) {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (const auto& r : m.runs()) out.emplace_back(r.first, r.count);
    return out;
  };
  const auto a = make({{0, 4}, {10, 5}, {100, 1}});
  const auto b = make({{2, 10}, {14, 3}, {50, 2}});
  using V = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(runs(qcow::ClusterMap::Union(a, b)), (V{{0, 17}, {50, 2}, {100, 1}}));
  EXPECT_EQ(runs(qcow::ClusterMap::Intersection(a, b)), (V{{2, 2}, {10, 2}, {14, 1}}));
  EXPECT_EQ(qcow::ClusterMap::Intersection(a, qcow::ClusterMap()).size(), 0u);
  EXPECT_EQ(runs(qcow::ClusterMap::Union(qcow::ClusterMap(), b)), runs(b));
}
