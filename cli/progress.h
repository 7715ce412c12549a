// Progress reports for stream and serve: a bar on a terminal's stderr, or xapi's machine
// format (the percentage as exactly three digits each time it changes, ending with 100).
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qcowfs {

// --progress, --machine and --progress-fd, as stream and serve take them.
struct ProgressArgs {
  bool enabled = false, machine = false;
  std::optional<int> fd;
  // Where machine output goes: --progress-fd, else stdout.
  int machine_fd() const { return fd.value_or(STDOUT_FILENO); }
};

// A file a command reads or writes, which progress must not go into.
struct UsedDisk {
  std::string name;  // as messages name it: "the target t.raw"
  struct stat st;
};

// Throws UsageError when machine progress (--progress --machine) goes to a regular file or
// a block device (--progress-fd N, checked to be one the caller passed; else stdout) that
// is one of `disks` (qcow::SameDisk): its digits would land in a disk.
void RefuseProgressInto(const ProgressArgs& args, const std::vector<UsedDisk>& disks);

// Throws UsageError when machine progress goes to the pipe or socket open on `fd` (`name`),
// which carries an image: the digits would land inside it (another descriptor of it, such
// as --progress-fd 5 with 5>&1).
void RefuseProgressIntoStream(const ProgressArgs& args, int fd, const std::string& name);

class Progress {
 public:
  explicit Progress(const ProgressArgs& args);
  // Reports done of total bytes (total 0: not known yet, shown as 0%). Machine output
  // stays below 100 until Complete().
  void Update(uint64_t done, uint64_t total);
  // Reports success: machine output ends with "100"; the bar ends its line.
  void Complete();

 private:
  void Emit(int percent);
  bool bar_ = false;
  int machine_fd_ = -1;
  int last_ = -1;  // highest percentage shown
  uint64_t total_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace qcowfs
