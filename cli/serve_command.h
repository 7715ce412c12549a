// The `qcowfs serve` and `qcowfs stream_decode` subcommands: the import without FUSE.
#pragma once

#include <optional>
#include <string>

#include "cli/progress.h"
#include "cli/spool_options.h"
#include "cli/xapi_options.h"

namespace qcowfs {

// What `serve` and `stream_decode` were asked to do (options in cli/command_line.cc).
struct ServeArgs {
  std::string source;
  std::optional<int> source_fd;
  std::string destination;
  std::string destination_size;
  bool prezeroed = false;
  bool delta = false;  // apply an image with a backing file onto its base
  // stream_decode: apply any image as xapi's importer does (unallocated ranges untouched).
  bool keep_unallocated = false;
  bool direct = false;
  // Seconds without a byte of the image before the import fails (0: no limit): a peer that
  // stalls does not hold the target, and its lock, forever.
  unsigned idle_timeout = 600;
  ProgressArgs progress;
  SpoolArgs spool;
  XapiArgs xapi;
};

// Decodes the image from the source into the destination; returns the exit status.
int RunServe(const ServeArgs& args);

}  // namespace qcowfs
