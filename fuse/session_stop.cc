#include "fuse/session_stop.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <optional>

#include "fuse/mount_table.h"

namespace qcowfs {
namespace {

// How long the parent gives the daemon to end after passing a stop signal on: it aborts its
// connection at once and normally ends within a few milliseconds.
constexpr int kDaemonStopMs = 300;

// fusermount3 -u -z MOUNTPOINT (a lazy unmount, for a user who is not root), run with the
// stop signals unblocked and at their default actions: the mask and dispositions of this
// process would otherwise pass through exec.
void FusermountUnmount(const std::string& mountpoint) {
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  const char* argv[] = {"fusermount3", "-u", "-q", "-z", "--", mountpoint.c_str(), nullptr};
  pid_t pid;
  if (posix_spawnp(&pid, "fusermount3", nullptr, &attr, const_cast<char* const*>(argv), environ) ==
      0) {
    ::waitpid(pid, nullptr, 0);
  }
  posix_spawnattr_destroy(&attr);
}

// Whether the mount on top at mountpoint is the one on device dev; taken for granted when
// that cannot be known (dev 0: no mount table to read it from, as in a chroot without /proc,
// where the mount was made a moment ago by this process).
bool IsOurMount(const std::string& mountpoint, dev_t dev) {
  if (dev == 0) return true;
  const std::optional<MountEntry> top = TopMountAt(mountpoint);
  return top && top->dev == dev;
}

}  // namespace

void AbortMount(const std::string& mountpoint, dev_t dev) {
  const bool ours = IsOurMount(mountpoint, dev);
  // MNT_FORCE has the kernel abort the FUSE connection (its umount_begin), MNT_DETACH
  // unmounts even with files open: one call, and no fusectl needed.
  if (ours && ::umount2(mountpoint.c_str(), MNT_FORCE | MNT_DETACH) == 0) return;
  // Not root: the connection's abort file, which its owner may write (when fusectl is
  // mounted), and fusermount3 for the unmount.
  if (dev != 0) {
    const std::string abort_file =
        "/sys/fs/fuse/connections/" + std::to_string(minor(dev)) + "/abort";
    const int fd = ::open(abort_file.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      [[maybe_unused]] const ssize_t n = ::write(fd, "1", 1);
      ::close(fd);
    }
  }
  if (ours) FusermountUnmount(mountpoint);
}

bool ConnectionUp(fuse_session* se) {
  // As libfuse's own unmount tests it: a connection that is gone polls as POLLERR.
  pollfd p{fuse_session_fd(se), 0, 0};
  return ::poll(&p, 1, 0) == 0 || !(p.revents & POLLERR);
}

SessionStopper::SessionStopper(fuse_session* se, const std::string& mountpoint, dev_t dev,
                               int stop_fd)
    : se_(se), mountpoint_(mountpoint), dev_(dev), stop_fd_(stop_fd) {
  if (stop_fd_ < 0 || ::pipe2(wake_, O_CLOEXEC) != 0) return;
  thread_ = std::thread([this] { Run(); });
}

void SessionStopper::Run() {
  pollfd p[2] = {{stop_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
  int r;
  do r = ::poll(p, 2, -1);
  while (r < 0 && errno == EINTR);
  if (r <= 0 || p[1].revents || !p[0].revents) return;
  fuse_session_exit(se_);
  AbortMount(mountpoint_, dev_);
  stopped_ = true;
}

bool SessionStopper::Finish() {
  if (thread_.joinable()) {
    [[maybe_unused]] const ssize_t n = ::write(wake_[1], "x", 1);
    thread_.join();
  }
  for (int& fd : wake_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  return stopped_;
}

std::string StopDaemon(pid_t pid, int sig, const std::string& mountpoint) {
  if (sig) ::kill(pid, sig);
  for (int waited = 0; waited < kDaemonStopMs; waited += 5) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return "the mount daemon stopped";
    ::usleep(5000);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  // Its connection ended with it, but its mount would stay, every access failing. This
  // process still holds the lock on the directory (cli/mount_command.cc), so a qcowfs mount
  // there is the daemon's.
  const std::optional<MountEntry> top = TopMountAt(mountpoint);
  if (top && top->fs_type == "fuse.qcowfs") ::umount2(mountpoint.c_str(), MNT_DETACH);
  return "the mount daemon did not stop in time and was killed";
}

}  // namespace qcowfs
