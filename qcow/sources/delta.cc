#include "qcow/sources/delta.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "qcow/format/errors.h"
#include "qcow/format/format.h"

namespace qcow {

std::optional<uint32_t> FindLayer(const ImageChain& chain, const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) ThrowErrno("stat " + path);
  const auto& layers = chain.layers();
  for (uint32_t i = 0; i < layers.size(); ++i) {
    if (layers[i].st.st_dev == st.st_dev && layers[i].st.st_ino == st.st_ino) return i;
  }
  return std::nullopt;
}

DeltaPlan ChainDelta(const ImageChain& chain, uint32_t depth, uint32_t bits) {
  ClusterMap::Builder data, zero, through;
  for (const ChainExtent& e : chain.Extents(depth)) {
    switch (e.kind) {
      case ChainExtent::Kind::kData:
      case ChainExtent::Kind::kCompressed:
        data.AddBytes(e.guest, e.length, bits);
        break;
      case ChainExtent::Kind::kZero:
        zero.AddBytes(e.guest, e.length, bits);
        break;
      case ChainExtent::Kind::kUnallocated:
        // Left to the base by the last layer above it, or past some layer's backing file
        // (zeros in the source, whatever the base holds there).
        (e.depth + 1 == depth ? through : zero).AddBytes(e.guest, e.length, bits);
        break;
    }
  }
  DeltaPlan plan;
  const ClusterMap zeros = zero.Build();
  plan.data = ClusterMap::Union(data.Build(), ClusterMap::Intersection(zeros, through.Build()));
  plan.delta.zero = zeros;  // the layout leaves out those that are data
  if (depth < chain.layers().size()) {
    plan.delta.backing_file = chain.layers()[depth].named_as;
    plan.delta.backing_format = LayerFormatName(chain.layers()[depth].format);
  }
  return plan;
}

DeltaPlan ComparedDelta(const Source& source, const Source& base, uint32_t bits,
                        const ProgressFn& progress) {
  // A base of another size reads as zeros past its end (as a backing file does), and what
  // it holds past the source's end is no part of the source.
  const uint64_t clusters = DivRoundUp(source.size(), uint64_t{1} << bits);
  ClusterMap::Builder within;
  within.Add(0, clusters);
  const ClusterMap candidates = ClusterMap::Intersection(
      ClusterMap::Union(source.Allocation(bits), base.Allocation(bits)), within.Build());
  const uint64_t cluster = uint64_t{1} << bits;
  // Compare up to 4 MiB at a time.
  const uint64_t batch = std::max<uint64_t>(1, (4u << 20) >> bits);
  std::vector<uint8_t> a(batch * cluster), b(batch * cluster);
  ClusterMap::Builder data, zero;
  const uint64_t total = candidates.size() * cluster;
  uint64_t done = 0;
  if (progress) progress(0, total);
  for (const auto& run : candidates.runs()) {
    for (uint64_t c = run.first; c < run.first + run.count;) {
      const uint64_t n = std::min(batch, run.first + run.count - c);
      source.ReadAt(c * cluster, a.data(), n * cluster);
      base.ReadAt(c * cluster, b.data(), n * cluster);
      for (uint64_t k = 0; k < n; ++k) {
        const uint8_t* x = &a[k * cluster];
        if (std::memcmp(x, &b[k * cluster], cluster) == 0) continue;
        (IsZero(x, cluster) ? zero : data).Add(c + k, 1);
      }
      c += n;
      done += n * cluster;
      if (progress) progress(done, total);
    }
  }
  DeltaPlan plan;
  plan.data = data.Build();
  plan.delta.zero = zero.Build();
  return plan;
}

}  // namespace qcow
