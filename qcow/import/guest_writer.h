// The decoder's last stage: what the image says of each guest range goes to the sink. Data
// is written, zero ranges are coalesced into one Zero call per run, ranges the image leaves
// unallocated are zeroed or left as the target has them. Nothing passes the disk's virtual
// size; past the end of a target that is not whole sectors, only zeros may go (they are
// dropped), anything else is refused.
#pragma once

#include <cstdint>
#include <string>

#include "qcow/format/errors.h"
#include "qcow/io/move_bytes.h"

namespace qcow {

// Where decoded guest data goes. Offsets are always inside [0, virtual size).
class ImageSink {
 public:
  virtual ~ImageSink() = default;
  // Writes n guest bytes at guest_offset.
  virtual void Write(uint64_t guest_offset, const uint8_t* data, uint64_t n) = 0;
  // Moves up to n guest bytes for guest_offset straight from descriptor fd, which `from`
  // names for messages, as ByteMover::Move does (bytes moved, 0 at the end of input, -1 with
  // errno EAGAIN), or returns ByteMover::kCannotMove, taking nothing from fd, where it
  // cannot. Throws std::system_error for other failures.
  virtual int64_t WriteFrom(uint64_t /*guest_offset*/, int /*fd*/, uint64_t /*n*/,
                            const std::string& /*from*/) {
    return ByteMover::kCannotMove;
  }
  // Makes [guest_offset, guest_offset + n) read as zeros.
  virtual void Zero(uint64_t guest_offset, uint64_t n) = 0;
  // Reads back n guest bytes that Write stored earlier (for a cluster the image shares).
  virtual void Read(uint64_t guest_offset, uint8_t* out, uint64_t n) = 0;
};

// The image's virtual size is larger than the target (callers map this to EFBIG).
class TooLargeError : public FormatError {
 public:
  using FormatError::FormatError;
};

class GuestWriter {
 public:
  // end: where guest bytes stop reaching the target: the virtual size, or the end of a
  // target that is not whole sectors, for an image whose size was that rounded up (only
  // zeros may lie past it).
  // keep_unallocated: unallocated ranges are left as the target has them (a delta, or
  // xapi's importer), else zeroed.
  GuestWriter(ImageSink& sink, uint64_t virtual_size, uint64_t end, bool keep_unallocated);

  // Writes n guest bytes. Throws TooLargeError when a non-zero byte lies past end().
  void Write(uint64_t guest, const uint8_t* data, uint64_t n);
  // Moves up to n guest bytes straight from fd (see ImageSink::WriteFrom); the range must lie
  // below end().
  int64_t WriteFrom(uint64_t guest, int fd, uint64_t n, const std::string& from);
  // Makes [guest, guest + n) read as zeros (coalesced with the zero range just before).
  void Zero(uint64_t guest, uint64_t n);
  // A range the image leaves unallocated.
  void Unallocated(uint64_t guest, uint64_t n);
  // Reads back guest bytes written earlier (zeros past end()).
  void Read(uint64_t guest, uint8_t* out, uint64_t n) const;
  // Emits the zero range still held back.
  void Flush();

  uint64_t end() const { return end_; }
  uint64_t bytes_written() const { return written_; }

 private:
  ImageSink& sink_;
  const uint64_t virtual_size_, end_;
  const bool keep_unallocated_;
  uint64_t written_ = 0;
  uint64_t zero_start_ = 0, zero_length_ = 0;  // coalesced zero range not yet emitted
};

}  // namespace qcow
