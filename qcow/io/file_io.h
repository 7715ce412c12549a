// File I/O the library's readers share: whole reads that stop only at the end of a file,
// and the data ranges of sparse files (SEEK_DATA/SEEK_HOLE).
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "qcow/io/disk_lock.h"

namespace qcow {

// Returns N when spec is "fd:N" (a descriptor the caller names), nullopt when spec does not
// start with "fd:" (a path). Throws UsageError when N is not a descriptor number.
std::optional<int> DescriptorSpec(const std::string& spec);

// Throws UsageError when the file at path (links followed) is neither a regular file nor a
// block device, before anything opens it: opening a character device may act (a watchdog
// arms) and opening a FIFO waits. A path that leads nowhere passes (open says why).
void RefuseNonDisk(const std::string& path);

// Opens the disk at path read-only (with extra_flags such as O_DIRECT) without blocking on
// a FIFO or a device that waits, locks it for reading (DiskUse::kRead: writers are kept
// out while the descriptor is open) and returns its descriptor (close-on-exec), its stat
// in *st and its size in *size (BLKGETSIZE64 for a block device). The file a loop device
// reads is locked too: into *lock, which the caller keeps as long as the descriptor; without
// `lock` it is checked and let go. Throws UsageError when it is neither a regular file nor
// a block device, DiskInUse when another process writes it, std::system_error when it
// cannot be opened.
int OpenDisk(const std::string& path, int extra_flags, struct stat* st, uint64_t* size,
             DiskLock* lock = nullptr);

// Reads up to n bytes at offset; returns how many the file had (short only at its end).
// Throws std::system_error naming `path` and the offset.
uint64_t PreadUpTo(int fd, const std::string& path, uint64_t offset, uint8_t* out, uint64_t n);

// Finds the first data range of the regular file open on fd at or after pos: sets *data to
// its start and *hole to its end and returns true, or returns false when only holes follow.
// Throws std::system_error naming `path`.
bool NextDataRange(int fd, const std::string& path, uint64_t pos, uint64_t* data, uint64_t* hole);

// Calls fn(start, end) for each data range of the regular file open on fd below `size`
// (clipped to it), in order.
void ForEachDataRange(int fd, const std::string& path, uint64_t size,
                      const std::function<void(uint64_t, uint64_t)>& fn);

// Opens path for writing with open(2)'s flags and mode, refusing a name another user may
// have planted: in a sticky, world-writable directory (/tmp), a symlink or file of a user
// who is neither the caller nor the directory's owner (the image would go wherever the link
// points, or into a file its owner then changes), or a file with more than one name there
// (a hard link anyone may make to a file they cannot write). The kernel's
// fs.protected_symlinks, _regular and _hardlinks refuse such names where they are on;
// qcowfs refuses them always. The caller's own links are followed. Throws UsageError naming
// `what` (and path) for a planted name, std::system_error when open fails.
int OpenUnplanted(const std::string& path, int flags, mode_t mode, const std::string& what);

// The size a pipe that carries an image is given (WidenPipe).
constexpr int kPipeBytes = 1 << 20;

// When fd is a pipe, makes it hold kPipeBytes (unless it holds more): a 64 KiB pipe costs
// a context switch per 64 KiB between writer and reader, a third of a disk's streaming
// time. Anything else, or a pipe the kernel will not widen, is left as it is.
void WidenPipe(int fd);

}  // namespace qcow
