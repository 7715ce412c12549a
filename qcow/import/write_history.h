// How the writer of an image wrote it, so that bytes it never wrote are read as holes only
// when the writer meant them as holes.
//
// Sparse copies (cp, dd conv=sparse) skip holes by writing past them, front to back, and
// set the file's size after their last write when the file ends in a hole. Preallocating
// downloaders set the size first and then fill the file; killed half way, they leave
// "holes" that are really bytes that never came. So: never-written bytes below the end of
// the file read as zeros only if every write started at or after the end of the one
// before, and no write came after the file was extended by a size change; otherwise they
// are missing.
#pragma once

#include <cstdint>

namespace qcow {

class WriteHistory {
 public:
  // Records a write of n bytes at offset.
  void Write(uint64_t offset, uint64_t n);
  // Records that the file's size was set. Returns false when this shrinks the file below
  // bytes already written (the caller refuses that).
  bool SetSize(uint64_t size);
  // Returns the end of the file: the highest byte written or the size last set.
  uint64_t file_end() const { return size_ > max_end_ ? size_ : max_end_; }
  // Returns the highest offset written + 1.
  uint64_t max_end() const { return max_end_; }
  // Returns whether never-written bytes below file_end() are holes (read as zeros).
  bool holes_are_zeros() const { return monotone_ && !wrote_after_extension_; }

 private:
  uint64_t last_end_ = 0;  // end of the previous write
  uint64_t max_end_ = 0;
  uint64_t size_ = 0;
  bool monotone_ = true;
  bool wrote_after_extension_ = false;
};

}  // namespace qcow
