#include "differential/mutator.h"

#include <algorithm>
#include <cstdio>
#include <functional>

namespace qcowfs_test {
namespace {

using Kind = Region::Kind;

// qcow2.txt, "Cluster mapping": offsets in bits 9-55, COPIED bit 63, compressed bit 62,
// the zero flag bit 0 (version 3; reserved in version 2).
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kCopied = 1ull << 63, kCompressed = 1ull << 62, kZeroFlag = 1;
// Header extension types (qcow2.txt, "Header extensions").
constexpr uint64_t kExtensionTypes[] = {0,
                                        0xe2792aca /* backing format */,
                                        0x6803f857 /* feature names */,
                                        0x23852875 /* bitmaps */,
                                        0x0537be77 /* full disk encryption */,
                                        0x44415441 /* external data file */,
                                        0x12345678};

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

class Mutator {
 public:
  Mutator(std::vector<uint8_t>& bytes, const Qcow2Layout& layout, Rng& rng)
      : b_(bytes), l_(layout), rng_(rng) {}

  // Applies one mutation; returns its description.
  std::string Apply() {
    struct Op {
      unsigned weight;
      std::string (Mutator::*fn)();
    };
    static constexpr Op kOps[] = {
        {14, &Mutator::SetHeaderField}, {18, &Mutator::FlipBits}, {8, &Mutator::SetByte},
        {10, &Mutator::L1Entry},        {20, &Mutator::L2Entry},  {6, &Mutator::Refcount},
        {10, &Mutator::CompressedData}, {8, &Mutator::Truncate},  {4, &Mutator::Extension},
        {2, &Mutator::Append},
    };
    unsigned total = 0;
    for (const Op& op : kOps) total += op.weight;
    uint64_t pick = rng_.Below(total);
    for (const Op& op : kOps) {
      if (pick < op.weight) return (this->*op.fn)();
      pick -= op.weight;
    }
    return FlipBits();
  }

 private:
  uint64_t Load(uint64_t at, uint32_t width) const { return LoadBe(b_, at, width); }
  std::string Store(const std::string& what, uint64_t at, uint32_t width, uint64_t value) {
    const uint64_t old = Load(at, width);
    StoreBe(b_, at, width, value);
    return what + " @" + Hex(at) + ": " + Hex(old) + " -> " + Hex(value);
  }
  // A region of `kind`, or nullptr when the image has none (of the mutated bytes' extent).
  const Region* Pick(Kind kind) {
    std::vector<const Region*> all;
    for (const Region& r : l_.regions) {
      if (r.kind == kind && r.offset < b_.size()) all.push_back(&r);
    }
    return all.empty() ? nullptr : all[rng_.Below(all.size())];
  }
  uint64_t Cluster(uint64_t offset) const { return offset & ~(l_.cluster_size - 1); }
  // The file's end rounded up to a cluster: the first cluster past the image.
  uint64_t PastEnd() const { return Cluster(b_.size() + l_.cluster_size - 1); }
  // The cluster of some other structure, or of data, or just past the end, or unaligned:
  // where a moved offset may land.
  uint64_t SomewhereElse() {
    static constexpr Kind kTargets[] = {Kind::kHeader,        Kind::kL1Entry,       Kind::kL2Entry,
                                        Kind::kRefcountEntry, Kind::kRefcountBlock, Kind::kData,
                                        Kind::kCompressed,    Kind::kSnapshotTable};
    switch (rng_.Below(4)) {
      case 0:
        return PastEnd() + l_.cluster_size * rng_.Below(3);
      case 1:
        return Cluster(rng_.Below(b_.size())) + 512 * (1 + rng_.Below(3));  // unaligned
      default:
        if (const Region* r = Pick(kTargets[rng_.Below(std::size(kTargets))])) {
          return Cluster(r->offset);
        }
        return l_.cluster_size;
    }
  }

  std::string SetHeaderField() {
    const auto fields = HeaderFields(l_.version);
    const qcowfs_test::HeaderField& f = fields[rng_.Below(fields.size())];
    const uint64_t old = Load(f.offset, f.width);
    const uint64_t ones = f.width == 8 ? ~0ull : (1ull << (8 * f.width)) - 1;
    const uint64_t c = l_.cluster_size;
    const std::string name = f.name;
    std::vector<uint64_t> v = {
        0, 1, old + 1, old - 1, old ^ (1ull << rng_.Below(8 * f.width)), ones, old * 2, old / 2};
    if (name.ends_with("_offset")) {
      v = {old + c, old - c, old + 512, SomewhereElse(), PastEnd(), 0, old + 8};
    } else if (name == "size") {
      v = {old + 512, old - 512, old + c, old - c, old + c * (c / 8),
           old * 2,   old - 1,   old + 1, 0,       old / 2};
    } else if (name == "cluster_bits") {
      v = {8, 9, old - 1, old + 1, 21, 22, 63};
    } else if (name == "l1_size") {
      v = {0, old - 1, old + 1, old * 2, (32u << 20) / 8 + 1, old + 1000};
    } else if (name == "refcount_order") {
      v = {rng_.Below(8)};
    } else if (name == "header_length") {
      v = {104, 108, 112, 120, old + 8, c, c + 8, 72};
    } else if (name == "compression_type") {
      v = {0, 1, 2};
    } else if (name == "incompatible_features") {
      static constexpr unsigned kBits[] = {0, 1, 2, 3, 4, 5, 63};
      v = {old ^ (1ull << kBits[rng_.Below(std::size(kBits))])};
    } else if (name == "autoclear_features" || name == "compatible_features") {
      v = {old ^ (1ull << rng_.Below(2))};
    } else if (name == "version") {
      v = {1, 2, 3, 4};
    } else if (name == "crypt_method") {
      v = {1, 2};
    } else if (name == "nb_snapshots") {
      v = {old + 1, 0, 65537};
    } else if (name == "backing_file_size") {
      v = {1 + rng_.Below(12), 1024, old + 1};
    }
    return Store(std::string("header ") + f.name, f.offset, f.width,
                 v[rng_.Below(v.size())] & ones);
  }

  // A region for a byte-level mutation, concentrated on metadata and compressed data.
  const Region* ByteTarget() {
    static constexpr std::pair<Kind, unsigned> kWeights[] = {
        {Kind::kHeader, 10},     {Kind::kExtension, 3},     {Kind::kL1Entry, 8},
        {Kind::kL2Entry, 15},    {Kind::kRefcountEntry, 4}, {Kind::kRefcountBlock, 4},
        {Kind::kCompressed, 10}, {Kind::kData, 3},          {Kind::kSnapshotTable, 2},
        {Kind::kBackingName, 1}};
    for (int tries = 0; tries < 8; ++tries) {
      uint64_t pick = rng_.Below(64);
      for (const auto& [kind, weight] : kWeights) {
        if (pick < weight) {
          if (const Region* r = Pick(kind)) return r;
          break;
        }
        pick -= weight;
      }
    }
    return Pick(Kind::kHeader);
  }

  std::string FlipBits() {
    const Region* r = ByteTarget();
    std::string out = std::string("bits of ") + RegionName(r->kind) + " " + Hex(r->offset) + ":";
    for (uint64_t n = 1 + rng_.Below(3); n > 0; --n) {
      const uint64_t at = r->offset + rng_.Below(r->length);
      const unsigned bit = static_cast<unsigned>(rng_.Below(8));
      if (at < b_.size()) b_[at] ^= static_cast<uint8_t>(1u << bit);
      out += " " + Hex(at) + "^" + std::to_string(1u << bit);
    }
    return out;
  }

  std::string SetByte() {
    static constexpr uint8_t kValues[] = {0, 0xff, 0x80, 0x7f, 0x01, 0x40};
    const Region* r = ByteTarget();
    const uint64_t at = r->offset + rng_.Below(r->length);
    const uint8_t v = rng_.Chance(20) ? static_cast<uint8_t>(rng_.Next())
                                      : kValues[rng_.Below(std::size(kValues))];
    return Store(std::string("byte of ") + RegionName(r->kind), at, 1, v);
  }

  std::string L1Entry() {
    const Region* r = Pick(Kind::kL1Entry);
    if (!r) return FlipBits();
    // Prefer entries that name a table.
    for (int tries = 0; tries < 4 && Load(r->offset, 8) == 0; ++tries) r = Pick(Kind::kL1Entry);
    const uint64_t old = Load(r->offset, 8);
    uint64_t v = old;
    switch (rng_.Below(6)) {
      case 0:  // reserved bits 0-8 and 56-62
        v |= rng_.Chance(50) ? 1ull << rng_.Below(9) : 1ull << (56 + rng_.Below(7));
        break;
      case 1:
      case 2:
        v = (old & ~kOffsetMask) | (SomewhereElse() & kOffsetMask);
        if (rng_.Chance(30)) v = (old & ~kOffsetMask) | ((old & kOffsetMask) + 512);
        break;
      case 3:
        v = 0;
        break;
      case 4:
        v ^= kCopied;
        break;
      default:
        v ^= 1ull << rng_.Below(64);
    }
    return Store("L1 entry", r->offset, 8, v);
  }

  std::string L2Entry() {
    const Region* r = Pick(Kind::kL2Entry);
    if (!r) return FlipBits();
    const uint64_t old = Load(r->offset, 8);
    if (l_.extended_l2 && rng_.Chance(35)) return Subclusters(r, old);
    if (old & kCompressed) return CompressedEntry(r, old);
    uint64_t v = old;
    switch (rng_.Below(9)) {
      case 0:
        v |= kZeroFlag;  // reserved in version 2
        break;
      case 1:  // reserved bits 1-8 and 56-61
        v |= rng_.Chance(50) ? 1ull << (1 + rng_.Below(8)) : 1ull << (56 + rng_.Below(6));
        break;
      case 2: {  // aliasing another data cluster
        const Region* d = Pick(Kind::kData);
        v = (old & ~kOffsetMask) | ((d ? d->offset : SomewhereElse()) & kOffsetMask);
        break;
      }
      case 3:
      case 4:
        v = (old & ~kOffsetMask) | (SomewhereElse() & kOffsetMask);
        break;
      case 5:
        v ^= kCompressed;
        break;
      case 6:
        v ^= kCopied;
        break;
      case 7:
        v = rng_.Chance(50) ? 0 : (kZeroFlag | (rng_.Chance(50) ? kCopied : 0));
        break;
      default:
        v ^= 1ull << rng_.Below(64);
    }
    return Store("L2 entry", r->offset, 8, v);
  }

  // A compressed descriptor: sector count, offset, flags (qcow2.txt, "Compressed Clusters
  // Descriptor").
  std::string CompressedEntry(const Region* r, uint64_t old) {
    const uint32_t x = 62 - (l_.cluster_bits - 8);
    const uint64_t offset_mask = (1ull << x) - 1, sectors_max = (1ull << (l_.cluster_bits - 8)) - 1;
    uint64_t offset = old & offset_mask, sectors = (old >> x) & sectors_max;
    uint64_t flags = old & (kCopied | kCompressed);
    switch (rng_.Below(7)) {
      case 0:
        sectors = std::min(sectors_max, sectors + 1 + rng_.Below(3));
        break;
      case 1:
        sectors = sectors >= 1 ? sectors - 1 - rng_.Below(std::min<uint64_t>(sectors, 3)) : 0;
        break;
      case 2:
        sectors = rng_.Chance(50) ? sectors_max : 0;
        break;
      case 3: {
        static constexpr int64_t kDeltas[] = {1, -1, 2, 512, -512, 7};
        offset = (offset + kDeltas[rng_.Below(std::size(kDeltas))]) & offset_mask;
        break;
      }
      case 4: {
        const Region* c = Pick(Kind::kCompressed);
        offset = rng_.Chance(70) && c ? c->offset : SomewhereElse() & offset_mask;
        break;
      }
      case 5:
        flags ^= kCopied;  // must be clear on compressed clusters
        break;
      default:
        flags ^= kCompressed;  // the descriptor read as a standard entry
    }
    return Store("compressed L2 entry", r->offset, 8, flags | sectors << x | offset);
  }

  // The subcluster bitmap of an extended L2 entry (qcow2.txt, "Extended L2 Entries").
  std::string Subclusters(const Region* r, uint64_t word) {
    const uint64_t old = Load(r->offset + 8, 8);
    const uint32_t alloc = static_cast<uint32_t>(old), zero = static_cast<uint32_t>(old >> 32);
    const uint64_t bit = 1ull << rng_.Below(32);
    uint64_t v = old;
    switch (rng_.Below(5)) {
      case 0:  // one subcluster both allocated and zero: invalid
        v = old | bit | bit << 32;
        break;
      case 1:  // allocated subclusters: with no host cluster, invalid
        v = old | (rng_.Chance(50) ? 0xffffffffull : bit);
        break;
      case 2:
        v = uint64_t{alloc ^ zero} << 32 | zero;  // swapped roles, roughly
        break;
      case 3:
        v = (word & kCompressed) ? old | bit : 0;  // compressed: the bitmap must be 0
        break;
      default:
        v = old ^ (1ull << rng_.Below(64));
    }
    return Store("subcluster bitmap", r->offset + 8, 8, v);
  }

  std::string Refcount() {
    if (rng_.Chance(50)) {
      const Region* r = Pick(Kind::kRefcountEntry);
      if (!r) return FlipBits();
      const uint64_t v = rng_.Chance(30) ? 0 : SomewhereElse();
      return Store("refcount table entry", r->offset, 8, v);
    }
    const Region* r = Pick(Kind::kRefcountBlock);
    if (!r) return FlipBits();
    const uint32_t bits = 1u << l_.refcount_order;
    const uint64_t entries = r->length * 8 / bits, i = rng_.Below(std::min<uint64_t>(entries, 64));
    const uint64_t max = bits == 64 ? ~0ull : (1ull << bits) - 1;
    const uint64_t values[] = {0, 1, 2, max};
    const uint64_t value = values[rng_.Below(4)];
    if (bits >= 8) return Store("refcount", r->offset + i * bits / 8, bits / 8, value);
    // Sub-byte widths: refcount i sits in byte i*bits/8, lowest bits first.
    const uint64_t at = r->offset + i * bits / 8, shift = (i * bits) % 8;
    if (at >= b_.size()) return FlipBits();  // truncated away by an earlier mutation
    const uint8_t old = b_[at];
    const uint8_t mask = static_cast<uint8_t>(((1u << bits) - 1) << shift);
    return Store("refcount", at, 1, (old & ~mask) | ((value << shift) & mask));
  }

  std::string CompressedData() {
    const Region* r = Pick(Kind::kCompressed);
    if (!r) return FlipBits();
    const uint64_t end = std::min<uint64_t>(r->offset + r->length, b_.size());
    switch (rng_.Below(4)) {
      case 0: {  // the stream's tail zeroed: it ends early
        const uint64_t from = r->offset + rng_.Below(end - r->offset);
        std::fill(b_.begin() + from, b_.begin() + end, 0);
        return "compressed data " + Hex(r->offset) + " zeroed from " + Hex(from);
      }
      case 1: {  // its first bytes (the block header, the zstd magic) changed
        const uint64_t at = r->offset + rng_.Below(std::min<uint64_t>(8, end - r->offset));
        return Store("compressed data head", at, 1, rng_.Next() & 0xff);
      }
      default: {
        std::string out = "compressed data " + Hex(r->offset) + " bits:";
        for (uint64_t n = 1 + rng_.Below(4); n > 0; --n) {
          const uint64_t at = r->offset + rng_.Below(end - r->offset);
          b_[at] ^= static_cast<uint8_t>(1u << rng_.Below(8));
          out += " " + Hex(at);
        }
        return out;
      }
    }
  }

  std::string Truncate() {
    uint64_t size = b_.size();
    switch (rng_.Below(5)) {
      case 0:
        size = rng_.Below(b_.size());
        break;
      case 1:
      case 2: {  // inside or at the end of some structure or data
        const Region& r = l_.regions[rng_.Below(l_.regions.size())];
        static constexpr uint64_t kBack[] = {0, 1, 8, 512};
        const uint64_t at = r.offset + r.length, back = kBack[rng_.Below(4)];
        size = at > back ? at - back : 0;
        break;
      }
      case 3:
        size = b_.size() - std::min<uint64_t>(b_.size(), 1 + rng_.Below(l_.cluster_size));
        break;
      default: {
        const Region* c = Pick(Kind::kCompressed);
        size = c ? c->offset + rng_.Below(c->length) : b_.size() / 2;
      }
    }
    size = std::min<uint64_t>(size, b_.size());
    const std::string out =
        "truncated from " + std::to_string(b_.size()) + " to " + std::to_string(size);
    b_.resize(size);
    return out;
  }

  std::string Extension() {
    const Region* r = Pick(Kind::kExtension);
    if (!r) return SetHeaderField();
    if (rng_.Chance(50)) {
      return Store("extension type", r->offset, 4,
                   kExtensionTypes[rng_.Below(std::size(kExtensionTypes))]);
    }
    const uint64_t old = Load(r->offset + 4, 4);
    const uint64_t values[] = {old + 1, old + 8, old - 1, 0, l_.cluster_size, 0xffffffff};
    return Store("extension length", r->offset + 4, 4, values[rng_.Below(6)] & 0xffffffff);
  }

  std::string Append() {
    const uint64_t n = rng_.Chance(50) ? l_.cluster_size : 1 + rng_.Below(1000);
    const bool zeros = rng_.Chance(50);
    for (uint64_t i = 0; i < n; ++i) b_.push_back(zeros ? 0 : static_cast<uint8_t>(rng_.Next()));
    return "appended " + std::to_string(n) + (zeros ? " zero bytes" : " random bytes");
  }

  std::vector<uint8_t>& b_;
  const Qcow2Layout& l_;
  Rng& rng_;
};

}  // namespace

uint64_t Rng::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

Mutant Mutate(std::span<const uint8_t> seed, const Qcow2Layout& layout, uint64_t rng_seed) {
  Rng rng(rng_seed);
  Mutant m{{seed.begin(), seed.end()}, ""};
  const uint64_t count = rng.Chance(60) ? 1 : rng.Chance(60) ? 2 : 3;
  Mutator mutator(m.bytes, layout, rng);
  for (uint64_t i = 0; i < count && !m.bytes.empty(); ++i) {
    if (!m.description.empty()) m.description += "; ";
    m.description += mutator.Apply();
  }
  return m;
}

}  // namespace qcowfs_test
