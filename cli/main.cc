// qcowfs: moves virtual disks in and out of hosts in qcow2 format.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "cli/command_line.h"
#include "cli/exit_codes.h"
#include "cli/inherited_fds.h"
#include "cli/stop_signals.h"

namespace {

// Puts /dev/null on each standard descriptor that is closed, before anything else is
// opened: a disk opened into a free 0, 1 or 2 would otherwise be read as the image, or
// have messages written into it.
bool FillClosedStandardDescriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    const int null = ::open("/dev/null", O_RDWR);
    if (null != fd) {  // no /dev/null (an empty root): refuse rather than risk the disk
      if (fd != 2) {
        static const char kMessage[] =
            "qcowfs: error: a standard descriptor is closed and /dev/null cannot be opened\n";
        [[maybe_unused]] const ssize_t n = ::write(2, kMessage, sizeof kMessage - 1);
      }
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (!FillClosedStandardDescriptors()) return qcowfs::kExitFailure;
  // What the caller passed, before qcowfs opens anything of its own (cli/inherited_fds.h).
  qcowfs::RecordInheritedDescriptors();
  // Next (the watcher's descriptor must not land on 0, 1 or 2 either), before anything else
  // is opened and before any other thread exists, so that every thread inherits the blocked
  // mask and no stop signal is lost (cli/stop_signals.h).
  qcowfs::WatchStopSignals();
  return qcowfs::FinishMain(qcowfs::RunCommandLine(argc, argv));
}
