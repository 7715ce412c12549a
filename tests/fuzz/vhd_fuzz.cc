// libFuzzer target: a VHD's metadata and extents. Any bytes in, as the whole file of a
// top layer (read through a memfd, as a file on disk is read); its footer, dynamic header,
// parent locators, BAT and sector bitmaps decoded, or a FormatError out, never a crash, an
// out-of-bounds read or an overflow (ASan/UBSan watch), and extents that stay in the file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "memfd_input.h"
#include "qcow/format/errors.h"
#include "qcow/sources/image_chain.h"
#include "qcow/sources/vhd_layer.h"

#ifndef QCOWFS_FUZZ_ENTRY
#define QCOWFS_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int QCOWFS_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  const int fd = MemfdInput("vhd", data, size);
  if (fd < 0) return 0;
  qcow::ChainOptions options;
  options.top_format = qcow::LayerFormat::kVhd;
  options.top_only = true;  // no parents: the fuzzer's paths name nothing
  try {
    const qcow::ImageChain chain =
        qcow::ImageChain::Open("/proc/self/fd/" + std::to_string(fd), options);
    const qcow::Layer& top = chain.layers().front();
    if (top.vhd->footer.disk_type == qcow::kVhdDifferencing) {
      (void)qcow::VhdParentCandidates(top, {"/nonexistent"});
    }
    uint64_t end = 0;
    for (const qcow::ChainExtent& e : qcow::LayerExtents(chain.layers(), 0)) {
      // In guest order, inside the disk, and data inside the file.
      if (e.guest < end || e.length == 0 || e.guest + e.length > top.virtual_size ||
          (e.kind == qcow::ChainExtent::Kind::kData && e.host + e.length > top.file_size)) {
        __builtin_trap();
      }
      end = e.guest + e.length;
    }
  } catch (const qcow::FormatError&) {
  } catch (const qcow::UsageError&) {
  }
  ::close(fd);
  return 0;
}
