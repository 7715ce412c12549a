// Replays the fuzz targets' inputs as ordinary tests, under whatever compiler and sanitizers
// the build uses: every input that ever made a target fail (tests/fuzz/regressions/), and
// seeds made by qemu-img (tests/fuzz/make_corpus.sh). A target fails by trapping, or by
// ASan/UBSan reporting in the sanitizer build.
#include <dirent.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_util.h"

extern "C" int FuzzHeader(const uint8_t* data, size_t size);
extern "C" int FuzzDecoder(const uint8_t* data, size_t size);
extern "C" int FuzzVhd(const uint8_t* data, size_t size);
extern "C" int FuzzChain(const uint8_t* data, size_t size);
extern "C" int FuzzJson(const uint8_t* data, size_t size);

namespace {

using namespace qcowfs_test;

std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') out.push_back(dir + "/" + e->d_name);
    }
    closedir(d);
  }
  return out;
}

size_t Replay(const std::string& dir, int (*target)(const uint8_t*, size_t)) {
  const auto files = Files(dir);
  for (const auto& f : files) {
    SCOPED_TRACE(f);
    const auto bytes = ReadFile(f);
    EXPECT_EQ(target(bytes.data(), bytes.size()), 0);
  }
  return files.size();
}

TEST(FuzzRegressions, HeaderInputsThatOnceFailed) {
  EXPECT_GT(Replay(std::string(FUZZ_DIR) + "/regressions/header", FuzzHeader), 0u);
}

TEST(FuzzRegressions, DecoderInputsThatOnceFailed) {
  EXPECT_GT(Replay(std::string(FUZZ_DIR) + "/regressions/decoder", FuzzDecoder), 0u);
}

TEST(FuzzSeeds, QemuImgImagesAndTheirJsonPassTheQcow2AndJsonTargets) {
  TempDir dir;
  auto r = Sh(std::string(FUZZ_DIR) + "/make_corpus.sh " + Quote(dir.path()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_GT(Replay(dir / "header", FuzzHeader), 10u);
  EXPECT_GT(Replay(dir / "decoder", FuzzDecoder), 20u);
  EXPECT_GT(Replay(dir / "chain", FuzzChain), 10u);
  EXPECT_GT(Replay(dir / "json", FuzzJson), 20u);
}

TEST(FuzzSeeds, VhdSeedsAndQcow2ImagesPassTheVhdTarget) {
  TempDir dir;
  auto r = Sh(std::string(FUZZ_DIR) + "/make_corpus.sh " + Quote(dir.path()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_GE(Replay(dir / "vhd", FuzzVhd), 5u);
  EXPECT_GT(Replay(dir / "header", FuzzVhd), 10u);  // not VHDs: refused, no more
}

}  // namespace
