// The inspection subcommands: `info`, `check` and `map`.
#pragma once

#include <CLI/CLI.hpp>

namespace qcowfs {

// Adds `info`, `check` and `map` to app; running them sets *exit_code.
void AddInspectCommands(CLI::App& app, int* exit_code);

}  // namespace qcowfs
