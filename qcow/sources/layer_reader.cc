#include "qcow/sources/layer_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "qcow/format/byte_order.h"
#include "qcow/format/decompress.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/format/l2_entry.h"
#include "qcow/io/file_io.h"
#include "qcow/sources/vhd_layer.h"

namespace qcow {
namespace {

using Kind = ChainExtent::Kind;

// Appends e to out, merged with the last extent when it continues it.
void Append(std::vector<ChainExtent>& out, const ChainExtent& e) {
  if (!out.empty()) {
    ChainExtent& last = out.back();
    if (last.kind == e.kind && e.kind != Kind::kCompressed && last.depth == e.depth &&
        last.guest + last.length == e.guest && last.has_host == e.has_host &&
        (!e.has_host || last.host + last.length == e.host)) {
      last.length += e.length;
      return;
    }
  }
  out.push_back(e);
}

[[noreturn]] void Truncated(const Layer& layer, const std::string& what, uint64_t offset,
                            uint64_t n) {
  Refuse(layer.path + ": " + what + " at " + Hex(offset) + " (" + std::to_string(n) +
         " bytes) lies past the end of the file (" + std::to_string(layer.file_size) +
         " bytes): the image is truncated");
}

std::vector<ChainExtent> Qcow2Extents(const Layer& layer, uint32_t depth) {
  const ImageInfo& in = *layer.info;
  const uint64_t c = in.cluster_size, v = in.virtual_size;
  const uint64_t span = c * in.l2_entries;
  const uint64_t l1_entries = std::min<uint64_t>(in.header.l1_size, (v + span - 1) / span);
  std::vector<ChainExtent> out;
  if (l1_entries == 0) return out;
  static_assert(kTableEntrySize == sizeof(uint64_t));
  const uint64_t l1_offset = in.header.l1_table_offset, l1_bytes = l1_entries * kTableEntrySize;
  if (l1_offset > layer.file_size || l1_bytes > layer.file_size - l1_offset) {
    Truncated(layer, "the L1 table", l1_offset, l1_bytes);
  }
  std::vector<uint8_t> l1(l1_bytes);
  std::vector<uint64_t> l2(c / sizeof(uint64_t));  // words, for the zero skip below
  auto* l2_bytes = reinterpret_cast<uint8_t*>(l2.data());
  PreadUpTo(layer.fd, layer.path, l1_offset, l1.data(), l1_bytes);
  const bool ext = in.extended_l2;
  for (uint64_t i = 0; i < l1_entries; ++i) {
    uint64_t l2_offset = 0;
    try {
      l2_offset = DecodeL1Entry(in, LoadBe64(&l1[i * kTableEntrySize]));
    } catch (const FormatError& e) {
      Refuse(layer.path + ": L1 entry " + std::to_string(i) + " " + e.what());
    }
    if (l2_offset == 0) continue;
    if (l2_offset > layer.file_size || c > layer.file_size - l2_offset) {
      Truncated(layer, "the L2 table of L1 entry " + std::to_string(i), l2_offset, c);
    }
    PreadUpTo(layer.fd, layer.path, l2_offset, l2_bytes, c);
    // Most entries of a sparse disk are zero: skip them eight words at a time (zero is
    // zero in either byte order).
    const uint64_t* words = l2.data();
    const uint64_t word_count = l2.size();
    for (uint64_t j = 0; j < in.l2_entries; ++j) {
      const uint64_t w = j * in.l2_entry_size / sizeof(uint64_t);
      if (w + 8 <= word_count && (words[w] | words[w + 1] | words[w + 2] | words[w + 3] |
                                  words[w + 4] | words[w + 5] | words[w + 6] | words[w + 7]) == 0) {
        j += 8 * sizeof(uint64_t) / in.l2_entry_size - 1;
        continue;
      }
      const uint64_t guest = (i * in.l2_entries + j) * c;
      if (guest >= v) break;
      const uint8_t* p = l2_bytes + j * in.l2_entry_size;
      const uint64_t w0 = LoadBe64(p), w1 = ext ? LoadBe64(p + 8) : 0;
      if (w0 == 0 && w1 == 0) continue;  // unallocated: the common case, kept cheap
      L2Pieces pieces;
      try {
        pieces = DecodeL2Entry(in, w0, w1);
      } catch (const FormatError& e) {
        Refuse(layer.path + ": L2 entry " + std::to_string(j) + " of L1 entry " +
               std::to_string(i) + " (guest offset " + std::to_string(guest) + ") " + e.what());
      }
      for (const L2Piece& piece : pieces.view()) {
        const uint64_t g = guest + piece.offset;
        if (g >= v) break;
        ChainExtent e;
        e.guest = g;
        e.length = std::min(piece.length, v - g);
        e.depth = depth;
        e.host = piece.host;
        switch (piece.kind) {
          case L2Piece::Kind::kUnallocated:
            // Reads from the backing file; kept only when it has a host cluster, which
            // qemu-img map shows (ImageChain::Extents skips these).
            if (piece.host == 0) continue;
            e.kind = Kind::kUnallocated;
            e.has_host = true;
            break;
          case L2Piece::Kind::kData:
            e.kind = Kind::kData;
            e.has_host = true;
            break;
          case L2Piece::Kind::kZero:
            e.kind = Kind::kZero;
            e.has_host = piece.host != 0;
            break;
          case L2Piece::Kind::kCompressed:
            e.kind = Kind::kCompressed;
            e.has_host = true;
            e.host_end = piece.host_end;
            break;
        }
        Append(out, e);
      }
    }
  }
  return out;
}

std::vector<ChainExtent> RawExtents(const Layer& layer, uint32_t depth) {
  std::vector<ChainExtent> out;
  const uint64_t size = layer.virtual_size;
  auto add = [&](Kind kind, uint64_t a, uint64_t b) {
    if (b > a) Append(out, {a, b - a, a, 0, depth, kind, true});
  };
  if (!S_ISREG(layer.st.st_mode)) {
    add(Kind::kData, 0, size);  // a block device: no holes to learn
    return out;
  }
  uint64_t pos = 0;
  ForEachDataRange(layer.fd, layer.path, size, [&](uint64_t a, uint64_t b) {
    add(Kind::kZero, pos, a);
    add(Kind::kData, a, b);
    pos = b;
  });
  add(Kind::kZero, pos, size);
  return out;
}

}  // namespace

void ReadCompressedCluster(const Layer& layer, uint64_t host, uint64_t host_end,
                           std::vector<uint8_t>& out) {
  const ImageInfo& in = *layer.info;
  out.resize(in.cluster_size);
  std::vector<uint8_t> packed(host_end - host, 0);
  PreadUpTo(layer.fd, layer.path, host, packed.data(), packed.size());
  if (!DecompressCluster(in.compression_type, packed, out)) {
    throw std::system_error(EIO, std::generic_category(),
                            layer.path + ": the compressed cluster at " + Hex(host) +
                                " does not decompress to a whole cluster");
  }
}

std::vector<ChainExtent> LayerExtents(const std::vector<Layer>& layers, uint32_t depth) {
  const Layer& layer = layers.at(depth);
  switch (layer.format) {
    case LayerFormat::kQcow2:
      return Qcow2Extents(layer, depth);
    case LayerFormat::kVhd:
      // A fixed VHD is its guest bytes followed by the footer: raw, cut at the guest size.
      if (layer.vhd->footer.disk_type != kVhdFixed) return VhdBlockExtents(layer, depth);
      [[fallthrough]];
    default:
      return RawExtents(layer, depth);
  }
}

}  // namespace qcow
