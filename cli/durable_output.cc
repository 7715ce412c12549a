#include "cli/durable_output.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace qcowfs {

void EndDestination(int fd, const std::string& name) {
  struct stat st;
  const bool durable = ::fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
  if (durable && ::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::system_error(err, std::generic_category(),
                            "flushing the image to " + name + " (it may be incomplete there)");
  }
  // NFS, for one, reports write errors at close; EINTR leaves the descriptor closed on Linux.
  if (::close(fd) != 0 && errno != EINTR) {
    throw std::system_error(errno, std::generic_category(),
                            "closing " + name + " (the image there may be incomplete)");
  }
}

}  // namespace qcowfs
