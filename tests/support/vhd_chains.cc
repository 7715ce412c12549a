#include "vhd_chains.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <random>

#include "chain_recipes.h"

namespace qcowfs_test {

const std::vector<VhdChainCase>& VhdChainCases() {
  using F = VhdChainCase::Find;
  constexpr uint64_t kOdd = (24 << 20) + 3 * 512;  // not a multiple of a block or a cluster
  static const std::vector<VhdChainCase> cases = {
      {"depth1", 1, kOdd, 2 << 20, F::kLocators, 1},
      {"depth2", 2, kOdd, 2 << 20, F::kLocators, 2},
      {"depth5", 5, kOdd, 2 << 20, F::kLocators, 3},
      {"depth2_small_blocks", 2, 8 << 20, 64 << 10, F::kLocators, 4},
      {"depth2_subdir_macx", 2, kOdd, 2 << 20, F::kSubdir, 5},
      {"depth2_w2ku_only", 2, kOdd, 2 << 20, F::kW2kuOnly, 6},
      {"depth2_search_path", 2, kOdd, 2 << 20, F::kSearchPath, 7},
      {"depth2_lv_padding", 2, kOdd, 2 << 20, F::kLvPadding, 8},
      {"depth3_unpadded_bitmaps", 3, kOdd, 2 << 20, F::kLocators, 9, false},
  };
  return cases;
}

CommandResult JudgeVhd(const std::string& top, const std::string& out,
                       const std::string& search_dir) {
  return Sh("/usr/bin/python3 " + Quote(VHD_JUDGE) + " " + Quote(top) + " " + Quote(out) +
            (search_dir.empty() ? "" : " " + Quote(search_dir)));
}

namespace {

// Random writes at odd byte offsets and lengths, some spanning blocks.
void Scribble(VhdImage& image, std::mt19937_64& rng, int writes) {
  const uint64_t size = image.size();
  for (int i = 0; i < writes; ++i) {
    const uint64_t length = 1 + rng() % (i % 4 == 0 ? 300000 : 5000);
    const uint64_t offset = rng() % (size - length);
    image.Write(offset, RandomBytes(length, rng()));
  }
}

}  // namespace

VhdChain BuildVhdChain(const TempDir& dir, const VhdChainCase& c) {
  using F = VhdChainCase::Find;
  std::mt19937_64 rng(c.seed);
  // Where the layers below the top live, relative to dir, and how children name them.
  const std::string below = c.find == F::kSubdir       ? "parents"
                            : c.find == F::kSearchPath ? "store"
                                                       : "";
  if (!below.empty()) mkdir((dir / below).c_str(), 0755);
  std::vector<VhdImage> base_first;
  std::vector<std::string> files;  // base first
  base_first.push_back(VhdImage::Dynamic(c.size, c.block_size));
  Scribble(base_first.back(), rng, 30);
  if (c.libvhdi) PadForLibvhdi(base_first.back());
  files.push_back(below.empty() ? dir / "l0.vhd" : dir / below + "/l0.vhd");
  for (int i = 1; i <= c.depth; ++i) {
    const bool top = i == c.depth;
    const std::string parent = "l" + std::to_string(i - 1) + ".vhd";
    std::string named = parent;
    std::vector<VhdLocatorKind> kinds = {VhdLocatorKind::kMacX, VhdLocatorKind::kW2ru,
                                         VhdLocatorKind::kW2ku};
    if (c.find == F::kSubdir) {
      kinds = {VhdLocatorKind::kMacX};
      if (top) named = below + "/" + parent;
    } else if (c.find == F::kSearchPath) {
      named = "nowhere/" + parent;
    }
    VhdImage child = VhdImage::Differencing(base_first.back(), named, kinds, c.block_size);
    if (c.find == F::kW2kuOnly) child.SetLocators({{kVhdPlatformW2ku, "C:\\vms\\" + parent}});
    Scribble(child, rng, 20);
    if (c.libvhdi) PadForLibvhdi(child);
    base_first.push_back(std::move(child));
    const std::string name = "l" + std::to_string(i) + ".vhd";
    files.push_back(top || below.empty() ? dir / name : dir / below + "/" + name);
  }
  for (size_t i = 0; i < files.size(); ++i) base_first[i].Save(files[i]);
  VhdChain out;
  out.top = files.back();
  out.reference = dir / "reference.raw";
  if (!below.empty() && c.find == F::kSearchPath) out.path_option = " --path " + Quote(dir / below);
  if (c.libvhdi) {
    const auto judged = JudgeVhd(out.top, out.reference, below.empty() ? "" : dir / below);
    EXPECT_EQ(judged.status, 0) << judged.output;
    // The writer and libvhdi agree on what the chain reads, or the test's premise is wrong.
    EXPECT_TRUE(ReadFile(out.reference) == base_first.back().Expected())
        << "libvhdi and the test's writer disagree about " << out.top;
  } else {
    WriteAt(out.reference, 0, base_first.back().Expected());
  }
  if (c.find == F::kLvPadding) {
    VhdQuirks padded;
    padded.lv_padding = 3 << 20;
    for (size_t i = 0; i < files.size(); ++i) base_first[i].Save(files[i], padded);
  }
  for (size_t i = files.size(); i-- > 0;) {
    out.files.push_back(files[i]);
    out.layers.push_back(std::move(base_first[i]));
  }
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> VhdClusters(const std::vector<VhdImage>& layers,
                                                       size_t count, uint32_t bits) {
  const uint64_t size = layers.front().size();
  const uint64_t per_cluster = (uint64_t{1} << bits) / kVhdSectorSize;
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  for (uint64_t cluster = 0; cluster * per_cluster * kVhdSectorSize < size; ++cluster) {
    bool any = false;
    for (uint64_t s = cluster * per_cluster;
         !any && s < (cluster + 1) * per_cluster && s * kVhdSectorSize < size; ++s) {
      for (size_t l = 0; l < count && !any; ++l) {
        any = s * kVhdSectorSize < layers[l].size() && layers[l].SectorPresent(s);
      }
    }
    if (!any) continue;
    if (!runs.empty() && runs.back().first + runs.back().second == cluster) {
      ++runs.back().second;
    } else {
      runs.emplace_back(cluster, 1);
    }
  }
  return runs;
}

void ExpectExportsChain(const VhdChain& chain, const std::string& image, uint32_t bits) {
  const auto cmp = Sh("qemu-img compare -f raw -F qcow2 " + Quote(chain.reference) + " " +
                      Quote(image) + " && qemu-img check " + Quote(image));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
  EXPECT_EQ(MappedClusters(image, bits, true),
            VhdClusters(chain.layers, chain.layers.size(), bits));
}

std::string UuidString(const VhdUuid& id) {
  std::string out;
  char hex[3];
  for (size_t i = 0; i < id.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    std::snprintf(hex, sizeof hex, "%02x", id[i]);
    out += hex;
  }
  return out;
}

}  // namespace qcowfs_test
