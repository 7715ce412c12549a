// SIGTERM, SIGINT and SIGHUP for every command, without racing flags: main() blocks them
// before any other thread exists (threads inherit the mask) and a watcher thread takes them
// with sigwaitinfo. A command sees a stop through StopFd(), which it polls together with its
// input or output, and ends with its own message. A command that has not ended a grace
// period after the signal (a write blocked on a full pipe, a long fsync, work that polls
// nothing) is ended by the watcher, which prints the final line itself and exits 1. Exactly
// one final line is printed either way: whoever prints it claims the exit first.
#pragma once

#include <string>

#include "fuse/stop_watch.h"

namespace qcowfs {

// Blocks the stop signals in the calling thread, which must be the process's only thread,
// and starts the watcher. A stop signal the process was started with ignored (SIGHUP under
// nohup, SIGINT in a script's background job) stays ignored.
void WatchStopSignals();

// Sets the name that starts the watcher's line: "qcowfs" (the default) or "qcow2-to-stdout".
void SetProgramName(const char* program);

// Returns a descriptor that becomes readable once a stop signal arrived and stays readable
// (-1 without a watcher).
int StopFd();

// Returns the stop signal that arrived, or 0.
int StopSignal();

// Returns "interrupted by SIGTERM", naming the stop signal that arrived.
std::string InterruptedBySignal();

// Sets what the watcher's line adds when it has to end the command: what the command leaves
// behind ("the target holds a partial image"). A string literal, or nullptr for nothing.
void SetInterruptNote(const char* note);

// Claims the process's final line and exit status for the command (0: success).
ExitClaim ClaimExit(int status);

// Prints "PROGRAM: error: MESSAGE" on stderr as the final line with exit status `status`
// (not 0), unless the watcher is ending the process with its own line.
void PrintFinalError(const std::string& message, int status);

// Ends main(): returns the status to exit with, after reporting a stop signal that came
// before a success was claimed; never returns while the watcher is ending the process.
int FinishMain(int status);

// The watch as a mount uses it (fuse/stop_watch.h); after a fork, its line goes to the log.
StopWatch& ProcessStopWatch();

}  // namespace qcowfs
