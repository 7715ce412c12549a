// The import decoder driven through the library (no FUSE): images made by qemu-img and
// qemu-io, fed in several orders, judged by qemu-img compare.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "image_recipes.h"
#include "qcow/import/import_job.h"
#include "qcow/import/stream_decoder.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

enum class Order { kSequential, kOddChunks, kReverse, kShuffled };

// Feeds the image file to a new import in the given order; returns Finish()'s result.
int Import(const std::string& image, const std::string& target, Order order,
           std::string* status = nullptr, qcow::Spool::Limits spool = {},
           uint64_t chunk_size = 1 << 20) {
  const auto bytes = ReadFile(image);
  qcow::RawTarget t(target, {});
  qcow::ImportJob job(t, {spool, nullptr});
  uint64_t h = 0;
  EXPECT_EQ(job.Begin(&h), 0);
  const uint64_t chunk = order == Order::kOddChunks ? 65537 + 333 : chunk_size;
  std::vector<uint64_t> offsets;
  for (uint64_t off = 0; off < bytes.size(); off += chunk) offsets.push_back(off);
  if (order == Order::kReverse) std::reverse(offsets.begin(), offsets.end());
  if (order == Order::kShuffled) std::shuffle(offsets.begin(), offsets.end(), std::mt19937(42));
  int rc = 0;
  for (uint64_t off : offsets) {
    const uint64_t n = std::min<uint64_t>(chunk, bytes.size() - off);
    rc = job.Write(h, off, std::span(bytes).subspan(off, n));
    if (rc) break;
  }
  if (!rc) rc = job.Finish(h);
  if (status) *status = job.StatusText();
  return rc;
}

std::string CaseName(const ::testing::TestParamInfo<std::tuple<size_t, Order>>& info) {
  static const char* kOrders[] = {"sequential", "odd_chunks", "reverse", "shuffled"};
  return std::string(ValidImages()[std::get<0>(info.param)].name) + "_" +
         kOrders[static_cast<int>(std::get<1>(info.param))];
}

class ImportLibrary : public ::testing::TestWithParam<std::tuple<size_t, Order>> {};

TEST_P(ImportLibrary, DecodesIntoAPatternedTarget) {
  const auto& recipe = ValidImages()[std::get<0>(GetParam())];
  TempDir dir;
  const std::string image = BuildImage(dir, recipe);
  const uint64_t vsize = VirtualSize(image);
  MakePatternTarget(dir / "target", vsize);
  std::string status;
  ASSERT_EQ(Import(image, dir / "target", std::get<1>(GetParam()), &status), 0) << status;
  EXPECT_NE(status.find("state: done"), std::string::npos) << status;
  auto cmp = Sh("qemu-img compare -f qcow2 -F raw " + Quote(image) + " " + Quote(dir / "target"));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
}

INSTANTIATE_TEST_SUITE_P(Images, ImportLibrary,
                         ::testing::Combine(::testing::Range<size_t>(0, ValidImages().size()),
                                            ::testing::Values(Order::kSequential, Order::kOddChunks,
                                                              Order::kReverse, Order::kShuffled)),
                         CaseName);

TEST(ImportLibraryLimits, SpoolSpillsToAFileAndRefusesPastItsLimit) {
  TempDir dir;
  // Compressed data precedes its L2 tables, so reverse order in small pieces spools nearly
  // everything.
  const auto& images = ValidImages();
  auto sparse = std::find_if(images.begin(), images.end(), [](const ImageRecipe& r) {
    return std::string(r.name) == "compressed_sparse";
  });
  ASSERT_NE(sparse, images.end());
  const std::string image = BuildImage(dir, *sparse);
  MakePatternTarget(dir / "target", VirtualSize(image));
  qcow::Spool::Limits small{.memory = 64 << 10, .dir = dir.path(), .limit = 1ull << 30};
  std::string status;
  EXPECT_EQ(Import(image, dir / "target", Order::kReverse, &status, small, 4096), 0) << status;
  auto cmp = Sh("qemu-img compare -f qcow2 -F raw " + Quote(image) + " " + Quote(dir / "target"));
  EXPECT_EQ(cmp.status, 0) << cmp.output;

  qcow::Spool::Limits tiny{.memory = 4 << 10, .dir = dir.path(), .limit = 16 << 10};
  EXPECT_EQ(Import(image, dir / "target", Order::kReverse, &status, tiny, 4096), EIO);
  EXPECT_NE(status.find("spool limit"), std::string::npos) << status;
}

}  // namespace

namespace {

class DiscardSink : public qcow::ImageSink {
 public:
  void Write(uint64_t, const uint8_t*, uint64_t) override {}
  void Zero(uint64_t, uint64_t) override {}
  void Read(uint64_t, uint8_t*, uint64_t) override { throw std::logic_error("no data kept"); }
};

// Feeds the image in 64 KiB pieces, front to back or back to front; returns the most bytes
// the decoder ever spooled, and how many of the image's bytes are not guest data.
struct SpoolUse {
  uint64_t peak, metadata;
};
SpoolUse PeakSpool(const std::string& image, bool reverse = false) {
  const auto bytes = ReadFile(image);
  DiscardSink sink;
  qcow::StreamDecoder decoder(sink, {});
  const uint64_t chunk = 64 << 10, n = (bytes.size() + chunk - 1) / chunk;
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t off = (reverse ? n - 1 - i : i) * chunk;
    decoder.Feed(off, std::span(bytes).subspan(off, std::min<size_t>(chunk, bytes.size() - off)));
  }
  decoder.Finish();
  return {decoder.peak_spooled_bytes(), bytes.size() - decoder.guest_bytes_written()};
}

// Tables and other metadata wait in the spool until the whole tree is known (a data
// cluster may alias them); data that follows its table never does.
TEST(ImportLibrarySpool, MetadataFirstImagesSpoolOnlyMetadata) {
  TempDir dir;
  // qemu-img convert output: L2 tables precede their data.
  SpoolUse use = PeakSpool(BuildImage(dir, ValidImages()[0]));
  EXPECT_GT(use.peak, 0u);
  EXPECT_LE(use.peak, use.metadata);
  // qcowfs's own export layout (all metadata, then all data).
  WriteAt(dir / "raw", 5000, RandomBytes(3 << 20, 3));
  ASSERT_EQ(truncate((dir / "raw").c_str(), 64 << 20), 0);
  ASSERT_EQ(Sh(Quote(QCOWFS_BIN) + " stream --source " + Quote(dir / "raw") + " --destination " +
               Quote(dir / "export.qcow2"))
                .status,
            0);
  use = PeakSpool(dir / "export.qcow2");
  EXPECT_LE(use.peak, use.metadata);
  // Data that arrives before its tables does spool.
  TempDir dir2;
  const auto& images = ValidImages();
  auto sparse = std::find_if(images.begin(), images.end(), [](const ImageRecipe& r) {
    return std::string(r.name) == "compressed_sparse";
  });
  // (Its compressed clusters arrive before their 4 KiB L2 tables: far more than tables.)
  use = PeakSpool(BuildImage(dir2, *sparse), /*reverse=*/true);
  EXPECT_GT(use.peak, 128u << 10);
}

}  // namespace
