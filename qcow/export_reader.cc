#include "qcow/export_reader.h"

#include <cstring>

namespace qcow {

uint64_t ExportReader::Read(uint64_t offset, uint8_t* out, uint64_t n) {
  const uint64_t total = layout_.Plan(offset, n, scratch_, segments_);
  for (const auto& s : segments_) {
    switch (s.kind) {
      case ExportSegment::Kind::kBytes:
        std::memcpy(out, scratch_.data() + s.position, s.length);
        break;
      case ExportSegment::Kind::kSource:
        source_.ReadAt(s.position, out, s.length);
        break;
      case ExportSegment::Kind::kZero:
        std::memset(out, 0, s.length);
        break;
    }
    out += s.length;
  }
  return total;
}

}  // namespace qcow
