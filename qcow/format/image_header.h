// Validation of a qcow2 image's cluster 0 (header and header extensions) before anything
// is decoded: every refusal the header can show (QEMU's docs/interop/qcow2.txt gives the
// fields; README.md, "Importing an image", lists what qcowfs refuses and why).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "qcow/format/header.h"

namespace qcow {

// What the decoder needs from a validated header.
struct ImageInfo {
  QcowHeader header;
  uint64_t cluster_size = 0;
  uint64_t virtual_size = 0;  // header.size floored to 512, as QEMU reads it
  bool extended_l2 = false;
  uint32_t l2_entry_size = 8;  // 16 with extended L2
  uint64_t l2_entries = 0;     // entries per L2 table
  uint8_t compression_type = 0;
  bool dirty = false;
  std::vector<FeatureName> feature_names;  // from the image's feature name table
  // The bitmap directory, when the image has the bitmaps extension and its autoclear bit
  // (QEMU then validates the directory when it opens the image); 0 bytes otherwise.
  uint64_t bitmap_directory_offset = 0, bitmap_directory_size = 0;
  // The backing file as cluster 0 names it ("" for none) and its format from the backing
  // format extension ("" when the image does not say).
  std::string backing_file, backing_format;
};

// Returns the number of leading bytes ParseImageHeader needs: 104 to learn the cluster
// size, then the whole of cluster 0. `have` are the bytes known so far from offset 0.
uint64_t HeaderBytesNeeded(std::span<const uint8_t> have);

// Returns the backing file name that cluster 0 (or its first bytes, `head`) holds, or ""
// when the header names none or names one outside those bytes or longer than 1023 bytes
// (offsets are checked without overflow: they come from the image).
std::string BackingFileName(const QcowHeader& header, std::span<const uint8_t> head);

// Parses and validates cluster 0 (at least HeaderBytesNeeded() bytes): everything that
// keeps qcowfs from reading the image's own clusters is refused (encryption, an external
// data file, the corrupt bit, unknown incompatible features); a backing file is not, the
// caller decides. Throws FormatError naming the field, its value and what is allowed.
// Warnings (dirty bit) go to `warn`.
ImageInfo ParseImageHeader(std::span<const uint8_t> cluster0,
                           const std::function<void(const std::string&)>& warn);

// Throws FormatError when the image has a backing file: an import of it alone would not be
// the disk it describes.
void RefuseBackingFile(const ImageInfo& info);

}  // namespace qcow
