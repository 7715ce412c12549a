// The import decoder driven through the library (no FUSE): images made by qemu-img and
// qemu-io, fed in several orders, judged by qemu-img compare.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <regex>
#include <thread>

#include "image_recipes.h"
#include "qcow/format/byte_order.h"
#include "qcow/import/import_job.h"
#include "qcow/import/stream_decoder.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

enum class Order {
  kSequential,
  kOddChunks,
  kReverse,
  kShuffled,
  // Read in order from a descriptor as serve does: data runs moved straight into the target
  // (ImportJob::WriteFrom: copy_file_range from a file, splice from a socket), the rest read
  // and written (a pipe is read: see qcow/io/move_bytes.cc).
  kMovedFromFile,
  kMovedFromPipe,
  kMovedFromSocket,
};

// Feeds the image from a descriptor of the kind `order` names, sequentially, moving what
// the decoder lets move; returns Finish()'s result and sets *moved to the bytes moved.
int ImportMoving(const std::string& image, qcow::ImportJob& job, Order order, uint64_t* moved) {
  int fds[2] = {-1, -1};
  std::thread sender;
  if (order == Order::kMovedFromFile) {
    fds[0] = ::open(image.c_str(), O_RDONLY | O_CLOEXEC);
  } else {
    const int made = order == Order::kMovedFromPipe
                         ? ::pipe2(fds, O_CLOEXEC)
                         : ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
    EXPECT_EQ(made, 0);
    // A non-blocking reading end, as some callers hand serve: EAGAIN is waited on.
    ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    sender = std::thread([bytes = ReadFile(image), w = fds[1]] {
      for (size_t off = 0; off < bytes.size();) {
        const ssize_t n =
            ::write(w, bytes.data() + off, std::min<size_t>(bytes.size() - off, 300000));
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      ::close(w);
    });
  }
  EXPECT_GE(fds[0], 0);
  uint64_t h = 0;
  EXPECT_EQ(job.Begin(&h), 0);
  *moved = 0;
  int rc = FeedFromDescriptor(job, h, fds[0], moved);
  if (!rc) rc = job.Finish(h);
  ::close(fds[0]);
  if (sender.joinable()) sender.join();
  return rc;
}

// Feeds the image file to a new import in the given order; returns Finish()'s result.
int Import(const std::string& image, const std::string& target, Order order,
           std::string* status = nullptr, qcow::Spool::Limits spool = {},
           uint64_t chunk_size = 1 << 20) {
  qcow::RawTarget t(target, {});
  qcow::ImportJob job(t, {spool, nullptr});
  if (order >= Order::kMovedFromFile) {
    uint64_t moved = 0;
    const int rc = ImportMoving(image, job, order, &moved);
    if (status) *status = job.StatusText();
    return rc;
  }
  const auto bytes = ReadFile(image);
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
  static const char* kOrders[] = {"sequential",       "odd_chunks",      "reverse",
                                  "shuffled",         "moved_from_file", "moved_from_pipe",
                                  "moved_from_socket"};
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

// Every image in the four orders, and from one kind of descriptor, in turn (all three for
// each image tripled the suite's time under ASan for the same code paths).
std::vector<std::tuple<size_t, Order>> ImportCases() {
  std::vector<std::tuple<size_t, Order>> out;
  const Order kinds[] = {Order::kMovedFromFile, Order::kMovedFromPipe, Order::kMovedFromSocket};
  for (size_t i = 0; i < ValidImages().size(); ++i) {
    for (Order o : {Order::kSequential, Order::kOddChunks, Order::kReverse, Order::kShuffled}) {
      out.emplace_back(i, o);
    }
    out.emplace_back(i, kinds[i % 3]);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Images, ImportLibrary, ::testing::ValuesIn(ImportCases()), CaseName);

// The moves are taken: nearly all the data of an image qemu-img wrote (tables before their
// data) goes straight from a file or a socket into the target; a pipe is read.
TEST(ImportLibraryMoves, DataRunsMoveStraightIntoTheTarget) {
  TempDir dir;
  WriteAt(dir / "raw", 0, RandomBytes(6 << 20, 5));
  WriteAt(dir / "raw", 10 << 20, RandomBytes(2 << 20, 6));
  ASSERT_EQ(truncate((dir / "raw").c_str(), 16 << 20), 0);
  ASSERT_EQ(
      Sh("qemu-img convert -f raw -O qcow2 " + Quote(dir / "raw") + " " + Quote(dir / "img.qcow2"))
          .status,
      0);
  for (Order order : {Order::kMovedFromFile, Order::kMovedFromPipe, Order::kMovedFromSocket}) {
    MakePatternTarget(dir / "target", 16 << 20);
    qcow::RawTarget t(dir / "target", {});
    qcow::ImportJob job(t, {});
    uint64_t moved = 0;
    ASSERT_EQ(ImportMoving(dir / "img.qcow2", job, order, &moved), 0) << job.StatusText();
    if (order == Order::kMovedFromPipe) {
      EXPECT_EQ(moved, 0u);
    } else {
      EXPECT_GE(moved, 7u << 20) << static_cast<int>(order);
    }
    EXPECT_EQ(ReadFile(dir / "target"), ReadFile(dir / "raw")) << static_cast<int>(order);
  }
}

// A move stops at the end of the target: a target that is not whole sectors takes an image
// of its size rounded up only when the rest reads as zeros; here it does not, so the import
// is refused (EFBIG) and nothing is written past the target's end.
TEST(ImportLibraryMoves, NothingMovesPastTheEndOfTheTarget) {
  TempDir dir;
  WriteAt(dir / "raw", 0, RandomBytes((5 << 20) + 512, 7));
  ASSERT_EQ(
      Sh("qemu-img convert -f raw -O qcow2 " + Quote(dir / "raw") + " " + Quote(dir / "img.qcow2"))
          .status,
      0);
  const uint64_t small = (5 << 20) + 100;
  MakePatternTarget(dir / "target", small);
  qcow::RawTarget t(dir / "target", {});
  qcow::ImportJob job(t, {});
  uint64_t moved = 0;
  EXPECT_EQ(ImportMoving(dir / "img.qcow2", job, Order::kMovedFromFile, &moved), EFBIG)
      << job.StatusText();
  EXPECT_GT(moved, 0u);
  EXPECT_EQ(ReadFile(dir / "target").size(), small);
}

// Where nothing can move (compressed data, tables), ReadLength's probes double up to the
// caller's maximum, so a compressed image is read in large pieces, not 64 KiB ones; where a
// known run lies ahead, reads stop at it.
TEST(ImportLibraryMoves, ReadsGrowWhereNothingMovesAndStopAtKnownRuns) {
  TempDir dir;
  const auto& images = ValidImages();
  auto zlib = std::find_if(images.begin(), images.end(), [](const ImageRecipe& r) {
    return std::string(r.name) == "compressed_zlib";
  });
  ASSERT_NE(zlib, images.end());
  const auto bytes = ReadFile(BuildImage(dir, *zlib));
  ASSERT_GT(bytes.size(), 65536u);
  MakePatternTarget(dir / "target", 64 << 20);
  qcow::RawTarget target(dir / "target", {});
  qcow::StreamDecoder decoder(target, {});
  decoder.Feed(0, std::span(bytes).first(65536));
  std::vector<uint64_t> reads;
  for (int i = 0; i < 8; ++i) reads.push_back(decoder.ReadLength(65536, 4 << 20));
  EXPECT_EQ(reads, (std::vector<uint64_t>{64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20,
                                          2 << 20, 4 << 20, 4 << 20}));
  // A plain image: once its tables are in, a read ends where the first data run begins.
  const std::string plain = BuildImage(dir, images[0]);
  auto map = Sh("qemu-img map --output=json " + Quote(plain));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(map.output, m, std::regex("\"offset\": ([0-9]+)"))) << map.output;
  const uint64_t data = std::stoull(m[1]);
  const auto plain_bytes = ReadFile(plain);
  qcow::StreamDecoder plain_decoder(target, {});
  plain_decoder.Feed(0, std::span(plain_bytes).first(data));
  EXPECT_EQ(plain_decoder.ReadLength(data - 4096, 4 << 20), 4096u);
}

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
  ASSERT_EQ(Sh(Quote(QcowfsBinary()) + " stream --source " + Quote(dir / "raw") +
               " --destination " + Quote(dir / "export.qcow2"))
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

// An image that goes on past its active tree (internal snapshots, a persistent bitmap) is
// complete only once those parts have arrived too: a stream reader that stopped earlier
// would leave its sender's bytes unread and reset the connection.
TEST(ImportLibraryComplete, WaitsForSnapshotsAndBitmapsPastTheActiveTree) {
  TempDir dir;
  const std::vector<ImageRecipe> images = {
      {"snapshots",
       "qemu-img create -q -f qcow2 img.qcow2 1G && "
       "qemu-io -f qcow2 -c 'write -P 1 0 1M' img.qcow2 >/dev/null && "
       "qemu-img snapshot -c s0 img.qcow2 && "
       "qemu-io -f qcow2 -c 'write -P 3 700M 8M' img.qcow2 >/dev/null && "
       "qemu-img snapshot -c s1 img.qcow2 && qemu-img snapshot -a s0 img.qcow2"},
      {"bitmap",
       "qemu-img create -q -f qcow2 img.qcow2 64M && "
       "qemu-io -f qcow2 -c 'write -P 1 0 1M' img.qcow2 >/dev/null && "
       "qemu-img bitmap --add img.qcow2 b0 && "
       "qemu-io -f qcow2 -c 'write -P 2 2M 4M' img.qcow2 >/dev/null"},
  };
  for (const auto& recipe : images) {
    TempDir sub;
    const std::string image = BuildImage(sub, recipe);
    const auto bytes = ReadFile(image);
    MakePatternTarget(sub / "target", VirtualSize(image));
    qcow::RawTarget t(sub / "target", {});
    qcow::ImportJob job(t, {});
    uint64_t h = 0;
    ASSERT_EQ(job.Begin(&h), 0);
    const uint64_t chunk = 4096;
    uint64_t fed = 0;
    for (; fed < bytes.size(); fed += chunk) {
      const uint64_t n = std::min<uint64_t>(chunk, bytes.size() - fed);
      ASSERT_EQ(job.Write(h, fed, std::span(bytes).subspan(fed, n)), 0) << job.error();
      if (job.Complete(h)) break;
    }
    // The last cluster (64 KiB) may hold only a short tail of a table.
    EXPECT_GE(fed + (64 << 10), bytes.size())
        << recipe.name << ": complete after " << fed << " of " << bytes.size() << " bytes";
    ASSERT_EQ(job.Finish(h), 0) << job.error();
    auto cmp = Sh("qemu-img compare -f qcow2 -F raw " + Quote(image) + " " + Quote(sub / "target"));
    EXPECT_EQ(cmp.status, 0) << recipe.name << ": " << cmp.output;
  }
}

// A bitmap directory cut short: QEMU cannot open the image, so the import must fail.
TEST(ImportLibraryComplete, ImageCutInsideItsBitmapDirectoryIsTruncated) {
  TempDir dir;
  const std::string image =
      BuildImage(dir, {"bitmap",
                       "qemu-img create -q -f qcow2 img.qcow2 64M && "
                       "qemu-io -f qcow2 -c 'write -P 1 0 1M' img.qcow2 >/dev/null && "
                       "qemu-img bitmap --add img.qcow2 b0 && "
                       "qemu-io -f qcow2 -c 'write -P 2 2M 1M' img.qcow2 >/dev/null"});
  const auto bytes = ReadFile(image);
  WriteAt(dir / "cut.qcow2", 0, std::vector<uint8_t>(bytes.begin(), bytes.end() - 16));
  ASSERT_NE(
      Sh("qemu-img convert -O raw " + Quote(dir / "cut.qcow2") + " " + Quote(dir / "x.raw")).status,
      0)
      << "qemu-img reads the cut image: the premise of this test is gone";
  MakePatternTarget(dir / "target", VirtualSize(image));
  std::string status;
  EXPECT_NE(Import(dir / "cut.qcow2", dir / "target", Order::kSequential, &status), 0);
  EXPECT_NE(status.find("the bitmap directory"), std::string::npos) << status;
  EXPECT_NE(status.find("truncated"), std::string::npos) << status;
}

// Complete() waits for the last cluster that a refcount block counts as in use, even one
// nothing else names (here a cluster appended to the file and counted once: a leak that
// qemu-img check reports but reads past).
TEST(ImportLibraryComplete, WaitsForTheLastClusterTheRefcountsCount) {
  TempDir dir;
  const std::string image =
      BuildImage(dir, {"plain",
                       "qemu-img create -q -f qcow2 img.qcow2 64M && "
                       "qemu-io -f qcow2 -c 'write -P 1 0 1M' img.qcow2 >/dev/null"});
  auto bytes = ReadFile(image);
  const uint64_t c = 64 << 10;
  const uint64_t refcount_table = qcow::LoadBe64(&bytes[48]);
  const uint64_t block = qcow::LoadBe64(&bytes[refcount_table]);
  const uint64_t extra = (bytes.size() + c - 1) / c + 2;  // a gap, then the counted cluster
  bytes.resize((extra + 1) * c, 0x5a);
  qcow::StoreBe16(&bytes[block + 2 * extra], 1);
  WriteAt(dir / "leak.qcow2", 0, bytes);
  const auto check = Sh("qemu-img check " + Quote(dir / "leak.qcow2"));
  ASSERT_NE(check.output.find("leaked"), std::string::npos) << check.output;
  // Write sizes, the last one repeating, as a socket's reads may come: 4 KiB; a first write
  // that ends inside the refcount block, past the entry (the table is parsed when part of
  // the block is already in); the header alone, then a MiB holding the refcount table, its
  // block, L1 and L2 (the tree completes in the same write that completes the table).
  ASSERT_GT(block, refcount_table);
  ASSERT_LT(uint64_t{1} << 20, extra * c);
  const std::vector<std::vector<uint64_t>> ways = {
      {4096}, {block + 2 * extra + 4096, 4096}, {refcount_table + 4096, 1 << 20, 4096}};
  for (const auto& sizes : ways) {
    MakePatternTarget(dir / "target", 64 << 20);
    qcow::RawTarget t(dir / "target", {});
    qcow::ImportJob job(t, {});
    uint64_t h = 0;
    ASSERT_EQ(job.Begin(&h), 0);
    uint64_t fed = 0;  // bytes written so far
    for (size_t i = 0; fed < bytes.size(); ++i) {
      const uint64_t n = std::min(sizes[std::min(i, sizes.size() - 1)], bytes.size() - fed);
      ASSERT_EQ(job.Write(h, fed, std::span(bytes).subspan(fed, n)), 0) << job.error();
      fed += n;
      if (job.Complete(h)) break;
    }
    EXPECT_GT(fed, extra * c) << "first write " << sizes[0] << ": complete before the "
                              << "counted cluster at " << extra * c;
    ASSERT_EQ(job.Finish(h), 0) << job.error();
    auto cmp = Sh("qemu-img compare -f qcow2 -F raw " + Quote(dir / "leak.qcow2") + " " +
                  Quote(dir / "target"));
    EXPECT_EQ(cmp.status, 0) << cmp.output;
  }
}

// Without the input's size, progress has no total until the tables are known: a total
// taken from the few structures seen first would put the figure far ahead of the bytes.
TEST(ImportLibraryComplete, ProgressHasNoTotalUntilTheTablesAreKnown) {
  TempDir dir;
  const std::string image =
      BuildImage(dir, {"zlib",
                       "truncate -s 64M raw && head -c 8M /dev/urandom | base64 -w0 | "
                       "head -c 8M | dd of=raw bs=1M seek=8 conv=notrunc status=none && "
                       "qemu-img convert -c -f raw -O qcow2 raw img.qcow2"});
  const auto bytes = ReadFile(image);
  MakePatternTarget(dir / "target", 64 << 20);
  qcow::RawTarget t(dir / "target", {});
  qcow::ImportJob job(t, {});
  uint64_t h = 0, done = 0, total = 0;
  ASSERT_EQ(job.Begin(&h), 0);
  ASSERT_EQ(job.Write(h, 0, std::span(bytes).first(64 << 10)), 0) << job.error();
  job.Progress(&done, &total);
  EXPECT_EQ(total, 0u) << "header alone, " << done << " bytes received";
  ASSERT_EQ(job.Write(h, 64 << 10, std::span(bytes).subspan(64 << 10)), 0) << job.error();
  job.Progress(&done, &total);
  EXPECT_EQ(done, bytes.size());
  EXPECT_GE(total, done);
  ASSERT_EQ(job.Finish(h), 0) << job.error();
}
