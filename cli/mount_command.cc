#include "cli/mount_command.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "cli/endpoint.h"
#include "cli/exit_codes.h"
#include "cli/export_plan.h"
#include "cli/size_arg.h"
#include "cli/spool_options.h"
#include "cli/stop_signals.h"
#include "fuse/filesystem.h"
#include "fuse/log.h"
#include "fuse/mount_table.h"
#include "fuse/session.h"
#include "qcow/export/export_layout.h"
#include "qcow/export/source.h"
#include "qcow/format/errors.h"
#include "qcow/import/import_job.h"
#include "qcow/import/target.h"

namespace qcowfs {
namespace {

std::string AbsoluteDirectory(const std::string& path) {
  char buf[PATH_MAX];
  if (!::realpath(path.c_str(), buf)) qcow::ThrowErrno("mountpoint " + path);
  struct stat st;
  if (::stat(buf, &st) != 0) qcow::ThrowErrno("mountpoint " + path);
  if (!S_ISDIR(st.st_mode)) throw qcow::UsageError("mountpoint " + path + " is not a directory");
  return buf;
}

// Returns whether path is the mount point of a qcowfs mount now (a second daemon mounted
// over it would hide the first one's files while it keeps running).
bool IsQcowfsMount(const std::string& path) {
  for (const MountEntry& e : ReadMountTable()) {
    if (e.mount_point == path && e.fs_type == "fuse.qcowfs") return true;
  }
  return false;
}

// Takes an exclusive lock on the directory, waiting up to a minute for another qcowfs that
// is mounting there.
Endpoint LockDirectory(const std::string& dir) {
  Endpoint lock(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), true, "mountpoint " + dir);
  if (lock.fd() < 0) qcow::ThrowErrno(lock.description());
  for (int i = 0; ::flock(lock.fd(), LOCK_EX | LOCK_NB) != 0; ++i) {
    if (errno != EWOULDBLOCK || i == 600) qcow::ThrowErrno("locking " + lock.description());
    ::usleep(100'000);
  }
  return lock;
}

}  // namespace

int RunMount(const MountArgs& a) {
  if (a.export_source.empty() && a.import_target.empty()) {
    throw qcow::UsageError(
        "mount needs --export SOURCE (a disk to present as a qcow2 file), --import TARGET "
        "(a disk to decode an image into), or both");
  }
  if (a.export_name.empty() || a.export_name == "." || a.export_name == ".." ||
      a.export_name.find('/') != std::string::npos || a.export_name == qcowfs::kImportName ||
      a.export_name == qcowfs::kStatusName) {
    throw qcow::UsageError("--export-name '" + a.export_name +
                           "' is not a plain file name "
                           "other than import.qcow2 and import.status");
  }
  MountConfig config;
  config.mountpoint = AbsoluteDirectory(a.mountpoint);
  // Held until the mount is in place, so that of several qcowfs started at once on one
  // directory the later ones see the first one's mount and refuse.
  std::optional<Endpoint> lock = LockDirectory(config.mountpoint);
  config.on_mounted = [&lock] { lock.reset(); };
  if (IsQcowfsMount(config.mountpoint)) {
    throw std::runtime_error(config.mountpoint +
                             " is already a qcowfs mount; unmount it first (fusermount3 -u " +
                             config.mountpoint + ")");
  }
  config.foreground = a.foreground;
  config.fuse_options = a.fuse_options;
  // The kernel checks the owners and modes the files carry, so that -o allow_other gives
  // other users exactly the access the disks themselves give them.
  config.fuse_options.push_back("default_permissions");
  // Two requests' worth keeps a sequential reader's next request in flight.
  config.readahead_kb =
      a.readahead_kb ? a.readahead_kb : static_cast<unsigned>(2 * RequestSizeForPipe() / 1024);
  config.max_threads = a.threads;
  config.stop = &ProcessStopWatch();
  const std::string& shown = a.export_source.empty() ? a.import_target : a.export_source;
  config.fsname = shown.find(',') == std::string::npos ? shown : "qcowfs";

  MountedFiles files;
  files.export_name = a.export_name;
  clock_gettime(CLOCK_REALTIME, &files.mount_time);
  // Open and plan everything before mounting, so that errors reach the terminal.
  PlannedExport plan;
  if (!a.export_source.empty()) {
    // The import target is never read by the export: refused before the export reads it.
    std::vector<WrittenFile> written;
    struct stat st;
    if (!a.import_target.empty() && ::stat(a.import_target.c_str(), &st) == 0) {
      written.push_back({"--import", a.import_target, st});
    }
    plan = PlanExport(a.export_source, a.export_args, written);
    files.layout = plan.layout.get();
    files.source = plan.source.get();
  }
  std::unique_ptr<qcow::RawTarget> target;
  std::unique_ptr<qcow::ImportJob> job;
  if (!a.import_target.empty()) {
    qcow::TargetOptions target_options;
    // The target of a delta holds its base: nothing there reads as zeros by default.
    target_options.prezeroed = a.prezeroed && !a.delta;
    target_options.vet = [&](const struct stat& st) {
      RefuseWritingOver(plan, {"--import", a.import_target, st});
    };
    target_options.warn = [](const std::string& w) { Log(LOG_WARNING, "%s", w.c_str()); };
    // Opened before the daemon forks: the daemon inherits the open file, its O_EXCL claim
    // and its lock, and they end when it exits.
    target = std::make_unique<qcow::RawTarget>(a.import_target, target_options);
    qcow::ImportOptions options;
    options.spool = SpoolLimits(a.spool);
    options.threads = a.spool.decompress_threads;
    options.delta = a.delta;
    options.log = [](const std::string& line) {
      Log(line.rfind("import failed", 0) == 0 ? LOG_ERR : LOG_WARNING, "%s", line.c_str());
    };
    job = std::make_unique<qcow::ImportJob>(*target, std::move(options));
    files.import = job.get();
    files.import_target = a.import_target;
    files.import_uid = target->uid();
    files.import_gid = target->gid();
    // Unmounted or signalled while an image is still arriving: that import failed, and the
    // daemon says so (log, exit status) rather than leaving quietly.
    config.on_stop = [&job] {
      return job->Abort(
                 "the mount was stopped (unmounted or signalled) before the image was "
                 "complete; the target holds a partial image")
                 ? 1
                 : 0;
    };
  }
  return MountAndServe(Operations(), &files, config);
}

}  // namespace qcowfs
