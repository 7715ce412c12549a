// Targets of imports: a raw regular file or a block device, opened read-write.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "qcow/import/stream_decoder.h"
#include "qcow/io/disk_lock.h"
#include "qcow/io/move_bytes.h"
#include "qcow/io/unique_fd.h"

namespace qcow {

struct TargetOptions {
  bool prezeroed = false;        // the target already reads as zeros: skip zeroing
  std::optional<uint64_t> size;  // overrides the size the target reports
  // Called with the opened target's stat before it is locked or written; throws to refuse
  // it (a target that is also a file the caller reads).
  std::function<void(const struct stat&)> vet;
  // Called with a warning when the target's file system takes no locks.
  std::function<void(const std::string&)> warn;
};

// A raw disk that decoded guest data is written to. Zero ranges use BLKZEROOUT on block
// devices and fallocate (punch hole, then zero range) on files, writing zeros only as a
// last resort.
class RawTarget : public ImageSink {
 public:
  // Opens path read-write (a block device with O_EXCL; not through a name another user
  // planted, see OpenUnplanted) and locks it (DiskUse::kWrite, a
  // loop device's file too) for as long as this object, or a process forked with it, keeps
  // it open. Throws UsageError
  // when it is neither a regular file nor a block device (a directory, say), DiskInUse when
  // another process uses it (its lock, or a block device mounted or opened exclusively),
  // what options.vet throws, std::system_error when it cannot be opened.
  RawTarget(const std::string& path, const TargetOptions& options);
  RawTarget(const RawTarget&) = delete;
  RawTarget& operator=(const RawTarget&) = delete;

  // Returns the bytes the target holds.
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Returns the target's owner and group (import.qcow2 carries them).
  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }
  void Write(uint64_t offset, const uint8_t* data, uint64_t n) override;
  int64_t WriteFrom(uint64_t offset, int fd, uint64_t n, const std::string& from) override;
  void Zero(uint64_t offset, uint64_t n) override;
  void Read(uint64_t offset, uint8_t* out, uint64_t n) override;
  // Makes everything written durable (fsync). Throws std::system_error.
  void Sync();

 private:
  void WriteZeros(uint64_t offset, uint64_t n);
  // Records n bytes written at offset, starting their writeback now and then.
  void Wrote(uint64_t offset, uint64_t n);
  // Zeroes with fallocate(mode); returns false (and stops trying that mode) where the file
  // system does not support it. Throws std::system_error for other failures.
  bool TryFallocate(int mode, bool& supported, const char* what, uint64_t offset, uint64_t n);

  std::string path_;
  UniqueFd fd_;
  DiskLock lock_;  // a loop device's file, locked for writing as long as fd_ is open
  bool block_device_ = false;
  bool prezeroed_;
  uint64_t size_ = 0;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  bool punch_ok_ = true, zero_range_ok_ = true, zeroout_ok_ = true;
  uint64_t unflushed_ = 0;                // bytes written since writeback was last started
  uint64_t dirty_lo_ = 0, dirty_hi_ = 0;  // the range those bytes span
  ByteMover mover_;                       // for WriteFrom
};

}  // namespace qcow
