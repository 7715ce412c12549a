// Imports through a real FUSE mount: images made by qemu-img/qemu-io written into
// MOUNTPOINT/import.qcow2 with cat, cp and dd, targets judged by qemu-img compare.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "bad_images.h"
#include "image_recipes.h"
#include "mount_fixture.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

// How an image reaches import.qcow2.
const char* const kWriters[] = {
    "cat IMG > DST",
    "cp IMG DST",
    "dd if=IMG of=DST bs=1M status=none",
};

std::string WriteCommand(int writer, const std::string& img, const std::string& dst) {
  std::string cmd = kWriters[writer];
  cmd.replace(cmd.find("IMG"), 3, Quote(img));
  cmd.replace(cmd.find("DST"), 3, Quote(dst));
  return cmd;
}

std::string Status(const Mount& m) {
  auto b = ReadFile(m / "import.status");
  return std::string(b.begin(), b.end());
}

class FuseImport : public ::testing::TestWithParam<std::tuple<size_t, int>> {};

TEST_P(FuseImport, WriterGetsSuccessAndTargetEqualsImage) {
  const auto& recipe = ValidImages()[std::get<0>(GetParam())];
  const int writer = std::get<1>(GetParam());
  TempDir dir;
  const std::string img = BuildImage(dir, recipe);
  MakePatternTarget(dir / "target", VirtualSize(img));
  Mount m(dir / "mnt", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  EXPECT_NE(Status(m).find("state: idle"), std::string::npos);
  auto w = Sh(WriteCommand(writer, img, m / "import.qcow2"));
  EXPECT_EQ(w.status, 0) << w.output << Status(m);
  const std::string status = Status(m);
  EXPECT_NE(status.find("state: done"), std::string::npos) << status;
  EXPECT_NE(status.find("virtual-size: " + std::to_string(VirtualSize(img))), std::string::npos)
      << status;
  EXPECT_TRUE(m.Unmount());
  auto cmp = Sh("qemu-img compare -f qcow2 -F raw " + Quote(img) + " " + Quote(dir / "target"));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
}

std::string CaseName(const ::testing::TestParamInfo<std::tuple<size_t, int>>& info) {
  static const char* kNames[] = {"cat", "cp", "dd"};
  return std::string(ValidImages()[std::get<0>(info.param)].name) + "_" +
         kNames[std::get<1>(info.param)];
}

INSTANTIATE_TEST_SUITE_P(Images, FuseImport,
                         ::testing::Combine(::testing::Range<size_t>(0, ValidImages().size()),
                                            ::testing::Values(0, 1, 2)),
                         CaseName);

TEST(FuseImportTarget, LoopBlockDevice) {
  TempDir dir;
  const std::string img = BuildImage(dir, ValidImages()[0]);
  MakePatternTarget(dir / "disk", VirtualSize(img));
  LoopDevice loop(dir / "disk");
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  const std::string dev = loop.device();
  {
    Mount m(dir / "mnt", "--import " + Quote(dev));
    EXPECT_TRUE(m.ok()) << m.result().output;
    if (m.ok()) {
      auto w = Sh("cat " + Quote(img) + " > " + Quote(m / "import.qcow2"));
      EXPECT_EQ(w.status, 0) << w.output << Status(m);
    }
  }
  auto cmp = Sh("qemu-img compare -f qcow2 -F raw " + Quote(img) + " " + Quote(dev));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
}

TEST(FuseImportTarget, FourTibSparseImageIntoFourTibSparseTarget) {
  TempDir dir;
  ImageRecipe big{"4tib",
                  "qemu-img create -q -f qcow2 img.qcow2 4T && "
                  "qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x22 2T 64k' "
                  "-c 'write -P 0x33 4398045462528 1M' img.qcow2 >/dev/null"};
  const std::string img = BuildImage(dir, big);
  MakePatternTarget(dir / "target", 4ull << 40);
  Mount m(dir / "mnt", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  auto w = Sh("cat " + Quote(img) + " > " + Quote(m / "import.qcow2"));
  EXPECT_EQ(w.status, 0) << w.output << Status(m);
  EXPECT_TRUE(m.Unmount());
  auto cmp = Sh("qemu-img compare -f qcow2 -F raw " + Quote(img) + " " + Quote(dir / "target"));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
}

TEST(FuseImportTarget, PrezeroedSkipsZeroingAndTrustsTheTarget) {
  TempDir dir;
  const std::string img = BuildImage(dir, ValidImages()[0]);
  const uint64_t size = VirtualSize(img);
  // A target that really is zero: the import is equal.
  ASSERT_EQ(Sh("truncate -s " + std::to_string(size) + " " + Quote(dir / "zero")).status, 0);
  {
    Mount m(dir / "mnt", "--import " + Quote(dir / "zero") + " --prezeroed");
    ASSERT_TRUE(m.ok()) << m.result().output;
    EXPECT_EQ(Sh("cat " + Quote(img) + " > " + Quote(m / "import.qcow2")).status, 0);
  }
  EXPECT_EQ(Sh("qemu-img compare -f qcow2 -F raw " + Quote(img) + " " + Quote(dir / "zero")).status,
            0);
  // A patterned target keeps its pattern where the image has no data: nothing was zeroed.
  MakePatternTarget(dir / "pattern", size);
  {
    Mount m(dir / "mnt2", "--import " + Quote(dir / "pattern") + " --prezeroed");
    ASSERT_TRUE(m.ok()) << m.result().output;
    EXPECT_EQ(Sh("cat " + Quote(img) + " > " + Quote(m / "import.qcow2")).status, 0);
  }
  EXPECT_NE(
      Sh("qemu-img compare -f qcow2 -F raw " + Quote(img) + " " + Quote(dir / "pattern")).status,
      0);
}

TEST(FuseImportFiles, SecondWriterGetsEbusyAndReadingIsRefused) {
  TempDir dir;
  const std::string img = BuildImage(dir, ValidImages()[0]);
  MakePatternTarget(dir / "target", VirtualSize(img));
  Mount m(dir / "mnt", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  const auto bytes = ReadFile(img);
  int fd = open((m / "import.qcow2").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, bytes.data(), 4096), 4096);
  EXPECT_NE(Status(m).find("state: receiving"), std::string::npos) << Status(m);
  errno = 0;
  EXPECT_EQ(open((m / "import.qcow2").c_str(), O_WRONLY), -1);
  EXPECT_EQ(errno, EBUSY);
  errno = 0;
  EXPECT_EQ(open((m / "import.qcow2").c_str(), O_RDONLY), -1);
  EXPECT_EQ(errno, EACCES);
  // Writes at any offsets, out of order: the rest, back to front in 64 KiB pieces.
  for (uint64_t end = bytes.size(); end > 4096;) {
    const uint64_t lo = std::max<uint64_t>(4096, end > 65536 ? end - 65536 : 0);
    ASSERT_EQ(pwrite(fd, bytes.data() + lo, end - lo, lo), static_cast<ssize_t>(end - lo));
    end = lo;
  }
  EXPECT_EQ(close(fd), 0) << Status(m);
  EXPECT_NE(Status(m).find("state: done"), std::string::npos) << Status(m);
  EXPECT_TRUE(m.Unmount());
  EXPECT_EQ(
      Sh("qemu-img compare -f qcow2 -F raw " + Quote(img) + " " + Quote(dir / "target")).status, 0);
}

TEST(FuseImportFiles, BadImagesFailAtCloseWithTheReason) {
  TempDir dir;
  const std::string img = BuildImage(dir, ValidImages()[0]);
  const uint64_t size = VirtualSize(img);
  struct Bad {
    std::string name, make, says;
    bool target_unchanged;
  };
  const Bad bad[] = {
      {"magic", "cp IMG BAD && printf 'XXXX' | dd of=BAD conv=notrunc status=none", "magic is",
       true},
      {"truncated_header", "head -c 60 IMG > BAD", "inside its header", true},
      {"truncated_data", "head -c $(( $(stat -c %s IMG) - 70000 )) IMG > BAD",
       "the image is truncated", false},
      {"not_qcow2", "head -c 1M /dev/urandom > BAD", "magic is", true},
  };
  MakePatternTarget(dir / "target", size);
  Mount m(dir / "mnt", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  for (const auto& b : bad) {
    std::string make = b.make;
    for (size_t p; (p = make.find("IMG")) != std::string::npos;) make.replace(p, 3, Quote(img));
    for (size_t p; (p = make.find("BAD")) != std::string::npos;) {
      make.replace(p, 3, Quote(dir / "bad"));
    }
    ASSERT_EQ(Sh(make).status, 0) << b.name;
    MakePatternTarget(dir / "target", size);
    const auto before = ReadFile(dir / "target");
    auto w = Sh("cat " + Quote(dir / "bad") + " > " + Quote(m / "import.qcow2"));
    EXPECT_NE(w.status, 0) << b.name << " was accepted";
    EXPECT_NE(w.output.find("Input/output error"), std::string::npos) << w.output;
    const std::string status = Status(m);
    EXPECT_NE(status.find("state: failed"), std::string::npos) << b.name << ": " << status;
    EXPECT_NE(status.find(b.says), std::string::npos) << b.name << ": " << status;
    if (b.target_unchanged) {
      EXPECT_TRUE(ReadFile(dir / "target") == before) << b.name;
    }
  }
  // Larger than the target: EFBIG, and the target is untouched.
  ASSERT_EQ(truncate((dir / "target").c_str(), size / 2), 0);
  Mount small(dir / "mnt2", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(small.ok()) << small.result().output;
  const auto before = ReadFile(dir / "target");
  auto w = Sh("cat " + Quote(img) + " > " + Quote(small / "import.qcow2"));
  EXPECT_NE(w.output.find("File too large"), std::string::npos) << w.output;
  EXPECT_NE(Status(small).find("the target holds only"), std::string::npos) << Status(small);
  EXPECT_TRUE(ReadFile(dir / "target") == before);
}

TEST(FuseImportFiles, ExportAndImportInOneMountRoundTrip) {
  TempDir dir;
  WriteAt(dir / "src", 12345, RandomBytes(3 << 20, 1));
  WriteAt(dir / "src", 40 << 20, RandomBytes(100, 2));
  ASSERT_EQ(truncate((dir / "src").c_str(), 48 << 20), 0);
  MakePatternTarget(dir / "copy", 48 << 20);
  Mount m(dir / "mnt", "--export " + Quote(dir / "src") + " --import " + Quote(dir / "copy"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  EXPECT_EQ(Sh("ls " + Quote(m.path())).output, "disk.qcow2\nimport.qcow2\nimport.status\n");
  auto w = Sh("cat " + Quote(m / "disk.qcow2") + " > " + Quote(m / "import.qcow2"));
  EXPECT_EQ(w.status, 0) << w.output << Status(m);
  EXPECT_TRUE(m.Unmount());
  EXPECT_EQ(Sh("cmp " + Quote(dir / "src") + " " + Quote(dir / "copy")).status, 0);
}

}  // namespace

namespace {

// Every refusal through the mount: the writer's close fails, import.status says why, and
// images refused on their header leave the target as it was.
class FuseImportRefusal : public ::testing::TestWithParam<size_t> {};

TEST_P(FuseImportRefusal, CloseFailsWithTheReasonInTheStatus) {
  const BadCase& c = BadImages()[GetParam()];
  TempDir dir;
  const std::string img = BuildImage(dir, ImageRecipe{c.name, c.commands});
  const uint64_t size = c.target_size ? c.target_size : VirtualSize(img);
  if (c.patch) c.patch(img);
  MakePatternTarget(dir / "target", size);
  const auto before = ReadFile(dir / "target");
  Mount m(dir / "mnt", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  auto w = Sh("cat " + Quote(img) + " > " + Quote(m / "import.qcow2"));
  EXPECT_NE(w.status, 0) << "the writer was told the import worked";
  EXPECT_NE(w.output.find(c.err == EFBIG ? "File too large" : "Input/output error"),
            std::string::npos)
      << w.output;
  const std::string status = Status(m);
  EXPECT_NE(status.find("state: failed"), std::string::npos) << status;
  EXPECT_NE(status.find(c.says), std::string::npos) << status;
  EXPECT_TRUE(m.Unmount());
  if (c.header_level) {
    EXPECT_TRUE(ReadFile(dir / "target") == before) << "target was changed";
  }
}

INSTANTIATE_TEST_SUITE_P(BadImages, FuseImportRefusal,
                         ::testing::Range<size_t>(0, BadImages().size()), [](const auto& info) {
                           return std::string(BadImages()[info.param].name);
                         });

}  // namespace
