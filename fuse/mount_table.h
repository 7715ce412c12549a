// The mounts this process sees, read from /proc/self/mountinfo without touching any of them
// (a stat of a FUSE mount waits for its daemon, which may never answer).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace qcowfs {

struct MountEntry {
  dev_t dev = 0;            // the mounted file system's device (0:N for FUSE, N its connection)
  std::string mount_point;  // unescaped
  std::string fs_type;      // "fuse.qcowfs", "ext4", ...
};

// Returns the mounts in mountinfo's order, in which a mount comes after the ones it hides.
std::vector<MountEntry> ReadMountTable();

// Returns the mount on top at `path` (an absolute path without symbolic links), if any.
std::optional<MountEntry> TopMountAt(const std::string& path);

}  // namespace qcowfs
