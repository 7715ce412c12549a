#include "cli/mount_command.h"

#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <memory>

#include "cli/exit_codes.h"
#include "cli/export_plan.h"
#include "cli/size_arg.h"
#include "cli/spool_options.h"
#include "fuse/filesystem.h"
#include "fuse/log.h"
#include "fuse/session.h"
#include "qcow/errors.h"
#include "qcow/export_layout.h"
#include "qcow/import_job.h"
#include "qcow/source.h"
#include "qcow/target.h"

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
  config.foreground = a.foreground;
  config.fuse_options = a.fuse_options;
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
    options.log = [](const std::string& line) { Log(LOG_WARNING, "%s", line.c_str()); };
    job = std::make_unique<qcow::ImportJob>(*target, std::move(options));
    files.import = job.get();
    files.import_target = a.import_target;
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
