#include "qcow/spool.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <system_error>

#include "qcow/errors.h"

namespace qcow {

Spool::~Spool() {
  if (fd_ >= 0) ::close(fd_);
}

void Spool::WriteFile(uint64_t offset, std::span<const uint8_t> bytes) {
  if (fd_ < 0) {
    fd_ = ::open(limits_.dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0) {
      // File systems without O_TMPFILE: a named file, unlinked at once.
      std::string path = limits_.dir + "/qcowfs-spool-XXXXXX";
      fd_ = ::mkostemp(path.data(), O_CLOEXEC);
      if (fd_ < 0) ThrowErrno("creating a spool file in " + limits_.dir);
      ::unlink(path.c_str());
    }
  }
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n =
        ::pwrite(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ThrowErrno("writing the spool file in " + limits_.dir);
    done += static_cast<size_t>(n);
  }
}

void Spool::Put(uint64_t offset, std::span<const uint8_t> bytes) {
  if (bytes.empty()) return;
  Erase(offset, offset + bytes.size());
  if (bytes_ + bytes.size() > limits_.limit) {
    throw SpoolFullError("the image needs more than the spool limit of " +
                         std::to_string(limits_.limit) +
                         " bytes for data that arrives before the tables that map it "
                         "(raise --spool-limit)");
  }
  Piece piece{bytes.size(), {}};
  if (memory_bytes_ + bytes.size() <= limits_.memory) {
    piece.memory.assign(bytes.begin(), bytes.end());
    memory_bytes_ += bytes.size();
  } else {
    WriteFile(offset, bytes);
  }
  pieces_.emplace(offset, std::move(piece));
  bytes_ += bytes.size();
  peak_ = std::max(peak_, bytes_);
}

void Spool::Visit(uint64_t start, uint64_t end,
                  const std::function<void(uint64_t, std::span<const uint8_t>)>& fn) const {
  auto it = pieces_.upper_bound(start);
  if (it != pieces_.begin() && std::prev(it)->first + std::prev(it)->second.length > start) --it;
  std::vector<uint8_t> buf;
  for (; it != pieces_.end() && it->first < end; ++it) {
    const uint64_t lo = std::max(start, it->first);
    const uint64_t hi = std::min(end, it->first + it->second.length);
    if (lo >= hi) continue;
    if (!it->second.memory.empty()) {
      fn(lo, std::span(it->second.memory).subspan(lo - it->first, hi - lo));
      continue;
    }
    for (uint64_t pos = lo; pos < hi;) {
      const uint64_t n = std::min<uint64_t>(hi - pos, 4u << 20);
      buf.resize(n);
      ssize_t r = ::pread(fd_, buf.data(), n, static_cast<off_t>(pos));
      if (r < 0 && errno == EINTR) continue;
      if (r != static_cast<ssize_t>(n)) ThrowErrno("reading the spool file");
      fn(pos, buf);
      pos += n;
    }
  }
}

void Spool::Erase(uint64_t start, uint64_t end) {
  auto it = pieces_.upper_bound(start);
  if (it != pieces_.begin() && std::prev(it)->first + std::prev(it)->second.length > start) --it;
  while (it != pieces_.end() && it->first < end) {
    const uint64_t a = it->first, b = a + it->second.length;
    Piece piece = std::move(it->second);
    it = pieces_.erase(it);
    const bool in_memory = !piece.memory.empty();
    bytes_ -= piece.length;
    if (in_memory) memory_bytes_ -= piece.length;
    auto keep = [&](uint64_t lo, uint64_t hi) {
      Piece part{hi - lo, {}};
      if (in_memory) {
        part.memory.assign(piece.memory.begin() + (lo - a), piece.memory.begin() + (hi - a));
        memory_bytes_ += hi - lo;
      }
      bytes_ += hi - lo;
      return pieces_.emplace(lo, std::move(part)).first;
    };
    if (!in_memory && fd_ >= 0) {
      // Give the space back; failure only costs disk space until the import ends.
      (void)::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(std::max(a, start)),
                        static_cast<off_t>(std::min(b, end) - std::max(a, start)));
    }
    if (a < start) keep(a, start);
    if (b > end) {
      keep(end, b);
      break;
    }
  }
}

void Spool::Clear() {
  pieces_.clear();
  bytes_ = memory_bytes_ = 0;
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

bool Spool::Covers(uint64_t start, uint64_t end) const {
  uint64_t pos = start;
  auto it = pieces_.upper_bound(start);
  if (it != pieces_.begin()) --it;
  for (; it != pieces_.end() && pos < end; ++it) {
    if (it->first > pos) return false;
    pos = std::max(pos, it->first + it->second.length);
  }
  return pos >= end;
}

}  // namespace qcow
