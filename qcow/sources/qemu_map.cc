#include "qcow/sources/qemu_map.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/sources/layer_reader.h"

namespace qcow {
namespace {

using Kind = ChainExtent::Kind;

// SEEK_DATA/SEEK_HOLE from pos: sets *data (UINT64_MAX when none) and *hole. As QEMU's
// file-posix: where the file cannot tell (a block device), everything is data.
void FindAllocation(const Layer& layer, uint64_t pos, uint64_t* data, uint64_t* hole) {
  if (!S_ISREG(layer.st.st_mode)) {
    *data = pos;
    *hole = UINT64_MAX;
  } else if (!NextDataRange(layer.fd, layer.path, pos, data, hole)) {
    *data = *hole = UINT64_MAX;
  }
}

// Counts the clusters below `limit` whose refcount is not zero, stopping at `enough`.
uint64_t CountReferenced(const Layer& layer, uint64_t limit, uint64_t enough) {
  const ImageInfo& in = *layer.info;
  const uint64_t c = in.cluster_size;
  const uint32_t bits = 1u << in.header.refcount_order;
  const uint64_t per_block = c * 8 / bits;
  std::vector<uint8_t> table(uint64_t{in.header.refcount_table_clusters} * c), block(c);
  table.resize(
      PreadUpTo(layer.fd, layer.path, in.header.refcount_table_offset, table.data(), table.size()));
  uint64_t count = 0;
  for (uint64_t b = 0; b * kTableEntrySize + 8 <= table.size() && b * per_block < limit; ++b) {
    const uint64_t off = LoadBe64(&table[b * kTableEntrySize]) & ~uint64_t{511};
    if (off == 0) continue;
    std::fill(block.begin(), block.end(), 0);
    PreadUpTo(layer.fd, layer.path, off, block.data(), c);
    const uint64_t n = std::min(per_block, limit - b * per_block);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t bit = i * bits;
      bool used;
      if (bits < 8) {
        used = (block[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
      } else {
        used =
            std::any_of(&block[bit / 8], &block[bit / 8] + bits / 8, [](uint8_t v) { return v; });
      }
      if (used && ++count >= enough) return count;
    }
  }
  return count;
}

// QEMU's qcow2_detect_metadata_preallocation: the image file has far fewer blocks than
// clusters in use, so data clusters may be holes in it, and block status looks there.
bool LooksPreallocated(const Layer& layer) {
  const uint64_t c = layer.info->cluster_size;
  const uint64_t file_len = RoundUpToSector(layer.file_size);
  const uint64_t real = static_cast<uint64_t>(layer.st.st_blocks) * 512 / c;
  const uint64_t threshold = std::max(real * 10 / 9, real + 2);
  return CountReferenced(layer, (file_len + c - 1) / c, threshold) >= threshold;
}

// A layer whose extents say what it defines: qcow2 (with QEMU's look at the file's holes
// when it seems preallocated), and VHD, at sector granularity (qemu-img reports whole
// blocks of dynamic VHDs and cannot read differencing ones; qcowfs reports what it exports).
class ExtentMapLayer : public MapLayer {
 public:
  ExtentMapLayer(const std::vector<Layer>& layers, uint32_t depth)
      : layer_(layers[depth]),
        extents_(LayerExtents(layers, depth)),
        preallocated_(layer_.format == LayerFormat::kQcow2 && LooksPreallocated(layer_)) {}

  uint64_t length() const override { return layer_.virtual_size; }

  Answer Status(uint64_t offset, uint64_t n) const override {
    Answer a;
    auto it = std::upper_bound(extents_.begin(), extents_.end(), offset,
                               [](uint64_t v, const ChainExtent& e) { return v < e.guest; });
    if (it == extents_.begin() || std::prev(it)->guest + std::prev(it)->length <= offset) {
      // Unallocated up to the next extent.
      a.length = std::min(n, it == extents_.end() ? n : it->guest - offset);
      return a;
    }
    const ChainExtent& e = *std::prev(it);
    a.length = std::min(n, e.guest + e.length - offset);
    const uint64_t host = e.host + (offset - e.guest);
    switch (e.kind) {
      case Kind::kData:
        a.data = a.has_offset = true;
        a.offset = host;
        if (preallocated_) Refine(a);
        break;
      case Kind::kCompressed:
        a.data = true;
        break;
      case Kind::kZero:
        a.zero = true;
        a.has_offset = e.has_host;
        a.offset = e.has_host ? host : 0;
        break;
      case Kind::kUnallocated:
        a.has_offset = e.has_host;
        a.offset = host;
        break;
    }
    return a;
  }

 private:
  // Data clusters that are holes in the image file, or past its end, read as zeros.
  void Refine(Answer& a) const {
    const uint64_t file_len = RoundUpToSector(layer_.file_size);
    if (a.offset >= file_len) {
      a.zero = true;
      return;
    }
    uint64_t data, hole;
    FindAllocation(layer_, a.offset, &data, &hole);
    if (data == UINT64_MAX) {
      a.zero = true;
    } else if (data > a.offset) {
      a.length = std::min(a.length, data - a.offset);
      a.zero = true;
    } else {
      a.length = std::min({a.length, hole - a.offset, file_len - a.offset});
    }
  }

  const Layer& layer_;
  std::vector<ChainExtent> extents_;
  bool preallocated_;
};

class RawMapLayer : public MapLayer {
 public:
  explicit RawMapLayer(const Layer& layer) : layer_(layer) {}

  uint64_t length() const override {
    return S_ISREG(layer_.st.st_mode) ? RoundUpToSector(layer_.file_size) : layer_.file_size;
  }

  Answer Status(uint64_t offset, uint64_t n) const override {
    Answer a;
    a.has_offset = true;
    a.offset = offset;
    if (!S_ISREG(layer_.st.st_mode)) {
      a.data = true;
      a.length = n;
      return a;
    }
    uint64_t data, hole;
    FindAllocation(layer_, offset, &data, &hole);
    if (data == UINT64_MAX || data > offset) {
      a.zero = true;
      a.length = data == UINT64_MAX ? n : std::min(n, data - offset);
    } else {
      a.data = true;
      a.length = std::min(n, hole - offset);
    }
    return a;
  }

 private:
  const Layer& layer_;
};

class ExportLayer : public MapLayer {
 public:
  explicit ExportLayer(const ExportLayout& layout) : layout_(layout) {}

  uint64_t length() const override { return layout_.virtual_size(); }

  Answer Status(uint64_t offset, uint64_t n) const override {
    Answer a;
    const uint32_t bits = layout_.cluster_bits();
    const uint64_t c = layout_.cluster_size(), cluster = offset >> bits;
    const ClusterMap& data = layout_.data_clusters();
    const ClusterMap& zero = layout_.zero_clusters();
    uint64_t end = UINT64_MAX;  // where this answer stops holding, in clusters
    if (data.Contains(cluster)) {
      const auto& run = data.runs()[data.FirstRunEndingAfter(cluster)];
      a.data = a.has_offset = true;
      a.offset = layout_.data_offset() + (data.Rank(cluster) << bits) + (offset & (c - 1));
      end = run.first + run.count;
    } else if (zero.Contains(cluster)) {
      const auto& run = zero.runs()[zero.FirstRunEndingAfter(cluster)];
      a.zero = true;
      end = run.first + run.count;
    } else {
      for (const ClusterMap* m : {&data, &zero}) {
        const size_t r = m->FirstRunEndingAfter(cluster);
        if (r < m->runs().size()) end = std::min(end, m->runs()[r].first);
      }
    }
    a.length =
        end == UINT64_MAX || end > (UINT64_MAX >> bits) ? n : std::min(n, (end << bits) - offset);
    return a;
  }

 private:
  const ExportLayout& layout_;
};

bool Mergeable(const MapEntry& a, const MapEntry& b) {
  return a.length > 0 && a.zero == b.zero && a.data == b.data && a.depth == b.depth &&
         a.present == b.present && a.has_offset == b.has_offset &&
         (!a.has_offset || a.offset + a.length == b.offset);
}

}  // namespace

std::vector<std::unique_ptr<MapLayer>> ChainMapLayers(const ImageChain& chain, uint32_t depth) {
  std::vector<std::unique_ptr<MapLayer>> out;
  for (uint32_t d = depth; d < chain.layers().size(); ++d) {
    const Layer& l = chain.layers()[d];
    if (l.format != LayerFormat::kRaw) {
      out.push_back(std::make_unique<ExtentMapLayer>(chain.layers(), d));
    } else {
      out.push_back(std::make_unique<RawMapLayer>(l));
    }
  }
  return out;
}

std::unique_ptr<MapLayer> ExportMapLayer(const ExportLayout& layout) {
  return std::make_unique<ExportLayer>(layout);
}

std::vector<MapEntry> QemuMap(const std::vector<const MapLayer*>& layers) {
  std::vector<MapEntry> out;
  const uint64_t v = layers.front()->length();
  MapEntry curr;
  for (uint64_t off = 0; off < v;) {
    MapEntry next;
    next.start = off;
    uint64_t bytes = v - off;
    for (uint32_t d = 0;; ++d) {
      const MapLayer& layer = *layers[d];
      const MapLayer::Answer a = layer.Status(off, std::min(bytes, layer.length() - off));
      bytes = a.length;
      next.depth = d;
      next.has_offset = a.has_offset;
      next.offset = a.offset;
      if (a.data || a.zero) {
        next.present = true;
        next.data = a.data;
        next.zero = a.zero;
        break;
      }
      // Unallocated here: zeros at this depth when nothing is below or the layer below
      // ends before `off`; else the layer below answers.
      if (d + 1 == layers.size() || off >= layers[d + 1]->length()) {
        next.zero = true;
        break;
      }
    }
    next.length = bytes;
    if (Mergeable(curr, next)) {
      curr.length += next.length;
    } else {
      if (curr.length > 0) out.push_back(curr);
      curr = next;
    }
    off += bytes;
  }
  out.push_back(curr);  // an empty image prints the empty first entry
  return out;
}

std::string QemuMapJson(const std::vector<MapEntry>& entries) {
  std::string out = "[";
  auto b = [](bool v) { return v ? "true" : "false"; };
  for (size_t i = 0; i < entries.size(); ++i) {
    const MapEntry& e = entries[i];
    if (i) out += ",\n";
    out += "{ \"start\": " + std::to_string(e.start) + ", \"length\": " + std::to_string(e.length) +
           ", \"depth\": " + std::to_string(e.depth) + ", \"present\": " + b(e.present) +
           ", \"zero\": " + b(e.zero) + ", \"data\": " + b(e.data);
    if (e.has_offset) out += ", \"offset\": " + std::to_string(e.offset);
    out += "}";
  }
  return out + "]\n";
}

}  // namespace qcow
