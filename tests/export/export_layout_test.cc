// The planner against a whole-image reference built here, independently, the way a
// one-shot converter would write the file.
#include "qcow/export/export_layout.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "qcow/export/export_reader.h"
#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "test_util.h"

namespace {

using qcow::ClusterMap;
using qcowfs_test::PatternSource;

uint64_t Ceil(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// Materialises the complete image for a source of `size` bytes whose allocated clusters
// are `alloc`, following the layout rules literally.
std::vector<uint8_t> ReferenceImage(const PatternSource& src, uint32_t bits,
                                    const std::set<uint64_t>& alloc_in) {
  const uint64_t C = uint64_t{1} << bits, E = C / 8, R = C * 8 / 16;
  const uint64_t V = Ceil(src.size(), 512) * 512, N = Ceil(V, C);
  std::set<uint64_t> alloc;
  for (uint64_t g : alloc_in)
    if (g < N) alloc.insert(g);
  const uint64_t l1_size = Ceil(N, E), l1c = Ceil(l1_size * 8, C);
  std::set<uint64_t> tables;
  for (uint64_t g : alloc) tables.insert(g / E);
  const uint64_t fixed = 1 + l1c + tables.size() + alloc.size();
  // Smallest number of refcount blocks that can count every cluster, themselves included.
  uint64_t rb = 1;
  while (rb * R < fixed + rb + Ceil(rb, E)) ++rb;
  const uint64_t rt = Ceil(rb, E);
  const uint64_t total = fixed + rb + rt;
  std::vector<uint8_t> img(total * C, 0);
  const uint64_t rt0 = 1, rb0 = rt0 + rt, l10 = rb0 + rb, l20 = l10 + l1c, d0 = l20 + tables.size();

  qcow::QcowHeader h;
  h.magic = qcow::kQcowMagic;
  h.version = 3;
  h.cluster_bits = bits;
  h.size = V;
  h.l1_size = static_cast<uint32_t>(l1_size);
  h.l1_table_offset = l1c ? l10 * C : 0;
  h.refcount_table_offset = rt0 * C;
  h.refcount_table_clusters = static_cast<uint32_t>(rt);
  h.refcount_order = 4;
  h.header_length = 112;
  auto hb = qcow::EncodeHeader(h);
  std::copy(hb.begin(), hb.end(), img.begin());
  for (uint64_t i = 0; i < rb; ++i) qcow::StoreBe64(&img[rt0 * C + 8 * i], (rb0 + i) * C);
  for (uint64_t i = 0; i < total; ++i) qcow::StoreBe16(&img[rb0 * C + 2 * i], 1);
  std::map<uint64_t, uint64_t> table_cluster;
  for (uint64_t t : tables) {
    uint64_t at = l20 + table_cluster.size();
    table_cluster[t] = at;
    qcow::StoreBe64(&img[l10 * C + 8 * t], (at * C) | qcow::kOflagCopied);
  }
  uint64_t k = 0;
  for (uint64_t g : alloc) {
    uint64_t at = d0 + k++;
    qcow::StoreBe64(&img[table_cluster[g / E] * C + 8 * (g % E)], (at * C) | qcow::kOflagCopied);
    src.ReadAt(g * C, &img[at * C], C);
  }
  return img;
}

struct Shape {
  const char* name;
  // Source size in bytes and allocated clusters, for a given cluster size C.
  std::function<uint64_t(uint64_t C)> size;
  std::function<std::set<uint64_t>(uint64_t C)> clusters;
};

std::set<uint64_t> Range(uint64_t a, uint64_t b, uint64_t step = 1) {
  std::set<uint64_t> s;
  for (uint64_t i = a; i < b; i += step) s.insert(i);
  return s;
}

const std::vector<Shape>& Shapes() {
  static const std::vector<Shape> shapes = {
      {"none", [](uint64_t C) { return 5 * C + 123; },
       [](uint64_t) { return std::set<uint64_t>{}; }},
      {"one", [](uint64_t C) { return 9 * C; }, [](uint64_t) { return std::set<uint64_t>{2}; }},
      {"dense", [](uint64_t C) { return 8 * C; }, [](uint64_t) { return Range(0, 8); }},
      {"alternating", [](uint64_t C) { return 16 * C; }, [](uint64_t) { return Range(0, 16, 2); }},
      // Not a multiple of 512 either: the virtual size rounds up, the last cluster pads.
      {"last_partial", [](uint64_t C) { return 6 * C + 1001; },
       [](uint64_t) {
         return std::set<uint64_t>{0, 6};
       }},
      // Many L2 tables and, for small clusters, an L1 table of several clusters.
      {"spread", [](uint64_t C) { return (C / 8) * 150 * C; },
       [](uint64_t C) {
         std::set<uint64_t> s;
         for (uint64_t t = 0; t < 150; t += 3) s.insert(t * (C / 8) + t % 7);
         s.insert((C / 8) * 150 - 1);
         return s;
       }},
      {"empty", [](uint64_t) { return uint64_t{0}; },
       [](uint64_t) { return std::set<uint64_t>{}; }},
      // Data extents at byte offsets that do not fall on cluster boundaries, as
      // SEEK_DATA/SEEK_HOLE report them: every touched cluster is exported.
      {"unaligned", [](uint64_t C) { return 9 * C + 512; },
       [](uint64_t C) {
         ClusterMap::Builder b;
         const uint32_t bits = static_cast<uint32_t>(__builtin_ctzll(C));
         b.AddBytes(C / 2 + 3, 2 * C + 4, bits);  // clusters 0..2
         b.AddBytes(5 * C - 1, 2, bits);          // clusters 4 and 5
         b.AddBytes(9 * C + 100, 1, bits);        // the partial last cluster
         std::set<uint64_t> s;
         const ClusterMap m = b.Build();
         for (const auto& r : m.runs())
           for (uint64_t c = r.first; c < r.first + r.count; ++c) s.insert(c);
         EXPECT_EQ(s, (std::set<uint64_t>{0, 1, 2, 4, 5, 9}));
         return s;
       }},
  };
  return shapes;
}

ClusterMap ToMap(const std::set<uint64_t>& s) {
  ClusterMap::Builder b;
  for (uint64_t c : s) b.Add(c, 1);
  return b.Build();
}

class LayoutTest : public ::testing::TestWithParam<std::tuple<uint32_t, size_t>> {};

TEST_P(LayoutTest, OnDemandBytesEqualTheReference) {
  const auto [bits, shape_index] = GetParam();
  const Shape& shape = Shapes()[shape_index];
  const uint64_t C = uint64_t{1} << bits;
  const auto alloc = shape.clusters(C);
  PatternSource src(shape.size(C), bits, ToMap(alloc));
  qcow::ExportLayout layout(src.size(), bits, src.Allocation(bits));
  const auto ref = ReferenceImage(src, bits, alloc);
  ASSERT_EQ(layout.image_size(), ref.size());
  EXPECT_EQ(layout.virtual_size() % 512, 0u);
  EXPECT_GE(layout.virtual_size(), src.size());

  qcow::ExportReader reader(layout, src);
  // Sequential reads in odd chunk sizes cover every byte.
  std::vector<uint8_t> got(ref.size());
  const uint64_t chunk = std::max<uint64_t>(1, C / 3 + 7);
  for (uint64_t off = 0; off < got.size(); off += chunk) {
    uint64_t n = std::min<uint64_t>(chunk, got.size() - off);
    ASSERT_EQ(reader.Read(off, got.data() + off, n), n);
  }
  ASSERT_TRUE(got == ref) << "sequential read differs";
  // Random ranges, including ones that run past the end.
  std::mt19937_64 rng(bits * 100 + shape_index);
  for (int i = 0; i < 200; ++i) {
    uint64_t off = rng() % (ref.size() + 1);
    uint64_t n = 1 + rng() % (3 * C);
    std::vector<uint8_t> part(n, 0xaa);
    uint64_t want = std::min<uint64_t>(n, ref.size() - off);
    ASSERT_EQ(reader.Read(off, part.data(), n), want);
    ASSERT_TRUE(std::equal(part.begin(), part.begin() + want, ref.begin() + off))
        << "range " << off << "+" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(AllClusterSizes, LayoutTest,
                         ::testing::Combine(::testing::Range(9u, 22u),
                                            ::testing::Range<size_t>(0, Shapes().size())),
                         [](const auto& info) {
                           return "bits" + std::to_string(std::get<0>(info.param)) + "_" +
                                  Shapes()[std::get<1>(info.param)].name;
                         });

TEST(Layout, ManyRefcountBlocksAndTables) {
  // 512-byte clusters: 256 refcounts per block, 64 entries per refcount table cluster, so
  // 20000 allocated clusters need 79 blocks and 2 table clusters.
  const uint32_t bits = 9;
  const uint64_t n = 20000;
  PatternSource src(n * 512, bits, ToMap(Range(0, n)));
  qcow::ExportLayout layout(src.size(), bits, src.Allocation(bits));
  EXPECT_EQ(layout.refcount_table_clusters(), 2u);
  EXPECT_GT(layout.refcount_block_clusters(), 64u);
  const auto ref = ReferenceImage(src, bits, Range(0, n));
  ASSERT_EQ(layout.image_size(), ref.size());
  std::vector<uint8_t> got(ref.size());
  qcow::ExportReader reader(layout, src);
  ASSERT_EQ(reader.Read(0, got.data(), got.size()), got.size());
  EXPECT_TRUE(got == ref);
}

TEST(Layout, PlanNamesSourceRangesAndPadding) {
  const uint32_t bits = 16;
  const uint64_t C = 1 << bits;
  PatternSource src(3 * C + 700, bits, ToMap({1, 3}));
  qcow::ExportLayout layout(src.size(), bits, src.Allocation(bits));
  std::vector<uint8_t> scratch;
  std::vector<qcow::ExportSegment> segs;
  // From the last metadata byte to the end: metadata, cluster 1, cluster 3's 700 bytes
  // and the padding up to the cluster size (the virtual size rounds to 1024).
  const uint64_t d = layout.data_offset();
  ASSERT_EQ(layout.Plan(d - 1, 10 * C, scratch, segs), 1 + 2 * C);
  ASSERT_EQ(segs.size(), 4u);
  EXPECT_EQ(segs[0].kind, qcow::ExportSegment::Kind::kBytes);
  EXPECT_EQ(segs[1].kind, qcow::ExportSegment::Kind::kSource);
  EXPECT_EQ(segs[1].position, C);
  EXPECT_EQ(segs[1].length, C);
  EXPECT_EQ(segs[2].kind, qcow::ExportSegment::Kind::kSource);
  EXPECT_EQ(segs[2].position, 3 * C);
  EXPECT_EQ(segs[2].length, 700u);
  EXPECT_EQ(segs[3].kind, qcow::ExportSegment::Kind::kZero);
  EXPECT_EQ(segs[3].length, C - 700);
  EXPECT_EQ(layout.Plan(layout.image_size(), 100, scratch, segs), 0u);
}

TEST(Layout, AdjacentClustersBecomeOneSourceSegment) {
  const uint32_t bits = 12;
  PatternSource src(1 << 20, bits, ToMap(Range(10, 200)));
  qcow::ExportLayout layout(src.size(), bits, src.Allocation(bits));
  std::vector<uint8_t> scratch;
  std::vector<qcow::ExportSegment> segs;
  layout.Plan(layout.data_offset() + 5, 100 << bits, scratch, segs);
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].position, (10u << bits) + 5);
}

TEST(Layout, HugeSparseDiskCostsOnlyItsRuns) {
  // 16 TiB with a handful of clusters: planning is instant and the image small.
  const uint64_t size = 16ull << 40;
  ClusterMap::Builder b;
  for (uint64_t i = 0; i < 10; ++i) b.Add(i * 25'000'000, 3);
  qcow::ExportLayout layout(size, 16, b.Build());
  EXPECT_EQ(layout.header().size, size);
  EXPECT_EQ(layout.header().l1_size, size / (512ull << 20));
  EXPECT_EQ(layout.l2_clusters(), 10u);
  EXPECT_LT(layout.image_size(), 64ull << 20);
}

TEST(Layout, RefusesClusterSizesOutsideTheFormat) {
  EXPECT_THROW(qcow::ExportLayout(1 << 20, 8, ClusterMap()), qcow::UsageError);
  EXPECT_THROW(qcow::ExportLayout(1 << 20, 22, ClusterMap()), qcow::UsageError);
}

TEST(Layout, RefusesDisksTooLargeForTheL1LimitAndNamesACure) {
  // 512-byte clusters allow 128 GiB.
  EXPECT_NO_THROW(qcow::ExportLayout(128ull << 30, 9, ClusterMap()));
  try {
    qcow::ExportLayout(129ull << 30, 9, ClusterMap());
    FAIL() << "accepted";
  } catch (const qcow::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("at least 1 KiB"), std::string::npos) << e.what();
  }
}

// QEMU opens at most 8 MiB of refcount table: with 512-byte clusters and 16-bit refcounts a
// fully allocated disk reaches that near 128 GiB, before the L1 limit.
TEST(Layout, RefusesRefcountTablesQemuCannotOpenAndNamesACure) {
  auto full = [](uint64_t bytes) {
    ClusterMap::Builder b;
    b.Add(0, bytes / 512);
    return b.Build();
  };
  EXPECT_NO_THROW(qcow::ExportLayout(120ull << 30, 9, full(120ull << 30)));
  try {
    qcow::ExportLayout(126ull << 30, 9, full(126ull << 30));
    FAIL() << "accepted";
  } catch (const qcow::UsageError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("refcount table"), std::string::npos) << what;
    EXPECT_NE(what.find("at most 8 MiB"), std::string::npos) << what;
    EXPECT_NE(what.find("at least 1 KiB"), std::string::npos) << what;
  }
  // The same disk sparse is fine: the refcount table grows with the data, not the disk.
  EXPECT_NO_THROW(qcow::ExportLayout(126ull << 30, 9, ClusterMap()));
  // Every accepted layout stays within the limit, up to the largest one.
  for (uint64_t gib = 100; gib <= 128; ++gib) {
    try {
      qcow::ExportLayout l(gib << 30, 9, full(gib << 30));
      EXPECT_LE(l.refcount_table_clusters() * 512, 8u << 20) << gib;
    } catch (const qcow::UsageError&) {
    }
  }
}

}  // namespace
