// The qcowfs command line (CLI11), kept in one file so that only it pays CLI11's compile time.
#pragma once

namespace qcowfs {

// Parses argv, runs the subcommand it names and returns the process's exit status.
int RunCommandLine(int argc, char** argv);

}  // namespace qcowfs
