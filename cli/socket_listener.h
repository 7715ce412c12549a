// Whether a unix socket file left at a path is live (a process listens on it) or stale, so
// that `serve --source unix:PATH` replaces only a stale one.
#pragma once

#include <sys/stat.h>

#include <string>

namespace qcowfs {

// Returns whether some process may be listening on the unix socket file at path (st is its
// lstat). Asks the kernel's table of listening sockets first (sock_diag, matching the
// file's device and inode), which touches no listener; where that names none or cannot be
// asked, connects: only ECONNREFUSED or ENOENT mean stale. A connection made that way (to a
// listener the table does not show, in another network namespace) is closed at once, and
// its listener sees an empty connection.
bool SocketListened(const std::string& path, const struct stat& st);

}  // namespace qcowfs
