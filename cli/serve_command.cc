#include "cli/serve_command.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <optional>
#include <vector>

#include "cli/endpoint.h"
#include "cli/exit_codes.h"
#include "cli/progress.h"
#include "cli/size_arg.h"
#include "cli/spool_options.h"
#include "cli/xapi_options.h"
#include "qcow/errors.h"
#include "qcow/import_job.h"

namespace qcowfs {
namespace {

struct ServeArgs {
  std::string source;
  std::optional<int> source_fd;
  std::string destination;
  std::string destination_size;
  bool prezeroed = false;
  bool direct = false;
  bool progress = false, machine = false;
  std::optional<int> progress_fd;
  SpoolArgs spool;
  XapiArgs xapi;
};

int RunServe(const ServeArgs& a) {
  CheckXapiOptions(a.xapi, "source");
  if (!a.source.empty() && a.source_fd) {
    throw qcow::UsageError("give at most one of --source and --source-fd");
  }
  qcow::TargetOptions target_options;
  target_options.prezeroed = a.prezeroed;
  if (!a.destination_size.empty()) target_options.size = ParseSize(a.destination_size);
  qcow::RawTarget target(FilePath(a.destination), target_options);
  qcow::ImportOptions options;
  options.spool = SpoolLimits(a.spool);
  options.log = [](const std::string& line) {
    if (line.rfind("import warning: ", 0) == 0) {
      std::fprintf(stderr, "qcowfs: warning: %s\n", line.c_str() + 16);
    }
  };
  qcow::ImportJob job(target, std::move(options));
  Progress progress(a.progress, a.machine, a.progress_fd.value_or(STDOUT_FILENO));
  Endpoint in = OpenImageSource(a.source_fd ? "fd:" + std::to_string(*a.source_fd)
                                            : (a.source.empty() ? "-" : a.source));
  job.Begin();
  std::vector<uint8_t> buf(4u << 20);
  uint64_t offset = 0;
  int rc = 0;
  for (;;) {
    ssize_t n = ::read(in.fd(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) qcow::ThrowErrno("reading the image from " + in.description());
    if (n == 0) break;
    rc = job.Write(offset, std::span(buf.data(), static_cast<size_t>(n)));
    if (rc) break;
    offset += static_cast<uint64_t>(n);
    uint64_t done, total;
    job.Progress(&done, &total);
    progress.Update(done, total);
  }
  if (!rc) rc = job.Finish();
  if (rc) {
    std::fprintf(stderr, "qcowfs: error: %s\n", job.error().c_str());
    return job.image_at_fault() ? kExitFormat : kExitFailure;
  }
  progress.Complete();
  return kExitOk;
}

void AddServeOptions(CLI::App* cmd, ServeArgs& a) {
  cmd->add_option("--destination-size", a.destination_size,
                  "Size of the target in bytes, for targets that report 0");
  cmd->add_flag("--prezeroed", a.prezeroed,
                "The target already reads as zeros: skip zeroing unallocated ranges");
  cmd->add_flag("--direct", a.direct,
                "xapi compatibility: accepted; the target is always fsynced before success");
  cmd->add_flag("--progress", a.progress, "Show progress: a bar on stderr when it is a terminal");
  cmd->add_flag("--machine", a.machine,
                "With --progress: print the percentage as three digits each time it changes, "
                "ending with 100, on stdout or --progress-fd");
  cmd->add_option("--progress-fd", a.progress_fd, "Descriptor for --progress --machine output");
  AddSpoolOptions(cmd, a.spool);
}

}  // namespace

void AddServeCommands(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "serve", "Decode a qcow2 image read from a socket, pipe, file or descriptor into a disk");
  cmd->add_option("--source", a->source,
                  "Where the image comes from: - or stdin: (default), fd:N, tcp:HOST:PORT "
                  "(listen, accept one), unix:PATH (listen, accept one), or a file");
  cmd->add_option("--source-fd", a->source_fd, "Read the image from this descriptor");
  cmd->add_option("--destination", a->destination,
                  "Target disk: file:///PATH, a path, or a block device")
      ->required();
  AddServeOptions(cmd, *a);
  AddXapiOptions(cmd, a->xapi);
  cmd->callback([a, exit_code] { *exit_code = RunServe(*a); });

  auto d = std::make_shared<ServeArgs>();
  CLI::App* decode =
      app.add_subcommand("stream_decode",
                         "Decode a qcow2 image from stdin into TARGET (the form XCP-ng's qcow2 "
                         "importer uses; same as serve --source - --destination TARGET)");
  decode->add_option("target", d->destination, "Target disk")->required();
  AddServeOptions(decode, *d);
  decode->callback([d, exit_code] { *exit_code = RunServe(*d); });
}

}  // namespace qcowfs
