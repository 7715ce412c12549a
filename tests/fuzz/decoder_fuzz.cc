// libFuzzer target: the streaming decoder, fed a fuzzer-made image in two fuzzer-chosen
// orders and chunkings. What must hold, whatever the bytes:
// - every write and zero the sink sees lies inside [0, virtual size);
// - the decoder's memory stays within its spool limit;
// - if both feedings succeed, they produced the same disk. One of them stops as soon as the
//   decoder says the image is complete (as serve does), so early completion is held to
//   the result of feeding everything.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <span>
#include <system_error>
#include <vector>

#include "qcow/format/errors.h"
#include "qcow/import/stream_decoder.h"

#ifndef QCOWFS_FUZZ_ENTRY
#define QCOWFS_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kTargetSize = 64ull << 20;  // larger virtual sizes are refused
constexpr uint64_t kSpoolMemory = 256u << 10, kSpoolLimit = 8u << 20;

// A disk in memory, kept sparse in pages; checks that the decoder stays inside it.
class SparseDisk : public qcow::ImageSink {
 public:
  void set_size(uint64_t v) { size_ = v; }
  void Write(uint64_t off, const uint8_t* data, uint64_t n) override {
    Check(off, n);
    for (uint64_t done = 0; done < n;) {
      const uint64_t page = (off + done) / kPage, within = (off + done) % kPage;
      const uint64_t k = std::min(n - done, kPage - within);
      auto& p = pages_[page];
      p.resize(kPage);
      std::memcpy(p.data() + within, data + done, k);
      done += k;
    }
  }
  void Zero(uint64_t off, uint64_t n) override {
    Check(off, n);
    for (uint64_t done = 0; done < n;) {
      const uint64_t page = (off + done) / kPage, within = (off + done) % kPage;
      const uint64_t k = std::min(n - done, kPage - within);
      auto it = pages_.find(page);
      if (it != pages_.end()) std::memset(it->second.data() + within, 0, k);
      done += k;
    }
  }
  void Read(uint64_t off, uint8_t* out, uint64_t n) override {
    Check(off, n);
    for (uint64_t done = 0; done < n;) {
      const uint64_t page = (off + done) / kPage, within = (off + done) % kPage;
      const uint64_t k = std::min(n - done, kPage - within);
      auto it = pages_.find(page);
      if (it == pages_.end()) {
        std::memset(out + done, 0, k);
      } else {
        std::memcpy(out + done, it->second.data() + within, k);
      }
      done += k;
    }
  }
  // Returns whether both disks read the same (absent pages read as zeros).
  bool Same(const SparseDisk& o) const {
    static const std::vector<uint8_t> zeros(kPage, 0);
    auto page = [](const SparseDisk& d, uint64_t i) -> const std::vector<uint8_t>& {
      auto it = d.pages_.find(i);
      return it == d.pages_.end() ? zeros : it->second;
    };
    for (const auto& [i, p] : pages_) {
      if (page(o, i) != p) return false;
    }
    for (const auto& [i, p] : o.pages_) {
      if (page(*this, i) != p) return false;
    }
    return size_ == o.size_;
  }

 private:
  void Check(uint64_t off, uint64_t n) const {
    if (off > size_ || n > size_ - off) __builtin_trap();  // outside the disk
  }
  uint64_t size_ = 0;
  std::map<uint64_t, std::vector<uint8_t>> pages_;
};

struct Feeding {
  uint8_t mode;    // bits 0-1: 0 front to back, 1 back to front, 2 shuffled, 3 interleaved;
                   // bit 2: size set first; bit 3: size set last; bit 4: stop once complete
  uint64_t chunk;  // bytes per write
  uint32_t seed;
};

Feeding Parse(const uint8_t* c, uint64_t image_size) {
  Feeding f{c[0], uint64_t{c[1]} | uint64_t{c[2]} << 8, c[3]};
  // At most 4096 writes per feeding, so that an exec stays fast.
  f.chunk = std::max<uint64_t>({f.chunk + 1, image_size / 4096, 1});
  return f;
}

// Feeds the image; returns whether the decoder succeeded.
bool Feed(std::span<const uint8_t> image, const Feeding& f, SparseDisk& disk) {
  qcow::DecoderOptions o;
  o.target_size = kTargetSize;
  o.spool = {.memory = kSpoolMemory, .dir = "/tmp", .limit = kSpoolLimit};
  o.on_header = [&](const qcow::ImageInfo& info) { disk.set_size(info.virtual_size); };
  qcow::StreamDecoder d(disk, o);
  std::vector<uint64_t> offsets;
  for (uint64_t off = 0; off < image.size(); off += f.chunk) offsets.push_back(off);
  switch (f.mode & 3) {
    case 1:
      std::reverse(offsets.begin(), offsets.end());
      break;
    case 2:
      std::shuffle(offsets.begin(), offsets.end(), std::mt19937(f.seed));
      break;
    case 3:  // odd ones first, then even ones
      std::stable_partition(offsets.begin(), offsets.end(),
                            [&](uint64_t off) { return (off / f.chunk) % 2 == 1; });
      break;
  }
  bool ok = false;
  try {
    if (f.mode & 4) d.SetSize(image.size());
    for (uint64_t off : offsets) {
      d.Feed(off, image.subspan(off, std::min<uint64_t>(f.chunk, image.size() - off)));
      // Everything the decoder holds counts against its limit (a little slack for the
      // write being taken and the last table being read).
      if (d.memory_bytes() > kSpoolLimit + (4u << 20)) __builtin_trap();
      if ((f.mode & 16) && (f.mode & 3) == 0 && d.Complete()) break;
    }
    if (f.mode & 8) d.SetSize(image.size());
    d.Finish();
    ok = true;
  } catch (const qcow::FormatError&) {
  } catch (const qcow::SpoolFullError&) {
  } catch (const std::system_error&) {
  }
  if (d.peak_memory_bytes() > kSpoolLimit + (4u << 20)) __builtin_trap();
  return ok;
}

}  // namespace

// Input: 4 control bytes for each of two feedings, then the image.
extern "C" int QCOWFS_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  if (size < 9) return 0;
  const std::span<const uint8_t> image(data + 8, size - 8);
  SparseDisk a, b;
  const bool ok_a = Feed(image, Parse(data, image.size()), a);
  const bool ok_b = Feed(image, Parse(data + 4, image.size()), b);
  if (ok_a && ok_b && !a.Same(b)) __builtin_trap();  // two orders, two different disks
  return 0;
}
