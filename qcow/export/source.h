// The interface the export planner reads disks through, and the zero scan over any source.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qcow/export/cluster_map.h"

namespace qcow {

// Where a range of source bytes is: `length` bytes at source offset `offset`, found at
// `position` of the file `fd` (named `file`) when they can be spliced from there, or to be
// read with Source::ReadAt when fd is -1 (zeros, compressed data, O_DIRECT, memory).
struct SourcePiece {
  uint64_t offset;
  uint64_t length;
  int fd;
  uint64_t position;
  const std::string* file;
};

// A disk to export.
class Source {
 public:
  virtual ~Source() = default;
  // Returns the size in bytes.
  virtual uint64_t size() const = 0;
  // Returns a name for messages (the path).
  virtual std::string name() const { return "the source"; }
  // Returns the last modification time (exported as the image's mtime).
  virtual timespec mtime() const = 0;
  // Returns the owner, group and permission bits of the disk (the exported image carries
  // them, without write bits, so that a mount with allow_other shows it to whom the disk
  // is shown). Sources that are not files report the calling process and 0444.
  virtual uid_t uid() const { return ::getuid(); }
  virtual gid_t gid() const { return ::getgid(); }
  virtual mode_t mode() const { return 0444; }
  // Appends the pieces that [offset, offset + n) is made of, in order. The default: one
  // piece read with ReadAt.
  virtual void Pieces(uint64_t offset, uint64_t n, std::vector<SourcePiece>& out) const {
    out.push_back({offset, n, -1, offset, nullptr});
  }
  // Reads n bytes at offset into out; bytes past size() read as zeros. Throws
  // std::system_error on I/O errors.
  virtual void ReadAt(uint64_t offset, uint8_t* out, uint64_t n) const = 0;
  // Returns the clusters (of 2^cluster_bits bytes) that may hold data.
  virtual ClusterMap Allocation(uint32_t cluster_bits) const = 0;
};

// Called with (bytes done, bytes total) while scanning.
using ProgressFn = std::function<void(uint64_t, uint64_t)>;

// Returns `map` without the clusters whose bytes are all zero, reading every cluster of it
// once. Memory grows with the number of runs, not with the bytes read.
ClusterMap DropZeroClusters(const Source& source, const ClusterMap& map, uint32_t cluster_bits,
                            const ProgressFn& progress);

// Returns whether all n bytes at p are zero.
bool IsZero(const uint8_t* p, uint64_t n);

}  // namespace qcow
