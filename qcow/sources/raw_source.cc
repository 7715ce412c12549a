#include "qcow/sources/raw_source.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <vector>

#include "qcow/format/errors.h"
#include "qcow/io/file_io.h"

namespace qcow {
namespace {

// O_DIRECT needs offsets, lengths and buffers aligned to the logical block size; 4096
// covers both 512-byte and 4 KiB sector devices.
constexpr uint64_t kDirectAlign = 4096;

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

// Returns an aligned per-thread buffer of at least n bytes, reused across calls so that
// hot read paths do not allocate.
uint8_t* AlignedScratch(uint64_t n) {
  thread_local std::unique_ptr<uint8_t, FreeDeleter> buf;
  thread_local uint64_t cap = 0;
  if (cap < n) {
    void* p = nullptr;
    uint64_t want = std::max<uint64_t>(n, 1 << 20);
    if (posix_memalign(&p, kDirectAlign, want) != 0) throw std::bad_alloc();
    buf.reset(static_cast<uint8_t*>(p));
    cap = want;
  }
  return buf.get();
}

class FdSource : public Source {
 public:
  FdSource(int fd, DiskLock lock, const std::string& path, const struct stat& st, uint64_t size,
           bool direct)
      : fd_(fd),
        lock_(std::move(lock)),
        path_(path),
        mtime_(st.st_mtim),
        st_(st),
        size_(size),
        direct_(direct) {}
  ~FdSource() override { ::close(fd_); }

  uint64_t size() const override { return size_; }
  std::string name() const override { return path_; }
  timespec mtime() const override { return mtime_; }
  uid_t uid() const override { return st_.st_uid; }
  gid_t gid() const override { return st_.st_gid; }
  mode_t mode() const override { return st_.st_mode & 07777; }
  void Pieces(uint64_t offset, uint64_t n, std::vector<SourcePiece>& out) const override {
    out.push_back({offset, n, direct_ ? -1 : fd_, offset, &path_});
  }

  void ReadAt(uint64_t offset, uint8_t* out, uint64_t n) const override {
    const auto aligned = [](uint64_t v) { return v % kDirectAlign == 0; };
    if (!direct_ || (aligned(offset) && aligned(n) && aligned(reinterpret_cast<uintptr_t>(out)))) {
      return PreadFull(offset, out, n);
    }
    while (n > 0) {
      // Bounce through an aligned buffer, at most 4 MiB at a time.
      const uint64_t lo = offset & ~(kDirectAlign - 1);
      const uint64_t want = std::min<uint64_t>(n, (4u << 20) - (offset - lo));
      const uint64_t hi = (offset + want + kDirectAlign - 1) & ~(kDirectAlign - 1);
      uint8_t* buf = AlignedScratch(hi - lo);
      PreadFull(lo, buf, hi - lo);
      std::memcpy(out, buf + (offset - lo), want);
      offset += want;
      out += want;
      n -= want;
    }
  }

 protected:
  // Reads n bytes at offset, zero-filling past the end of the source.
  void PreadFull(uint64_t offset, uint8_t* out, uint64_t n) const {
    while (n > 0) {
      if (offset >= size_) {
        std::memset(out, 0, n);
        return;
      }
      ssize_t r = ::pread(fd_, out, std::min<uint64_t>(n, 1u << 30), static_cast<off_t>(offset));
      if (r < 0) {
        if (errno == EINTR) continue;
        ThrowErrno("reading " + path_ + " at offset " + std::to_string(offset));
      }
      if (r == 0) {
        // Short of the size it had when the export was planned: the image would be wrong.
        throw std::system_error(EIO, std::generic_category(),
                                path_ + " ends at offset " + std::to_string(offset) +
                                    ", inside the data exported from it: it shrank while "
                                    "exported");
      }
      offset += r;
      out += r;
      n -= r;
    }
  }

  int fd_;
  DiskLock lock_;  // a loop device's file, locked as long as fd_ is open
  std::string path_;
  timespec mtime_;
  struct stat st_;
  uint64_t size_;
  bool direct_;
};

class FileSource : public FdSource {
 public:
  using FdSource::FdSource;

  ClusterMap Allocation(uint32_t cluster_bits) const override {
    ClusterMap::Builder b;
    ForEachDataRange(fd_, path_, size_,
                     [&](uint64_t a, uint64_t end) { b.AddBytes(a, end - a, cluster_bits); });
    return b.Build();
  }
};

class BlockDeviceSource : public FdSource {
 public:
  using FdSource::FdSource;

  ClusterMap Allocation(uint32_t cluster_bits) const override {
    ClusterMap::Builder b;
    b.AddBytes(0, size_, cluster_bits);
    return b.Build();
  }
};

}  // namespace

std::unique_ptr<Source> OpenRawSource(const std::string& path, bool direct) {
  struct stat st;
  uint64_t size = 0;
  DiskLock lock;
  const int fd = OpenDisk(path, direct ? O_DIRECT : 0, &st, &size, &lock);
  if (S_ISREG(st.st_mode)) {
    return std::make_unique<FileSource>(fd, std::move(lock), path, st, size, direct);
  }
  return std::make_unique<BlockDeviceSource>(fd, std::move(lock), path, st, size, direct);
}

}  // namespace qcow
