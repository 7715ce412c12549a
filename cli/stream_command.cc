#include "cli/stream_command.h"

#include <csignal>
#include <memory>
#include <optional>
#include <vector>

#include "cli/durable_output.h"
#include "cli/endpoint.h"
#include "cli/exit_codes.h"
#include "cli/export_plan.h"
#include "cli/progress.h"
#include "cli/stop_signals.h"
#include "cli/xapi_options.h"
#include "qcow/export/export_stream.h"
#include "qcow/format/errors.h"

namespace qcowfs {

int RunStream(const StreamArgs& a) {
  CheckXapiOptions(a.xapi, "destination");
  if (a.destination.empty() == !a.destination_fd.has_value()) {
    throw qcow::UsageError("stream needs exactly one of --destination and --destination-fd");
  }
  const std::string destination =
      a.destination_fd ? "fd:" + std::to_string(*a.destination_fd) : a.destination;
  // Planned first: a source that is refused leaves no empty destination file behind. The
  // plan refuses to read the destination, before any long comparison or scan.
  std::vector<WrittenFile> written;
  if (const auto st = StatEndpoint(destination, true)) {
    written.push_back({"the destination", destination, *st});
  }
  PlannedExport plan = PlanExport(a.source, a.export_args, written);
  std::vector<UsedDisk> used;
  for (const WrittenFile& w : written) used.push_back({w.role + " " + w.path, w.st});
  for (const PlannedExport::File& f : plan.reads) {
    used.push_back({f.path + ", which stream reads", f.st});
  }
  RefuseProgressInto(a.progress, used);
  Endpoint out = OpenDestination(destination, [&](const struct stat& st) {
    RefuseWritingOver(plan, {"the destination", destination, st});
  });
  if (a.progress.enabled && a.progress.machine && a.progress.machine_fd() == out.fd()) {
    throw qcow::UsageError(
        "--progress --machine writes to stdout, which carries the image: "
        "give --progress-fd N");
  }
  RefuseProgressIntoStream(a.progress, out.fd(), out.description());
  Progress progress(a.progress);
  // A reader that goes away must give EPIPE and a message, not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  // A file or device: on disk, or a failure naming it (a file then holds no part image).
  const int fd = out.fd();
  WriteDestination(out.Release(), out.description(), [&] {
    qcow::WriteExport(
        *plan.layout, *plan.source, fd,
        [&](uint64_t done, uint64_t total) { progress.Update(done, total); }, StopFd());
  });
  progress.Complete();
  return kExitOk;
}

}  // namespace qcowfs
