#include "cli/spool_options.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "cli/size_arg.h"
#include "qcow/format/errors.h"

namespace qcowfs {

qcow::Spool::Limits SpoolLimits(const SpoolArgs& a) {
  qcow::Spool::Limits limits{
      .memory = ParseSize(a.memory), .dir = a.dir, .limit = ParseSize(a.limit)};
  if (limits.dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    limits.dir = tmp && *tmp ? tmp : "/tmp";
  }
  // Checked now, not at the first import that spills: made absolute (the mount daemon runs
  // in /) and tried with a temp file like the ones the spool makes. The default directory
  // may be missing (an empty root, say): then only imports that spill fail, saying so.
  const auto refuse = [&](const std::string& why) {
    if (a.dir.empty()) return limits;
    throw qcow::UsageError("--spool-dir " + a.dir + why);
  };
  char real[PATH_MAX];
  if (!::realpath(limits.dir.c_str(), real))
    return refuse(std::string(": ") + std::strerror(errno));
  struct stat st;
  if (::stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) return refuse(" is not a directory");
  int fd = ::open(real, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    std::string probe = std::string(real) + "/qcowfs-spool-XXXXXX";
    fd = ::mkostemp(probe.data(), O_CLOEXEC);
    if (fd >= 0) ::unlink(probe.c_str());
  }
  if (fd < 0) return refuse(std::string(" cannot hold spool files: ") + std::strerror(errno));
  ::close(fd);
  limits.dir = real;
  return limits;
}

}  // namespace qcowfs
