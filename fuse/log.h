// Logging for the mount daemon: stderr while in the foreground, syslog once daemonized.
#pragma once

#include <syslog.h>

namespace qcowfs {

// Sends further messages to syslog (ident "qcowfs", facility daemon) instead of stderr.
void LogToSyslog();

// Logs one line at a syslog priority (LOG_ERR, LOG_WARNING, LOG_INFO).
void Log(int priority, const char* format, ...) __attribute__((format(printf, 2, 3)));

}  // namespace qcowfs
