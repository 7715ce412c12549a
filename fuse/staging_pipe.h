// A per-thread pipe that exported data is spliced into before it goes into a reply, so that
// a source read that fails or comes up short is seen here and answered with EIO. Handing
// libfuse the source fd directly loses that: libfuse turns a short splice into a short
// reply, which the kernel takes for the end of the file (a truncated image, read with
// success).
#pragma once

#include <cstdint>
#include <string>

namespace qcowfs {

class StagingPipe {
 public:
  StagingPipe() = default;
  ~StagingPipe();
  StagingPipe(const StagingPipe&) = delete;
  StagingPipe& operator=(const StagingPipe&) = delete;

  // Makes sure the pipe exists and holds at least `capacity` bytes; returns false when no
  // such pipe can be had (the caller copies instead).
  bool Ready(size_t capacity);
  // Moves exactly n bytes of fd at pos into the pipe. Returns false when the kernel cannot
  // splice from fd or the pipe is full (the caller resets the pipe and copies instead). Throws
  // std::system_error naming `name` when the source fails or ends before pos + n.
  bool Fill(int fd, uint64_t pos, uint64_t n, const std::string& name);
  // Returns whether the pipe is empty (everything put in was taken out).
  bool Empty() const;
  // Throws away whatever the pipe holds.
  void Reset();
  int read_fd() const { return fds_[0]; }

 private:
  int fds_[2] = {-1, -1};
  size_t capacity_ = 0;
};

}  // namespace qcowfs
