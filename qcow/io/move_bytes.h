// Moving bytes from an input descriptor into a file or block device at an offset without
// copying them through user space, where the kernel can and it pays: copy_file_range from
// a regular file, splice through a pipe of its own from a socket (or from a file the kernel
// cannot copy_file_range from onto this output). Pipes are left to read(2) (see Move).
#pragma once

#include <cstdint>

#include "qcow/io/unique_fd.h"

namespace qcow {

class ByteMover {
 public:
  // Move() returns it when the kernel cannot move bytes between these two descriptors;
  // nothing was taken from the input then.
  static constexpr int64_t kCannotMove = -2;
  // Which side a failure of Move() was on, for its message.
  enum class Side { kInput, kOutput, kEither };

  // Moves up to n bytes from `in` (at its file position, or what a pipe or socket holds) to
  // `out` at out_offset. Returns the bytes moved (> 0), 0 at the end of the input,
  // kCannotMove, or -1 with errno (EAGAIN: a non-blocking input has nothing now; else
  // failed_side() says where it failed; bytes may have been taken from the input then).
  int64_t Move(int in, int out, uint64_t out_offset, uint64_t n);
  Side failed_side() const { return failed_side_; }

 private:
  int64_t SpliceThrough(int in, int out, uint64_t out_offset, uint64_t n);

  bool copy_range_ok_ = true;  // copy_file_range worked, or was not tried yet
  UniqueFd pipe_[2];           // [read end, write end], made when first needed
  uint64_t pipe_bytes_ = 0;    // what the pipe holds
  Side failed_side_ = Side::kEither;
};

}  // namespace qcow
