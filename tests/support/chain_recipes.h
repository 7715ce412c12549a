// qcow2 backing chains made by qemu-img/qemu-io for the chain export tests: every layer
// written with `write -P`, `write -z`, `discard` and `write -c`.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "test_util.h"

namespace qcowfs_test {

struct ChainRecipe {
  const char* name;
  // Shell commands run in the test's directory that leave the chain's top in "top.qcow2".
  std::string commands;
  // The layers below the top, as paths relative to the directory, top first (for deltas).
  std::vector<std::string> bases;
  // A directory (relative) that --path must name for the chain to be found ("" if none).
  std::string search_dir;
};

// Every chain shape the chains issue lists.
const std::vector<ChainRecipe>& ChainRecipes();
// Those with at least one layer below the top.
const std::vector<ChainRecipe>& LayeredChainRecipes();

// Builds recipe `r` in dir, with "reference.raw" (the top's guest content as qemu-img reads
// it) and "map.json" (qemu-img map --output=json of the top); returns the path of the top
// (fails the test on error).
std::string BuildChain(const TempDir& dir, const ChainRecipe& r);

// Returns the clusters of 2^bits bytes that `qemu-img map --output=json IMAGE` shows data
// in, as sorted (first, count) runs; with data_only, only entries that are not also zero.
std::vector<std::pair<uint64_t, uint64_t>> MappedClusters(const std::string& image, uint32_t bits,
                                                          bool data_only);
// The same, from the text qemu-img map printed, counting only entries of a depth below
// `below_depth` (and with present_only, only those a layer defines, data or zero).
std::vector<std::pair<uint64_t, uint64_t>> ClustersOfMap(const std::string& json, uint32_t bits,
                                                         bool data_only,
                                                         uint32_t below_depth = UINT32_MAX,
                                                         bool present_only = false);

}  // namespace qcowfs_test
