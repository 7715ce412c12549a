// Exit statuses of the qcowfs command, as listed in man/qcowfs.1 ("EXIT STATUS").
#pragma once

namespace qcowfs {

enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,  // I/O error, mount failure, anything at run time
  kExitUsage = 2,    // bad command line or option value
  kExitFormat = 3,   // an image breaks the qcow2 format or cannot be imported
};

}  // namespace qcowfs
