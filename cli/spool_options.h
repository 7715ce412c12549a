// The import's decoder options (its spool, its decompression threads), shared by
// `mount --import` and `serve`.
#pragma once

#include <string>

#include "qcow/import/spool.h"

namespace qcowfs {

struct SpoolArgs {
  std::string memory = "64M";  // qcow::kDefaultSpoolMemory
  std::string dir;             // empty: $TMPDIR or /tmp
  std::string limit = "8G";
  unsigned decompress_threads = 0;  // 0: one per CPU the process may run on
};

// Returns the limits the options describe; throws UsageError for bad sizes.
qcow::Spool::Limits SpoolLimits(const SpoolArgs& args);

}  // namespace qcowfs
