#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "qcow/export/source.h"

namespace qcow {
namespace {

// O_DIRECT sources read straight into the scan buffer: align it for 4 KiB sectors.
constexpr uint64_t kDirectAlign = 4096;

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

}  // namespace

bool IsZero(const uint8_t* p, uint64_t n) {
  if (n == 0) return true;
  // Compare the buffer with itself shifted by 16 bytes after checking the first 16.
  const uint64_t head = std::min<uint64_t>(n, 16);
  for (uint64_t i = 0; i < head; ++i)
    if (p[i]) return false;
  return n <= 16 || std::memcmp(p, p + 16, n - 16) == 0;
}

ClusterMap DropZeroClusters(const Source& source, const ClusterMap& map, uint32_t cluster_bits,
                            const ProgressFn& progress) {
  const uint64_t cluster = uint64_t{1} << cluster_bits;
  const uint64_t chunk_clusters = std::max<uint64_t>(1, (8u << 20) / cluster);
  const uint64_t total = map.size() * cluster;
  // Aligned, so that O_DIRECT sources read straight into it.
  void* mem = nullptr;
  if (posix_memalign(&mem, kDirectAlign, chunk_clusters * cluster) != 0) throw std::bad_alloc();
  std::unique_ptr<uint8_t, FreeDeleter> buf(static_cast<uint8_t*>(mem));
  ClusterMap::Builder b;
  uint64_t done = 0;
  for (const auto& run : map.runs()) {
    for (uint64_t c = run.first; c < run.first + run.count; c += chunk_clusters) {
      const uint64_t count = std::min(chunk_clusters, run.first + run.count - c);
      source.ReadAt(c * cluster, buf.get(), count * cluster);
      for (uint64_t i = 0; i < count; ++i) {
        if (!IsZero(buf.get() + i * cluster, cluster)) b.Add(c + i, 1);
      }
      done += count * cluster;
      if (progress) progress(done, total);
    }
  }
  return b.Build();
}

}  // namespace qcow
