#include "qcow/export/export_reader.h"

#include <cstring>

namespace qcow {

void ResolveSegments(const std::vector<ExportSegment>& segments,
                     const std::vector<uint8_t>& scratch, const Source& source, uint8_t* out) {
  for (const auto& s : segments) {
    switch (s.kind) {
      case ExportSegment::Kind::kBytes:
        std::memcpy(out, scratch.data() + s.position, s.length);
        break;
      case ExportSegment::Kind::kSource:
        source.ReadAt(s.position, out, s.length);
        break;
      case ExportSegment::Kind::kZero:
        std::memset(out, 0, s.length);
        break;
    }
    out += s.length;
  }
}

uint64_t ExportReader::Read(uint64_t offset, uint8_t* out, uint64_t n) {
  const uint64_t total = layout_.Plan(offset, n, scratch_, segments_);
  ResolveSegments(segments_, scratch_, source_, out);
  return total;
}

}  // namespace qcow
