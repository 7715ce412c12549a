#include "stop_trials.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "qcowfs_binary.h"

namespace qcowfs_test {
namespace {

using Clock = std::chrono::steady_clock;

// AddressSanitizer's start, and its leak check at exit, take a good part of a second on a
// loaded machine: for a sanitized binary the time limits stretch, and fewer runs do for its
// purpose (the same code paths under its eyes).
const double kSlowdown = QcowfsBinarySanitized() ? 3 : 1;
const int kFewer = QcowfsBinarySanitized() ? 4 : 1;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Whether pid's main() has blocked SIGTERM (the first thing qcowfs does).
bool BlocksStopSignals(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("SigBlk:", 0) == 0) {
      const unsigned long long mask = std::stoull(line.substr(7), nullptr, 16);
      return mask & (1ull << (SIGTERM - 1));
    }
  }
  return false;
}

// Forks and execs qcowfs with the run's descriptors; stderr goes to err_fd.
pid_t Start(const StopRun& run, int err_fd) {
  std::vector<std::string> words = {run.argv0};
  words.insert(words.end(), run.args.begin(), run.args.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  const std::string bin = QcowfsBinary();
  const pid_t pid = fork();
  if (pid != 0) return pid;
  // Only async-signal-safe calls here: the test has other threads.
  const int null = open("/dev/null", O_RDWR);
  dup2(run.in >= 0 ? run.in : null, 0);
  dup2(run.out >= 0 ? run.out : null, 1);
  dup2(err_fd, 2);
  if (run.extra_fd >= 0) dup2(run.extra_fd, 3);
  // dup2 onto the same number keeps close-on-exec: clear it on what the command inherits.
  for (int fd = 0; fd <= (run.extra_fd >= 0 ? 3 : 2); ++fd) fcntl(fd, F_SETFD, 0);
  close_range(run.extra_fd >= 0 ? 4 : 3, ~0u, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) signal(sig, SIG_DFL);
  for (int sig : run.ignored) signal(sig, SIG_IGN);
  execv(bin.c_str(), argv.data());
  _exit(127);
}

}  // namespace

size_t Runs(size_t n) { return n / kFewer; }

std::string SignalName(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "signal " + std::to_string(sig);
  }
}

std::pair<int, double> RandomStop(std::mt19937& rng, double max_seconds) {
  const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
  return {sigs[std::uniform_int_distribution<int>(0, 2)(rng)],
          std::uniform_real_distribution<double>(0, max_seconds)(rng)};
}

std::string StopOutcome::Describe() const {
  std::ostringstream o;
  o << (started ? "" : "never blocked the stop signals; ")
    << (ended_first ? "ended before the signal; " : "");
  if (!ended) {
    o << "still running " << seconds << " s after the signal (killed)";
  } else if (WIFSIGNALED(wait_status)) {
    o << "killed by " << SignalName(WTERMSIG(wait_status)) << " after " << seconds << " s";
  } else {
    o << "exit " << WEXITSTATUS(wait_status) << " after " << seconds << " s";
  }
  return o.str() + ", stderr: [" + err + "]";
}

StopOutcome RunAndStop(const StopRun& run) {
  StopOutcome o;
  int err[2];
  if (pipe2(err, O_CLOEXEC) != 0) return o;
  const pid_t pid = Start(run, err[1]);
  close(err[1]);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  auto drain = [&] {
    char buf[4096];
    ssize_t n;
    while ((n = read(err[0], buf, sizeof buf)) > 0) o.err.append(buf, static_cast<size_t>(n));
  };
  const auto start = Clock::now();
  while (!(o.started = BlocksStopSignals(pid)) && Since(start) < 10) usleep(1000);
  std::this_thread::sleep_for(std::chrono::duration<double>(run.delay));
  o.ended_first = waitpid(pid, &o.wait_status, WNOHANG) == pid;
  const auto signalled = Clock::now();
  if (!o.ended_first && run.sig) kill(pid, run.sig);
  o.ended = o.ended_first;
  while (!o.ended && Since(signalled) < run.limit * kSlowdown + (run.sig ? 0 : 60)) {
    drain();
    o.ended = waitpid(pid, &o.wait_status, WNOHANG) == pid;
    if (!o.ended) usleep(1000);
  }
  o.seconds = Since(signalled);
  if (!o.ended) {
    kill(pid, SIGKILL);
    waitpid(pid, &o.wait_status, 0);
  }
  // A mount daemon may hold stderr a moment longer, until it lets go of its caller's pipes.
  for (const auto drained = Clock::now(); Since(drained) < 2;) {
    pollfd p{err[0], POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char buf[4096];
      const ssize_t n = read(err[0], buf, sizeof buf);
      if (n <= 0) break;
      o.err.append(buf, static_cast<size_t>(n));
    }
  }
  close(err[0]);
  return o;
}

std::vector<StopOutcome> RunAllAndStop(const std::vector<StopRun>& runs, int parallel) {
  std::vector<StopOutcome> out(runs.size());
  std::atomic<size_t> next{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < parallel; ++t) {
    threads.emplace_back([&] {
      for (size_t i; (i = next++) < runs.size();) out[i] = RunAndStop(runs[i]);
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

bool ExpectStoppedCleanly(const StopRun& run, const StopOutcome& o, const std::string& prefix,
                          bool may_finish) {
  EXPECT_TRUE(o.started) << o.Describe();
  EXPECT_TRUE(o.ended) << o.Describe();
  EXPECT_TRUE(WIFEXITED(o.wait_status)) << o.Describe();
  if (!o.ended || !WIFEXITED(o.wait_status)) return false;
  if (WEXITSTATUS(o.wait_status) == 0) {
    EXPECT_TRUE(may_finish) << "a stopped run succeeded: " << o.Describe();
    EXPECT_EQ(o.err, "") << o.Describe();
    return false;
  }
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.Describe();
  EXPECT_TRUE(!o.err.empty() && o.err.back() == '\n') << o.Describe();
  EXPECT_EQ(o.err.rfind(prefix, 0), 0u) << "expected " << prefix << ": " << o.Describe();
  EXPECT_NE(o.err.find(SignalName(run.sig)), std::string::npos) << o.Describe();
  return true;
}

}  // namespace qcowfs_test
