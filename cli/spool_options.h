// The import spool's options, shared by `mount --import` and `serve`.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "qcow/import/spool.h"

namespace qcowfs {

struct SpoolArgs {
  std::string memory = "256M";
  std::string dir;  // empty: $TMPDIR or /tmp
  std::string limit = "8G";
};

// Adds --spool-memory, --spool-dir and --spool-limit to cmd.
void AddSpoolOptions(CLI::App* cmd, SpoolArgs& args);

// Returns the limits the options describe; throws UsageError for bad sizes.
qcow::Spool::Limits SpoolLimits(const SpoolArgs& args);

}  // namespace qcowfs
