#include "fuse/session.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "fuse/log.h"

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

// Runs the session in this process. `ready_fd` (or -1) receives "ok\n" once the mount
// answers, or an error line; it is closed after that.
int Serve(const fuse_lowlevel_ops& ops, void* userdata, const MountConfig& config, int ready_fd) {
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
  if (fuse_set_signal_handlers(se.get()) != 0) {
    throw std::runtime_error("cannot install signal handlers");
  }
  const bool mounted = fuse_session_mount(se.get(), config.mountpoint.c_str()) == 0;
  if (config.on_mounted) config.on_mounted();
  if (!mounted) {
    fuse_remove_signal_handlers(se.get());
    throw std::runtime_error("cannot mount on " + config.mountpoint);
  }
  if (!config.foreground) LogToSyslog();

  // The mount is in place; it is usable once the loop answers FUSE_INIT. Probe it from a
  // helper thread, then report back.
  std::thread ready([&] {
    struct stat st;
    if (::stat(config.mountpoint.c_str(), &st) != 0) {
      WriteAll(ready_fd, std::string("mount at ") + config.mountpoint +
                             " does not answer: " + strerror(errno) + "\n");
    } else {
      if (config.readahead_kb) SetReadahead(st.st_dev, config.readahead_kb);
      Log(LOG_INFO, "serving %s at %s", config.fsname.c_str(), config.mountpoint.c_str());
      WriteAll(ready_fd, "ok\n");
    }
    if (ready_fd >= 0) ::close(ready_fd);
    // A daemon must not hold its caller's terminal or pipes open.
    if (!config.foreground) DetachStdio();
  });

  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, config.max_threads);
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  int rc = fuse_session_loop_mt(se.get(), cfg);
  fuse_loop_cfg_destroy(cfg);
  ready.join();
  fuse_session_unmount(se.get());
  fuse_remove_signal_handlers(se.get());
  const int stop_rc = config.on_stop ? config.on_stop() : 0;
  // A signal ends the loop with rc = 0 or the signal number; both are clean unmounts.
  if (rc < 0) {
    Log(LOG_ERR, "session ended with error: %s", strerror(-rc));
    return 1;
  }
  Log(LOG_INFO, "unmounted %s", config.mountpoint.c_str());
  return stop_rc ? 1 : 0;
}

// Reads the daemon's one-line report, waiting at most kReadyTimeoutMs.
std::string ReadReport(int fd) {
  std::string msg;
  char buf[512];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, kReadyTimeoutMs);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return "timed out waiting for the mount to answer";
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return msg;
    msg.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

int MountAndServe(const fuse_lowlevel_ops& ops, void* userdata, const MountConfig& config) {
  fuse_set_log_func(FuseLogToOurs);
  if (config.foreground) return Serve(ops, userdata, config, -1);

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + strerror(errno));
  if (pid > 0) {
    ::close(pipe_fds[1]);
    std::string msg = ReadReport(pipe_fds[0]);
    ::close(pipe_fds[0]);
    if (msg == "ok\n") return 0;
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    if (msg.empty()) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      msg = "the mount daemon exited before the mount was ready";
    }
    throw std::runtime_error(msg);
  }
  // The daemon: own session, no terminal, cwd "/" so it pins no directory.
  ::close(pipe_fds[0]);
  ::setsid();
  if (::chdir("/") != 0) Log(LOG_WARNING, "cannot change directory to /: %s", strerror(errno));
  int rc = 1;
  try {
    rc = Serve(ops, userdata, config, pipe_fds[1]);
  } catch (const std::exception& e) {
    WriteAll(pipe_fds[1], std::string(e.what()) + "\n");
    Log(LOG_ERR, "%s", e.what());
  }
  ::_exit(rc);
}

}  // namespace qcowfs
