// Holds image bytes the decoder cannot place yet (data that arrives before the table that
// maps it, tables and compressed data until they are complete), keyed by image offset: in
// memory up to a budget, then in an unlinked temp file, and refused past a hard limit. The
// temp file is compact: pieces get offsets of its own, reusing the space freed pieces
// leave, so it never grows past the most bytes it held at once (a peer choosing image
// offsets past a file system's largest file cannot make it fail).
// The budget is shared with the decoder's own bookkeeping (set_other_memory), so that
// everything the decoder holds counts against the same limits.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace qcow {

// The spool would grow past its limit.
class SpoolFullError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What an import holds in memory by default before it spools to a file: small enough that
// 8 imports and 8 exports run side by side in 1 GiB of dom0 (tests/cli/dom0_budget_test.cc).
inline constexpr uint64_t kDefaultSpoolMemory = 64ull << 20;

class Spool {
 public:
  struct Limits {
    uint64_t memory = kDefaultSpoolMemory;  // bytes held in memory before using the temp file
    std::string dir = "/tmp";               // where the temp file goes
    uint64_t limit = 8ull << 30;  // everything held (memory and file), beyond which Put throws
  };
  explicit Spool(Limits limits) : limits_(std::move(limits)) {}
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Keeps bytes at [offset, offset + size), replacing any held there. Throws SpoolFullError
  // past the limit and std::system_error when the temp file cannot be written.
  void Put(uint64_t offset, std::span<const uint8_t> bytes);
  // Calls fn(offset, bytes) for every held piece of [start, end), in order.
  void Visit(uint64_t start, uint64_t end,
             const std::function<void(uint64_t, std::span<const uint8_t>)>& fn) const;
  // Forgets [start, end).
  void Erase(uint64_t start, uint64_t end);
  // Forgets everything.
  void Clear();
  // Returns whether every byte of [start, end) is held.
  bool Covers(uint64_t start, uint64_t end) const;
  // Calls fn(lo, hi) for each held piece of [start, end), clipped to it, without reading it.
  void ForEachHeld(uint64_t start, uint64_t end,
                   const std::function<void(uint64_t, uint64_t)>& fn) const;
  // Returns the held ranges, in order.
  std::vector<std::pair<uint64_t, uint64_t>> Ranges() const;
  // Sets the bytes of memory the decoder uses besides the spool; they count against both
  // the memory budget and the limit. Throws SpoolFullError when they alone pass the limit.
  void set_other_memory(uint64_t bytes);

  // Returns the image bytes held, in memory and in the file.
  uint64_t bytes() const { return bytes_; }
  uint64_t peak_bytes() const { return peak_; }
  // Returns the memory used (held bytes, their bookkeeping, and the decoder's other memory)
  // and the most it ever was.
  uint64_t memory_bytes() const { return memory_bytes_ + other_memory_; }
  uint64_t peak_memory_bytes() const { return peak_memory_; }
  // Returns the size of the temp file (0 when there is none).
  uint64_t file_size() const { return file_end_; }

 private:
  struct Piece {
    uint64_t length;
    std::vector<uint8_t> memory;  // empty when the piece lives in the temp file
    uint64_t skip;                // the piece's bytes start this far into `memory`
    uint64_t file_offset = 0;     // where a piece in the temp file is in it
  };
  // Writes bytes for image offset `offset` into space of the temp file and holds them there
  // as pieces (one per free extent used). Throws std::system_error.
  void SpillToFile(uint64_t offset, std::span<const uint8_t> bytes);
  // Returns extents of the temp file for n bytes: freed ones first, lowest first, then its
  // end.
  std::vector<std::pair<uint64_t, uint64_t>> AllocateFile(uint64_t n);
  // Gives back [offset, offset + n) of the temp file.
  void FreeFile(uint64_t offset, uint64_t n);
  void OpenFile();
  // Throws SpoolFullError when holding adding_bytes more image bytes (and adding_overhead
  // of bookkeeping) would pass the limit.
  void CheckLimit(uint64_t adding_bytes, uint64_t adding_overhead) const;
  void Shed();
  void Track();
  static uint64_t Cost(const Piece& p);
  static void Compact(Piece& p);

  Limits limits_;
  std::map<uint64_t, Piece> pieces_;
  uint64_t bytes_ = 0;
  uint64_t file_bytes_ = 0;
  uint64_t memory_bytes_ = 0;  // Cost() of the pieces
  uint64_t other_memory_ = 0;
  uint64_t peak_ = 0;
  uint64_t peak_memory_ = 0;
  int fd_ = -1;                        // the temp file
  uint64_t file_end_ = 0;              // its size: every byte below is held or free
  std::map<uint64_t, uint64_t> free_;  // its free extents (offset -> length), merged
};

}  // namespace qcow
