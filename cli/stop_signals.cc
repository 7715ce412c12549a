#include "cli/stop_signals.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <thread>

#include "cli/exit_codes.h"
#include "fuse/log.h"

namespace qcowfs {
namespace {

// How long a command has to end by itself after a stop signal, and then, once it has
// claimed its exit, to finish exiting, before the watcher ends the process.
constexpr int kGraceMs = 400;

// Who claimed the final line and exit status, the stop signal and the status, in one word so
// that a signal and a claim are ordered: bits 16-17 the owner, 8-15 the signal, 0-7 the status.
enum Owner : uint32_t { kNobody = 0, kCommand = 1, kWatcher = 2 };
std::atomic<uint32_t> state{0};

uint32_t OwnerOf(uint32_t s) { return s >> 16; }
int SignalOf(uint32_t s) { return static_cast<int>((s >> 8) & 0xff); }
int StatusOf(uint32_t s) { return static_cast<int>(s & 0xff); }

// Plain atomics only (no locks, no destructors): the watcher runs on while the process exits
// and may be copied mid-way by fork.
sigset_t watched;
std::atomic<bool> watching{false};
std::atomic<int> stop_fd{-1};
std::atomic<const char*> program{"qcowfs"};
std::atomic<const char*> note{nullptr};
std::atomic<bool> to_log{false};  // the watcher's own line goes to the log (a daemon)

const char* NameOf(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "a signal";
  }
}

// Records the first stop signal, unless the command has claimed its exit already (the
// signal then comes too late to change it). Returns whether it was recorded.
bool RecordSignal(int sig) {
  uint32_t s = state.load();
  for (;;) {
    if (OwnerOf(s) != kNobody || SignalOf(s) != 0) return false;
    if (state.compare_exchange_weak(s, s | static_cast<uint32_t>(sig & 0xff) << 8)) return true;
  }
}

// Waits ms milliseconds, taking (and so ignoring) any further stop signal meanwhile.
void WaitTakingSignals(int ms) {
  timespec now, end;
  clock_gettime(CLOCK_MONOTONIC, &end);
  end.tv_nsec += static_cast<long>(ms) * 1'000'000;
  end.tv_sec += end.tv_nsec / 1'000'000'000;
  end.tv_nsec %= 1'000'000'000;
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    timespec left{end.tv_sec - now.tv_sec, end.tv_nsec - now.tv_nsec};
    if (left.tv_nsec < 0) {
      left.tv_nsec += 1'000'000'000;
      --left.tv_sec;
    }
    if (left.tv_sec < 0) return;
    sigtimedwait(&watched, nullptr, &left);
  }
}

std::string StopMessage() {
  std::string m = InterruptedBySignal();
  if (const char* n = note.load()) m += std::string("; ") + n;
  return m;
}

// The watcher's own final line: on stderr with write(2), which takes no stdio lock that the
// blocked command might hold, or to the log.
void EmitOwnLine(const std::string& message) {
  if (to_log) {
    Log(LOG_ERR, "%s", message.c_str());
    return;
  }
  const std::string line = std::string(program.load()) + ": error: " + message + "\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
}

void Watch(int fd) {
  int sig;
  do sig = sigwaitinfo(&watched, nullptr);
  while (sig < 0);
  if (RecordSignal(sig)) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof one);
  }
  WaitTakingSignals(kGraceMs);
  uint32_t s = state.load();
  while (OwnerOf(s) == kNobody && !state.compare_exchange_weak(s, s | kWatcher << 16)) {
  }
  if (OwnerOf(s) == kNobody) {
    // The line itself may block (a full stderr pipe, a stuck syslog): end the process anyway.
    ::alarm(1);
    EmitOwnLine(StopMessage());
    ::_exit(kExitFailure);
  }
  // The command claimed its exit and is finishing it.
  WaitTakingSignals(kGraceMs);
  ::_exit(StatusOf(state.load()));
}

// Starts a watcher with a fresh stop descriptor; false when it cannot.
bool StartWatcher() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return false;
  try {
    std::thread(Watch, fd).detach();
  } catch (const std::exception&) {
    ::close(fd);
    return false;
  }
  stop_fd = fd;
  return true;
}

class ProcessWatch : public StopWatch {
 public:
  int fd() const override { return StopFd(); }
  int signal() const override { return StopSignal(); }
  const char* SignalName(int sig) const override { return NameOf(sig); }
  void RestartAfterFork() override {
    if (!watching) return;
    // The parent's state and descriptor are not this process's.
    state = 0;
    note = nullptr;
    to_log = true;
    if (const int old = stop_fd.exchange(-1); old >= 0) ::close(old);
    if (!StartWatcher()) {
      Log(LOG_WARNING, "cannot watch for stop signals: they end the daemon at once");
      pthread_sigmask(SIG_UNBLOCK, &watched, nullptr);
    }
  }
  ExitClaim Claim(int status) override { return ClaimExit(status); }
};

}  // namespace

void WatchStopSignals() {
  sigemptyset(&watched);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    struct sigaction old {};
    if (sigaction(sig, nullptr, &old) == 0 && old.sa_handler != SIG_IGN) sigaddset(&watched, sig);
  }
  pthread_sigmask(SIG_BLOCK, &watched, nullptr);
  if (StartWatcher()) {
    watching = true;
  } else {
    pthread_sigmask(SIG_UNBLOCK, &watched, nullptr);  // the default actions, rather than none
  }
}

void SetProgramName(const char* name) { program = name; }

int StopFd() { return stop_fd; }

int StopSignal() { return SignalOf(state.load()); }

std::string InterruptedBySignal() { return std::string("interrupted by ") + NameOf(StopSignal()); }

void SetInterruptNote(const char* text) { note = text; }

ExitClaim ClaimExit(int status) {
  uint32_t s = state.load();
  for (;;) {
    if (OwnerOf(s) == kWatcher) return ExitClaim::kWatcherEnds;
    if (status == 0 && OwnerOf(s) == kNobody && SignalOf(s) != 0) return ExitClaim::kStopped;
    const uint32_t claimed = kCommand << 16 | (s & 0xff00) | (static_cast<uint32_t>(status) & 0xff);
    if (state.compare_exchange_weak(s, claimed)) return ExitClaim::kOk;
  }
}

namespace {

// The message with its control characters written out (a newline as \n, ESC as \x1b): a name that
// holds a newline or an escape sequence keeps the error on one line and the terminal sane.
std::string OneLine(const std::string& message) {
  std::string out;
  for (const char c : message) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if ((u < 0x20 && c != '\t') || u == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", u);
      out += hex;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

void PrintFinalError(const std::string& message, int status) {
  if (ClaimExit(status) == ExitClaim::kOk) {
    std::fprintf(stderr, "%s: error: %s\n", program.load(), OneLine(message).c_str());
  }
}

int FinishMain(int status) {
  ExitClaim claim = ClaimExit(status);
  if (claim == ExitClaim::kStopped) {
    status = kExitFailure;
    claim = ClaimExit(status);
    if (claim == ExitClaim::kOk) {
      std::fprintf(stderr, "%s: error: %s\n", program.load(), StopMessage().c_str());
    }
  }
  while (claim == ExitClaim::kWatcherEnds) ::pause();
  return status;
}

StopWatch& ProcessStopWatch() {
  static ProcessWatch* watch = new ProcessWatch;  // never destroyed: the daemon's threads use it
  return *watch;
}

}  // namespace qcowfs
