#include "qcow/sources/chain_source.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "qcow/sources/layer_reader.h"

namespace qcow {
namespace {

using Kind = ChainExtent::Kind;

// Returns the permission bits for the top's owner, group and others that every layer below
// grants them too: whoever reads the image reads every layer, so a layer one may not read
// (a root-only base a user's image names as its backing file) takes its bits away. A user
// of a class of the top may be of several classes of a lower layer (its owner, a member of
// its group, neither); such a class keeps only what all of them grant.
mode_t ChainMode(const std::vector<Layer>& layers) {
  const struct stat& top = layers.front().st;
  mode_t owner = (top.st_mode >> 6) & 7, group = (top.st_mode >> 3) & 7, other = top.st_mode & 7;
  for (size_t i = 1; i < layers.size(); ++i) {
    const struct stat& l = layers[i].st;
    const mode_t l_owner = (l.st_mode >> 6) & 7, l_group = (l.st_mode >> 3) & 7,
                 l_other = l.st_mode & 7;
    const bool same_owner = l.st_uid == top.st_uid, same_group = l.st_gid == top.st_gid;
    owner &= same_owner ? l_owner : l_group & l_other;
    group &= (same_group ? l_group : l_group & l_other) & (same_owner ? 7 : l_owner);
    other &= l_other & (same_owner ? 7 : l_owner) & (same_group ? 7 : l_group);
  }
  return (owner << 6) | (group << 3) | other;
}

class ChainSource : public Source {
 public:
  explicit ChainSource(ImageChain chain)
      : chain_(std::move(chain)), extents_(chain_.Extents(UINT32_MAX, false)), id_(next_id_++) {}

  const ImageChain& chain() const { return chain_; }
  uint64_t size() const override { return chain_.size(); }
  std::string name() const override { return top().path; }
  timespec mtime() const override { return top().st.st_mtim; }
  uid_t uid() const override { return top().st.st_uid; }
  gid_t gid() const override { return top().st.st_gid; }
  mode_t mode() const override { return ChainMode(chain_.layers()); }

  void Pieces(uint64_t offset, uint64_t n, std::vector<SourcePiece>& out) const override {
    auto add = [&](uint64_t at, uint64_t len, int fd, uint64_t position, const std::string* f) {
      if (len == 0) return;
      if (fd < 0 && !out.empty() && out.back().fd < 0 &&
          out.back().offset + out.back().length == at) {
        out.back().length += len;
        return;
      }
      out.push_back({at, len, fd, position, f});
    };
    Walk(offset, n, [&](const ChainExtent* e, uint64_t at, uint64_t len) {
      if (!e || e->kind != Kind::kData) return add(at, len, -1, at, nullptr);
      const Layer& layer = chain_.layers()[e->depth];
      const uint64_t host = e->host + (at - e->guest);
      // Bytes past the end of the layer's file read as zeros.
      const uint64_t in_file = host < layer.file_size ? std::min(len, layer.file_size - host) : 0;
      add(at, in_file, layer.fd, host, &layer.path);
      add(at + in_file, len - in_file, -1, at + in_file, nullptr);
    });
  }

  void ReadAt(uint64_t offset, uint8_t* out, uint64_t n) const override {
    Walk(offset, n, [&](const ChainExtent* e, uint64_t at, uint64_t len) {
      uint8_t* to = out + (at - offset);
      if (!e || e->kind == Kind::kZero || e->kind == Kind::kUnallocated) {
        std::memset(to, 0, len);
        return;
      }
      const Layer& layer = chain_.layers()[e->depth];
      if (e->kind == Kind::kData) {
        const uint64_t got = PreadUpTo(layer.fd, layer.path, e->host + (at - e->guest), to, len);
        std::memset(to + got, 0, len - got);
        return;
      }
      const std::vector<uint8_t>& cluster = Decompressed(*e);
      const uint64_t cluster_start = at & ~(layer.info->cluster_size - 1);
      std::memcpy(to, cluster.data() + (at - cluster_start), len);
    });
  }

  ClusterMap Allocation(uint32_t cluster_bits) const override {
    ClusterMap::Builder b;
    for (const ChainExtent& e : extents_) {
      if (e.kind == Kind::kData || e.kind == Kind::kCompressed) {
        b.AddBytes(e.guest, e.length, cluster_bits);
      }
    }
    return b.Build();
  }

 private:
  const Layer& top() const { return chain_.layers().front(); }

  // Calls fn(extent, offset, length) for the pieces of [offset, offset + n) in order, with
  // a null extent for ranges no layer defines (zeros).
  template <typename Fn>
  void Walk(uint64_t offset, uint64_t n, Fn fn) const {
    const uint64_t end = offset + n;
    // The first extent that ends after offset.
    auto it =
        std::upper_bound(extents_.begin(), extents_.end(), offset,
                         [](uint64_t v, const ChainExtent& e) { return v < e.guest + e.length; });
    while (offset < end) {
      if (it == extents_.end() || it->guest >= end) {
        fn(nullptr, offset, end - offset);
        return;
      }
      if (it->guest > offset) {
        fn(nullptr, offset, it->guest - offset);
        offset = it->guest;
      }
      const uint64_t len = std::min(end, it->guest + it->length) - offset;
      fn(&*it, offset, len);
      offset += len;
      ++it;
    }
  }

  // Returns the decompressed cluster of e, from this thread's cache when it was the last.
  // Keyed by the whole span: two descriptors may start at one offset and name different
  // sector counts, and QEMU decompresses each from its own.
  const std::vector<uint8_t>& Decompressed(const ChainExtent& e) const {
    thread_local struct {
      uint64_t source = 0, depth = 0, host = 0, host_end = 0;
      std::vector<uint8_t> bytes;
    } cache;
    if (cache.source != id_ || cache.depth != e.depth || cache.host != e.host ||
        cache.host_end != e.host_end) {
      cache.source = 0;  // until the new cluster is in
      ReadCompressedCluster(chain_.layers()[e.depth], e.host, e.host_end, cache.bytes);
      cache.source = id_;
      cache.depth = e.depth;
      cache.host = e.host;
      cache.host_end = e.host_end;
    }
    return cache.bytes;
  }

  ImageChain chain_;
  std::vector<ChainExtent> extents_;
  uint64_t id_;
  static inline std::atomic<uint64_t> next_id_{1};
};

}  // namespace

std::unique_ptr<Source> MakeChainSource(ImageChain chain) {
  return std::make_unique<ChainSource>(std::move(chain));
}

const ImageChain* ChainOf(const Source& source) {
  const auto* chain = dynamic_cast<const ChainSource*>(&source);
  return chain ? &chain->chain() : nullptr;
}

}  // namespace qcow
