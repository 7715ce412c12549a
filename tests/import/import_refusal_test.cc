// Every refusal the import issue lists, through the library: each fails with the reason in
// the status, and those detectable from the header leave the target byte-for-byte as it was.
#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>

#include "bad_images.h"
#include "image_recipes.h"
#include "qcow/import/import_job.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

class ImportRefusal : public ::testing::TestWithParam<size_t> {};

TEST_P(ImportRefusal, FailsWithTheReasonAndLeavesHeaderLevelTargetsAlone) {
  const BadCase& c = BadImages()[GetParam()];
  TempDir dir;
  ImageRecipe recipe{c.name, c.commands};
  const std::string img = BuildImage(dir, recipe);
  const uint64_t size = c.target_size ? c.target_size : VirtualSize(img);
  if (c.patch) c.patch(img);
  MakePatternTarget(dir / "target", size);
  const auto before = ReadFile(dir / "target");

  const auto bytes = ReadFile(img);
  qcow::RawTarget target(dir / "target", {});
  qcow::ImportJob job(target, {});
  uint64_t h = 0;
  ASSERT_EQ(job.Begin(&h), 0);
  int rc = 0;
  for (uint64_t off = 0; off < bytes.size() && rc == 0; off += 1 << 20) {
    rc = job.Write(h, off,
                   std::span(bytes).subspan(off, std::min<size_t>(1 << 20, bytes.size() - off)));
  }
  if (rc == 0) rc = job.Finish(h);
  EXPECT_EQ(rc, c.err);
  EXPECT_EQ(job.Finish(h), c.err) << "a second Finish must report the same result";
  const std::string status = job.StatusText();
  EXPECT_NE(status.find("state: failed"), std::string::npos) << status;
  EXPECT_NE(status.find(c.says), std::string::npos) << status;
  if (c.header_level) {
    EXPECT_TRUE(ReadFile(dir / "target") == before) << "target was changed";
  }
}

INSTANTIATE_TEST_SUITE_P(BadImages, ImportRefusal, ::testing::Range<size_t>(0, BadImages().size()),
                         [](const auto& info) {
                           return std::string(BadImages()[info.param].name);
                         });

}  // namespace
