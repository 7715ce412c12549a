// Reads bytes of an exported image into memory: the planner's segments resolved against the
// source. Used by tests and by sequential writers that cannot splice.
#pragma once

#include <cstdint>
#include <vector>

#include "qcow/export/export_layout.h"
#include "qcow/export/source.h"

namespace qcow {

// Writes the bytes that `segments` (from ExportLayout::Plan with `scratch`) describe into
// out, reading source segments from `source`.
void ResolveSegments(const std::vector<ExportSegment>& segments,
                     const std::vector<uint8_t>& scratch, const Source& source, uint8_t* out);

class ExportReader {
 public:
  // Both must outlive the reader.
  ExportReader(const ExportLayout& layout, const Source& source)
      : layout_(layout), source_(source) {}

  // Reads up to n bytes at offset into out; returns the count (short only at the end of the
  // image). Throws std::system_error on source I/O errors.
  uint64_t Read(uint64_t offset, uint8_t* out, uint64_t n);

 private:
  const ExportLayout& layout_;
  const Source& source_;
  std::vector<uint8_t> scratch_;
  std::vector<ExportSegment> segments_;
};

}  // namespace qcow
