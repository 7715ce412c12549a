// Helpers shared by the tests: temp dirs, running commands, files, sources in memory.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qcow/export/source.h"
#include "qcow/import/import_job.h"
#include "qcowfs_binary.h"

namespace qcowfs_test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // Returns path() + "/" + name.
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int status;          // exit status, or 128 + signal
  std::string output;  // stdout and stderr together
};

// Feeds an import from fd in order, as serve does: ImportJob::WriteFrom moves what the
// decoder lets move, the rest is read (`chunk` bytes at a time) and written; a non-blocking
// fd with nothing yet is waited on. Returns 0 at the end of input, or as soon as the job
// says the image is complete with `until_complete` (Finish is the caller's), or the first
// failure; adds the bytes moved to *moved.
int FeedFromDescriptor(qcow::ImportJob& job, uint64_t handle, int fd, uint64_t* moved,
                       size_t chunk = 64 << 10, bool until_complete = false);

// Returns the number of lines (newlines) in s, e.g. a command's error output.
int Lines(const std::string& s);
// Returns whether s contains what.
bool Has(const std::string& s, const std::string& what);

// Runs a shell command line and returns its exit status and output.
CommandResult Sh(const std::string& command);

// Quotes s for /bin/sh.
std::string Quote(const std::string& s);

// Returns the value of every `"key": value` in JSON text, in order: numbers and booleans
// as written, strings without their quotes (escapes kept). No std::regex: its headers warn
// under the sanitizer build.
std::vector<std::string> JsonValues(const std::string& text, const std::string& key);

// Returns the whole file (throws on error).
std::vector<uint8_t> ReadFile(const std::string& path);

// Writes bytes at offset (creating the file if needed, never truncating).
void WriteAt(const std::string& path, uint64_t offset, const std::vector<uint8_t>& bytes);

// Returns n pseudo-random bytes from seed (deterministic).
std::vector<uint8_t> RandomBytes(uint64_t n, uint64_t seed);

// The byte at offset of a deterministic pattern with no all-zero 512-byte sectors.
uint8_t PatternByte(uint64_t offset);

// A source held in memory: its bytes are PatternByte(offset) inside `allocated` clusters
// and zero elsewhere.
class PatternSource : public qcow::Source {
 public:
  PatternSource(uint64_t size, uint32_t cluster_bits, qcow::ClusterMap allocated)
      : size_(size), cluster_bits_(cluster_bits), allocated_(std::move(allocated)) {}
  uint64_t size() const override { return size_; }
  timespec mtime() const override { return {}; }
  void ReadAt(uint64_t offset, uint8_t* out, uint64_t n) const override;
  qcow::ClusterMap Allocation(uint32_t) const override;

 private:
  uint64_t size_;
  uint32_t cluster_bits_;
  qcow::ClusterMap allocated_;
};

}  // namespace qcowfs_test
