// Mounting and serving a FUSE session: background daemon with a ready handshake, stop
// signals, multithreaded loop, unmount on exit.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <functional>
#include <string>
#include <vector>

#include "fuse/stop_watch.h"

namespace qcowfs {

struct MountConfig {
  std::string mountpoint;
  std::string fsname;                     // shown in /proc/mounts
  bool foreground = false;                // serve in this process, log to stderr
  std::vector<std::string> fuse_options;  // values given with -o
  unsigned readahead_kb = 0;              // per-mount readahead; 0 keeps the kernel's
  unsigned max_threads = 8;
  // Called once the session has stopped serving (unmount or signal), before the process
  // exits; a non-zero return becomes the exit status (work was cut short).
  std::function<int()> on_stop;
  // Called in the serving process once the mount is in place or has failed (to release
  // the lock that keeps two qcowfs from mounting on one directory at once).
  std::function<void()> on_mounted;
  // The process's watch for stop signals (SIGTERM, SIGINT, SIGHUP, blocked in every
  // thread), or nullptr to serve until unmounted.
  StopWatch* stop = nullptr;
};

// Mounts `ops` at config.mountpoint and serves until it is unmounted or a stop signal comes,
// which aborts the connection and unmounts at once (requests in flight fail), logs one line
// and gives exit status 1. Without `foreground`, the process forks: the parent returns 0 as
// soon as the mount answers requests, the child serves, logging to syslog, and ends the
// process when the session ends; a stop signal to the parent before then is passed on to
// the child, which unmounts, and the parent fails. Returns the exit status for the calling
// process; throws qcow::Interrupted (how far it got) after a stop signal, and
// std::runtime_error with a one-line reason when the mount cannot be set up.
int MountAndServe(const fuse_lowlevel_ops& ops, void* userdata, const MountConfig& config);

}  // namespace qcowfs
