#include "cli/serve_command.h"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "cli/endpoint.h"
#include "cli/exit_codes.h"
#include "cli/progress.h"
#include "cli/size_arg.h"
#include "cli/spool_options.h"
#include "cli/stop_signals.h"
#include "cli/xapi_options.h"
#include "qcow/format/errors.h"
#include "qcow/import/import_job.h"
#include "qcow/io/disk_lock.h"
#include "qcow/io/file_io.h"
#include "qcow/io/wait_io.h"

namespace qcowfs {
namespace {

// How long a sender may pause, once the disk is whole, before serve stops reading.
constexpr int kDrainPauseMs = 500;

// Returns whether fd has input (or its end) within kDrainPauseMs, and no stop came first.
bool InputWithinPause(int fd) { return qcow::WaitReady(fd, POLLIN, StopFd(), kDrainPauseMs) > 0; }

// What the drain reads at most, in bytes and in time: what a sender may still have in
// flight once the image is complete is small; a peer that keeps sending does not keep the
// finished import (and its target's lock) waiting.
constexpr uint64_t kDrainMaxBytes = 64ull << 20;
constexpr auto kDrainMaxTime = std::chrono::seconds(3);

// After an image that ended before its input did: reads and discards what the sender still
// has in flight (bytes past everything the image names, such as the tail of a snapshot
// table), until end of input, a pause, kDrainMaxBytes or kDrainMaxTime, so that closing does
// not reset its connection.
void DrainInput(int fd) {
  std::vector<uint8_t> buf(1u << 20);
  const auto until = std::chrono::steady_clock::now() + kDrainMaxTime;
  for (uint64_t drained = 0; drained < kDrainMaxBytes && std::chrono::steady_clock::now() < until &&
                             InputWithinPause(fd);) {
    const ssize_t n = qcow::ReadWaiting(fd, buf.data(), buf.size(), StopFd());
    if (n <= 0) return;
    drained += static_cast<uint64_t>(n);
  }
}

}  // namespace

int RunServe(const ServeArgs& a) {
  CheckXapiOptions(a.xapi, "source");
  if (!a.source.empty() && a.source_fd) {
    throw qcow::UsageError("give at most one of --source and --source-fd");
  }
  // vhd-tool's meaning, which xapi relies on: the input holds this many bytes (the HTTP
  // request's Content-Length); read exactly that much.
  std::optional<uint64_t> input_size;
  if (!a.destination_size.empty()) input_size = ParseSize(a.destination_size);
  qcow::TargetOptions target_options;
  // The target of a delta holds its base: nothing there reads as zeros by default.
  const bool apply = a.delta || a.keep_unallocated;
  target_options.prezeroed = a.prezeroed && !apply;
  const std::string source =
      a.source_fd ? "fd:" + std::to_string(*a.source_fd) : (a.source.empty() ? "-" : a.source);
  const std::string target_path = FilePath(a.destination);
  // Before the target is opened for writing: the image must not be read from it.
  const std::optional<struct stat> input = StatEndpoint(source, false);
  const std::string shown_source = source == "-" ? "stdin" : source;
  if (input) RefuseDirectorySource(*input, shown_source);
  target_options.vet = [&](const struct stat& st) {
    if (input && qcow::SameDisk(*input, st)) {
      throw qcow::UsageError("the image source (" + shown_source + ") is the target " +
                             target_path + " itself" + qcow::SameDiskNote(*input, st) +
                             "; refusing to decode a file onto itself");
    }
    std::vector<UsedDisk> used{{"the target " + target_path, st}};
    if (input) used.push_back({"the image source " + shown_source, *input});
    RefuseProgressInto(a.progress, used);
  };
  target_options.warn = [](const std::string& w) {
    std::fprintf(stderr, "qcowfs: warning: %s\n", w.c_str());
  };
  qcow::RawTarget target(target_path, target_options);
  qcow::ImportOptions options;
  options.spool = SpoolLimits(a.spool);
  options.threads = a.spool.decompress_threads;
  options.delta = apply;
  options.keep_unallocated = a.keep_unallocated;
  options.log = [](const std::string& line) {
    if (line.rfind("import warning: ", 0) == 0) {
      std::fprintf(stderr, "qcowfs: warning: %s\n", line.c_str() + 16);
    }
  };
  qcow::ImportJob job(target, std::move(options));
  Progress progress(a.progress);
  Endpoint in = OpenImageSource(source);
  qcow::WidenPipe(in.fd());
  struct stat st;
  const bool file = ::fstat(in.fd(), &st) == 0 && S_ISREG(st.st_mode);
  if (!input_size && file) input_size = static_cast<uint64_t>(st.st_size);
  // A progress reader that goes away must not kill the import (SIGPIPE).
  std::signal(SIGPIPE, SIG_IGN);
  uint64_t handle = 0;
  if (job.Begin(&handle) != 0) throw std::runtime_error("cannot start the import");
  if (input_size) job.SetInputSize(*input_size);
  std::vector<uint8_t> buf(4u << 20);
  uint64_t offset = 0;
  int rc = 0;
  bool ended_early = false;
  SetInterruptNote("the target holds a partial image");
  const int idle_ms = a.idle_timeout ? static_cast<int>(a.idle_timeout * 1000) : -1;
  for (;;) {
    if (input_size && offset >= *input_size) break;
    const uint64_t want =
        input_size ? std::min<uint64_t>(buf.size(), *input_size - offset) : buf.size();
    // Waits for input or a stop signal, also on a descriptor its owner made non-blocking.
    // Data the decoder knows the place of moves straight into the target (copy_file_range,
    // splice); the rest is read and fed.
    int64_t moved = qcow::StreamDecoder::kNotMoved;
    ssize_t n = qcow::WaitReady(in.fd(), POLLIN, StopFd(), idle_ms);
    if (n == 0) {
      errno = ETIMEDOUT;
      n = -1;
    }
    if (n > 0) {
      rc = job.WriteFrom(handle, offset, in.fd(), want, &moved, in.description());
      if (rc) break;
      if (moved == -1) continue;  // a non-blocking input with nothing yet: wait again
      n = moved == qcow::StreamDecoder::kNotMoved
              ? qcow::ReadWaiting(in.fd(), buf.data(), job.ReadLength(handle, offset, want),
                                  StopFd(), idle_ms)
              : static_cast<ssize_t>(moved);
    }
    if (n < 0 && errno == ECANCELED) {
      job.Abort(InterruptedBySignal() + " after " + std::to_string(offset) +
                " bytes of the image; the target holds a partial image");
      rc = EIO;
      break;
    }
    if (n < 0 && errno == ETIMEDOUT) {
      job.Abort("no byte of the image came from " + in.description() + " for " +
                std::to_string(a.idle_timeout) + " seconds (--idle-timeout) after " +
                std::to_string(offset) + " bytes; the target holds a partial image");
      rc = EIO;
      break;
    }
    if (n < 0) qcow::ThrowErrno("reading the image from " + in.description());
    if (n == 0) {
      if (input_size) {
        job.Abort("the input ended after " + std::to_string(offset) + " of the " +
                  std::to_string(*input_size) +
                  (a.destination_size.empty() ? " bytes the file held when the import began"
                                              : " bytes that --destination-size announced"));
        rc = EIO;
      }
      break;
    }
    if (moved == qcow::StreamDecoder::kNotMoved) {
      rc = job.Write(handle, offset, std::span(buf.data(), static_cast<size_t>(n)));
      if (rc) break;
    }
    offset += static_cast<uint64_t>(n);
    uint64_t done, total;
    job.Progress(&done, &total);
    progress.Update(done, total);
    // Without a length, stop as soon as the image is complete: an HTTP client keeps its
    // side open for the reply, so the end of input may never come.
    if (!input_size && job.Complete(handle)) {
      ended_early = true;
      break;
    }
    // The disk is whole but the image names more that has not come (clusters only its
    // refcounts count, which a damaged image may put past its end): read on while it
    // comes, but a sender that pauses has sent all it will.
    if (!input_size && job.Complete(handle, qcow::ImportJob::Until::kDisk) &&
        !InputWithinPause(in.fd()) && !qcow::StopRequested(StopFd())) {
      break;
    }
  }
  if (!rc) rc = job.Finish(handle);
  if (rc) {
    PrintFinalError(job.error(), job.image_at_fault() ? kExitFormat : kExitFailure);
    return job.image_at_fault() ? kExitFormat : kExitFailure;
  }
  SetInterruptNote(nullptr);  // the target holds the whole image, fsynced
  progress.Complete();
  if (ended_early) DrainInput(in.fd());
  return kExitOk;
}

}  // namespace qcowfs
