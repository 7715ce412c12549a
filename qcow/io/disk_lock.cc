#include "qcow/io/disk_lock.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <system_error>

#include "qcow/io/loop_file.h"

namespace qcow {
namespace {

// block/file-posix.c: a process that holds permission i locks byte 100 + i, and one that
// does not share permission i with others locks byte 200 + i, both with shared locks; on
// opening, it tests that no other open file holds 200 + i for what it wants, nor 100 + i
// for what it denies.
constexpr off_t kPermBase = 100;
constexpr off_t kSharedBase = 200;
// The permissions of QEMU's block layer, as bit numbers (include/block/block-common.h:
// BLK_PERM_CONSISTENT_READ 0x01, BLK_PERM_WRITE 0x02, BLK_PERM_WRITE_UNCHANGED 0x04,
// BLK_PERM_RESIZE 0x08).
constexpr off_t kConsistentRead = 0;
constexpr off_t kWrite = 1;
constexpr off_t kResize = 3;

struct flock Bytes(short type, off_t start, off_t len) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return fl;  // l_pid stays 0, as OFD locks require
}

// Returns 0, or the errno of F_OFD_SETLK.
int Lock(int fd, short type, off_t start, off_t len) {
  struct flock fl = Bytes(type, start, len);
  return ::fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : errno;
}

// Returns 0 when no other open file holds a lock on byte `at`, EAGAIN when one does, or
// the errno of F_OFD_GETLK.
int TestByte(int fd, off_t at) {
  struct flock fl = Bytes(F_WRLCK, at, 1);
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return errno;
  return fl.l_type == F_UNLCK ? 0 : EAGAIN;
}

// Loops over loop devices deeper than this are not followed (the kernel refuses cycles).
constexpr int kMaxLoopDepth = 8;

// Locks the open file fd alone (see LockDisk); returns a warning when its file system takes
// no OFD locks.
std::optional<std::string> LockOpenFile(int fd, const std::string& name, DiskUse use) {
  int err = 0;
  if (use == DiskUse::kWrite) {
    // Exclusive locks on the bytes of writing, unchanged writing and resizing, held and
    // denied: one call each, so that of two writers the first keeps the disk. Byte 200 stays
    // free: readers that share writing (qemu-img -U) may look.
    err = Lock(fd, F_WRLCK, kPermBase + kWrite, kResize - kWrite + 1);
    if (!err) err = Lock(fd, F_WRLCK, kSharedBase + kWrite, kResize - kWrite + 1);
  } else {
    // Taken first and tested after, as QEMU does: of two users starting at once each sees
    // the other's locks, so that they never both get in.
    for (off_t at : {kPermBase + kConsistentRead, kSharedBase + kWrite, kSharedBase + kResize}) {
      if (!err) err = Lock(fd, F_RDLCK, at, 1);
    }
    for (off_t at : {kPermBase + kWrite, kPermBase + kResize, kSharedBase + kConsistentRead}) {
      if (!err) err = TestByte(fd, at);
    }
  }
  if (err == 0) return std::nullopt;
  if (err == EAGAIN || err == EACCES) {
    throw DiskInUse(name + " is locked by another process " +
                    (use == DiskUse::kWrite ? "(an import or export in progress?)"
                                            : "(an import in progress, or a VM or qemu writing "
                                              "it?)"));
  }
  if (err == EINVAL || err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS) {
    return name + " cannot be locked (" + std::strerror(err) +
           ": its file system takes no OFD locks); going on without a lock, so another "
           "process using it at the same time is not refused";
  }
  throw std::system_error(err, std::generic_category(), "locking " + name);
}

void AddWarning(DiskLock& lock, const std::string& warning) {
  if (!lock.warning) lock.warning = warning;
}

// Locks fd, and the file it reads when it is a loop device, into `lock`.
void LockInto(int fd, const std::string& name, DiskUse use, int depth, DiskLock& lock) {
  if (auto warning = LockOpenFile(fd, name, use)) AddWarning(lock, *warning);
  struct stat st;
  if (depth >= kMaxLoopDepth || ::fstat(fd, &st) != 0) return;
  const std::optional<LoopFile> file = LoopFileOf(fd, st);
  if (!file) return;
  UniqueFd backing = OpenLoopFile(*file, use == DiskUse::kWrite ? O_WRONLY : O_RDONLY);
  if (backing.get() < 0) {
    const int err = errno;
    if (err == ENOENT) return;  // deleted, or out of reach: the loop device is a disk of its own
    AddWarning(lock, name + " is a loop device over " + file->path + ", which cannot be opened (" +
                         std::strerror(err) +
                         ") to lock it; going on, so a process using that file at the same "
                         "time is not refused");
    return;
  }
  LockInto(backing.get(), name + " (a loop device over " + file->path + ")", use, depth + 1, lock);
  lock.held.push_back(std::move(backing));
}

// Returns st, then the file each loop device in turn reads, as stats SameNode compares.
std::vector<struct stat> DiskAndLoopFiles(const struct stat& st) {
  std::vector<struct stat> out{st};
  while (out.size() <= kMaxLoopDepth) {
    const std::optional<LoopFile> file = LoopFileOf(out.back());
    if (!file) break;
    struct stat next {};
    next.st_dev = file->dev;
    next.st_ino = file->ino;
    next.st_rdev = file->rdev;
    next.st_mode = file->rdev ? S_IFBLK : S_IFREG;  // a loop reads a file or a block device
    out.push_back(next);
  }
  return out;
}

bool SameNode(const struct stat& a, const struct stat& b) {
  if (a.st_dev == b.st_dev && a.st_ino == b.st_ino) return true;
  return S_ISBLK(a.st_mode) && S_ISBLK(b.st_mode) && a.st_rdev == b.st_rdev;
}

}  // namespace

DiskLock LockDisk(int fd, const std::string& name, DiskUse use) {
  DiskLock lock;
  LockInto(fd, name, use, 0, lock);
  return lock;
}

bool SameDisk(const struct stat& a, const struct stat& b) {
  if (SameNode(a, b)) return true;
  if (!S_ISBLK(a.st_mode) && !S_ISBLK(b.st_mode)) return false;
  const std::vector<struct stat> as = DiskAndLoopFiles(a), bs = DiskAndLoopFiles(b);
  for (const struct stat& x : as) {
    for (const struct stat& y : bs) {
      if (SameNode(x, y)) return true;
    }
  }
  return false;
}

std::string SameDiskNote(const struct stat& a, const struct stat& b) {
  return SameNode(a, b) ? "" : " (a loop device and the file it reads)";
}

}  // namespace qcow
