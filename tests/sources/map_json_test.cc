// The JSON readers: qemu-img map (--allocation-from, qcow2-to-stdout), qemu-img info and
// qcow-stream-tool's read_headers (qcow2-to-stdout's hints).
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>

#include "qcow/format/errors.h"
#include "qcow/sources/allocation_map.h"

namespace {

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

TEST(MapJson, TakesDataThatIsNotZero) {
  // As qemu-img 7.2 prints it, plus a newer version's "compressed" field.
  const char* text =
      "[{ \"start\": 0, \"length\": 65536, \"depth\": 1, \"present\": true, \"zero\": true, "
      "\"data\": false},\n"
      "{ \"start\": 65536, \"length\": 458752, \"depth\": 2, \"present\": true, \"zero\": false, "
      "\"data\": true, \"offset\": 393216},\n"
      "{ \"start\": 524288, \"length\": 131072, \"depth\": 1, \"present\": true, \"zero\": false, "
      "\"data\": true, \"compressed\": true},\n"
      "{ \"start\": 655360, \"length\": 4096, \"depth\": 0, \"present\": true, \"zero\": true, "
      "\"data\": true, \"offset\": 397312},\n"
      "{ \"start\": 659456, \"length\": 1437696, \"depth\": 2, \"present\": false, \"zero\": "
      "true, \"data\": false}]\n";
  const qcow::DataRanges r = qcow::ParseQemuImgMap(text, "map");
  EXPECT_EQ(r.size, 2097152u);
  EXPECT_EQ(r.ranges, (Ranges{{65536, 589824}}));
}

TEST(MapJson, EmptyImage) {
  const auto r = qcow::ParseQemuImgMap(
      "[{ \"start\": 0, \"length\": 0, \"depth\": 0, \"present\": false, \"zero\": false, "
      "\"data\": false}]\n",
      "map");
  EXPECT_EQ(r.size, 0u);
  EXPECT_TRUE(r.ranges.empty());
}

TEST(MapJson, RefusesWhatIsNotAMap) {
  for (const char* bad : {
           "",
           "{}",
           "[{ \"start\": 0, \"length\": 512, \"zero\": false}]",                    // no data
           "[{ \"start\": 512, \"length\": 512, \"zero\": false, \"data\": true}]",  // a gap
           "[{ \"start\": 0, \"length\": 512, \"zero\": false, \"data\": true}",     // unterminated
           "[{ \"start\": 0, \"length\": 512, \"zero\": false, \"data\": tru}]",
           "[{ \"start\": 0, \"length\": 18446744073709551615, \"zero\": false, \"data\": true},"
           "{ \"start\": 18446744073709551615, \"length\": 2, \"zero\": false, \"data\": true}]",
           "[] x",
       }) {
    EXPECT_THROW(qcow::ParseQemuImgMap(bad, "map"), qcow::FormatError) << bad;
  }
}

TEST(InfoJson, TakesSizeAndClusterSizeFromNestedOutput) {
  // As qemu-img 7.2 prints it for a qcow2 image with a backing file.
  const char* text = R"({
    "children": [{"name": "file", "info": {"children": [], "virtual-size": 197120,
      "filename": "t.qcow2", "format": "file", "actual-size": 200704, "dirty-flag": false}}],
    "backing-filename-format": "qcow2", "virtual-size": 67108864, "filename": "t.qcow2",
    "cluster-size": 65536, "format": "qcow2", "actual-size": 200704,
    "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "compression-type": "zlib",
      "lazy-refcounts": false, "refcount-bits": 16, "corrupt": false, "extended-l2": false}},
    "full-backing-filename": "b.qcow2", "backing-filename": "b.qcow2", "dirty-flag": false,
    "snapshots": [{"id": "1", "vm-clock-nsec": 0, "date-sec": -1, "ratio": 1.5e-3}]
  })";
  const qcow::ImageSummary info = qcow::ParseQemuImgInfo(text, "info");
  EXPECT_EQ(info.virtual_size, 67108864u);
  EXPECT_EQ(info.cluster_bits, 16u);
  EXPECT_EQ(info.format, "qcow2");
  EXPECT_EQ(qcow::ParseQemuImgInfo(R"({"virtual-size": 512, "format": "raw"})", "i").cluster_bits,
            std::nullopt);
  for (const char* bad : {"", "[]", R"({"format": "raw"})", R"({"virtual-size": -1})",
                          R"({"virtual-size": 512, "cluster-size": 1000})",
                          R"({"virtual-size": 512} x)", R"({"virtual-size": 512)"}) {
    EXPECT_THROW(qcow::ParseQemuImgInfo(bad, "info"), qcow::FormatError) << bad;
  }
  // Nesting deeper than any qemu-img output is refused, not recursed into.
  const std::string deep = R"({"virtual-size": 512, "x": )" + std::string(100000, '[');
  EXPECT_THROW(qcow::ParseQemuImgInfo(deep, "info"), qcow::FormatError);
}

TEST(ClusterHeaderJson, TakesIndicesInAnyOrderAndPairs) {
  // read_headers lists clusters in the order they sit in the file, not in guest order.
  auto h = qcow::ParseClusterHeader(
      R"({"virtual_size": 1000000, "cluster_bits": 16, "data_clusters": [3, 0, 1, 1, 15]})", "h");
  EXPECT_EQ(h.cluster_bits, 16u);
  EXPECT_EQ(h.data.size, 1000000u);
  // The last cluster is clipped at the virtual size.
  EXPECT_EQ(h.data.ranges, (Ranges{{0, 131072}, {196608, 65536}, {983040, 16960}}));
  h = qcow::ParseClusterHeader(
      R"({"data_clusters": [[4, 5], [0, 0], [1, 2]], "cluster_bits": 9, "virtual_size": 4096})",
      "h");
  EXPECT_EQ(h.data.ranges, (Ranges{{0, 1536}, {2048, 1024}}));
  h = qcow::ParseClusterHeader(R"({"virtual_size": 0, "cluster_bits": 21, "data_clusters": []})",
                               "h");
  EXPECT_TRUE(h.data.ranges.empty());
  // The clusters before the size, the last one partial.
  h = qcow::ParseClusterHeader(
      R"({"data_clusters": [2, [0, 0]], "cluster_bits": 16, "virtual_size": 131073})", "h");
  EXPECT_EQ(h.data.ranges, (Ranges{{0, 65536}, {131072, 1}}));
  // A size at the top of 64 bits does not wrap the cluster count.
  h = qcow::ParseClusterHeader(
      R"({"virtual_size": 18446744073709551615, "cluster_bits": 9, "data_clusters": [)"
      R"(36028797018963967]})",
      "h");
  EXPECT_EQ(h.data.ranges, (Ranges{{18446744073709551104u, 511}}));
}

TEST(ClusterHeaderJson, RefusesWhatItCannotTrust) {
  for (const char* bad : {
           R"({"virtual_size": 65536, "cluster_bits": 16})",
           R"({"virtual_size": 65536, "data_clusters": [0]})",
           R"({"cluster_bits": 16, "data_clusters": [0]})",
           R"({"virtual_size": 65536, "cluster_bits": 16, "data_clusters": [1]})",  // past end
           R"({"virtual_size": 65536, "cluster_bits": 8, "data_clusters": [0]})",
           R"({"virtual_size": 65536, "cluster_bits": 22, "data_clusters": [0]})",
           R"({"virtual_size": 65536, "cluster_bits": 16, "data_clusters": [-1]})",
           R"({"virtual_size": 65536, "cluster_bits": 16, "data_clusters": [[1, 0]]})",
           R"({"virtual_size": 65536, "cluster_bits": 16, "data_clusters": [[0, 0, 0]]})",
           R"({"virtual_size": 65536, "cluster_bits": 16, "data_clusters": [0.5]})",
           R"({"virtual_size": 65536, "cluster_bits": 16, "data_clusters": [0]}{})",
           // A key given twice.
           R"({"virtual_size": 65536, "cluster_bits": 16, "data_clusters": [0],
               "virtual_size": 131072})",
           R"({"virtual_size": 65536, "cluster_bits": 16, "data_clusters": [0],
               "data_clusters": [1]})",
           // Clusters before the size, still past the end; and ends that would wrap.
           R"({"data_clusters": [0, 2], "virtual_size": 131072, "cluster_bits": 16})",
           R"({"data_clusters": [[0, 18446744073709551615]], "virtual_size": 65536,
               "cluster_bits": 16})",
           R"({"virtual_size": 18446744073709551615, "cluster_bits": 9,
               "data_clusters": [36028797018963968]})",
       }) {
    EXPECT_THROW(qcow::ParseClusterHeader(bad, "h"), qcow::FormatError) << bad;
  }
}

// Returns a Pull that writes `pieces` texts made by `piece(i)` after `head` and before
// `tail`, without holding them all (millions of entries).
qcow::JsonText::Pull Generated(std::string head, uint64_t pieces,
                               std::function<std::string(uint64_t)> piece, std::string tail) {
  auto pending = std::make_shared<std::string>(std::move(head));
  auto next = std::make_shared<uint64_t>(0);
  return [=](char* buf, size_t n) -> size_t {
    while (pending->size() < n && *next <= pieces) {
      *pending += *next < pieces ? piece(*next) : tail;
      ++*next;
    }
    const size_t k = std::min(n, pending->size());
    std::copy(pending->begin(), pending->begin() + k, buf);
    pending->erase(0, k);
    return k;
  };
}

// Expects `r` to hold every cluster of `wanted` (a superset: an allocation coarsened within
// its bound), in at most kMaxDataRanges sorted ranges inside the disk.
void ExpectBoundedSuperset(const qcow::DataRanges& r, uint64_t clusters, uint64_t cluster_size) {
  EXPECT_LE(r.ranges.size(), qcow::kMaxDataRanges);
  EXPECT_LT(r.ranges.size(), clusters / 2);  // fewer than the data clusters: coarsened
  uint64_t end = 0;
  for (const auto& [offset, length] : r.ranges) {
    EXPECT_GE(offset, end);
    end = offset + length;
  }
  EXPECT_LE(end, r.size);
  // Every other cluster holds data: each must lie in a range.
  size_t at = 0;
  for (uint64_t c = 0; c < clusters; c += 2) {
    const uint64_t o = c * cluster_size;
    while (at < r.ranges.size() && r.ranges[at].first + r.ranges[at].second <= o) ++at;
    ASSERT_LT(at, r.ranges.size()) << "cluster " << c;
    ASSERT_LE(r.ranges[at].first, o) << "cluster " << c;
    ASSERT_GE(r.ranges[at].first + r.ranges[at].second, o + cluster_size) << "cluster " << c;
  }
}

// Allocations more fragmented than kMaxDataRanges ranges (every other 512-byte cluster)
// come out coarser but whole.
TEST(MapJson, AFragmentedAllocationIsCoarsenedNotCut) {
  const uint64_t clusters = 4 * qcow::kMaxDataRanges;
  const uint64_t size = clusters * 512;
  const qcow::DataRanges map = qcow::ParseQemuImgMap(
      Generated(
          "[", clusters,
          [](uint64_t i) {
            return std::string(i ? "," : "") + "{\"start\": " + std::to_string(i * 512) +
                   ", \"length\": 512, \"zero\": false, \"data\": " + (i % 2 ? "false" : "true") +
                   "}";
          },
          "]"),
      "map", size);
  EXPECT_EQ(map.size, size);
  ExpectBoundedSuperset(map, clusters, 512);
  const qcow::ClusterHeader header = qcow::ParseClusterHeader(
      Generated(
          "{\"virtual_size\": " + std::to_string(size) +
              ", \"cluster_bits\": 9, \"data_clusters\": [",
          clusters / 2,
          [](uint64_t i) { return std::string(i ? "," : "") + std::to_string(2 * i); }, "]}"),
      "header", size);
  EXPECT_EQ(header.data.size, size);
  ExpectBoundedSuperset(header.data, clusters, 512);
}

}  // namespace
