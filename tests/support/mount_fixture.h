// A qcowfs mount for tests: mounted by the real binary, always unmounted on destruction,
// also when the test fails.
#pragma once

#include <string>

#include "test_util.h"

namespace qcowfs_test {

class Mount {
 public:
  // Runs `qcowfs mount ARGS MOUNTPOINT` (the mountpoint is created) with a time limit.
  Mount(const std::string& mountpoint, const std::string& args);
  ~Mount();
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;

  // Whether `qcowfs mount` exited 0.
  bool ok() const { return result_.status == 0; }
  const CommandResult& result() const { return result_; }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  // Unmounts now; returns whether the mountpoint is no longer a mount.
  bool Unmount();

 private:
  std::string path_;
  CommandResult result_;
  bool mounted_ = false;
};

// A loop device attached to a file, detached on destruction (also when a test fails).
class LoopDevice {
 public:
  explicit LoopDevice(const std::string& file);
  ~LoopDevice();
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  // The device path, or empty when losetup failed (output() says why).
  const std::string& device() const { return device_; }
  const std::string& output() const { return output_; }

 private:
  std::string device_, output_;
};

// A file with an unreadable range, served by the faulty_fs test tool (the kernel here has no
// device mapper): MOUNTPOINT/disk shows `backing`, but reads touching [eio_from, eio_to)
// fail with EIO. Unmounted on destruction, also when a test fails.
class FaultyFile {
 public:
  FaultyFile(const std::string& backing, const std::string& mountpoint, uint64_t eio_from,
             uint64_t eio_to);
  ~FaultyFile();
  FaultyFile(const FaultyFile&) = delete;
  FaultyFile& operator=(const FaultyFile&) = delete;
  // Whether the file is being served.
  bool ok() const { return mounted_; }
  std::string path() const { return mountpoint_ + "/disk"; }

 private:
  std::string mountpoint_;
  int pid_ = -1;
  bool mounted_ = false;
};

// Returns the pid of the running qcowfs process whose command line mentions `needle`, or
// -1 when there is none.
int DaemonPid(const std::string& needle);

// Returns whether path is a mount point right now (per /proc/self/mountinfo).
bool IsMounted(const std::string& path);

}  // namespace qcowfs_test
