#include "chain_recipes.h"

#include <gtest/gtest.h>

#include "qcow/export/cluster_map.h"

namespace qcowfs_test {
namespace {

// Writes in one layer: data, zeros over what is below, a discard, a compressed cluster.
std::string Io(const std::string& image, const std::string& commands) {
  return "qemu-io " + commands + " " + image + " >/dev/null";
}

std::string Create(const std::string& image, const std::string& size,
                   const std::string& backing = "", const std::string& backing_fmt = "qcow2",
                   const std::string& options = "") {
  std::string c = "qemu-img create -q -f qcow2";
  if (!options.empty()) c += " -o " + options;
  if (!backing.empty()) c += " -b " + backing + " -F " + backing_fmt;
  return c + " " + image + (size.empty() ? "" : " " + size);
}

std::vector<ChainRecipe> MakeRecipes() {
  const std::string base8 =
      Create("base.qcow2", "8M") + " && " +
      Io("base.qcow2", "-c 'write -P 1 0 3M' -c 'write -c -P 2 4M 128k' -c 'write -P 3 6M 1M'");
  std::string depth10 = Create("l0.qcow2", "8M") + " && " + Io("l0.qcow2", "-c 'write -P 10 0 8M'");
  for (int i = 1; i <= 9; ++i) {
    const std::string me = i == 9 ? "top.qcow2" : "l" + std::to_string(i) + ".qcow2";
    const std::string below = "l" + std::to_string(i - 1) + ".qcow2";
    const uint64_t at = uint64_t(i) * 768 * 1024;
    depth10 +=
        " && " + Create(me, "", below) + " && " +
        Io(me, "-c 'write -P " + std::to_string(i) + " " + std::to_string(at) + " 64k'" +
                   " -c 'write -z " + std::to_string(at + 131072) + " 4k'" + " -c 'discard " +
                   std::to_string(at + 262144) + " 64k'" + " -c 'write -c -P " +
                   std::to_string(20 + i) + " " + std::to_string(at + 393216) + " 64k'");
  }
  std::vector<std::string> depth10_bases;
  for (int i = 8; i >= 0; --i) depth10_bases.push_back("l" + std::to_string(i) + ".qcow2");
  return {
      {"depth1",
       Create("top.qcow2", "8M") + " && " +
           Io("top.qcow2",
              "-c 'write -P 1 0 1M' -c 'write -z 2M 64k' -c 'write -c -P 2 3M 64k' "
              "-c 'write -P 3 5M 100k'"),
       {},
       ""},
      {"depth2",
       base8 + " && " + Create("top.qcow2", "", "base.qcow2") + " && " +
           Io("top.qcow2",
              "-c 'write -z 64k 64k' -c 'discard 1M 128k' -c 'write -P 4 2M 4k' "
              "-c 'write -c -P 5 4M 64k' -c 'write -z 6M 4k'"),
       {"base.qcow2"},
       ""},
      {"depth10", depth10, depth10_bases, ""},
      {"raw_base",
       "truncate -s 8M base.raw && qemu-io -f raw -c 'write -P 7 1M 1M' -c 'write -P 8 5M 4k' "
       "base.raw >/dev/null && " +
           Create("top.qcow2", "", "base.raw", "raw") + " && " +
           Io("top.qcow2", "-c 'write -P 9 1536k 64k' -c 'write -z 5M 64k' -c 'write -P 6 7M 4k'"),
       {"base.raw"},
       ""},
      {"absolute_names",
       "mkdir -p sub && cd sub && " + base8 + " && cd .. && " +
           Create("top.qcow2", "", "\"$PWD/sub/base.qcow2\"") + " && " +
           Io("top.qcow2", "-c 'write -P 4 1M 64k' -c 'write -z 6M 512k'"),
       {"sub/base.qcow2"},
       ""},
      {"relative_to_each_layer",
       // mid lives in sub/ and names its base relative to sub/, not to where qcowfs runs.
       "mkdir -p sub && cd sub && " + base8 + " && " + Create("mid.qcow2", "", "base.qcow2") +
           " && " + Io("mid.qcow2", "-c 'write -P 5 2M 1M'") + " && cd .. && " +
           Create("top.qcow2", "", "sub/mid.qcow2") + " && " +
           Io("top.qcow2", "-c 'write -P 6 2560k 64k' -c 'discard 2M 64k'"),
       {"sub/mid.qcow2", "sub/base.qcow2"},
       ""},
      {"found_through_path",
       // The backing name points into a directory that is gone; --path finds the file.
       "mkdir -p gone elsewhere && cd gone && " + base8 + " && cd .. && " +
           Create("top.qcow2", "", "gone/base.qcow2") + " && " +
           Io("top.qcow2", "-c 'write -P 4 1M 64k'") +
           " && qemu-img convert -O raw top.qcow2 reference.raw"
           " && qemu-img map --output=json top.qcow2 > map.json"
           " && mv gone/base.qcow2 elsewhere/ && rmdir gone",
       {"elsewhere/base.qcow2"},
       "elsewhere"},
      {"deflate_and_zstd",
       Create("base.qcow2", "8M", "", "", "compression_type=zlib") + " && " +
           Io("base.qcow2", "-c 'write -c -P 1 0 1M' -c 'write -c -P 2 3M 64k'") + " && " +
           Create("top.qcow2", "", "base.qcow2", "qcow2", "compression_type=zstd") + " && " +
           Io("top.qcow2",
              "-c 'write -c -P 3 512k 128k' -c 'write -z 3M 64k' -c 'write -c -P 4 5M 64k'"),
       {"base.qcow2"},
       ""},
      {"extended_l2",
       base8 + " && " + Create("top.qcow2", "", "base.qcow2", "qcow2", "extended_l2=on") + " && " +
           Io("top.qcow2",
              "-c 'write -P 5 4k 2k' -c 'write -P 6 70k 6k' -c 'write -z 200k 4k' "
              "-c 'write -P 7 6M 2k' -c 'write -z 6146k 2k' -c 'write -P 8 7M 2k'"),
       {"base.qcow2"},
       ""},
      {"clusters_512",
       Create("base.qcow2", "4M", "", "", "cluster_size=512") + " && " +
           Io("base.qcow2", "-c 'write -P 1 0 1M' -c 'write -c -P 2 2M 64k'") + " && " +
           Create("top.qcow2", "", "base.qcow2", "qcow2", "cluster_size=512") + " && " +
           Io("top.qcow2", "-c 'write -P 3 1000 3000' -c 'write -z 512k 1536' -c 'discard 2M 512'"),
       {"base.qcow2"},
       ""},
      {"clusters_2m_under_512",
       Create("base.qcow2", "8M", "", "", "cluster_size=2M") + " && " +
           Io("base.qcow2", "-c 'write -P 1 0 3M' -c 'write -c -P 2 4M 2M'") + " && " +
           Create("top.qcow2", "", "base.qcow2", "qcow2", "cluster_size=512") + " && " +
           Io("top.qcow2",
              "-c 'write -P 3 1000 3000' -c 'write -z 1M 1536' -c 'write -P 4 5M 512'"),
       {"base.qcow2"},
       ""},
      {"top_larger",
       base8 + " && " + Create("top.qcow2", "20M", "base.qcow2") + " && " +
           Io("top.qcow2", "-c 'write -P 4 7M 2M' -c 'write -P 5 15M 64k'"),
       {"base.qcow2"},
       ""},
      {"top_smaller",
       base8 + " && " + Create("top.qcow2", "5M", "base.qcow2") + " && " +
           Io("top.qcow2", "-c 'write -P 4 64k 64k'"),
       {"base.qcow2"},
       ""},
      {"v2_layers",
       Create("base.qcow2", "8M", "", "", "compat=0.10") + " && " +
           Io("base.qcow2", "-c 'write -P 1 0 2M' -c 'write -c -P 2 3M 64k'") + " && " +
           Create("top.qcow2", "", "base.qcow2", "qcow2", "compat=0.10") + " && " +
           Io("top.qcow2", "-c 'write -P 3 1M 64k' -c 'write -z 1536k 64k'"),
       {"base.qcow2"},
       ""},
      {"preallocated_zero",
       // Preallocated clusters read as zeros; `write -z` over an allocated cluster keeps its
       // host cluster (a zero cluster with an offset).
       Create("top.qcow2", "8M", "", "", "preallocation=metadata") + " && " +
           Io("top.qcow2",
              "-c 'write -P 4 1M 64k' -c 'write -z 1M 32k' -c 'write -P 5 2M 128k' "
              "-c 'write -z 2M 64k'"),
       {},
       ""},
      {"preallocated_over_backing",
       base8 + " && " +
           Create("top.qcow2", "", "base.qcow2", "qcow2", "preallocation=metadata,extended_l2=on") +
           " && " +
           Io("top.qcow2", "-c 'write -P 4 1M 64k' -c 'write -z 1M 8k' -c 'write -z 6M 64k'"),
       {"base.qcow2"},
       ""},
  };
}

}  // namespace

const std::vector<ChainRecipe>& ChainRecipes() {
  static const std::vector<ChainRecipe> recipes = MakeRecipes();
  return recipes;
}

const std::vector<ChainRecipe>& LayeredChainRecipes() {
  static const std::vector<ChainRecipe> recipes = [] {
    std::vector<ChainRecipe> out;
    for (const auto& r : ChainRecipes()) {
      if (!r.bases.empty()) out.push_back(r);
    }
    return out;
  }();
  return recipes;
}

std::string BuildChain(const TempDir& dir, const ChainRecipe& r) {
  const auto built = Sh("cd " + Quote(dir.path()) + " && (" + r.commands +
                        ") && { test -f reference.raw || "
                        "qemu-img convert -O raw top.qcow2 reference.raw; } && "
                        "{ test -f map.json || qemu-img map --output=json top.qcow2 > map.json; }");
  EXPECT_EQ(built.status, 0) << r.name << ": " << built.output;
  return dir / "top.qcow2";
}

std::vector<std::pair<uint64_t, uint64_t>> MappedClusters(const std::string& image, uint32_t bits,
                                                          bool data_only) {
  const auto map = Sh("qemu-img map --output=json " + Quote(image));
  EXPECT_EQ(map.status, 0) << map.output;
  return ClustersOfMap(map.output, bits, data_only);
}

std::vector<std::pair<uint64_t, uint64_t>> ClustersOfMap(const std::string& json, uint32_t bits,
                                                         bool data_only, uint32_t below_depth,
                                                         bool present_only) {
  const auto start = JsonValues(json, "start"), length = JsonValues(json, "length"),
             depth = JsonValues(json, "depth"), present = JsonValues(json, "present"),
             zero = JsonValues(json, "zero"), data = JsonValues(json, "data");
  EXPECT_TRUE(length.size() == start.size() && depth.size() == start.size() &&
              present.size() == start.size() && zero.size() == start.size() &&
              data.size() == start.size())
      << json;
  qcow::ClusterMap::Builder b;
  for (size_t i = 0; i < std::min({start.size(), length.size(), depth.size(), present.size(),
                                   zero.size(), data.size()});
       ++i) {
    if (std::stoul(depth[i]) >= below_depth) continue;
    const bool is_data = data[i] == "true", is_zero = zero[i] == "true";
    if (present_only ? present[i] == "true" : is_data && !(data_only && is_zero)) {
      b.AddBytes(std::stoull(start[i]), std::stoull(length[i]), bits);
    }
  }
  const qcow::ClusterMap clusters = b.Build();
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& r : clusters.runs()) out.emplace_back(r.first, r.count);
  return out;
}

}  // namespace qcowfs_test
