#include "qcow/io/file_io.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "qcow/format/errors.h"
#include "qcow/io/disk_lock.h"
#include "qcow/io/unique_fd.h"

namespace qcow {

std::optional<int> DescriptorSpec(const std::string& spec) {
  if (spec.rfind("fd:", 0) != 0) return std::nullopt;
  int fd = -1;
  const char* end = spec.data() + spec.size();
  const auto [stop, ec] = std::from_chars(spec.data() + 3, end, fd);
  if (ec != std::errc() || stop != end || fd < 0) {
    throw UsageError("'" + spec + "' is not fd:N with N a descriptor number");
  }
  return fd;
}

void RefuseNonDisk(const std::string& path) {
  // Looked at before it is opened: opening some character devices acts (a watchdog arms, a
  // terminal becomes the controlling one), and a name an image gives may lead anywhere.
  struct stat before;
  if (::stat(path.c_str(), &before) == 0 && !S_ISREG(before.st_mode) && !S_ISBLK(before.st_mode)) {
    throw UsageError(path + " is neither a regular file nor a block device");
  }
}

int OpenDisk(const std::string& path, int extra_flags, struct stat* st, uint64_t* size,
             DiskLock* lock) {
  RefuseNonDisk(path);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | extra_flags));
  if (fd.get() < 0) {
    if (errno == EINVAL && (extra_flags & O_DIRECT)) {
      ThrowErrno("opening " + path +
                 " with O_DIRECT (--direct): the file system does not support direct I/O");
    }
    ThrowErrno("opening " + path);
  }
  if (::fstat(fd.get(), st) != 0) ThrowErrno("stat " + path);
  if (S_ISREG(st->st_mode)) {
    *size = static_cast<uint64_t>(st->st_size);
  } else if (S_ISBLK(st->st_mode)) {
    if (::ioctl(fd.get(), BLKGETSIZE64, size) != 0) ThrowErrno("BLKGETSIZE64 on " + path);
  } else {
    throw UsageError(path + " is neither a regular file nor a block device");
  }
  // A reader goes on where the file system takes no locks: a writer there could not lock
  // the disk either, and says so itself.
  DiskLock locked = LockDisk(fd.get(), path, DiskUse::kRead);
  if (lock) *lock = std::move(locked);
  // Reads of files and block devices do not block anyway; the flag only kept open() from
  // waiting on a FIFO.
  if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK) != 0) {
    ThrowErrno("fcntl on " + path);
  }
  return fd.Release();
}

uint64_t PreadUpTo(int fd, const std::string& path, uint64_t offset, uint8_t* out, uint64_t n) {
  uint64_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd, out + got, std::min<uint64_t>(n - got, 1u << 30),
                              static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) ThrowErrno("reading " + path + " at offset " + std::to_string(offset + got));
    if (r == 0) break;
    got += static_cast<uint64_t>(r);
  }
  return got;
}

bool NextDataRange(int fd, const std::string& path, uint64_t pos, uint64_t* data, uint64_t* hole) {
  const off_t d = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
  if (d < 0) {
    if (errno == ENXIO) return false;  // no data after pos
    ThrowErrno("finding data in " + path + " (SEEK_DATA)");
  }
  const off_t h = ::lseek(fd, d, SEEK_HOLE);
  if (h < 0) ThrowErrno("finding holes in " + path + " (SEEK_HOLE)");
  *data = static_cast<uint64_t>(d);
  *hole = static_cast<uint64_t>(h);
  return true;
}

void ForEachDataRange(int fd, const std::string& path, uint64_t size,
                      const std::function<void(uint64_t, uint64_t)>& fn) {
  uint64_t pos = 0, data = 0, hole = 0;
  while (pos < size && NextDataRange(fd, path, pos, &data, &hole) && data < size) {
    fn(data, std::min(hole, size));
    pos = hole;
  }
}

namespace {

// Returns what makes path, of stat st, a name another user may have planted ("" if nothing).
std::string Planted(const std::string& path, const struct stat& st) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  struct stat d;
  if (::stat(dir.c_str(), &d) != 0 || !(d.st_mode & S_ISVTX) || !(d.st_mode & S_IWOTH)) return "";
  const bool link = S_ISLNK(st.st_mode);
  if (!link && !S_ISREG(st.st_mode)) return "";
  if (st.st_uid != ::geteuid() && st.st_uid != d.st_uid) {
    return std::string(link ? "a symlink" : "a file") + " of uid " + std::to_string(st.st_uid);
  }
  if (!link && st.st_nlink > 1) {
    return "a file with " + std::to_string(st.st_nlink) + " names (hard links)";
  }
  return "";
}

}  // namespace

int OpenUnplanted(const std::string& path, int flags, mode_t mode, const std::string& what) {
  auto refuse = [&](const std::string& why) {
    throw UsageError(what + " " + path + " is " + why +
                     " in a sticky, world-writable directory; refusing to write through another "
                     "user's name there");
  };
  // A link found here stays as it is: in a sticky directory only its owner may replace it.
  struct stat link {};
  const bool followed = ::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode);
  if (followed) {
    if (const std::string why = Planted(path, link); !why.empty()) refuse(why);
  }
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC | (followed ? 0 : O_NOFOLLOW), mode);
  if (fd < 0 && !followed && ::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
    throw UsageError(what + " " + path +
                     " became a symlink while it was opened; refusing to follow it");
  }
  if (fd < 0) return fd;
  struct stat st;
  if (!followed && ::fstat(fd, &st) == 0) {
    if (const std::string why = Planted(path, st); !why.empty()) {
      ::close(fd);
      refuse(why);
    }
  }
  return fd;
}

void WidenPipe(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return;
  const int now = ::fcntl(fd, F_GETPIPE_SZ);
  if (now >= 0 && now < kPipeBytes) (void)::fcntl(fd, F_SETPIPE_SZ, kPipeBytes);
}

}  // namespace qcow
