// The `qcowfs mount` subcommand.
#pragma once

#include <CLI/CLI.hpp>

namespace qcowfs {

// Adds `mount` to app; running it sets *exit_code.
void AddMountCommand(CLI::App& app, int* exit_code);

}  // namespace qcowfs
