#include "fuse/session.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "fuse/log.h"
#include "fuse/mount_table.h"
#include "fuse/session_stop.h"
#include "qcow/io/wait_io.h"

namespace qcowfs {
namespace {

// How long the parent waits for the daemon to answer on the new mount.
constexpr int kReadyTimeoutMs = 60'000;

void FuseLogToOurs(fuse_log_level level, const char* fmt, va_list ap) {
  char line[1024];
  vsnprintf(line, sizeof line, fmt, ap);
  size_t n = strlen(line);
  while (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
  Log(static_cast<int>(level), "%s", line);
}

// Raises the per-mount readahead (the bdi's read_ahead_kb), so that buffered readers send
// large requests. Only possible once FUSE_INIT is answered: the kernel lowers the value to
// what INIT negotiated.
void SetReadahead(dev_t dev, unsigned kb) {
  char path[96];
  snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb", major(dev), minor(dev));
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  std::string value = std::to_string(kb);
  if (fd < 0 || ::write(fd, value.data(), value.size()) < 0) {
    Log(LOG_WARNING, "cannot set %s to %u: %s (reads stay smaller)", path, kb, strerror(errno));
  }
  if (fd >= 0) ::close(fd);
}

void WriteAll(int fd, const std::string& s) {
  if (fd < 0) return;
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += n;
  }
}

void DetachStdio() {
  int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd < 0) return;
  ::dup2(null_fd, 0), ::dup2(null_fd, 1), ::dup2(null_fd, 2);
  ::close(null_fd);
}

struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};

// The device of the FUSE mount just made at mountpoint, read without touching it; 0 when it
// cannot be found.
dev_t MountDevice(const std::string& mountpoint) {
  const std::optional<MountEntry> top = TopMountAt(mountpoint);
  return top && top->fs_type.rfind("fuse", 0) == 0 ? top->dev : 0;
}

std::string SignalName(const StopWatch* watch) {
  return watch ? watch->SignalName(watch->signal()) : "a signal";
}

// Claims the process's final line and status through the stop watch, then logs the line.
// A success claimed after a stop signal came becomes that stop.
int LogFinalLine(StopWatch* watch, int priority, std::string line, int status,
                 const std::string& stopped_line) {
  if (watch) {
    ExitClaim claim = watch->Claim(status);
    if (claim == ExitClaim::kStopped) {
      status = 1;
      priority = LOG_ERR;
      line = stopped_line;
      claim = watch->Claim(status);
    }
    while (claim == ExitClaim::kWatcherEnds) ::pause();  // it logs and exits
  }
  Log(priority, "%s", line.c_str());
  return status;
}

// Runs the session in this process. `ready_fd` (or -1) receives "ok\n" once the mount
// answers, or an error line; it is closed after that.
int Serve(const fuse_lowlevel_ops& ops, void* userdata, const MountConfig& config, int ready_fd) {
  StopWatch* watch = config.stop;
  const int stop_fd = watch ? watch->fd() : -1;
  std::vector<std::string> argv_s = {"qcowfs"};
  if (!config.fsname.empty()) {
    argv_s.insert(argv_s.end(), {"-o", "fsname=" + config.fsname, "-o", "subtype=qcowfs"});
  }
  for (const auto& o : config.fuse_options) argv_s.insert(argv_s.end(), {"-o", o});
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  std::unique_ptr<fuse_session, SessionDeleter> se(
      fuse_session_new(&args, &ops, sizeof ops, userdata));
  fuse_opt_free_args(&args);  // libfuse may have copied argv while parsing
  if (!se) throw std::runtime_error("cannot start a FUSE session (bad -o option?)");
  // Stop signals are the watch's (blocked in every thread), not libfuse's handlers. A
  // parent gone from the ready pipe must not kill the daemon.
  std::signal(SIGPIPE, SIG_IGN);
  if (qcow::StopRequested(stop_fd)) {
    throw qcow::Interrupted("before mounting on " + config.mountpoint);
  }
  const bool mounted = fuse_session_mount(se.get(), config.mountpoint.c_str()) == 0;
  if (config.on_mounted) config.on_mounted();
  if (!mounted) throw std::runtime_error("cannot mount on " + config.mountpoint);
  const dev_t dev = MountDevice(config.mountpoint);
  // From here a stop signal aborts the connection and unmounts, whatever the loop is doing.
  SessionStopper stopper(se.get(), config.mountpoint, dev, stop_fd);

  // The mount is in place; it is usable once the loop answers FUSE_INIT. Probe it from a
  // helper thread, then report back.
  std::thread ready([&] {
    struct stat st;
    const bool answers = ::stat(config.mountpoint.c_str(), &st) == 0;
    const int err = errno;
    std::string report;
    if (watch && watch->signal()) {
      report = "the mount daemon was stopped by " + SignalName(watch) + " before the mount at " +
               config.mountpoint + " was ready";
    } else if (!answers) {
      report = "mount at " + config.mountpoint + " does not answer: " + strerror(err);
    } else if (dev != 0 && st.st_dev != dev) {  // the directory under it: it went away
      report = "the mount at " + config.mountpoint + " was unmounted before it answered";
    } else {
      if (config.readahead_kb) SetReadahead(st.st_dev, config.readahead_kb);
      Log(LOG_INFO, "serving %s at %s", config.fsname.c_str(), config.mountpoint.c_str());
      report = "ok";
    }
    WriteAll(ready_fd, report + "\n");
    if (ready_fd >= 0) ::close(ready_fd);
    // A daemon must not hold its caller's terminal or pipes open.
    if (!config.foreground) DetachStdio();
  });

  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, config.max_threads);
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  int rc = fuse_session_loop_mt(se.get(), cfg);
  fuse_loop_cfg_destroy(cfg);
  const bool stopped = stopper.Finish();
  // A loop that ended on an error leaves the connection up: end it, so that the probe is not
  // left waiting on it.
  if (ConnectionUp(se.get())) AbortMount(config.mountpoint, dev);
  ready.join();
  fuse_session_unmount(se.get());
  const int stop_rc = config.on_stop ? config.on_stop() : 0;
  const std::string stopped_line =
      "stopped by " + SignalName(watch) + "; unmounted " + config.mountpoint;
  if (stopped) return LogFinalLine(watch, LOG_ERR, stopped_line, 1, stopped_line);
  if (rc < 0) {
    return LogFinalLine(watch, LOG_ERR, std::string("session ended with error: ") + strerror(-rc),
                        1, stopped_line);
  }
  return LogFinalLine(watch, LOG_INFO, "unmounted " + config.mountpoint, stop_rc ? 1 : 0,
                      stopped_line);
}

// Waits for the daemon's one-line report: returns 0 for "ok", throws with the reason
// otherwise. A stop signal meanwhile, or a report that never comes, first stops the daemon,
// which unmounts: a failure leaves no mount behind.
int AwaitDaemon(int fd, pid_t pid, const MountConfig& config) {
  StopWatch* watch = config.stop;
  const std::string& mnt = config.mountpoint;
  std::string msg;
  char buf[512];
  for (;;) {
    const int r = qcow::WaitReady(fd, POLLIN, watch ? watch->fd() : -1, kReadyTimeoutMs);
    if (r < 0 && errno == ECANCELED) {
      ::close(fd);
      throw qcow::Interrupted("while mounting on " + mnt + "; " +
                              StopDaemon(pid, watch->signal(), mnt));
    }
    if (r == 0) {
      ::close(fd);
      throw std::runtime_error("timed out waiting for the mount at " + mnt + " to answer; " +
                               StopDaemon(pid, SIGTERM, mnt));
    }
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    msg.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (msg == "ok\n") {
    const ExitClaim claim = watch ? watch->Claim(0) : ExitClaim::kOk;
    if (claim == ExitClaim::kOk) return 0;
    while (claim == ExitClaim::kWatcherEnds) ::pause();  // it prints its line and exits
    // A stop signal came just before the report: undo the mount.
    throw qcow::Interrupted("as the mount on " + mnt + " became ready; " +
                            StopDaemon(pid, watch->signal(), mnt));
  }
  // The daemon failed, and ends: wait for it, so that nothing of it outlives this process.
  StopDaemon(pid, 0, mnt);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  if (msg.empty()) msg = "the mount daemon exited before the mount was ready";
  throw std::runtime_error(msg);
}

}  // namespace

int MountAndServe(const fuse_lowlevel_ops& ops, void* userdata, const MountConfig& config) {
  fuse_set_log_func(FuseLogToOurs);
  if (config.foreground) return Serve(ops, userdata, config, -1);
  StopWatch* watch = config.stop;
  if (watch && qcow::StopRequested(watch->fd())) {
    throw qcow::Interrupted("before mounting on " + config.mountpoint);
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + strerror(errno));
  if (pid > 0) {
    ::close(pipe_fds[1]);
    return AwaitDaemon(pipe_fds[0], pid, config);
  }
  // The daemon: only its report reaches the caller, everything else goes to syslog; own
  // session, no terminal, cwd "/" so it pins no directory.
  ::close(pipe_fds[0]);
  LogToSyslog();
  if (watch) watch->RestartAfterFork();  // threads do not survive fork
  ::setsid();
  if (::chdir("/") != 0) Log(LOG_WARNING, "cannot change directory to /: %s", strerror(errno));
  int rc = 1;
  try {
    rc = Serve(ops, userdata, config, pipe_fds[1]);
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (dynamic_cast<const qcow::Interrupted*>(&e)) {
      what = "the mount daemon was stopped by " + SignalName(watch) + " " + what;
    }
    WriteAll(pipe_fds[1], what + "\n");
    rc = LogFinalLine(watch, LOG_ERR, what, 1, what);
  }
  ::_exit(rc);
}

}  // namespace qcowfs
