#include "cli/stream_command.h"

#include <csignal>
#include <memory>
#include <optional>

#include "cli/endpoint.h"
#include "cli/exit_codes.h"
#include "cli/export_plan.h"
#include "cli/progress.h"
#include "cli/xapi_options.h"
#include "qcow/export/export_stream.h"
#include "qcow/format/errors.h"

namespace qcowfs {
namespace {

struct StreamArgs {
  std::string source;
  std::string destination;
  std::optional<int> destination_fd;
  ExportArgs export_args;
  bool progress = false, machine = false;
  std::optional<int> progress_fd;
  XapiArgs xapi;
};

int RunStream(const StreamArgs& a) {
  CheckXapiOptions(a.xapi, "destination");
  if (a.destination.empty() == !a.destination_fd.has_value()) {
    throw qcow::UsageError("stream needs exactly one of --destination and --destination-fd");
  }
  Endpoint out =
      OpenDestination(a.destination_fd ? "fd:" + std::to_string(*a.destination_fd) : a.destination);
  const int progress_fd = a.progress_fd.value_or(STDOUT_FILENO);
  if (a.progress && a.machine && progress_fd == out.fd()) {
    throw qcow::UsageError(
        "--progress --machine writes to stdout, which carries the image: "
        "give --progress-fd N");
  }
  PlannedExport plan = PlanExport(a.source, a.export_args);
  Progress progress(a.progress, a.machine, progress_fd);
  // A reader that goes away must give EPIPE and a message, not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  qcow::WriteExport(*plan.layout, *plan.source, out.fd(),
                    [&](uint64_t done, uint64_t total) { progress.Update(done, total); });
  progress.Complete();
  return kExitOk;
}

}  // namespace

void AddStreamCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<StreamArgs>();
  CLI::App* cmd = app.add_subcommand(
      "stream",
      "Write a disk as a qcow2 image (the bytes the mount's disk.qcow2 shows) to a "
      "socket, pipe, file or descriptor");
  cmd->add_option("--source", a->source, "Disk to export (raw regular file or block device)")
      ->required();
  cmd->add_option("--destination", a->destination,
                  "Where the image goes: - or stdout:, fd:N, tcp:HOST:PORT, unix:PATH, "
                  "file:///PATH or a path, null:");
  cmd->add_option("--destination-fd", a->destination_fd, "Write the image to this descriptor");
  AddExportOptions(cmd, a->export_args);
  cmd->add_flag("--progress", a->progress, "Show progress: a bar on stderr when it is a terminal");
  cmd->add_flag("--machine", a->machine,
                "With --progress: print the percentage as three digits each time it changes, "
                "ending with 100, on stdout or --progress-fd");
  cmd->add_option("--progress-fd", a->progress_fd, "Descriptor for --progress --machine output");
  AddXapiOptions(cmd, a->xapi);
  cmd->callback([a, exit_code] { *exit_code = RunStream(*a); });
}

}  // namespace qcowfs
