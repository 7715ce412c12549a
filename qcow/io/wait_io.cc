#include "qcow/io/wait_io.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

namespace qcow {

bool StopRequested(int stop_fd) {
  if (stop_fd < 0) return false;
  pollfd p{stop_fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

int WaitReady(int fd, short events, int stop_fd, int timeout_ms) {
  pollfd p[2] = {{fd, events, 0}, {stop_fd, POLLIN, 0}};
  const nfds_t n = stop_fd >= 0 ? 2 : 1;
  for (;;) {
    const int r = ::poll(p, n, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (n == 2 && p[1].revents) {
      errno = ECANCELED;
      return -1;
    }
    return r > 0 ? 1 : 0;
  }
}

namespace {

// Runs op (a read or a write) on fd, first waiting for `events` when there is a stop_fd to
// watch or a time limit, and again after each EAGAIN.
template <typename Op>
ssize_t Waiting(int fd, short events, int stop_fd, int timeout_ms, Op op) {
  bool wait = stop_fd >= 0 || timeout_ms >= 0;
  for (;;) {
    if (wait) {
      const int ready = WaitReady(fd, events, stop_fd, timeout_ms);
      if (ready < 0) return -1;
      if (ready == 0) {
        errno = ETIMEDOUT;
        return -1;
      }
    }
    const ssize_t r = op();
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    wait = true;
  }
}

}  // namespace

ssize_t ReadWaiting(int fd, void* buf, size_t n, int stop_fd, int timeout_ms) {
  return Waiting(fd, POLLIN, stop_fd, timeout_ms, [&] { return ::read(fd, buf, n); });
}

ssize_t WriteWaiting(int fd, const void* buf, size_t n, int stop_fd) {
  return Waiting(fd, POLLOUT, stop_fd, -1, [&] { return ::write(fd, buf, n); });
}

}  // namespace qcow
