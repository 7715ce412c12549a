#include "cli/inherited_fds.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "qcow/format/errors.h"

namespace qcowfs {
namespace {

std::set<int>& Inherited() {
  static std::set<int> fds;
  return fds;
}

}  // namespace

void RecordInheritedDescriptors() {
  std::set<int>& fds = Inherited();
  fds.clear();
  if (DIR* d = ::opendir("/proc/self/fd")) {
    const int own = ::dirfd(d);
    while (const dirent* e = ::readdir(d)) {
      char* end = nullptr;
      const long fd = std::strtol(e->d_name, &end, 10);
      if (*e->d_name != '.' && *end == '\0' && fd != own) fds.insert(static_cast<int>(fd));
    }
    ::closedir(d);
    return;
  }
  // No /proc (an empty root): ask each descriptor the limit allows, up to 2^16.
  struct rlimit limit {};
  const rlim_t n = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 ? limit.rlim_cur : 1024;
  for (int fd = 0; fd < static_cast<int>(std::min<rlim_t>(n, 1 << 16)); ++fd) {
    if (::fcntl(fd, F_GETFD) != -1) fds.insert(fd);
  }
}

int RequireInherited(int fd, const std::string& what) {
  if (!Inherited().count(fd)) {
    throw qcow::UsageError(what + ": descriptor " + std::to_string(fd) +
                           " was not passed to qcowfs (it is not open in the command that "
                           "started it)");
  }
  return fd;
}

}  // namespace qcowfs
