#include "tracked_disk.h"

#include <fcntl.h>
#include <unistd.h>

#include <random>
#include <stdexcept>

#include "test_util.h"

namespace qcowfs_test {
namespace {

constexpr uint64_t kBlock = 64 << 10;

}  // namespace

TrackedDisk::TrackedDisk(std::string path, uint64_t size)
    : path_(std::move(path)), size_(size), bitmap_((size + kBlock * 8 - 1) / (kBlock * 8), '\0') {
  const int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) {
    throw std::runtime_error("cannot create " + path_);
  }
  close(fd);
}

void TrackedDisk::Mark(uint64_t offset, uint64_t n) {
  for (uint64_t b = offset / kBlock; n > 0 && b <= (offset + n - 1) / kBlock; ++b) {
    bitmap_[b / 8] = static_cast<char>(bitmap_[b / 8] | (0x80 >> (b % 8)));
  }
}

void TrackedDisk::Write(uint64_t offset, const std::vector<uint8_t>& bytes) {
  WriteAt(path_, offset, bytes);
  Mark(offset, bytes.size());
}

void TrackedDisk::Zero(uint64_t offset, uint64_t n) {
  WriteAt(path_, offset, std::vector<uint8_t>(n, 0));
  Mark(offset, n);
}

void TrackedDisk::Discard(uint64_t offset, uint64_t n) {
  const int fd = open(path_.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0 || fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          static_cast<off_t>(offset), static_cast<off_t>(n)) != 0) {
    throw std::runtime_error("cannot punch a hole in " + path_);
  }
  close(fd);
  Mark(offset, n);
}

void TrackedDisk::Scribble(int count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < count; ++i) {
    const uint64_t n = 1 + rng() % (300 << 10);
    const uint64_t offset = rng() % (size_ - n);
    switch (rng() % 6) {
      case 0:
        Zero(offset, n);
        break;
      case 1:
        Discard(offset, n);
        break;
      default:
        Write(offset, RandomBytes(n, rng()));
    }
  }
}

std::string TrackedDisk::TakeBitmap() {
  std::string out(bitmap_.size(), '\0');
  out.swap(bitmap_);
  return out;
}

uint64_t TrackedDisk::changed_blocks() const {
  uint64_t n = 0;
  for (char c : bitmap_) n += static_cast<uint64_t>(__builtin_popcount(static_cast<uint8_t>(c)));
  return n;
}

std::string Base64(const std::string& bytes) {
  static const char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t g = static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])) << 16;
    if (i + 1 < bytes.size()) g |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[i + 1])) << 8;
    if (i + 2 < bytes.size()) g |= static_cast<uint8_t>(bytes[i + 2]);
    out += kDigits[g >> 18];
    out += kDigits[(g >> 12) & 63];
    out += i + 1 < bytes.size() ? kDigits[(g >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kDigits[g & 63] : '=';
  }
  return out;
}

}  // namespace qcowfs_test
