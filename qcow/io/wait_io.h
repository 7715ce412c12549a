// Reads and writes on pipes and sockets that may not be ready: descriptors a caller set
// O_NONBLOCK on (their open file description is shared with that caller, so their flags are
// never changed here) are waited on with poll(2), together with a "stop" descriptor that
// becomes readable when the caller is asked to stop (a signal).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <stdexcept>

namespace qcow {

// Work cut short on purpose: a stop descriptor became readable. what() says how far it got
// ("after 4194304 of 10551296 bytes of the image"); the caller names why it stopped.
class Interrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Returns whether stop_fd (-1: none) is readable now.
bool StopRequested(int stop_fd);

// Waits until fd is ready for `events` (POLLIN or POLLOUT; an error or hang-up counts as
// ready, so that the next read or write reports it) or stop_fd (-1: none) is readable, for
// at most timeout_ms (-1: no limit). Returns 1 when fd is ready, 0 on timeout, -1 with errno
// ECANCELED when stop_fd is readable (checked first) or with poll's errno.
int WaitReady(int fd, short events, int stop_fd, int timeout_ms = -1);

// read(2) that waits. With a stop_fd or a timeout it first waits for input, so that a stop
// is seen while a blocking descriptor has nothing to read; EAGAIN from a non-blocking one is
// waited on the same way; EINTR is retried. Returns read's count (0 at the end of input), or
// -1 with errno (ECANCELED: stop_fd became readable; ETIMEDOUT: no input came for
// timeout_ms, -1 meaning no limit).
ssize_t ReadWaiting(int fd, void* buf, size_t n, int stop_fd = -1, int timeout_ms = -1);

// write(2) that waits likewise for room. Past the wait, a blocking pipe or socket can still
// block inside the write until its reader makes room for all n bytes: a stop then needs a
// backstop (see cli/stop_signals.h).
ssize_t WriteWaiting(int fd, const void* buf, size_t n, int stop_fd = -1);

}  // namespace qcow
