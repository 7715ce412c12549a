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
  std::string dir = a.dir;
  if (dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    dir = tmp && *tmp ? tmp : "/tmp";
  }
  // Checked now, not at the first import that spills: made absolute (the mount daemon runs
  // in /) and tried with a temp file like the ones the spool makes.
  char real[PATH_MAX];
  if (!::realpath(dir.c_str(), real)) {
    throw qcow::UsageError("--spool-dir " + dir + ": " + std::strerror(errno));
  }
  struct stat st;
  if (::stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw qcow::UsageError("--spool-dir " + dir + " is not a directory");
  }
  int fd = ::open(real, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    std::string probe = std::string(real) + "/qcowfs-spool-XXXXXX";
    fd = ::mkostemp(probe.data(), O_CLOEXEC);
    if (fd >= 0) ::unlink(probe.c_str());
  }
  if (fd < 0) {
    throw qcow::UsageError("--spool-dir " + dir +
                           " cannot hold spool files: " + std::strerror(errno));
  }
  ::close(fd);
  return {.memory = ParseSize(a.memory), .dir = real, .limit = ParseSize(a.limit)};
}

}  // namespace qcowfs
