#include "cli/durable_output.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace qcowfs {
namespace {

// Fsyncs fd when it is a regular file or a block device; throws naming `name`.
void Sync(int fd, const std::string& name) {
  struct stat st;
  const bool durable = ::fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
  if (durable && ::fsync(fd) != 0) {
    throw std::system_error(errno, std::generic_category(),
                            "flushing the image to " + name + " (it may be incomplete there)");
  }
}

// Closes fd; throws naming `name`.
void Close(int fd, const std::string& name) {
  // NFS, for one, reports write errors at close; EINTR leaves the descriptor closed on Linux.
  if (::close(fd) != 0 && errno != EINTR) {
    throw std::system_error(errno, std::generic_category(),
                            "closing " + name + " (the image there may be incomplete)");
  }
}

}  // namespace

void WriteDestination(int fd, const std::string& name, const std::function<void()>& write) {
  struct stat st;
  const bool file = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  const off_t start = file ? ::lseek(fd, 0, SEEK_CUR) : -1;
  try {
    write();
    Sync(fd, name);
  } catch (...) {
    // Back to where it began, too: stderr may share the file's offset (2>&1).
    if (start >= 0 && ::ftruncate(fd, start) == 0 && ::lseek(fd, start, SEEK_SET) == start) {
      ::fsync(fd);
    }
    ::close(fd);
    throw;
  }
  Close(fd, name);
}

}  // namespace qcowfs
