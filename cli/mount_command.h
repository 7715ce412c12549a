// The `qcowfs mount` subcommand.
#pragma once

#include <string>
#include <vector>

#include "cli/export_plan.h"
#include "cli/spool_options.h"

namespace qcowfs {

// What `mount` was asked to do (options in cli/command_line.cc).
struct MountArgs {
  std::string export_source;
  std::string import_target;
  bool prezeroed = false;
  bool delta = false;  // import: apply images with a backing file onto their base
  SpoolArgs spool;
  std::string mountpoint;
  std::string export_name = "disk.qcow2";
  std::vector<std::string> fuse_options;
  bool foreground = false;
  ExportArgs export_args;
  unsigned readahead_kb = 0;
  unsigned threads = 4;  // each costs about 2 MiB of buffers; one sequential reader uses two
};

// Mounts and serves until unmounted; returns the exit status.
int RunMount(const MountArgs& args);

}  // namespace qcowfs
