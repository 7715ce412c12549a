#include "qcow/import/guest_writer.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace qcow {

GuestWriter::GuestWriter(ImageSink& sink, uint64_t virtual_size, uint64_t end,
                         bool keep_unallocated)
    : sink_(sink),
      virtual_size_(virtual_size),
      end_(std::min(end, virtual_size)),
      keep_unallocated_(keep_unallocated) {}

void GuestWriter::Write(uint64_t guest, const uint8_t* data, uint64_t n) {
  if (guest >= virtual_size_) return;
  n = std::min(n, virtual_size_ - guest);
  if (guest + n > end_) {
    const uint64_t keep = guest >= end_ ? 0 : end_ - guest;
    const uint8_t* past = std::find_if(data + keep, data + n, [](uint8_t b) { return b != 0; });
    if (past != data + n) {
      throw TooLargeError("the image holds data at guest byte " +
                          std::to_string(guest + (past - data)) + ", past the end of the target (" +
                          std::to_string(end_) + " bytes)");
    }
    n = keep;
    if (n == 0) return;
  }
  sink_.Write(guest, data, n);
  written_ += n;
}

int64_t GuestWriter::WriteFrom(uint64_t guest, int fd, uint64_t n, const std::string& from) {
  if (guest >= end_ || n > end_ - guest) {
    throw std::logic_error("a direct move past the end of the target");
  }
  const int64_t moved = sink_.WriteFrom(guest, fd, n, from);
  if (moved > 0) written_ += static_cast<uint64_t>(moved);
  return moved;
}

void GuestWriter::Zero(uint64_t guest, uint64_t n) {
  if (guest >= end_ || n == 0) return;
  n = std::min(n, end_ - guest);
  if (zero_length_ && zero_start_ + zero_length_ == guest) {
    zero_length_ += n;
    return;
  }
  Flush();
  zero_start_ = guest;
  zero_length_ = n;
}

void GuestWriter::Unallocated(uint64_t guest, uint64_t n) {
  // What the backing file holds there is on the target already.
  if (!keep_unallocated_) Zero(guest, n);
}

void GuestWriter::Read(uint64_t guest, uint8_t* out, uint64_t n) const {
  const uint64_t keep = guest >= end_ ? 0 : std::min(n, end_ - guest);
  if (keep) sink_.Read(guest, out, keep);
  std::fill(out + keep, out + n, uint8_t{0});
}

void GuestWriter::Flush() {
  if (zero_length_) sink_.Zero(zero_start_, zero_length_);
  zero_length_ = 0;
}

}  // namespace qcow
