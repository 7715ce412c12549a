// A raw disk whose writes a test records in a changed-block bitmap, as XCP-ng's changed
// block tracking does for a VDI: one bit per 64 KiB block, the most significant bit of the
// first byte for block 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qcowfs_test {

class TrackedDisk {
 public:
  // Creates (or truncates) the file at path as a sparse disk of `size` bytes.
  TrackedDisk(std::string path, uint64_t size);

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

  // Writes bytes at offset, zeros, or punches a hole (the guest discards), marking every
  // block they touch as changed.
  void Write(uint64_t offset, const std::vector<uint8_t>& bytes);
  void Zero(uint64_t offset, uint64_t n);
  void Discard(uint64_t offset, uint64_t n);
  // Writes `count` pieces of random length (1 byte to 300 KiB) at random places, some of
  // them zeros or discards, from `seed`.
  void Scribble(int count, uint64_t seed);

  // Returns the bitmap of the blocks changed since the last call, and starts a new one.
  std::string TakeBitmap();
  // Returns the number of blocks changed since the last TakeBitmap.
  uint64_t changed_blocks() const;

 private:
  void Mark(uint64_t offset, uint64_t n);

  std::string path_;
  uint64_t size_;
  std::string bitmap_;
};

// Returns bytes as base64 text with padding, on one line (no newline).
std::string Base64(const std::string& bytes);

}  // namespace qcowfs_test
