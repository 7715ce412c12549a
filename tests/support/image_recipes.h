// qcow2 images made by qemu-img/qemu-io for the import tests, and targets pre-filled with
// a non-zero pattern so that zeroing is proven.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "test_util.h"

namespace qcowfs_test {

struct ImageRecipe {
  const char* name;
  // Shell commands run in the test's directory that leave the image in "img.qcow2"
  // ("raw" and other scratch names are free to use).
  std::string commands;
  // Optional edit of img.qcow2 after the commands.
  std::function<void(const std::string&)> after = nullptr;
};

// Every valid layout the import issue lists.
const std::vector<ImageRecipe>& ValidImages();

// Builds recipe `r` in dir; returns the image path (fails the test on error).
std::string BuildImage(const TempDir& dir, const ImageRecipe& r);

// Returns the image's virtual size from qemu-img info.
uint64_t VirtualSize(const std::string& image);

// Creates `path` of `size` bytes filled with a non-zero pattern (sparse beyond 64 MiB,
// with pattern blocks spread over it).
void MakePatternTarget(const std::string& path, uint64_t size);

// Expects `target`, made by MakePatternTarget before an import that leaves unallocated
// ranges as they are (stream_decode), to hold the image's bytes wherever the image (which
// has no backing file) allocates data or zero clusters, as qemu-img map reports them
// ("present"), and the pattern everywhere else. `dir` holds the scratch files.
void ExpectAppliedOntoPattern(const TempDir& dir, const std::string& image,
                              const std::string& target);

}  // namespace qcowfs_test
