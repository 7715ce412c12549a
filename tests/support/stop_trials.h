// Runs of the qcowfs binary stopped by a signal at a chosen moment, for the tests of what
// SIGTERM, SIGINT and SIGHUP do to each command (stop_signal_test.cc, stop_mount_test.cc).
#pragma once

#include <sys/types.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

namespace qcowfs_test {

// One run: the command line, its descriptors, the signal and when it is sent.
struct StopRun {
  std::string argv0 = "qcowfs";   // what the binary is called as (qcow2-to-stdout)
  std::vector<std::string> args;  // after argv0
  int in = -1, out = -1;          // stdin and stdout (-1: /dev/null)
  int extra_fd = -1;              // passed on as descriptor 3 (-1: none)
  std::vector<int> ignored;       // signals it starts with ignored (SIG_IGN), as under nohup
  int sig = 0;                    // 0: no signal, wait for it to end by itself
  double delay = 0;               // seconds between its start and the signal
  double limit = 1.0;             // seconds it has, from the signal, to end
};

// How a run ended.
struct StopOutcome {
  bool started = false;          // its main() blocked the stop signals (it counts from there)
  bool ended_first = false;      // it had exited before the signal was sent
  bool ended = false;            // it exited within the limit (else it was killed)
  double seconds = 0;            // from the signal to its exit
  int wait_status = 0;           // as waitpid gives it
  std::string err;               // all it wrote on stderr
  std::string Describe() const;  // for failure messages
};

// Starts the run with the given descriptors (stderr captured, nothing else inherited), waits
// until its main() has blocked the stop signals (a signal before that would meet the default
// action, as for any program), waits `delay`, sends `sig` and waits for the exit.
StopOutcome RunAndStop(const StopRun& run);

// RunAndStop for each run, `parallel` of them at a time; the outcomes in the same order.
std::vector<StopOutcome> RunAllAndStop(const std::vector<StopRun>& runs, int parallel);

// Returns how many runs to make of n (fewer in the slow sanitizer build).
size_t Runs(size_t n);

// The stop signal's name, "SIGTERM".
std::string SignalName(int sig);

// A random stop signal and a random delay in [0, max_seconds).
std::pair<int, double> RandomStop(std::mt19937& rng, double max_seconds);

// Checks that a stopped run ended in time by its own exit (not by the signal), and that it
// either failed with exactly one line on stderr that starts with `prefix` and names the
// signal, or (only when `may_finish`) had finished first: exit 0 and nothing on stderr.
// Returns whether it failed (was interrupted).
bool ExpectStoppedCleanly(const StopRun& run, const StopOutcome& o, const std::string& prefix,
                          bool may_finish);

}  // namespace qcowfs_test
