// The file behind a loop device. A loop device and the file it reads are one disk: for the
// checks that no command writes over what it reads (SameDisk) and for the locks (LockDisk).
// A partition of a loop device is a device of its own here, as any partition is.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>

#include "qcow/io/unique_fd.h"

namespace qcow {

// The file a loop device reads, as LOOP_GET_STATUS64 names it.
struct LoopFile {
  dev_t dev = 0;     // lo_device: the file system the file is on
  ino_t ino = 0;     // lo_inode
  dev_t rdev = 0;    // lo_rdevice: the device, when the file is a block device's node
  std::string path;  // where sysfs (/sys/dev/block/M:m/loop/backing_file) says it is
};

// Returns the file the loop device open on fd (whose stat is st) reads; nullopt for any
// other file or device, and for a loop device with no file. Sends the loop ioctl only to a
// device sysfs shows to be a loop device.
std::optional<LoopFile> LoopFileOf(int fd, const struct stat& st);

// The same from a stat alone: opens the device's node (/dev/NAME as sysfs names it,
// checked to be that device) to ask it. nullopt also when no such node can be opened.
std::optional<LoopFile> LoopFileOf(const struct stat& st);

// Opens the loop's file with `flags` (O_RDONLY or O_WRONLY; close-on-exec) through its
// path, and checks before and after opening that the path leads to that file (nothing else
// at that path is opened). Returns the descriptor, or an
// empty one with errno set: ENOENT when the path leads nowhere or to another file (the file
// was deleted or replaced, or lies in another mount namespace), else open's errno.
UniqueFd OpenLoopFile(const LoopFile& file, int flags);

}  // namespace qcow
