#include "fuse/log.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>

namespace qcowfs {
namespace {
std::atomic<bool> use_syslog{false};
}

void LogToSyslog() {
  openlog("qcowfs", LOG_PID, LOG_DAEMON);
  use_syslog = true;
}

void Log(int priority, const char* format, ...) {
  va_list ap;
  va_start(ap, format);
  if (use_syslog) {
    vsyslog(priority, format, ap);
  } else {
    char line[1024];
    vsnprintf(line, sizeof line, format, ap);
    std::fprintf(stderr, "qcowfs: %s\n", line);
  }
  va_end(ap);
}

}  // namespace qcowfs
