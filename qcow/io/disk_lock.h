// One writer per disk across processes: the OFD locks QEMU takes on the images it opens
// (block/file-posix.c, raw_apply_lock_bytes and raw_check_lock_bytes), so that qcowfs,
// qemu and qemu-img see each other's use of a disk. Advisory: a tool that takes no lock
// (dd, tapdisk) is not stopped.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "qcow/io/unique_fd.h"

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

// What LockDisk holds beyond the disk's own open file, and its warning.
struct DiskLock {
  // The file a loop device reads (and the file of a loop device that one reads...), each
  // opened by LockDisk and locked for the same use: the locks last while these stay open.
  std::vector<UniqueFd> held;
  // Set when a lock could not be taken (the file system takes no OFD locks, or a loop
  // device's file cannot be opened): the disk is then unprotected.
  std::optional<std::string> warning;
};

// Locks the disk open on fd for `use` without waiting; `name` is the disk as messages name
// it. kRead takes shared locks on QEMU's bytes for "consistent read" and for "write" and
// "resize" unshared, then checks that no other open file holds "write" or "resize" or
// denies "consistent read"; kWrite takes exclusive locks on the bytes of "write", "write
// unchanged" and "resize", held and unshared (fd open for writing). The locks go with the
// open file: they end when its last descriptor is closed. When fd is a loop device, the
// file it reads is opened (through sysfs's path, checked against the inode the device
// names) and locked the same way, and returned in `held`; a loop device whose file cannot
// be found there (deleted, renamed out of reach) is a disk of its own.
// Throws DiskInUse when another open file holds a conflicting lock on the disk or its file,
// std::system_error for other failures.
DiskLock LockDisk(int fd, const std::string& name, DiskUse use);

// Returns whether a and b are one disk: one inode, two nodes of one block device, or a
// loop device and the file it reads (at any depth of loops over loop devices; sysfs and the
// loop device's node are asked, see loop_file.h).
bool SameDisk(const struct stat& a, const struct stat& b);

// Returns what to add to a message saying that a is b (SameDisk): "" when they are one node,
// else " (a loop device and the file it reads)".
std::string SameDiskNote(const struct stat& a, const struct stat& b);

}  // namespace qcow
