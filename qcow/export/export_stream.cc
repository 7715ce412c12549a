#include "qcow/export/export_stream.h"

#include <poll.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>
#include <vector>

#include "qcow/export/export_reader.h"
#include "qcow/format/errors.h"
#include "qcow/io/file_io.h"
#include "qcow/io/wait_io.h"

namespace qcow {
namespace {

constexpr uint64_t kChunk = 4u << 20;

[[noreturn]] void WriteFailed(uint64_t done, uint64_t total) {
  const int err = errno;
  if (err == ECANCELED) {
    throw Interrupted("after " + std::to_string(done) + " of " + std::to_string(total) +
                      " bytes of the image");
  }
  if (err == EPIPE || err == ECONNRESET) {
    throw PeerClosedError("the destination closed early, after " + std::to_string(done) + " of " +
                          std::to_string(total) + " bytes");
  }
  throw std::system_error(err, std::generic_category(),
                          "writing the image after " + std::to_string(done) + " bytes");
}

void WriteAll(int fd, const uint8_t* p, uint64_t n, uint64_t& done, uint64_t total, int stop_fd) {
  while (n > 0) {
    const ssize_t w = WriteWaiting(fd, p, n, stop_fd);
    if (w <= 0) WriteFailed(done, total);
    p += w;
    n -= static_cast<uint64_t>(w);
    done += static_cast<uint64_t>(w);
  }
}

// Sends n bytes of `in` at pos. Returns false when sendfile cannot serve this fd pair, or
// when it fails or stops short in a way that may be the source's fault: the caller then
// copies the rest, so that a source error is reported as one (naming the source) and a
// destination error as one.
bool SendAll(int out, int in, uint64_t pos, uint64_t n, uint64_t& done, uint64_t total,
             int stop_fd) {
  off_t off = static_cast<off_t>(pos);
  while (n > 0) {
    if (stop_fd >= 0 && WaitReady(out, POLLOUT, stop_fd) < 0) WriteFailed(done, total);
    ssize_t w = ::sendfile(out, in, &off, std::min<uint64_t>(n, 1u << 30));
    if (w < 0 && errno == EINTR) continue;
    // A destination its owner made non-blocking is full: wait for room.
    if (w < 0 && errno == EAGAIN) {
      if (WaitReady(out, POLLOUT, stop_fd) < 0) WriteFailed(done, total);
      continue;
    }
    if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) WriteFailed(done, total);
    if (w <= 0) return false;
    n -= static_cast<uint64_t>(w);
    done += static_cast<uint64_t>(w);
  }
  return true;
}

}  // namespace

void WriteExport(const ExportLayout& layout, const Source& source, int fd,
                 const std::function<void(uint64_t, uint64_t)>& progress, int stop_fd) {
  const uint64_t total = layout.image_size();
  std::vector<uint8_t> scratch, buf;
  std::vector<ExportSegment> segments;
  std::vector<SourcePiece> pieces;
  bool use_sendfile = true;
  uint64_t done = 0;
  WidenPipe(fd);
  if (progress) progress(0, total);
  while (done < total) {
    const uint64_t start = done;
    layout.Plan(start, kChunk, scratch, segments);
    for (const auto& s : segments) {
      switch (s.kind) {
        case ExportSegment::Kind::kBytes:
          WriteAll(fd, scratch.data() + s.position, s.length, done, total, stop_fd);
          break;
        case ExportSegment::Kind::kZero:
          buf.assign(s.length, 0);
          WriteAll(fd, buf.data(), s.length, done, total, stop_fd);
          break;
        case ExportSegment::Kind::kSource:
          pieces.clear();
          source.Pieces(s.position, s.length, pieces);
          for (const SourcePiece& p : pieces) {
            uint64_t sent = 0;
            if (use_sendfile && p.fd >= 0) {
              const uint64_t before = done;
              if (SendAll(fd, p.fd, p.position, p.length, done, total, stop_fd)) continue;
              use_sendfile = false;  // copy the rest of this piece, and all later ones
              sent = done - before;
            }
            buf.resize(p.length - sent);
            source.ReadAt(p.offset + sent, buf.data(), buf.size());
            WriteAll(fd, buf.data(), buf.size(), done, total, stop_fd);
          }
          break;
      }
    }
    if (progress) progress(done, total);
  }
}

}  // namespace qcow
