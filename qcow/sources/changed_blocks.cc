#include "qcow/sources/changed_blocks.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <optional>
#include <vector>

#include "qcow/format/errors.h"
#include "qcow/io/file_io.h"
#include "qcow/io/unique_fd.h"

namespace qcow {
namespace {

// Collects the changed blocks of one reading of the bitmap, bit by bit, as ranges.
class BlockRuns {
 public:
  explicit BlockRuns(uint64_t disk_size) : disk_size_(disk_size) { out_.size = disk_size; }

  // Takes the next byte of the bitmap.
  void Byte(uint8_t b) {
    const uint64_t block = bytes_++ * 8;
    if (b == 0) return Close(block);
    if (b == 0xff && run_) return;
    for (int bit = 0; bit < 8; ++bit) {
      if (b & (0x80 >> bit)) {
        if (!run_) run_ = block + bit;
      } else {
        Close(block + bit);
      }
    }
  }
  uint64_t bytes() const { return bytes_; }

  // Ends the reading; the ranges, clipped at the disk's end.
  DataRanges Finish() {
    Close(bytes_ * 8);
    return std::move(out_);
  }

 private:
  // Ends the run of changed blocks (if any) before `block`.
  void Close(uint64_t block) {
    if (!run_) return;
    const uint64_t first = *run_ * kChangedBlockSize;
    const uint64_t end = std::min(block * kChangedBlockSize, disk_size_);
    if (first < end) AppendDataRange(out_, first, end - first);
    run_.reset();
  }

  uint64_t disk_size_;
  uint64_t bytes_ = 0;
  std::optional<uint64_t> run_;  // the first block of the run being read
  DataRanges out_;
};

// The value of a base64 digit, -1 for '=', -2 for a line break, -3 for anything else.
int Base64Value(uint8_t c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  if (c == '=') return -1;
  if (c == '\n' || c == '\r' || c == ' ' || c == '\t') return -2;
  return -3;
}

std::string Printable(uint8_t c) {
  if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
  static const char kHex[] = "0123456789abcdef";
  return std::string("byte 0x") + kHex[c >> 4] + kHex[c & 15];
}

std::string Bytes(uint64_t n) { return std::to_string(n) + (n == 1 ? " byte" : " bytes"); }

}  // namespace

DataRanges ReadChangedBlocks(const JsonText::Pull& pull, const std::string& name,
                             uint64_t disk_size) {
  const uint64_t want = ChangedBitmapBytes(disk_size);
  // Base64 text of `want` bytes, with a line break in every 4 characters at most (the
  // tools wrap at 64 or 76), and some white space around it.
  const uint64_t text_bound = (want + 2) / 3 * 4 * 2 + 4096;
  // Both readings run side by side while the input could still be either: the raw one for
  // the first `want` bytes, the text one until a byte is not base64.
  BlockRuns raw(disk_size), text(disk_size);
  bool is_text = true;
  std::string text_error;
  uint64_t at = 0, digits = 0, padding = 0;
  uint32_t group = 0;
  std::vector<char> buf(64 << 10);
  for (;;) {
    const size_t n = pull(buf.data(), buf.size());
    if (n == 0) break;
    for (size_t i = 0; i < n; ++i, ++at) {
      const uint8_t c = static_cast<uint8_t>(buf[i]);
      if (at < want) raw.Byte(c);
      if (!is_text) continue;
      const int v = Base64Value(c);
      if (v == -2) continue;
      if (v == -3 || (v >= 0 && padding > 0)) {
        is_text = false;
        text_error = (v == -3 ? Printable(c) + ", which base64 has not," : "a digit after '='") +
                     " at byte " + std::to_string(at);
        continue;
      }
      if (v == -1) {
        // '=' ends the text: at most two of them, in the last group of four.
        if (++padding > 2 || digits % 4 < 2) {
          is_text = false;
          text_error = "a misplaced '=' at byte " + std::to_string(at);
        }
        ++digits;
        continue;
      }
      group = group << 6 | static_cast<uint32_t>(v);
      if (++digits % 4 == 0) {
        text.Byte(static_cast<uint8_t>(group >> 16));
        text.Byte(static_cast<uint8_t>(group >> 8));
        text.Byte(static_cast<uint8_t>(group));
        group = 0;
      }
    }
    if (at > want && !is_text) break;  // neither reading can hold any more
    if (at > text_bound) {
      Refuse(name + ": more than " + Bytes(text_bound) + ", longer than any bitmap of a " +
             Bytes(disk_size) + " disk (" + Bytes(want) + " of bits, or their base64 text)");
    }
  }
  // Whole base64 text (white space alone too) is read as text, whatever its length: raw
  // bits that happen to be such text are refused then, as their decoded length (3 bytes
  // per 4) never fits the disk, rather than another disk's text taken as raw bits.
  // Anything else of exactly the raw length is the raw bitmap.
  const bool whole_text = is_text && digits % 4 == 0 && at > 0;
  if (!whole_text && at == want) return raw.Finish();
  if (!is_text) {
    Refuse(name + " is neither base64 text (" + text_error + ") nor a raw bitmap of " +
           Bytes(want) + " (it has " + (at > want ? "more than " + Bytes(want) : Bytes(at)) + ")");
  }
  if (digits % 4 != 0) {
    Refuse(name + ": the base64 text ends in a group of " + std::to_string(digits % 4) +
           " digits; base64 comes in groups of four");
  }
  if (padding > 0) {
    // The last group's digits stand for 3 - padding bytes, decoded here.
    const uint32_t g = group << (6 * padding);
    text.Byte(static_cast<uint8_t>(g >> 16));
    if (padding == 1) text.Byte(static_cast<uint8_t>(g >> 8));
  }
  if (text.bytes() != want) {
    Refuse(name + " is a bitmap of " + Bytes(text.bytes()) + " (" +
           std::to_string(text.bytes() * 8) + " blocks of 64 KiB), but the disk is " +
           Bytes(disk_size) + ", which takes " + Bytes(want) + "; the bitmap must be of this disk");
  }
  return text.Finish();
}

DataRanges ReadChangedBlocks(const std::string& spec, uint64_t disk_size) {
  if (const std::optional<int> fd = DescriptorSpec(spec)) {
    return ReadChangedBlocks(PullFromFd(*fd, spec), spec, disk_size);
  }
  // A file, or a pipe (bash's <(...) names one): never a device, whose opening may act.
  struct stat st;
  if (::stat(spec.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode)) {
    throw UsageError(spec + " is not a file or a pipe; give the bitmap in a file, a pipe or fd:N");
  }
  // A FIFO is opened blocking: until its writer opens it too (non-blocking, it would read
  // as an empty bitmap).
  UniqueFd fd(::open(spec.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) ThrowErrno("opening " + spec);
  return ReadChangedBlocks(PullFromFd(fd.get(), spec), spec, disk_size);
}

ClusterMap ChangedClusters(const DataRanges& changed, uint32_t bits) {
  ClusterMap::Builder b;
  for (const auto& [offset, length] : changed.ranges) b.AddBytes(offset, length, bits);
  return b.Build();
}

DeltaPlan ChangedBlocksDelta(const Source& source, const DataRanges& changed, uint32_t bits) {
  DeltaPlan plan;
  plan.delta.zero = ChangedClusters(changed, bits);
  // Clusters the source allocates hold its bytes; the others read as zeros there, and
  // stay zero clusters (the layout leaves out of `zero` what is data).
  plan.data = ClusterMap::Intersection(plan.delta.zero, source.Allocation(bits));
  return plan;
}

}  // namespace qcow
