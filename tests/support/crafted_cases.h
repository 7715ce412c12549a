// The catalogue of crafted qcow2 images that crafted_import_test.cc feeds to the streaming
// decoder and judges by qemu-img: what a case is and expects, helpers the case builders
// share, and the case lists by topic (crafted_cases_*.cc).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "crafted_image.h"

namespace qcowfs_test::crafted {

// ---- Cases -------------------------------------------------------------------------------

enum class Check { kAny, kClean, kCorrupt };  // what `qemu-img check` is expected to say
enum class Convert { kAny, kOk, kFails };     // what `qemu-img convert` is expected to do
enum class Want { kRule, kImport, kRefuse };  // what the decoder must do beyond the rule

struct Built {
  std::vector<uint8_t> bytes;
  uint64_t virtual_size;  // as QEMU reads it (floored to 512)
};

struct Case {
  std::string name;
  std::function<Built()> build;
  Check check = Check::kAny;
  Convert convert = Convert::kAny;
  Want want = Want::kRule;
  uint64_t spool_memory = 0;     // 0: the decoder's default
  uint64_t max_peak_memory = 0;  // 0: no bound
  bool truncated = false;        // cut short: refusal overrides a clean check (ExpectRule)
};

// 4 KiB clusters: one L2 table maps 2 MiB, so a 4 MiB disk has two.
inline constexpr uint32_t k4K = 12;
inline constexpr uint64_t kC = 4096, kSpan = 2 << 20;

// Returns the image and its virtual size as QEMU reads it. Throws std::runtime_error when a
// refcount does not fit the width.
Built Done(const CraftedImage& im);
// Returns default options with these cluster bits and virtual size; throws nothing.
CraftedOptions Opt(uint32_t cluster_bits, uint64_t virtual_size);
// Returns compressed bytes of a compressible cluster of `size` bytes.
std::vector<uint8_t> Deflated(uint64_t size, uint64_t seed);

// Each returns one topic's cases in a fixed order; the builders run only when called.
// Shared clusters, aliased tables, refcounts that lie (crafted_cases_sharing.cc).
std::vector<Case> SharingCases();
std::vector<Case> RefcountCases();
// Hand-made zstd and deflate streams, and compressed data over other structures
// (crafted_cases_compressed.cc).
std::vector<Case> CompressionCases();
std::vector<Case> OverlapCases();
// Tables after their data, odd sizes, versions, cluster sizes, extended L2, header lengths
// (crafted_cases_layout.cc).
std::vector<Case> LayoutCases();
std::vector<Case> FormatCases();
// One valid image cut short at several points (crafted_cases_truncation.cc).
std::vector<Case> TruncationCases();
// Small random layouts, some with random pointers and cuts (crafted_cases_random.cc).
std::vector<Case> RandomCases();

// Returns every case, in the order the test instantiates them (collected once).
const std::vector<Case>& AllCases();

}  // namespace qcowfs_test::crafted
