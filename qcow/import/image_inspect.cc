#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <vector>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/import/image_check.h"
#include "qcow/io/file_io.h"

namespace qcow {
ImageReport InspectImage(const std::string& path) {
  ImageReport report;
  struct stat st;
  int fd = OpenDisk(path, 0, &st, &report.file_size);
  std::unique_ptr<int, void (*)(int*)> closer(&fd, [](int* f) { ::close(*f); });
  const uint64_t file_size = report.file_size;
  std::vector<uint8_t> c0(kV3MinHeaderLength);
  c0.resize(PreadUpTo(fd, path, 0, c0.data(), c0.size()));
  try {
    report.header = DecodeHeader(c0);
  } catch (const FormatError& e) {
    report.problem = e.what();
    return report;
  }
  const uint64_t need = HeaderBytesNeeded(c0);
  c0.resize(need);
  c0.resize(PreadUpTo(fd, path, 0, c0.data(), need));
  report.backing_file = BackingFileName(*report.header, c0);
  try {
    report.info = ParseImageHeader(c0, [&](const std::string& w) { report.warnings.push_back(w); });
    RefuseBackingFile(*report.info);
  } catch (const FormatError& e) {
    report.problem = e.what();
    return report;
  }
  const ImageInfo& in = *report.info;
  const uint64_t c = in.cluster_size, v = in.virtual_size;
  auto past_end = [&](const std::string& what, uint64_t off, uint64_t n) {
    if (off + n <= file_size) return false;
    report.problem = what + " at " + Hex(off) + " (" + std::to_string(n) +
                     " bytes) lies past the end of the file (" + std::to_string(file_size) +
                     " bytes): the image is truncated";
    return true;
  };
  const uint64_t l1_bytes = uint64_t{in.header.l1_size} * kTableEntrySize;
  if (l1_bytes == 0 || past_end("the L1 table", in.header.l1_table_offset, l1_bytes)) {
    return report;
  }
  std::vector<uint8_t> l1(l1_bytes), l2(c);
  PreadUpTo(fd, path, in.header.l1_table_offset, l1.data(), l1_bytes);
  const uint64_t span = c * in.l2_entries;
  const unsigned x = 62 - (in.header.cluster_bits - 8);
  for (uint64_t i = 0; i < in.header.l1_size && i * span < v; ++i) {
    const uint64_t l2_off = LoadBe64(&l1[i * kTableEntrySize]) & kL1OffsetMask;
    if (l2_off == 0) continue;
    if (past_end("the L2 table of L1 entry " + std::to_string(i), l2_off, c)) return report;
    PreadUpTo(fd, path, l2_off, l2.data(), c);
    for (uint64_t j = 0; j < in.l2_entries; ++j) {
      const uint64_t guest = i * span + j * c;
      if (guest >= v) break;
      const uint64_t n = std::min(c, v - guest);
      const uint64_t w0 = LoadBe64(&l2[j * in.l2_entry_size]);
      const std::string what = "data for guest offset " + std::to_string(guest);
      if (w0 & kOflagCompressed) {
        const uint64_t host = w0 & ((uint64_t{1} << x) - 1);
        // A compressed span may run past the end of the file; its start may not.
        if (past_end(what, host, 1)) return report;
        report.data_bytes += n;
        continue;
      }
      const uint64_t off = w0 & kL2OffsetMask;
      if (!in.extended_l2) {
        if (off == 0 || (w0 & kOflagZero)) continue;
        if (past_end(what, off, n)) return report;
        report.data_bytes += n;
        continue;
      }
      const uint32_t alloc = static_cast<uint32_t>(LoadBe64(&l2[j * 16 + 8]));
      const uint64_t sc = c / 32;
      for (unsigned k = 0; k < 32 && guest + k * sc < v; ++k) {
        if (!(alloc & (1u << k))) continue;
        if (past_end(what, off + k * sc, sc)) return report;
        report.data_bytes += std::min(sc, v - guest - k * sc);
      }
    }
  }
  return report;
}

}  // namespace qcow
