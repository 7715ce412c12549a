// Ending a FUSE session on a stop signal, for sure and at once. fuse_session_exit alone
// (what libfuse's own signal handlers do) leaves the workers blocked reading /dev/fuse, and
// a stat that waits for FUSE_INIT blocked for good; aborting the connection wakes them all.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <atomic>
#include <string>
#include <thread>

namespace qcowfs {

// Aborts the FUSE connection of the mount at `mountpoint` (its device `dev`, 0 when it
// could not be read), so that every request waiting on it fails and every worker reading /dev/fuse
// returns, and takes the mount out of the tree even with files open. Touches nothing under
// the mount. As root one umount2(MNT_FORCE | MNT_DETACH); otherwise the connection's abort
// file (when fusectl is mounted) and fusermount3 -u -z. Unmounts only a mount at
// `mountpoint` on device `dev`: never another one mounted there since.
void AbortMount(const std::string& mountpoint, dev_t dev);

// Returns whether the session's connection is still up (not unmounted, not aborted).
bool ConnectionUp(fuse_session* se);

// While it lives, watches stop_fd (-1: nothing to watch) from a thread and, once it is
// readable, exits the session and aborts its mount.
class SessionStopper {
 public:
  SessionStopper(fuse_session* se, const std::string& mountpoint, dev_t dev, int stop_fd);
  ~SessionStopper() { Finish(); }
  SessionStopper(const SessionStopper&) = delete;
  SessionStopper& operator=(const SessionStopper&) = delete;
  // Stops watching (the session is not touched from the thread after this); returns whether
  // a stop ended the session.
  bool Finish();

 private:
  void Run();
  fuse_session* se_;
  std::string mountpoint_;
  dev_t dev_;
  int stop_fd_;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stopped_{false};
  std::thread thread_;
};

// Passes `sig` (0: none, it is ending anyway) on to the mount daemon `pid` (a child of this
// process) and waits briefly for it to end; one that does not is killed, and its qcowfs mount at
// `mountpoint`, if any, detached (as root). Returns what happened, for a message ("the mount daemon
// stopped").
std::string StopDaemon(pid_t pid, int sig, const std::string& mountpoint);

}  // namespace qcowfs
