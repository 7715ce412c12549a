// The `qcowfs stream` subcommand: the export without FUSE.
#pragma once

#include <optional>
#include <string>

#include "cli/export_plan.h"
#include "cli/progress.h"
#include "cli/xapi_options.h"

namespace qcowfs {

// What `stream` was asked to do (options in cli/command_line.cc).
struct StreamArgs {
  std::string source;
  std::string destination;
  std::optional<int> destination_fd;
  ExportArgs export_args;
  ProgressArgs progress;
  XapiArgs xapi;
};

// Writes the source's image to the destination; returns the exit status.
int RunStream(const StreamArgs& args);

}  // namespace qcowfs
