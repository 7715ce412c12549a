// Disagreements the differential test found between qemu-img and a qcowfs reader, each
// reduced to a crafted image (tests/crafted_image.h) and judged by qemu-img.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <system_error>
#include <vector>

#include "crafted_image.h"
#include "qcow/sources/open_source.h"
#include "test_util.h"

namespace qcowfs_test {
namespace {

constexpr uint64_t kCluster = 64 << 10;

// Returns the bytes of guest cluster `index` as the chain reader reads them, or nothing when
// it refuses (an EIO, as the mount would answer).
std::optional<std::vector<uint8_t>> ChainCluster(const qcow::Source& source, uint64_t index) {
  std::vector<uint8_t> out(kCluster);
  try {
    source.ReadAt(index * kCluster, out.data(), out.size());
  } catch (const std::system_error&) {
    return std::nullopt;
  }
  return out;
}

// Two descriptors name compressed data at the same offset: cluster 0 the whole stream,
// cluster 1 only its first sector, too little to decompress a cluster from. QEMU reads
// each descriptor's own span, so cluster 1 is an I/O error whatever was read before; the
// chain reader once kept the last cluster it decompressed by the offset alone and returned
// cluster 0's bytes for cluster 1 when a thread had just read cluster 0 (differential seed
// deflate_64k, mutant 412: an L2 entry's offset moved onto another compressed cluster).
TEST(Disagreements, CompressedSpansAtOneOffsetAreEachDecompressedFromTheirOwnSectors) {
  TempDir dir;
  CraftedImage image({.cluster_bits = 16, .virtual_size = 4 * kCluster});
  std::vector<uint8_t> plain = RandomBytes(6000, 7);
  plain.resize(kCluster, 0);
  const CompressedSpan whole = image.PackCompressed(Deflate(plain));
  ASSERT_GE(whole.sectors, 3u) << "the stream must need more than the short span";
  image.MapCompressed(0, whole);
  image.MapCompressed(kCluster, {.offset = whole.offset, .sectors = 1});
  const std::string path = dir / "shared.qcow2";
  WriteAt(path, 0, image.Build());

  const auto convert =
      Sh("qemu-img convert -f qcow2 -O raw " + Quote(path) + " " + Quote(dir / "qemu.raw"));
  ASSERT_NE(convert.status, 0) << "qemu-img reads the short span: the test proves nothing";

  qcow::SourceOptions options;
  options.format = qcow::SourceFormat::kQcow2;
  const auto source = qcow::OpenSource(path, options);
  const auto first = ChainCluster(*source, 0);
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(std::equal(plain.begin(), plain.end(), first->begin()));
  // Right after cluster 0, on the same thread, and on its own from a fresh source.
  EXPECT_FALSE(ChainCluster(*source, 1).has_value());
  EXPECT_FALSE(ChainCluster(*qcow::OpenSource(path, options), 1).has_value());
}

}  // namespace
}  // namespace qcowfs_test
