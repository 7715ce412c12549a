#include "qcow/io/loop_file.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>

namespace qcow {
namespace {

// The sysfs directory of the block device rdev.
std::string SysBlock(dev_t rdev) {
  return "/sys/dev/block/" + std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev));
}

// Returns the text of a small sysfs file without its final newline, or nullopt.
std::optional<std::string> ReadSysFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return std::nullopt;
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0 || text.size() > (1u << 16)) break;
    text.append(buf, static_cast<size_t>(n));
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

}  // namespace

std::optional<LoopFile> LoopFileOf(int fd, const struct stat& st) {
  if (!S_ISBLK(st.st_mode)) return std::nullopt;
  // The loop attributes exist only for a loop device with a file: no loop ioctl ever goes
  // to another driver, which might read its number as something else.
  std::optional<std::string> path = ReadSysFile(SysBlock(st.st_rdev) + "/loop/backing_file");
  if (!path) return std::nullopt;
  loop_info64 info{};
  if (::ioctl(fd, LOOP_GET_STATUS64, &info) != 0) return std::nullopt;  // detached meanwhile
  // lo_device and lo_rdevice are encoded as stat(2) encodes st_dev (new_encode_dev).
  return LoopFile{static_cast<dev_t>(info.lo_device), static_cast<ino_t>(info.lo_inode),
                  static_cast<dev_t>(info.lo_rdevice), std::move(*path)};
}

std::optional<LoopFile> LoopFileOf(const struct stat& st) {
  if (!S_ISBLK(st.st_mode)) return std::nullopt;
  const std::string sys = SysBlock(st.st_rdev);
  if (::access((sys + "/loop").c_str(), F_OK) != 0) return std::nullopt;
  const std::optional<std::string> uevent = ReadSysFile(sys + "/uevent");
  if (!uevent) return std::nullopt;
  const size_t at = uevent->find("DEVNAME=");
  if (at == std::string::npos) return std::nullopt;
  const size_t from = at + 8, to = uevent->find('\n', from);
  const std::string node =
      "/dev/" + uevent->substr(from, to == std::string::npos ? std::string::npos : to - from);
  // A loop device opens without side effects; the node must be the device asked about.
  UniqueFd fd(::open(node.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  struct stat opened;
  if (fd.get() < 0 || ::fstat(fd.get(), &opened) != 0 || !S_ISBLK(opened.st_mode) ||
      opened.st_rdev != st.st_rdev) {
    return std::nullopt;
  }
  return LoopFileOf(fd.get(), opened);
}

UniqueFd OpenLoopFile(const LoopFile& file, int flags) {
  // Looked at before it is opened: sysfs gives a deleted file's path with " (deleted)"
  // appended, and whoever can write its directory may put a FIFO there, or a link to a
  // character device, which opening would act on (a watchdog arms).
  struct stat before;
  if (::stat(file.path.c_str(), &before) != 0 || before.st_dev != file.dev ||
      before.st_ino != file.ino) {
    errno = ENOENT;
    return UniqueFd();
  }
  UniqueFd fd(::open(file.path.c_str(), flags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) return fd;
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || st.st_dev != file.dev || st.st_ino != file.ino) {
    // sysfs gives a deleted file's path with " (deleted)" appended, and a path outside
    // this mount namespace's view may lead elsewhere: whatever lies there is another file.
    errno = ENOENT;
    return UniqueFd();
  }
  return fd;
}

}  // namespace qcow
