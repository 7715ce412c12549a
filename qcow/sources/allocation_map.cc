#include "qcow/sources/allocation_map.h"

#include <algorithm>
#include <optional>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/io/file_io.h"
#include "qcow/sources/image_chain.h"
#include "qcow/sources/json_text.h"

namespace qcow {
namespace {

// Doubles the granularity of `out` until it holds at most half of kMaxDataRanges ranges.
void Coarsen(DataRanges& out) {
  while (out.ranges.size() > kMaxDataRanges / 2) {
    out.granularity *= 2;
    size_t kept = 0;
    for (const auto& [offset, length] : out.ranges) {
      const uint64_t first = offset / out.granularity * out.granularity;
      const uint64_t end = offset + length;
      if (kept > 0 && first <= out.ranges[kept - 1].first + out.ranges[kept - 1].second) {
        auto& [f, n] = out.ranges[kept - 1];
        n = std::max(f + n, end) - f;
      } else {
        out.ranges[kept++] = {first, end - first};
      }
    }
    out.ranges.resize(kept);
  }
}

// The most text one entry of qemu-img map's array may take (QEMU prints about 130 bytes).
constexpr uint64_t kMaxMapEntry = 64 << 10;

// One entry of qemu-img map's array: the ranges holding data are appended to out.
void ParseMapEntry(JsonText& json, DataRanges& out) {
  std::optional<uint64_t> start, length, data, zero;
  json.Object([&](const std::string& key) {
    const std::optional<uint64_t> v = json.Value();
    if (key == "start") start = v;
    if (key == "length") length = v;
    if (key == "data") data = v;
    if (key == "zero") zero = v;
  });
  if (!start || !length || !data || !zero)
    json.Fail("an entry without start, length, data and zero");
  if (*start != out.size) {
    json.Fail("an entry starting at " + std::to_string(*start) + " where the one before ended at " +
              std::to_string(out.size));
  }
  if (*length > UINT64_MAX - *start) json.Fail("an entry past 2^64");
  out.size = *start + *length;
  if (*data && !*zero) AppendDataRange(out, *start, *length);
}

// Cluster indices in any order, merged into sorted runs as they come, so that memory
// follows the runs rather than the number of indices; past kMaxDataRanges runs, clusters are
// taken two by two (then four by four...), as DataRanges does.
class ClusterCollector {
 public:
  void Add(uint64_t first, uint64_t count) {
    const uint64_t last = first + count - 1;
    b_.Add(first >> shift_, (last >> shift_) - (first >> shift_) + 1);
    if (++pending_ >= std::max<uint64_t>(4096, runs_)) Merge();
  }
  // Returns the runs, in clusters of 2^shift() indices.
  ClusterMap Build() { return b_.Build(); }
  uint32_t shift() const { return shift_; }

 private:
  void Merge() {
    ClusterMap merged = b_.Build();
    while (merged.runs().size() > kMaxDataRanges / 2) {
      ++shift_;
      ClusterMap::Builder coarser;
      for (const ClusterMap::Run& r : merged.runs()) {
        coarser.Add(r.first >> 1, ((r.first + r.count - 1) >> 1) - (r.first >> 1) + 1);
      }
      merged = coarser.Build();
    }
    for (const ClusterMap::Run& r : merged.runs()) b_.Add(r.first, r.count);
    runs_ = merged.runs().size();
    pending_ = 0;
  }

  ClusterMap::Builder b_;
  uint64_t pending_ = 0, runs_ = 0;
  uint32_t shift_ = 0;
};

// A source whose bytes come from one disk and whose allocation from metadata.
class AllocationOverride : public Source {
 public:
  AllocationOverride(std::unique_ptr<Source> disk, DataRanges data)
      : disk_(std::move(disk)), data_(std::move(data)) {}
  uint64_t size() const override { return disk_->size(); }
  std::string name() const override { return disk_->name(); }
  timespec mtime() const override { return disk_->mtime(); }
  uid_t uid() const override { return disk_->uid(); }
  gid_t gid() const override { return disk_->gid(); }
  mode_t mode() const override { return disk_->mode(); }
  void Pieces(uint64_t offset, uint64_t n, std::vector<SourcePiece>& out) const override {
    disk_->Pieces(offset, n, out);
  }
  void ReadAt(uint64_t offset, uint8_t* out, uint64_t n) const override {
    disk_->ReadAt(offset, out, n);
  }
  ClusterMap Allocation(uint32_t cluster_bits) const override {
    ClusterMap::Builder b;
    for (const auto& [offset, length] : data_.ranges) b.AddBytes(offset, length, cluster_bits);
    return b.Build();
  }

 private:
  std::unique_ptr<Source> disk_;
  DataRanges data_;
};

std::string MapWhat(const std::string& name) { return name + ": not qemu-img map JSON"; }

DataRanges ParseMap(JsonText& json, std::optional<uint64_t> disk_size) {
  // Entries run from 0 without gaps and are longer than 0: they end at the disk's end,
  // after at most one entry per byte.
  const uint64_t end = disk_size ? RoundUpToSector(*disk_size) : UINT64_MAX;
  DataRanges out;
  bool empty_entry = false;
  uint64_t entries = 0;
  json.Array([&] {
    if (empty_entry) json.Fail("an entry after an entry of length 0");
    if (entries++ > 0 && out.size >= end) {
      json.Fail("an entry after the end of the disk's " + std::to_string(end) +
                " bytes (at most ']' may follow)");
    }
    json.Bound(json.offset() + kMaxMapEntry,
               "an entry longer than " + std::to_string(kMaxMapEntry) + " bytes");
    const uint64_t before = out.size;
    ParseMapEntry(json, out);
    json.Bound(UINT64_MAX, "");
    if (out.size == before) {
      // An empty disk's map is one entry of length 0; no other entry has that length.
      if (before != 0) json.Fail("an entry of length 0 after the start of the disk");
      empty_entry = true;
    }
  });
  json.End();
  return out;
}

}  // namespace

void AppendDataRange(DataRanges& out, uint64_t offset, uint64_t length) {
  if (!length) return;
  const uint64_t first = offset / out.granularity * out.granularity;
  const uint64_t end = offset + length;
  if (!out.ranges.empty()) {
    auto& [f, n] = out.ranges.back();
    if (first <= f + RoundUpTo(n, out.granularity)) {
      n = std::max(f + n, end) - f;
      return;
    }
  }
  out.ranges.emplace_back(first, end - first);
  if (out.ranges.size() > kMaxDataRanges) Coarsen(out);
}

DataRanges ParseQemuImgMap(const JsonText::Pull& pull, const std::string& name,
                           std::optional<uint64_t> disk_size) {
  JsonText json(pull, MapWhat(name));
  return ParseMap(json, disk_size);
}

DataRanges ParseQemuImgMap(std::string_view text, const std::string& name) {
  return ParseQemuImgMap(PullFromText(text), name);
}

ImageSummary ParseQemuImgInfo(std::string_view text, const std::string& name) {
  return ParseQemuImgInfo(PullFromText(text), name);
}

ClusterHeader ParseClusterHeader(std::string_view text, const std::string& name) {
  return ParseClusterHeader(PullFromText(text), name);
}

ImageSummary ParseQemuImgInfo(const JsonText::Pull& pull, const std::string& name) {
  JsonText json(pull, name + ": not qemu-img info JSON");
  json.Bound(kMaxInfoJson, "longer than " + std::to_string(kMaxInfoJson) + " bytes");
  std::optional<uint64_t> size, cluster;
  ImageSummary out;
  json.Object([&](const std::string& key) {
    if (key == "virtual-size") {
      size = json.Unsigned();
    } else if (key == "cluster-size") {
      cluster = json.Unsigned();
    } else if (key == "format") {
      out.format = json.String();
    } else {
      json.Skip();
    }
  });
  json.End();
  json.Bound(UINT64_MAX, "");
  if (!size) json.Fail("no \"virtual-size\"");
  out.virtual_size = *size;
  if (cluster) {
    const std::optional<uint32_t> bits = ClusterBitsOf(*cluster);
    if (!bits) {
      json.Fail("\"cluster-size\" " + std::to_string(*cluster) +
                " is not a power of two from 512 to 2M");
    }
    out.cluster_bits = *bits;
  }
  return out;
}

ClusterHeader ParseClusterHeader(const JsonText::Pull& pull, const std::string& name,
                                 std::optional<uint64_t> disk_size) {
  JsonText json(pull, name + ": not the JSON {virtual_size, cluster_bits, data_clusters}");
  std::optional<uint64_t> size, bits;
  // Indices come single (xapi's read_headers, ordered by where the clusters sit in the
  // file) or as [first, last] pairs (qcow2-to-stdout's own callers). The keys may come in
  // any order: each index and the number of entries are bounded by what is known so far
  // (the virtual size, else the disk's; the cluster size, else the smallest), and the
  // highest index is checked against the disk's end again afterwards.
  ClusterCollector clusters;
  std::optional<uint64_t> highest;
  uint64_t entries = 0;
  auto cluster_count = [&] {
    const uint64_t bytes = size ? *size : disk_size ? RoundUpToSector(*disk_size) : UINT64_MAX;
    return DivRoundUp(bytes, uint64_t{1} << bits.value_or(kMinClusterBits));
  };
  auto index = [&] {
    const uint64_t i = json.Unsigned();
    if (i >= cluster_count()) {
      json.Fail("data cluster " + std::to_string(i) + " is past the end of a disk of " +
                std::to_string(cluster_count()) + " clusters");
    }
    return i;
  };
  auto add = [&](uint64_t first, uint64_t last) {
    if (++entries > cluster_count()) {
      json.Fail("more entries in data_clusters than the disk's " + std::to_string(cluster_count()) +
                " clusters");
    }
    clusters.Add(first, last - first + 1);
    highest = std::max(highest.value_or(0), last);
  };
  bool have_clusters = false;
  std::vector<std::string> seen;
  // Members other than the clusters are skipped, each within this many bytes.
  constexpr uint64_t kMaxMember = 64 << 10;
  json.Object([&](const std::string& key) {
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      json.Fail("the key \"" + key + "\" is given twice");
    }
    // read_headers prints three keys; a few more are skipped, not any number.
    if (seen.size() == 16) json.Fail("more than 16 keys");
    seen.push_back(key);
    if (key == "virtual_size") {
      size = json.Unsigned();
      if (disk_size && !DescribesDiskOf(*size, *disk_size)) {
        Refuse(name + " describes a disk of " + std::to_string(*size) + " bytes, but the disk is " +
               std::to_string(*disk_size) + " bytes");
      }
    } else if (key == "cluster_bits") {
      bits = json.Unsigned();
      if (*bits < kMinClusterBits || *bits > kMaxClusterBits) {
        json.Fail("cluster_bits is " + std::to_string(*bits) + ", not 9 to 21");
      }
    } else if (key == "data_clusters") {
      have_clusters = true;
      json.Array([&] {
        if (json.Peek() != '[') {
          const uint64_t i = index();
          add(i, i);
          return;
        }
        uint64_t ends[2], n = 0;
        json.Array([&] {
          if (n == 2) json.Fail("a cluster range with more than two indices");
          ends[n++] = index();
        });
        if (n != 2 || ends[0] > ends[1]) json.Fail("a cluster range that is not [first, last]");
        add(ends[0], ends[1]);
      });
    } else {
      json.Bound(json.offset() + kMaxMember,
                 "a member longer than " + std::to_string(kMaxMember) + " bytes");
      json.Skip();
      json.Bound(UINT64_MAX, "");
    }
  });
  json.End();
  if (!size || !bits || !have_clusters) {
    json.Fail("it lacks one of virtual_size, cluster_bits and data_clusters");
  }
  const uint64_t count = DivRoundUp(*size, uint64_t{1} << *bits);
  if (highest && *highest >= count) {
    json.Fail("data cluster " + std::to_string(*highest) + " is past the end of a disk of " +
              std::to_string(*size) + " bytes");
  }
  ClusterHeader out;
  out.cluster_bits = static_cast<uint32_t>(*bits);
  out.data.size = *size;
  const ClusterMap map = clusters.Build();
  const uint32_t run_bits = static_cast<uint32_t>(*bits) + clusters.shift();
  for (const ClusterMap::Run& r : map.runs()) {
    const uint64_t offset = r.first << run_bits;
    if (offset >= *size) break;
    AppendDataRange(out.data, offset, std::min(r.count << run_bits, *size - offset));
  }
  return out;
}

DataRanges ReadDataRanges(const std::string& spec, const SourceOptions& options,
                          std::optional<uint64_t> disk_size) {
  if (const std::optional<int> fd = DescriptorSpec(spec)) {
    return ParseQemuImgMap(PullFromFd(*fd, spec), spec, disk_size);
  }
  ChainOptions chain{.search_path = options.search_path,
                     .top_format = std::nullopt,
                     .warn = options.warn,
                     .metadata = true};
  return ReadDataRanges(ImageChain::Open(spec, chain), spec, disk_size);
}

DataRanges ReadDataRanges(const ImageChain& image, const std::string& spec,
                          std::optional<uint64_t> disk_size) {
  if (image.layers().front().format == LayerFormat::kRaw) {
    // Not qcow2: the JSON qemu-img map printed, or nothing we know, told by its first
    // bytes before anything more is read.
    JsonText json(PullFromFd(image.layers().front().fd, spec), MapWhat(spec));
    if (json.Peek() != '[') {
      Refuse(spec +
             " is neither a qcow2 image, nor a VHD, nor the JSON of qemu-img map "
             "--output=json");
    }
    return ParseMap(json, disk_size);
  }
  DataRanges out;
  out.size = image.size();
  for (const ChainExtent& e : image.Extents()) {
    if (e.kind == ChainExtent::Kind::kData || e.kind == ChainExtent::Kind::kCompressed) {
      AppendDataRange(out, e.guest, e.length);
    }
  }
  return out;
}

std::unique_ptr<Source> WithAllocation(std::unique_ptr<Source> disk, DataRanges data,
                                       const std::string& data_name) {
  if (!DescribesDiskOf(data.size, disk->size())) {
    throw UsageError(disk->name() + " is " + std::to_string(disk->size()) + " bytes but " +
                     data_name + " describes a disk of " + std::to_string(data.size) +
                     " bytes; the allocation must come from the disk's own metadata");
  }
  return std::make_unique<AllocationOverride>(std::move(disk), std::move(data));
}

}  // namespace qcow
