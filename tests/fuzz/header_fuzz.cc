// libFuzzer target: the header parser. Any bytes in; a validated header or a FormatError
// out, never a crash, an out-of-bounds read or an overflow (ASan/UBSan watch).
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "qcow/format/errors.h"
#include "qcow/format/header.h"
#include "qcow/format/image_header.h"

#ifndef QCOWFS_FUZZ_ENTRY
#define QCOWFS_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int QCOWFS_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  (void)qcow::HeaderBytesNeeded(bytes);
  try {
    const qcow::QcowHeader h = qcow::DecodeHeader(bytes);
    (void)qcow::BackingFileName(h, bytes);
  } catch (const qcow::FormatError&) {
  }
  try {
    std::string warning;
    const qcow::ImageInfo info =
        qcow::ParseImageHeader(bytes, [&](const std::string& w) { warning = w; });
    // What the decoder relies on from a validated header.
    if (info.cluster_size < 512 || info.cluster_size > (2u << 20) || info.virtual_size % 512 != 0 ||
        info.l2_entries * info.l2_entry_size != info.cluster_size) {
      __builtin_trap();
    }
  } catch (const qcow::FormatError&) {
  }
  return 0;
}
