#include "qcow/sources/chain_source.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "qcow/sources/layer_reader.h"

namespace qcow {
namespace {

using Kind = ChainExtent::Kind;

class ChainSource : public Source {
 public:
  explicit ChainSource(ImageChain chain)
      : chain_(std::move(chain)), extents_(chain_.Extents()), id_(next_id_++) {}

  const ImageChain& chain() const { return chain_; }
  uint64_t size() const override { return chain_.size(); }
  std::string name() const override { return top().path; }
  timespec mtime() const override { return top().st.st_mtim; }
  uid_t uid() const override { return top().st.st_uid; }
  gid_t gid() const override { return top().st.st_gid; }
  mode_t mode() const override { return top().st.st_mode & 07777; }

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
    const uint64_t end = offset + n;
    for (size_t i = First(offset); offset < end; ++i) {
      if (i >= extents_.size()) {  // past the disk: zeros
        add(offset, end - offset, -1, offset, nullptr);
        break;
      }
      const ChainExtent& e = extents_[i];
      const uint64_t len = std::min(end, e.guest + e.length) - offset;
      if (e.kind == Kind::kData) {
        const Layer& layer = chain_.layers()[e.depth];
        const uint64_t host = e.host + (offset - e.guest);
        // Bytes past the end of the layer's file read as zeros.
        const uint64_t in_file = host < layer.file_size ? std::min(len, layer.file_size - host) : 0;
        add(offset, in_file, layer.fd, host, &layer.path);
        add(offset + in_file, len - in_file, -1, offset + in_file, nullptr);
      } else {
        add(offset, len, -1, offset, nullptr);
      }
      offset += len;
    }
  }

  void ReadAt(uint64_t offset, uint8_t* out, uint64_t n) const override {
    const uint64_t end = offset + n;
    for (size_t i = First(offset); offset < end; ++i) {
      if (i >= extents_.size()) {
        std::memset(out, 0, end - offset);
        return;
      }
      const ChainExtent& e = extents_[i];
      const uint64_t len = std::min(end, e.guest + e.length) - offset;
      const Layer& layer = chain_.layers()[e.depth];
      switch (e.kind) {
        case Kind::kData: {
          const uint64_t got =
              PreadUpTo(layer.fd, layer.path, e.host + (offset - e.guest), out, len);
          std::memset(out + got, 0, len - got);
          break;
        }
        case Kind::kCompressed: {
          const std::vector<uint8_t>& cluster = Decompressed(e);
          const uint64_t cluster_start = offset & ~(layer.info->cluster_size - 1);
          std::memcpy(out, cluster.data() + (offset - cluster_start), len);
          break;
        }
        case Kind::kZero:
        case Kind::kUnallocated:
          std::memset(out, 0, len);
          break;
      }
      out += len;
      offset += len;
    }
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

  // Returns the index of the extent holding offset (extents_.size() past the disk).
  size_t First(uint64_t offset) const {
    auto it = std::upper_bound(extents_.begin(), extents_.end(), offset,
                               [](uint64_t v, const ChainExtent& e) { return v < e.guest; });
    return it == extents_.begin() ? 0 : static_cast<size_t>(it - extents_.begin()) - 1;
  }

  // Returns the decompressed cluster of e, from this thread's cache when it was the last.
  const std::vector<uint8_t>& Decompressed(const ChainExtent& e) const {
    thread_local struct {
      uint64_t source = 0, depth = 0, host = 0;
      std::vector<uint8_t> bytes;
    } cache;
    if (cache.source != id_ || cache.depth != e.depth || cache.host != e.host) {
      cache.source = 0;  // until the new cluster is in
      ReadCompressedCluster(chain_.layers()[e.depth], e.host, e.host_end, cache.bytes);
      cache.source = id_;
      cache.depth = e.depth;
      cache.host = e.host;
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
