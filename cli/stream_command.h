// The `qcowfs stream` subcommand: the export without FUSE.
#pragma once

#include <CLI/CLI.hpp>

namespace qcowfs {

// Adds `stream` to app; running it sets *exit_code.
void AddStreamCommand(CLI::App& app, int* exit_code);

}  // namespace qcowfs
