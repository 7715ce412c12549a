#include "qcow/import/spool.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <system_error>

#include "qcow/format/errors.h"

namespace qcow {
namespace {

// What a held piece costs beyond its bytes: a std::map node and a vector header, with
// malloc's overhead. Counted so that many tiny writes cannot hide their real memory.
constexpr uint64_t kPieceOverhead = 128;
// In-memory pieces that continue each other grow up to this size instead of adding nodes.
constexpr uint64_t kMaxCoalesced = 1u << 20;
// What a free extent of the temp file costs: a std::map node with malloc's overhead.
constexpr uint64_t kFreeExtentOverhead = 64;

std::string Size(uint64_t v) { return std::to_string(v) + " bytes"; }

}  // namespace

Spool::~Spool() {
  if (fd_ >= 0) ::close(fd_);
}

uint64_t Spool::Cost(const Piece& p) {
  return kPieceOverhead + (p.memory.empty() ? 0 : p.memory.capacity());
}

void Spool::Track() {
  peak_ = std::max(peak_, bytes_);
  peak_memory_ = std::max(peak_memory_, memory_bytes_ + other_memory_);
}

void Spool::CheckLimit(uint64_t adding_bytes, uint64_t adding_overhead) const {
  const uint64_t held = file_bytes_ + memory_bytes_ + other_memory_;
  if (held + adding_bytes + adding_overhead > limits_.limit) {
    throw SpoolFullError(
        "the import needs more than the spool limit of " + Size(limits_.limit) +
        " (image bytes waiting for the tables that place them: " + Size(bytes_ + adding_bytes) +
        "; decoder bookkeeping: " + Size(other_memory_) + "): raise --spool-limit");
  }
}

void Spool::set_other_memory(uint64_t bytes) {
  other_memory_ = bytes;
  Shed();
  Track();
  CheckLimit(0, 0);
}

// Moves pieces from memory to the spool file, front to back, until memory fits the budget
// again: splitting a piece (Erase) and the decoder's growing bookkeeping can push it over.
void Spool::Shed() {
  // Every piece costs kPieceOverhead plus its buffer: with no buffers left, nothing to move
  // (and no walk over a map of pieces that all live in the file).
  if (memory_bytes_ + other_memory_ <= limits_.memory ||
      memory_bytes_ == kPieceOverhead * pieces_.size() + kFreeExtentOverhead * free_.size()) {
    return;
  }
  for (auto it = pieces_.begin();
       it != pieces_.end() && memory_bytes_ + other_memory_ > limits_.memory;) {
    if (it->second.memory.empty()) {
      ++it;
      continue;
    }
    // Written first: a failed write leaves the piece in memory.
    const uint64_t offset = it->first, end = offset + it->second.length;
    auto node = pieces_.extract(it);
    const Piece& p = node.mapped();
    try {
      SpillToFile(offset, std::span(p.memory).subspan(p.skip, p.length));
    } catch (...) {
      pieces_.insert(std::move(node));
      throw;
    }
    memory_bytes_ -= Cost(p);
    it = pieces_.lower_bound(end);
  }
}

void Spool::OpenFile() {
  if (fd_ >= 0) return;
  fd_ = ::open(limits_.dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    // File systems without O_TMPFILE: a named file, unlinked at once.
    std::string path = limits_.dir + "/qcowfs-spool-XXXXXX";
    fd_ = ::mkostemp(path.data(), O_CLOEXEC);
    if (fd_ < 0) {
      ThrowErrno("creating a spool file in " + limits_.dir +
                 " (image bytes that came before their tables exceed the spool's memory; "
                 "give --spool-dir)");
    }
    ::unlink(path.c_str());
  }
}

std::vector<std::pair<uint64_t, uint64_t>> Spool::AllocateFile(uint64_t n) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  const uint64_t before = free_.size();
  while (n > 0 && !free_.empty()) {
    auto it = free_.begin();
    const uint64_t take = std::min(n, it->second);
    out.emplace_back(it->first, take);
    if (take == it->second) {
      free_.erase(it);
    } else {
      auto node = free_.extract(it);
      node.key() += take;
      node.mapped() -= take;
      free_.insert(std::move(node));
    }
    n -= take;
  }
  if (n > 0) {
    out.emplace_back(file_end_, n);
    file_end_ += n;
  }
  memory_bytes_ -= (before - free_.size()) * kFreeExtentOverhead;
  return out;
}

void Spool::FreeFile(uint64_t offset, uint64_t n) {
  if (n == 0) return;
  memory_bytes_ -= free_.size() * kFreeExtentOverhead;
  uint64_t start = offset, end = offset + n;
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && next->first == end) {
    end += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin() && std::prev(next)->first + std::prev(next)->second == start) {
    start = std::prev(next)->first;
    free_.erase(std::prev(next));
  }
  // Give the space back; failure only costs disk space until the import ends.
  if (end == file_end_) {
    file_end_ = start;
    (void)::ftruncate(fd_, static_cast<off_t>(start));
  } else {
    (void)::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                      static_cast<off_t>(n));
    free_.emplace(start, end - start);
  }
  memory_bytes_ += free_.size() * kFreeExtentOverhead;
}

void Spool::SpillToFile(uint64_t offset, std::span<const uint8_t> bytes) {
  OpenFile();
  const auto extents = AllocateFile(bytes.size());
  uint64_t done = 0;
  try {
    for (const auto& [at, n] : extents) {
      for (uint64_t i = 0; i < n;) {
        const ssize_t w = ::pwrite(fd_, bytes.data() + done + i, n - i, static_cast<off_t>(at + i));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) ThrowErrno("writing the spool file in " + limits_.dir);
        i += static_cast<uint64_t>(w);
      }
      done += n;
    }
  } catch (...) {
    for (const auto& [at, n] : extents) FreeFile(at, n);
    throw;
  }
  done = 0;
  for (const auto& [at, n] : extents) {
    Piece piece{n, {}, 0, at};
    memory_bytes_ += Cost(piece);
    pieces_.emplace(offset + done, std::move(piece));
    file_bytes_ += n;
    done += n;
  }
}

void Spool::Put(uint64_t offset, std::span<const uint8_t> bytes) {
  if (bytes.empty()) return;
  Erase(offset, offset + bytes.size());
  CheckLimit(bytes.size(), kPieceOverhead);
  const bool fits = memory_bytes_ + other_memory_ + bytes.size() + kPieceOverhead <= limits_.memory;
  // Continue the piece just before, when it is in memory: many small sequential writes then
  // cost one node, not one each.
  auto prev = pieces_.lower_bound(offset);
  if (fits && prev != pieces_.begin()) {
    --prev;
    Piece& p = prev->second;
    if (prev->first + p.length == offset && !p.memory.empty() &&
        p.length + bytes.size() <= kMaxCoalesced) {
      memory_bytes_ -= Cost(p);
      const uint64_t need = p.skip + p.length + bytes.size();
      if (p.memory.capacity() < need) {
        p.memory.reserve(std::max(need, std::min<uint64_t>(kMaxCoalesced, 2 * need)));
      }
      p.memory.insert(p.memory.end(), bytes.begin(), bytes.end());
      p.length += bytes.size();
      memory_bytes_ += Cost(p);
      bytes_ += bytes.size();
      Shed();
      Track();
      return;
    }
  }
  if (fits) {
    Piece piece{bytes.size(), {bytes.begin(), bytes.end()}, 0};
    memory_bytes_ += Cost(piece);
    pieces_.emplace(offset, std::move(piece));
  } else {
    SpillToFile(offset, bytes);
  }
  bytes_ += bytes.size();
  Track();
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
      fn(lo, std::span(it->second.memory).subspan(it->second.skip + (lo - it->first), hi - lo));
      continue;
    }
    for (uint64_t pos = lo; pos < hi;) {
      const uint64_t n = std::min<uint64_t>(hi - pos, 4u << 20);
      buf.resize(n);
      const uint64_t at = it->second.file_offset + (pos - it->first);
      ssize_t r = ::pread(fd_, buf.data(), n, static_cast<off_t>(at));
      if (r < 0 && errno == EINTR) continue;
      if (r != static_cast<ssize_t>(n)) ThrowErrno("reading the spool file in " + limits_.dir);
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
    const uint64_t lo = std::max(a, start), hi = std::min(b, end);
    Piece& p = it->second;
    bytes_ -= hi - lo;
    memory_bytes_ -= Cost(p);
    if (p.memory.empty()) {
      file_bytes_ -= hi - lo;
      FreeFile(p.file_offset + (lo - a), hi - lo);
    }
    if (a >= start && b <= end) {  // all of it
      it = pieces_.erase(it);
      continue;
    }
    if (a < start && b > end) {  // its middle: the tail becomes a piece of its own
      Piece tail{b - end, {}, 0, p.file_offset + (end - a)};
      if (!p.memory.empty()) {
        const uint8_t* d = p.memory.data() + p.skip + (end - a);
        tail.memory.assign(d, d + tail.length);
      }
      memory_bytes_ += Cost(tail);
      pieces_.emplace(end, std::move(tail));
    }
    if (a < start) {  // keep its head
      p.length = start - a;
      if (!p.memory.empty()) p.memory.resize(p.skip + p.length);
      Compact(p);
      memory_bytes_ += Cost(p);
      if (b > end) break;
      ++it;
      continue;
    }
    // Keep its tail, without copying: the front of its buffer is skipped.
    auto node = pieces_.extract(it);
    Piece& q = node.mapped();
    if (q.memory.empty()) {
      q.file_offset += end - a;
    } else {
      q.skip += end - a;
    }
    q.length = b - end;
    Compact(q);
    memory_bytes_ += Cost(q);
    node.key() = end;
    pieces_.insert(std::move(node));
    break;
  }
  Shed();
}

// A piece whose live bytes fill less than a quarter of its buffer gets a buffer of its own
// size, so that memory follows what is held (each byte is copied at most a few times).
void Spool::Compact(Piece& p) {
  if (p.memory.empty() || p.length * 4 >= p.memory.capacity()) return;
  std::vector<uint8_t> live(p.memory.begin() + p.skip, p.memory.begin() + p.skip + p.length);
  p.memory = std::move(live);
  p.skip = 0;
}

void Spool::Clear() {
  pieces_.clear();
  free_.clear();
  bytes_ = memory_bytes_ = file_bytes_ = file_end_ = 0;
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
    if (it->first + it->second.length <= pos) continue;
    if (it->first > pos) return false;
    pos = std::max(pos, it->first + it->second.length);
  }
  return pos >= end;
}

void Spool::ForEachHeld(uint64_t start, uint64_t end,
                        const std::function<void(uint64_t, uint64_t)>& fn) const {
  auto it = pieces_.upper_bound(start);
  if (it != pieces_.begin() && std::prev(it)->first + std::prev(it)->second.length > start) --it;
  for (; it != pieces_.end() && it->first < end; ++it) {
    const uint64_t lo = std::max(start, it->first);
    const uint64_t hi = std::min(end, it->first + it->second.length);
    if (lo < hi) fn(lo, hi);
  }
}

std::vector<std::pair<uint64_t, uint64_t>> Spool::Ranges() const {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& [off, p] : pieces_) {
    if (!out.empty() && out.back().second == off) {
      out.back().second += p.length;
    } else {
      out.emplace_back(off, off + p.length);
    }
  }
  return out;
}

}  // namespace qcow
