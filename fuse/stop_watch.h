// What a mount needs of the process's watch for stop signals (SIGTERM, SIGINT, SIGHUP),
// which the command line implements (cli/stop_signals.h): the session polls a descriptor
// for a stop instead of handling signals itself.
#pragma once

namespace qcowfs {

// The outcome of claiming the process's final line and exit status.
enum class ExitClaim {
  kOk,           // print the line (if any) and exit with the status claimed
  kStopped,      // a stop signal came before this success was claimed: report the stop
  kWatcherEnds,  // the watch is printing its own line and ending the process: print nothing
};

class StopWatch {
 public:
  virtual ~StopWatch() = default;
  // Returns a descriptor that is readable once a stop signal arrived (and stays readable).
  virtual int fd() const = 0;
  // Returns that signal, or 0.
  virtual int signal() const = 0;
  // Returns the signal's name ("SIGTERM").
  virtual const char* SignalName(int sig) const = 0;
  // In a child of fork() (threads do not survive fork): watches again for this process, its
  // own final line going to the log.
  virtual void RestartAfterFork() = 0;
  // Claims the final line and exit status (0: success) for the caller.
  virtual ExitClaim Claim(int status) = 0;
};

}  // namespace qcowfs
