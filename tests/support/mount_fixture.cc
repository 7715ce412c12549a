#include "mount_fixture.h"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace qcowfs_test {

bool IsMounted(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, mnt;
    f >> id >> parent >> dev >> root >> mnt;
    if (mnt == path) return true;
  }
  return false;
}

int DaemonPid(const std::string& needle) {
  DIR* d = opendir("/proc");
  if (!d) return -1;
  int found = -1;
  while (dirent* e = readdir(d)) {
    int pid = atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
    std::string name;
    if (!std::getline(comm, name) || name != "qcowfs") continue;
    std::ifstream cmd("/proc/" + std::to_string(pid) + "/cmdline");
    std::string args((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
    if (args.find(needle) != std::string::npos) found = pid;
  }
  closedir(d);
  return found;
}

LoopDevice::LoopDevice(const std::string& file) {
  auto r = Sh("losetup -f --show " + Quote(file));
  output_ = r.output;
  // losetup may warn first (e.g. about a partial last sector): take the device line.
  const size_t at = r.output.find("/dev/loop");
  if (r.status == 0 && at != std::string::npos) {
    device_ = r.output.substr(at, r.output.find('\n', at) - at);
  }
}

LoopDevice::~LoopDevice() {
  if (!device_.empty()) Sh("losetup -d " + Quote(device_));
}

Mount::Mount(const std::string& mountpoint, const std::string& args) : path_(mountpoint) {
  Sh("mkdir -p " + Quote(path_));
  result_ = Sh("timeout 120 " + QcowfsBinary() + " mount " + args + " " + Quote(path_));
  mounted_ = IsMounted(path_);
}

bool Mount::Unmount() {
  if (mounted_) {
    for (int i = 0; i < 50 && IsMounted(path_); ++i) {
      Sh("timeout 10 fusermount3 -u " + Quote(path_));
      if (IsMounted(path_)) usleep(100'000);
    }
    // Last resort, so that no test ever leaves a mount behind.
    if (IsMounted(path_)) Sh("umount -l " + Quote(path_));
    mounted_ = false;
  }
  return !IsMounted(path_);
}

Mount::~Mount() { Unmount(); }

FaultyFile::FaultyFile(const std::string& backing, const std::string& mountpoint, uint64_t eio_from,
                       uint64_t eio_to)
    : mountpoint_(mountpoint) {
  Sh("mkdir -p " + Quote(mountpoint));
  pid_ = fork();
  if (pid_ == 0) {
    const std::string from = std::to_string(eio_from), to = std::to_string(eio_to);
    execl(FAULTY_FS_BIN, "faulty_fs", backing.c_str(), mountpoint.c_str(), from.c_str(), to.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 200 && pid_ > 0 && !IsMounted(mountpoint_); ++i) usleep(50'000);
  mounted_ = pid_ > 0 && IsMounted(mountpoint_);
}

FaultyFile::~FaultyFile() {
  for (int i = 0; i < 50 && IsMounted(mountpoint_); ++i) {
    Sh("timeout 10 fusermount3 -u " + Quote(mountpoint_));
    if (IsMounted(mountpoint_)) usleep(100'000);
  }
  if (IsMounted(mountpoint_)) Sh("umount -l " + Quote(mountpoint_));
  if (pid_ > 0) {
    for (int i = 0; i < 100 && waitpid(pid_, nullptr, WNOHANG) == 0; ++i) usleep(50'000);
    if (waitpid(pid_, nullptr, WNOHANG) == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
}

}  // namespace qcowfs_test
