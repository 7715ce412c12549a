#include "differential/readers.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <system_error>
#include <typeinfo>
#include <vector>

#include "qcow/export/export_layout.h"
#include "qcow/export/export_stream.h"
#include "qcow/format/errors.h"
#include "qcow/import/stream_decoder.h"
#include "qcow/import/target.h"
#include "qcow/sources/open_source.h"
#include "test_util.h"

namespace qcowfs_test {
namespace {

using Outcome = Verdict::Outcome;

// A child that runs longer than this is taken for hung (the images are a few MiB).
constexpr unsigned kChildSeconds = 60;
constexpr uint32_t kExportClusterBits = 16;  // the CLI's default cluster size
constexpr uint64_t kChunk = 1 << 20;

void WriteAll(int fd, const void* p, size_t n) {
  const auto* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    c += w;
    n -= static_cast<size_t>(w);
  }
}

// Reads what the child `pid` writes on fd until it closes it, then waits for the child;
// returns its wait status.
int Reap(pid_t pid, int fd, std::string& out) {
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// Runs fn in a child process and returns its verdict: what fn returned, or how the child
// ended. fn returns the outcome's letter and message ("A", "R...", "T", "U...").
Verdict RunIsolated(const std::function<std::string()>& fn) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(p[0]);
    ::alarm(kChildSeconds);
    std::string result;
    try {
      result = fn();
    } catch (const std::exception& e) {
      result = std::string("U") + typeid(e).name() + ": " + e.what();
    } catch (...) {
      result = "Uan exception that is not a std::exception";
    }
    WriteAll(p[1], result.data(), result.size());
    ::_exit(0);
  }
  ::close(p[1]);
  std::string out;
  const int status = Reap(pid, p[0], out);
  Verdict v;
  if (WIFSIGNALED(status)) {
    v.outcome = WTERMSIG(status) == SIGALRM ? Outcome::kHung : Outcome::kCrashed;
    v.message = std::string("child killed by signal ") + strsignal(WTERMSIG(status));
    return v;
  }
  if (WEXITSTATUS(status) != 0 || out.empty()) {
    v.outcome = Outcome::kCrashed;
    v.message = "child exited " + std::to_string(WEXITSTATUS(status)) + " without a verdict";
    return v;
  }
  switch (out[0]) {
    case 'A':
      v.outcome = Outcome::kAccepted;
      break;
    case 'R':
      v.outcome = Outcome::kRefused;
      break;
    case 'T':
      v.outcome = Outcome::kTooLarge;
      break;
    default:
      v.outcome = Outcome::kUnexpected;
  }
  v.message = out.substr(1);
  return v;
}

// Runs argv (no shell) with stdout and stderr into one text, killed after kChildSeconds.
// Returns the exit status, 128 + the signal that ended it, or 124 when it timed out.
CommandResult Exec(const std::vector<std::string>& argv) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(p[1], 1);
    ::dup2(p[1], 2);
    ::alarm(kChildSeconds);  // survives exec
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(p[1]);
  std::string out;
  const int status = Reap(pid, p[0], out);
  if (WIFSIGNALED(status)) return {WTERMSIG(status) == SIGALRM ? 124 : 128 + WTERMSIG(status), out};
  return {WEXITSTATUS(status), out};
}

// Returns the first line of text that mentions a problem, else its first line.
std::string ProblemLine(const std::string& text) {
  std::string first;
  size_t at = 0;
  while (at < text.size()) {
    const size_t end = std::min(text.find('\n', at), text.size());
    const std::string line = text.substr(at, end - at);
    if (first.empty()) first = line;
    if (line.rfind("ERROR", 0) == 0 || line.rfind("Leaked", 0) == 0 ||
        line.find("rror") != std::string::npos) {
      return line;
    }
    at = end + 1;
  }
  return first;
}

}  // namespace

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kAccepted:
      return "accepted";
    case Outcome::kRefused:
      return "refused";
    case Outcome::kTooLarge:
      return "too-large";
    case Outcome::kUnexpected:
      return "unexpected-exception";
    case Outcome::kCrashed:
      return "crashed";
    case Outcome::kHung:
      return "hung";
  }
  return "?";
}

Verdict QemuView(const std::string& image, const std::string& out, uint64_t header_size) {
  Verdict v;
  const bool large = header_size > kMaxVirtualSize;
  const auto r = large ? Exec({"qemu-img", "info", "-f", "qcow2", image})
                       : Exec({"qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, out});
  if (r.status == 124) {
    v.outcome = Outcome::kHung;
  } else if (r.status > 128) {
    v.outcome = Outcome::kCrashed;
  } else if (r.status == 0) {
    v.outcome = large ? Outcome::kTooLarge : Outcome::kAccepted;
  }
  v.message = ProblemLine(r.output);
  return v;
}

QemuCheck RunQemuCheck(const std::string& image) {
  const auto r = Exec({"qemu-img", "check", "-f", "qcow2", image});
  return {r.status, r.status == 0 ? "" : ProblemLine(r.output)};
}

Verdict ImportView(const std::string& image, const std::string& target, uint64_t target_size,
                   uint64_t chunk, const std::string& spool_dir) {
  {
    // A target that reads as a pattern: a range the decoder fails to zero shows.
    std::vector<uint8_t> pattern(std::min(target_size, kChunk));
    for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(0xa5 ^ i);
    const int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("cannot create " + target);
    for (uint64_t off = 0; off < target_size; off += pattern.size()) {
      WriteAll(fd, pattern.data(), std::min<uint64_t>(pattern.size(), target_size - off));
    }
    ::close(fd);
  }
  return RunIsolated([&]() -> std::string {
    const std::vector<uint8_t> bytes = ReadFile(image);
    qcow::RawTarget sink(target, {});
    qcow::DecoderOptions o;
    o.target_size = sink.size();
    o.spool = {.memory = 16u << 20, .dir = spool_dir, .limit = 256u << 20};
    qcow::StreamDecoder decoder(sink, std::move(o));
    try {
      for (uint64_t off = 0; off < bytes.size(); off += chunk) {
        const uint64_t n = std::min<uint64_t>(chunk, bytes.size() - off);
        decoder.Feed(off, std::span(bytes.data() + off, n));
      }
      decoder.Finish();
    } catch (const qcow::FormatError& e) {  // TooLargeError too
      return std::string("R") + e.what();
    } catch (const qcow::SpoolFullError& e) {
      return std::string("R") + e.what();
    } catch (const std::system_error& e) {
      return std::string("R") + e.what();
    }
    return "A";
  });
}

Verdict ChainView(const std::string& image, const std::string& out,
                  const std::string& export_image) {
  return RunIsolated([&]() -> std::string {
    std::unique_ptr<qcow::Source> source;
    try {
      qcow::SourceOptions options;
      options.format = qcow::SourceFormat::kQcow2;
      source = qcow::OpenSource(image, options);
      if (source->size() > kMaxVirtualSize) {
        (void)source->Allocation(kExportClusterBits);
        return "T";
      }
      // The view, sparse: chunks of zeros are skipped.
      const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0) throw std::runtime_error("cannot create " + out);
      std::vector<uint8_t> buf(kChunk);
      for (uint64_t off = 0; off < source->size(); off += kChunk) {
        const uint64_t n = std::min<uint64_t>(kChunk, source->size() - off);
        source->ReadAt(off, buf.data(), n);
        if (std::any_of(buf.begin(), buf.begin() + n, [](uint8_t c) { return c != 0; })) {
          if (::pwrite(fd, buf.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
            throw std::runtime_error("cannot write " + out);
          }
        }
      }
      if (::ftruncate(fd, static_cast<off_t>(source->size())) != 0) {
        throw std::runtime_error("cannot size " + out);
      }
      ::close(fd);
      const qcow::ExportLayout layout(source->size(), kExportClusterBits,
                                      source->Allocation(kExportClusterBits));
      const int efd = ::open(export_image.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (efd < 0) throw std::runtime_error("cannot create " + export_image);
      qcow::WriteExport(layout, *source, efd, {});
      ::close(efd);
    } catch (const qcow::FormatError& e) {
      return std::string("R") + e.what();
    } catch (const qcow::UsageError& e) {
      return std::string("R") + e.what();
    } catch (const std::system_error& e) {
      return std::string("R") + e.what();
    }
    return "A";
  });
}

std::optional<uint64_t> FirstDifference(const std::string& a, const std::string& b) {
  const int fa = ::open(a.c_str(), O_RDONLY | O_CLOEXEC),
            fb = ::open(b.c_str(), O_RDONLY | O_CLOEXEC);
  if (fa < 0 || fb < 0) throw std::runtime_error("cannot open " + a + " or " + b);
  std::vector<uint8_t> x(kChunk), y(kChunk);
  std::optional<uint64_t> diff;
  for (uint64_t off = 0;; off += kChunk) {
    const ssize_t n = ::pread(fa, x.data(), kChunk, static_cast<off_t>(off));
    const ssize_t m = ::pread(fb, y.data(), kChunk, static_cast<off_t>(off));
    if (n < 0 || m < 0) throw std::runtime_error("cannot read " + a + " or " + b);
    const auto k = static_cast<size_t>(std::min(n, m));
    const auto at = std::mismatch(x.begin(), x.begin() + k, y.begin()).first - x.begin();
    if (static_cast<size_t>(at) < k || n != m) {
      diff = off + static_cast<uint64_t>(at);
      break;
    }
    if (n == 0) break;
  }
  ::close(fa);
  ::close(fb);
  return diff;
}

}  // namespace qcowfs_test
