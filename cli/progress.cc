#include "cli/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <string>

#include "cli/inherited_fds.h"
#include "cli/size_arg.h"
#include "cli/stop_signals.h"
#include "qcow/format/errors.h"
#include "qcow/io/disk_lock.h"
#include "qcow/io/wait_io.h"

namespace qcowfs {
namespace {

// Returns how messages name the descriptor machine progress goes to.
std::string ProgressFdName(const ProgressArgs& args) {
  return args.fd ? "--progress-fd " + std::to_string(*args.fd)
                 : std::string("stdout, where --progress --machine writes,");
}

}  // namespace

void RefuseProgressInto(const ProgressArgs& args, const std::vector<UsedDisk>& disks) {
  if (!args.enabled || !args.machine) return;
  const int fd = args.fd ? RequireInherited(*args.fd, ProgressFdName(args)) : STDOUT_FILENO;
  struct stat st;
  if (::fstat(fd, &st) != 0 || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))) return;
  for (const UsedDisk& disk : disks) {
    if (!qcow::SameDisk(st, disk.st)) continue;
    throw qcow::UsageError(ProgressFdName(args) + " is " + disk.name +
                           qcow::SameDiskNote(st, disk.st) +
                           "; refusing to write progress into a disk the command uses");
  }
}

void RefuseProgressIntoStream(const ProgressArgs& args, int fd, const std::string& name) {
  if (!args.enabled || !args.machine) return;
  struct stat progress, stream;
  if (::fstat(args.machine_fd(), &progress) != 0 || ::fstat(fd, &stream) != 0) return;
  // Files and devices are SameDisk's; a character device (/dev/null) takes both harmlessly.
  if (!S_ISFIFO(stream.st_mode) && !S_ISSOCK(stream.st_mode)) return;
  if (progress.st_dev != stream.st_dev || progress.st_ino != stream.st_ino) return;
  throw qcow::UsageError(ProgressFdName(args) + " is the " +
                         (S_ISFIFO(stream.st_mode) ? "pipe" : "socket") + " of " + name +
                         ", which carries the image; refusing to mix progress into the image");
}

Progress::Progress(const ProgressArgs& args) : start_(std::chrono::steady_clock::now()) {
  if (!args.enabled) return;
  if (args.machine) {
    machine_fd_ = args.fd ? RequireInherited(*args.fd, ProgressFdName(args)) : args.machine_fd();
  } else {
    bar_ = isatty(STDERR_FILENO);
  }
}

void Progress::Emit(int percent) {
  char digits[12];  // room for any int, though percent is 0..100
  std::snprintf(digits, sizeof digits, "%03d", percent);
  for (size_t off = 0; off < 3;) {
    // Waits for a reader that is behind, also on a descriptor its owner made non-blocking.
    const ssize_t n = qcow::WriteWaiting(machine_fd_, digits + off, 3 - off, StopFd());
    if (n <= 0) {
      // The reader went away, or a stop: the data path reports its own errors.
      machine_fd_ = -1;
      return;
    }
    off += static_cast<size_t>(n);
  }
}

void Progress::Update(uint64_t done, uint64_t total) {
  total_ = total;
  // A total of 0 is not known yet: nothing to show but 0%.
  int percent = total ? static_cast<int>(std::min(done, total) * 100 / total) : 0;
  if (percent > 99) percent = 99;  // 100 only once the work is complete
  // Totals can grow as an import learns the image's size: never show a step back.
  percent = std::max(percent, last_);
  if (machine_fd_ >= 0 && percent > last_) Emit(percent);
  last_ = percent;
  if (!bar_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(200) && done < total) return;
  last_draw_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double rate = secs > 0 ? done / secs : 0;
  const int width = 30, filled = width * percent / 100;
  std::string eta = "--:--";
  if (rate > 0 && total > done) {
    const long left = static_cast<long>((total - done) / rate);
    char b[48];
    std::snprintf(b, sizeof b, "%ld:%02ld", left / 60, left % 60);
    eta = b;
  }
  std::fprintf(stderr, "\r[%s%s] %3d%% %s of %s, %s/s, %s left ", std::string(filled, '#').c_str(),
               std::string(width - filled, ' ').c_str(), percent, HumanSize(done).c_str(),
               HumanSize(total).c_str(), HumanSize(static_cast<uint64_t>(rate)).c_str(),
               eta.c_str());
}

void Progress::Complete() {
  if (machine_fd_ >= 0 && last_ < 100) {
    last_ = 100;
    Emit(100);
  }
  if (bar_) {
    last_draw_ = {};
    Update(total_, total_);
    std::fprintf(stderr, "\r[%s] 100%% %s done\n", std::string(30, '#').c_str(),
                 HumanSize(total_).c_str());
  }
}

}  // namespace qcowfs
