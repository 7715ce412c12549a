// Writes a whole exported image, in order, to a file descriptor (socket, pipe, file):
// the same bytes the mount's disk.qcow2 shows.
#pragma once

#include <cstdint>
#include <functional>

#include "qcow/export/export_layout.h"
#include "qcow/export/source.h"

namespace qcow {

// The destination stopped taking bytes (EPIPE/ECONNRESET): the peer closed early.
class PeerClosedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Writes all image_size() bytes of `layout` to fd, calling progress(done, total) after each
// piece. Data goes from a spliceable source straight to the fd with sendfile where the
// kernel allows it, and through a buffer otherwise. Handles short writes and EINTR, and
// waits with poll on a descriptor its owner made non-blocking. Throws Interrupted (see
// qcow/io/wait_io.h) once stop_fd (-1: none) is readable before a write, PeerClosedError
// when the reader goes away (SIGPIPE must be ignored by the caller) and std::system_error
// for other I/O errors.
void WriteExport(const ExportLayout& layout, const Source& source, int fd,
                 const std::function<void(uint64_t, uint64_t)>& progress, int stop_fd = -1);

}  // namespace qcow
