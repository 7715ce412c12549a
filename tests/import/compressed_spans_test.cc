// The registry of compressed clusters the decoder waits on.
#include "qcow/import/compressed_spans.h"

#include <gtest/gtest.h>

namespace {

using qcow::CompressedSpans;
using Key = CompressedSpans::Key;

TEST(CompressedSpans, IdenticalDescriptorsShareOneSpan) {
  CompressedSpans s;
  EXPECT_TRUE(s.Add({4096, 5000}, 0));
  EXPECT_FALSE(s.Add({4096, 5000}, 65536));
  // The same start with another length is another span (it may hold a different stream).
  EXPECT_TRUE(s.Add({4096, 6000}, 131072));
  EXPECT_EQ(s.Guests({4096, 5000}), (std::vector<uint64_t>{0, 65536}));
  EXPECT_EQ(s.Remove({4096, 5000}), (std::vector<uint64_t>{0, 65536}));
  EXPECT_FALSE(s.Waiting({4096, 5000}));
  EXPECT_TRUE(s.Waiting({4096, 6000}));
  EXPECT_EQ(s.first(), (Key{4096, 6000}));
  EXPECT_EQ(s.Remove({4096, 6000}), (std::vector<uint64_t>{131072}));
  EXPECT_TRUE(s.empty());
}

TEST(CompressedSpans, OverlapsAreFoundHoweverLongTheSpansBefore) {
  CompressedSpans s;
  s.Add({1000, 1100}, 0);
  s.Add({2000, 2000 + (2 << 20)}, 1);  // a long span: found from bytes far into it
  s.Add({3000, 3010}, 2);
  s.Add({9000, 9100}, 3);
  EXPECT_EQ(s.Overlapping(1050, 1051), (std::vector<Key>{{1000, 1100}}));
  // [3005, 3006) lies in the long span and in the short one after it.
  EXPECT_EQ(s.Overlapping(3005, 3006), (std::vector<Key>{{2000, 2000 + (2 << 20)}, {3000, 3010}}));
  EXPECT_EQ(s.Overlapping(2000 + (2 << 20) - 1, 2000 + (2 << 20)),
            (std::vector<Key>{{2000, 2000 + (2 << 20)}}));
  // Touching is not overlapping: [1100, 2000) holds none of them.
  EXPECT_TRUE(s.Overlapping(1100, 2000).empty());
  EXPECT_EQ(s.Overlapping(0, UINT64_MAX).size(), 4u);
  std::vector<Key> all;
  s.ForEach([&](const Key& k) { all.push_back(k); });
  EXPECT_EQ(all, s.Overlapping(0, UINT64_MAX));
}

TEST(CompressedSpans, InFlightIsKeptPerSpan) {
  CompressedSpans s;
  s.Add({0, 10}, 0);
  s.Add({20, 30}, 1);
  s.SetInFlight({0, 10}, true);
  EXPECT_TRUE(s.InFlight({0, 10}));
  EXPECT_FALSE(s.InFlight({20, 30}));
  s.SetInFlight({0, 10}, false);
  EXPECT_FALSE(s.InFlight({0, 10}));
}

TEST(CompressedSpans, MemoryFollowsSpansAndGuests) {
  CompressedSpans s;
  EXPECT_EQ(s.memory_bytes(), 0u);
  s.Add({0, 10}, 0);
  const uint64_t one = s.memory_bytes();
  EXPECT_GT(one, 0u);
  s.Add({0, 10}, 1);
  EXPECT_EQ(s.memory_bytes(), one + sizeof(uint64_t));
  s.Add({20, 30}, 2);
  EXPECT_GT(s.memory_bytes(), 2 * one);
  s.Remove({0, 10});
  s.Remove({20, 30});
  EXPECT_EQ(s.memory_bytes(), 0u);
}

}  // namespace
