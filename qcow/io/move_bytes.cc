#include "qcow/io/move_bytes.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "qcow/io/file_io.h"

namespace qcow {
namespace {

// The most one call moves: bounded so that a caller sees progress (and stop requests)
// between calls.
constexpr uint64_t kMaxMove = 1u << 30;

bool CannotMove(int err) {
  return err == EINVAL || err == EXDEV || err == EOPNOTSUPP || err == ENOSYS || err == EBADF;
}

}  // namespace

int64_t ByteMover::Move(int in, int out, uint64_t out_offset, uint64_t n) {
  n = std::min(n, kMaxMove);
  if (n == 0) return 0;
  struct stat st;
  if (::fstat(in, &st) != 0) {
    failed_side_ = Side::kInput;
    return -1;
  }
  loff_t off = static_cast<loff_t>(out_offset);
  if (S_ISREG(st.st_mode) && copy_range_ok_) {
    for (;;) {
      const ssize_t r = ::copy_file_range(in, nullptr, out, &off, n, 0);
      if (r >= 0) return r;
      if (errno == EINTR) continue;
      if (CannotMove(errno)) {
        copy_range_ok_ = false;  // a file system pair it cannot serve: splice from now on
        break;
      }
      failed_side_ = Side::kEither;
      return -1;
    }
  }
  // A pipe is read instead: splicing from one into a file measured slower than read and
  // pwrite here (cat | serve onto tmpfs, 1 GiB: best 0.48 s against 0.39 s), where a socket
  // spliced through our pipe was faster (0.49 s against 0.52 s, a fifth less CPU).
  if (!S_ISREG(st.st_mode) && !S_ISSOCK(st.st_mode)) return kCannotMove;
  return SpliceThrough(in, out, out_offset, n);
}

// Input -> own pipe -> output. The pipe is empty between calls: what went in goes out, or
// the call fails.
int64_t ByteMover::SpliceThrough(int in, int out, uint64_t out_offset, uint64_t n) {
  if (pipe_[0].get() < 0) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      failed_side_ = Side::kOutput;
      return -1;
    }
    pipe_[0].Reset(fds[0]);
    pipe_[1].Reset(fds[1]);
    WidenPipe(fds[1]);
    const int size = ::fcntl(fds[1], F_GETPIPE_SZ);
    pipe_bytes_ = size > 0 ? static_cast<uint64_t>(size) : 65536;
  }
  ssize_t got;
  for (;;) {
    // Non-blocking on the pipe's side only: the pipe is empty, so it never waits for room.
    got = ::splice(in, nullptr, pipe_[1].get(), nullptr, std::min(n, pipe_bytes_),
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (got >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return -1;
    if (CannotMove(errno)) return kCannotMove;
    failed_side_ = Side::kInput;
    return -1;
  }
  loff_t off = static_cast<loff_t>(out_offset);
  for (ssize_t left = got; left > 0;) {
    const ssize_t w = ::splice(pipe_[0].get(), nullptr, out, &off, left, SPLICE_F_MOVE);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (w == 0) errno = EIO;
      // What is left in the pipe is lost to the output: a fresh pipe next time.
      const int err = errno;
      pipe_[0].Reset();
      pipe_[1].Reset();
      errno = err;
      failed_side_ = Side::kOutput;
      return -1;
    }
    left -= w;
  }
  return got;
}

}  // namespace qcow
