// libFuzzer target: the JSON readers that take what xapi passes on pipes (qemu-img map and
// info --output=json, read_headers' cluster list), through their public functions. Any
// bytes in; ranges or a FormatError out, never a crash, an out-of-bounds read or an overflow
// (ASan/UBSan watch), and ranges that are in order and inside the size they describe.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "qcow/format/errors.h"
#include "qcow/sources/allocation_map.h"

#ifndef QCOWFS_FUZZ_ENTRY
#define QCOWFS_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

namespace {

void CheckRanges(const qcow::DataRanges& d) {
  uint64_t end = 0;
  for (const auto& [offset, length] : d.ranges) {
    if (offset < end || length > d.size || offset > d.size - length) __builtin_trap();
    end = offset + length;
  }
}

}  // namespace

extern "C" int QCOWFS_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  try {
    CheckRanges(qcow::ParseQemuImgMap(json, "map"));
  } catch (const qcow::FormatError&) {
  }
  try {
    (void)qcow::ParseQemuImgInfo(json, "info");
  } catch (const qcow::FormatError&) {
  }
  try {
    const qcow::ClusterHeader h = qcow::ParseClusterHeader(json, "header");
    if (h.cluster_bits < 9 || h.cluster_bits > 21) __builtin_trap();
    CheckRanges(h.data);
  } catch (const qcow::FormatError&) {
  }
  return 0;
}
