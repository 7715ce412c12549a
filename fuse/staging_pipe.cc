#include "fuse/staging_pipe.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace qcowfs {

StagingPipe::~StagingPipe() { Reset(); }

void StagingPipe::Reset() {
  for (int& fd : fds_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  capacity_ = 0;
}

bool StagingPipe::Ready(size_t capacity) {
  if (fds_[0] >= 0 && capacity_ >= capacity) return true;
  Reset();
  if (::pipe2(fds_, O_CLOEXEC) != 0) return false;
  const int got = ::fcntl(fds_[0], F_SETPIPE_SZ, static_cast<int>(capacity));
  if (got < 0 || static_cast<size_t>(got) < capacity) {
    Reset();
    return false;
  }
  capacity_ = static_cast<size_t>(got);
  return true;
}

bool StagingPipe::Fill(int fd, uint64_t pos, uint64_t n, const std::string& name) {
  const uint64_t end = pos + n;
  while (pos < end) {
    loff_t off = static_cast<loff_t>(pos);
    // Non-blocking on the pipe side: a pipe that is somehow too small gives EAGAIN (and a
    // copy instead), never a thread stuck on a pipe nobody reads.
    const ssize_t r =
        ::splice(fd, &off, fds_[1], nullptr, end - pos, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (r < 0 && errno == EINTR) continue;
    // No splice from this fd, or no room: the caller resets the pipe and copies.
    if (r < 0 && (errno == EINVAL || errno == EAGAIN)) return false;
    if (r < 0) {
      throw std::system_error(errno, std::generic_category(),
                              "reading " + name + " at offset " + std::to_string(pos));
    }
    if (r == 0) {
      throw std::system_error(EIO, std::generic_category(),
                              name + " ends at offset " + std::to_string(pos) +
                                  ", inside the data exported from it: it shrank while exported");
    }
    pos += static_cast<uint64_t>(r);
  }
  return true;
}

bool StagingPipe::Empty() const {
  int pending = 0;
  return fds_[0] < 0 || (::ioctl(fds_[0], FIONREAD, &pending) == 0 && pending == 0);
}

}  // namespace qcowfs
