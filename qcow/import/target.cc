#include "qcow/import/target.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <vector>

#include "qcow/format/errors.h"
#include "qcow/io/disk_lock.h"
#include "qcow/io/file_io.h"

namespace qcow {
namespace {
// BLKZEROOUT takes 512-byte aligned ranges.
constexpr uint64_t kZeroOutAlign = 512;
// Start writeback after this many bytes, so that the disk works while data still arrives
// and the final fsync has little left to do.
constexpr uint64_t kWritebackInterval = 32ull << 20;
}  // namespace

RawTarget::RawTarget(const std::string& path, const TargetOptions& options)
    : path_(path), prezeroed_(options.prezeroed) {
  const std::string not_a_disk = "target " + path + " is neither a regular file nor a block device";
  // Look first: opening a directory read-write fails with EISDIR, a run-time error, where
  // the mistake is the command line's.
  struct stat before;
  const bool found = ::stat(path.c_str(), &before) == 0;
  if (found && !S_ISREG(before.st_mode) && !S_ISBLK(before.st_mode)) throw UsageError(not_a_disk);
  // O_EXCL on a block device: refused while it is mounted or opened exclusively by anyone
  // (another import, a device-mapper table), through any of its nodes.
  const bool block = found && S_ISBLK(before.st_mode);
  // Not through a name another user planted in /tmp (a link to a file of root's).
  fd_.Reset(OpenUnplanted(path, O_RDWR | (block ? O_EXCL : 0), 0, "target"));
  if (fd_.get() < 0) {
    if (errno == EBUSY && block) {
      throw DiskInUse("target " + path +
                      " is in use: mounted, or opened exclusively by another process (an "
                      "import in progress?)");
    }
    ThrowErrno("opening target " + path);
  }
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) ThrowErrno("stat " + path);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) throw UsageError(not_a_disk);
  if (options.vet) options.vet(st);
  lock_ = LockDisk(fd_.get(), "target " + path, DiskUse::kWrite);
  if (lock_.warning && options.warn) options.warn(*lock_.warning);
  uid_ = st.st_uid;
  gid_ = st.st_gid;
  if (S_ISBLK(st.st_mode)) {
    block_device_ = true;
    if (::ioctl(fd_.get(), BLKGETSIZE64, &size_) != 0) ThrowErrno("BLKGETSIZE64 on " + path);
  } else {
    size_ = static_cast<uint64_t>(st.st_size);
  }
  if (options.size) size_ = *options.size;
}

void RawTarget::Write(uint64_t offset, const uint8_t* data, uint64_t n) {
  while (n > 0) {
    ssize_t w =
        ::pwrite(fd_.get(), data, std::min<uint64_t>(n, 1u << 30), static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) ThrowErrno("writing target " + path_ + " at offset " + std::to_string(offset));
    Wrote(offset, static_cast<uint64_t>(w));
    offset += w;
    data += w;
    n -= w;
  }
}

int64_t RawTarget::WriteFrom(uint64_t offset, int fd, uint64_t n, const std::string& from) {
  const int64_t moved = mover_.Move(fd, fd_.get(), offset, n);
  if (moved > 0) Wrote(offset, static_cast<uint64_t>(moved));
  if (moved == -1 && errno != EAGAIN) {
    switch (mover_.failed_side()) {
      case ByteMover::Side::kInput:
        ThrowErrno("reading the image from " + from);
      case ByteMover::Side::kOutput:
        ThrowErrno("writing target " + path_ + " at offset " + std::to_string(offset));
      case ByteMover::Side::kEither:
        ThrowErrno("copying image bytes from " + from + " into target " + path_ + " at offset " +
                   std::to_string(offset));
    }
  }
  return moved;
}

void RawTarget::Wrote(uint64_t offset, uint64_t n) {
  if (unflushed_ == 0) dirty_lo_ = dirty_hi_ = offset;
  dirty_lo_ = std::min(dirty_lo_, offset);
  dirty_hi_ = std::max(dirty_hi_, offset + n);
  unflushed_ += n;
  if (unflushed_ >= kWritebackInterval) {
    // Asynchronous: only starts writeback of the pages written since the last time (the
    // range they span; a whole-file request rescans every dirty page of the file each
    // time); errors surface at fsync.
    (void)::sync_file_range(fd_.get(), static_cast<off_t>(dirty_lo_),
                            static_cast<off_t>(dirty_hi_ - dirty_lo_), SYNC_FILE_RANGE_WRITE);
    unflushed_ = 0;
  }
}

void RawTarget::WriteZeros(uint64_t offset, uint64_t n) {
  static const std::vector<uint8_t> zeros(1 << 20, 0);
  while (n > 0) {
    const uint64_t k = std::min<uint64_t>(n, zeros.size());
    Write(offset, zeros.data(), k);
    offset += k;
    n -= k;
  }
}

bool RawTarget::TryFallocate(int mode, bool& supported, const char* what, uint64_t offset,
                             uint64_t n) {
  if (!supported) return false;
  if (::fallocate(fd_.get(), mode | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(n)) == 0) {
    return true;
  }
  if (errno != EOPNOTSUPP && errno != ENOSYS) ThrowErrno(std::string(what) + " " + path_);
  supported = false;
  return false;
}

void RawTarget::Zero(uint64_t offset, uint64_t n) {
  if (prezeroed_ || n == 0) return;
  if (block_device_) {
    const uint64_t lo = (offset + kZeroOutAlign - 1) / kZeroOutAlign * kZeroOutAlign;
    const uint64_t hi = (offset + n) / kZeroOutAlign * kZeroOutAlign;
    if (zeroout_ok_ && lo < hi) {
      uint64_t range[2] = {lo, hi - lo};
      if (::ioctl(fd_.get(), BLKZEROOUT, range) == 0) {
        WriteZeros(offset, lo - offset);
        WriteZeros(hi, offset + n - hi);
        return;
      }
      if (errno != EINVAL && errno != EOPNOTSUPP && errno != ENOTTY) {
        ThrowErrno("BLKZEROOUT on " + path_);
      }
      zeroout_ok_ = false;
    }
    return WriteZeros(offset, n);
  }
  // Files: a hole reads as zeros and frees space; zero-range keeps the allocation. A mode
  // the file system does not support is not tried again.
  if (TryFallocate(FALLOC_FL_PUNCH_HOLE, punch_ok_, "punching a hole in", offset, n)) return;
  if (TryFallocate(FALLOC_FL_ZERO_RANGE, zero_range_ok_, "zeroing a range of", offset, n)) {
    return;
  }
  WriteZeros(offset, n);
}

void RawTarget::Read(uint64_t offset, uint8_t* out, uint64_t n) {
  while (n > 0) {
    ssize_t r =
        ::pread(fd_.get(), out, std::min<uint64_t>(n, 1u << 30), static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) ThrowErrno("reading back target " + path_ + " at offset " + std::to_string(offset));
    if (r == 0) {
      throw std::system_error(EIO, std::generic_category(),
                              "reading back target " + path_ + " at offset " +
                                  std::to_string(offset) + ": it ended early");
    }
    offset += r;
    out += r;
    n -= r;
  }
}

void RawTarget::Sync() {
  if (::fsync(fd_.get()) != 0) ThrowErrno("fsync of target " + path_);
}

}  // namespace qcow
