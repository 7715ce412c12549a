// One writer per disk across processes: the OFD locks QEMU takes on the images it opens
// (block/file-posix.c, raw_apply_lock_bytes and raw_check_lock_bytes), so that qcowfs,
// qemu and qemu-img see each other's use of a disk. Advisory: a tool that takes no lock
// (dd, tapdisk) is not stopped.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <stdexcept>
#include <string>

namespace qcow {

// Another process uses the disk in a way this use excludes (a run-time failure).
class DiskInUse : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DiskUse {
  // A consistent reader that lets others read but nobody write or resize (an export): QEMU's
  // read-only open. Readers do not exclude each other, nor QEMU's readers.
  kRead,
  // The only writer (an import target): excludes every other writer and every reader but
  // those that share writing (qemu-img -U, --force-share).
  kWrite,
};

// Locks the disk open on fd for `use` without waiting; `name` is the disk as messages name
// it. kRead takes shared locks on QEMU's bytes for "consistent read" and for "write" and
// "resize" unshared, then checks that no other open file holds "write" or "resize" or
// denies "consistent read"; kWrite takes exclusive locks on the bytes of "write", "write
// unchanged" and "resize", held and unshared (fd open for writing). The locks go with the
// open file: they end when its last descriptor is closed.
// Returns a warning when the file system cannot take OFD locks (EINVAL, ENOLCK, EOPNOTSUPP,
// ENOSYS: the disk is then unprotected), else nullopt. Throws DiskInUse when another open
// file holds a conflicting lock, std::system_error for other failures.
std::optional<std::string> LockDisk(int fd, const std::string& name, DiskUse use);

// Returns whether a and b are one disk: one inode, or two nodes of one block device.
bool SameDisk(const struct stat& a, const struct stat& b);

}  // namespace qcow
