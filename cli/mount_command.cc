#include "cli/mount_command.h"

#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "cli/exit_codes.h"
#include "cli/export_plan.h"
#include "cli/size_arg.h"
#include "cli/spool_options.h"
#include "fuse/filesystem.h"
#include "fuse/log.h"
#include "fuse/session.h"
#include "qcow/export/export_layout.h"
#include "qcow/export/source.h"
#include "qcow/format/errors.h"
#include "qcow/import/import_job.h"
#include "qcow/import/target.h"

namespace qcowfs {
namespace {

struct MountArgs {
  std::string export_source;
  std::string import_target;
  bool prezeroed = false;
  SpoolArgs spool;
  std::string mountpoint;
  std::string export_name = "disk.qcow2";
  std::vector<std::string> fuse_options;
  bool foreground = false;
  ExportArgs export_args;
  unsigned readahead_kb = 0;
  unsigned threads = 8;
};

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
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
    std::istringstream f(line);
    std::string id, parent, dev, root, mnt, field;
    f >> id >> parent >> dev >> root >> mnt;
    while (f >> field && field != "-") {
    }
    std::string type;
    f >> type;
    // The kernel escapes space, tab, newline and backslash as \ooo.
    std::string unescaped;
    for (size_t i = 0; i < mnt.size(); ++i) {
      if (mnt[i] == '\\' && i + 3 < mnt.size()) {
        unescaped += static_cast<char>(std::stoi(mnt.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        unescaped += mnt[i];
      }
    }
    if (unescaped == path && type == "fuse.qcowfs") return true;
  }
  return false;
}

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
  const std::string& shown = a.export_source.empty() ? a.import_target : a.export_source;
  config.fsname = shown.find(',') == std::string::npos ? shown : "qcowfs";

  MountedFiles files;
  files.export_name = a.export_name;
  clock_gettime(CLOCK_REALTIME, &files.mount_time);
  // Open and plan everything before mounting, so that errors reach the terminal.
  PlannedExport plan;
  if (!a.export_source.empty()) {
    plan = PlanExport(a.export_source, a.export_args);
    files.layout = plan.layout.get();
    files.source = plan.source.get();
  }
  std::unique_ptr<qcow::RawTarget> target;
  std::unique_ptr<qcow::ImportJob> job;
  if (!a.import_target.empty()) {
    qcow::TargetOptions target_options;
    target_options.prezeroed = a.prezeroed;
    target = std::make_unique<qcow::RawTarget>(a.import_target, target_options);
    qcow::ImportOptions options;
    options.spool = SpoolLimits(a.spool);
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

}  // namespace

void AddMountCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<MountArgs>();
  CLI::App* cmd = app.add_subcommand(
      "mount",
      "Mount a directory that presents a disk as a read-only qcow2 file (--export) and/or "
      "decodes qcow2 images written into it into a disk (--import)");
  cmd->footer(
      "Files in the mount:\n"
      "  disk.qcow2     (--export) the disk as a qcow2 image, computed on the fly\n"
      "  import.qcow2   (--import) write a qcow2 image here (cat, cp, dd); close() returns 0\n"
      "                 only once it is decoded, written and fsynced, else EIO, or EFBIG\n"
      "                 when the image is larger than the target\n"
      "  import.status  (--import) state, bytes received and written, virtual size, error\n"
      "Unmount with fusermount3 -u MOUNTPOINT. Exit status: 0 mounted, 1 failure, 2 usage.");
  cmd->add_option("--export", args->export_source,
                  "Disk to present as MOUNTPOINT/disk.qcow2 (raw regular file or block "
                  "device), opened read-only");
  cmd->add_option("--import", args->import_target,
                  "Disk to decode images written to MOUNTPOINT/import.qcow2 into (raw regular "
                  "file or block device, at least the image's virtual size)");
  cmd->add_option("mountpoint", args->mountpoint, "Existing directory to mount on")->required();
  cmd->add_flag("-f,--foreground", args->foreground,
                "Stay in the foreground and log to stderr (default: daemon logging to syslog)");
  cmd->add_option("-o", args->fuse_options,
                  "FUSE mount options, comma-separated (e.g. allow_other); repeatable");
  cmd->add_option("--export-name", args->export_name, "Name of the image file in the mount")
      ->capture_default_str();
  AddExportOptions(cmd, args->export_args);
  cmd->add_option("--readahead", args->readahead_kb,
                  "Kernel readahead for the mount in KiB (default: two read requests)");
  cmd->add_flag("--prezeroed", args->prezeroed,
                "Import: the target already reads as zeros, so unallocated ranges are skipped");
  AddSpoolOptions(cmd, args->spool);
  cmd->add_option("--threads", args->threads, "Maximum threads serving requests")
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str();
  cmd->callback([args, exit_code] { *exit_code = RunMount(*args); });
}

}  // namespace qcowfs
