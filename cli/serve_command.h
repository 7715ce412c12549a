// The `qcowfs serve` and `qcowfs stream_decode` subcommands: the import without FUSE.
#pragma once

#include <CLI/CLI.hpp>

namespace qcowfs {

// Adds `serve` and `stream_decode` to app; running them sets *exit_code.
void AddServeCommands(CLI::App& app, int* exit_code);

}  // namespace qcowfs
