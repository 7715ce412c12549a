#include "cli/spool_options.h"

#include <cstdlib>

#include "cli/size_arg.h"

namespace qcowfs {

void AddSpoolOptions(CLI::App* cmd, SpoolArgs& a) {
  cmd->add_option("--spool-memory", a.memory,
                  "Import: memory for image bytes that arrive before the tables that map them")
      ->capture_default_str();
  cmd->add_option("--spool-dir", a.dir,
                  "Import: directory for spooled bytes beyond --spool-memory (default: $TMPDIR "
                  "or /tmp)");
  cmd->add_option("--spool-limit", a.limit,
                  "Import: most bytes ever spooled; an image needing more fails")
      ->capture_default_str();
}

qcow::Spool::Limits SpoolLimits(const SpoolArgs& a) {
  std::string dir = a.dir;
  if (dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    dir = tmp && *tmp ? tmp : "/tmp";
  }
  return {.memory = ParseSize(a.memory), .dir = dir, .limit = ParseSize(a.limit)};
}

}  // namespace qcowfs
