#include "qcow/sources/allocation_map.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <optional>
#include <sstream>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/sources/image_chain.h"
#include "qcow/sources/json_text.h"

namespace qcow {
namespace {

// Appends [offset, offset + length) to sorted ranges, merging with the last one.
void AppendRange(DataRanges& out, uint64_t offset, uint64_t length) {
  if (!length) return;
  if (!out.ranges.empty() && out.ranges.back().first + out.ranges.back().second == offset) {
    out.ranges.back().second += length;
  } else {
    out.ranges.emplace_back(offset, length);
  }
}

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
  if (*data && !*zero) AppendRange(out, *start, *length);
}

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

}  // namespace

std::string ReadAll(int fd, const std::string& name) {
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowErrno("reading " + name);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

DataRanges ParseQemuImgMap(std::string_view text, const std::string& name) {
  JsonText json(text, name + ": not qemu-img map JSON");
  DataRanges out;
  json.Array([&] { ParseMapEntry(json, out); });
  json.End();
  return out;
}

ImageSummary ParseQemuImgInfo(std::string_view text, const std::string& name) {
  JsonText json(text, name + ": not qemu-img info JSON");
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

ClusterHeader ParseClusterHeader(std::string_view text, const std::string& name) {
  JsonText json(text, name + ": not the JSON {virtual_size, cluster_bits, data_clusters}");
  std::optional<uint64_t> size, bits;
  // Indices come single (xapi's read_headers, ordered by where the clusters sit in the
  // file) or as [first, last] pairs (qcow2-to-stdout's own callers). The keys may come in
  // any order, so the highest index is checked against the disk's end afterwards.
  ClusterMap::Builder b;
  std::optional<uint64_t> highest;
  auto add = [&](uint64_t first, uint64_t last) {
    b.Add(first, last - first + 1);
    highest = std::max(highest.value_or(0), last);
  };
  bool have_clusters = false;
  std::vector<std::string> seen;
  json.Object([&](const std::string& key) {
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      json.Fail("the key \"" + key + "\" is given twice");
    }
    // Only the first keys are remembered: the object has three that matter, and a bound
    // keeps a header of many keys from costing time quadratic in them.
    if (seen.size() < 16) seen.push_back(key);
    if (key == "virtual_size") {
      size = json.Unsigned();
    } else if (key == "cluster_bits") {
      bits = json.Unsigned();
    } else if (key == "data_clusters") {
      have_clusters = true;
      json.Array([&] {
        if (json.Peek() != '[') {
          const uint64_t i = json.Unsigned();
          add(i, i);
          return;
        }
        uint64_t ends[2], n = 0;
        json.Array([&] {
          if (n == 2) json.Fail("a cluster range with more than two indices");
          ends[n++] = json.Unsigned();
        });
        if (n != 2 || ends[0] > ends[1]) json.Fail("a cluster range that is not [first, last]");
        add(ends[0], ends[1]);
      });
    } else {
      json.Skip();
    }
  });
  json.End();
  if (!size || !bits || !have_clusters) {
    json.Fail("it lacks one of virtual_size, cluster_bits and data_clusters");
  }
  if (*bits < kMinClusterBits || *bits > kMaxClusterBits) {
    json.Fail("cluster_bits is " + std::to_string(*bits) + ", not 9 to 21");
  }
  const uint64_t clusters = DivRoundUp(*size, uint64_t{1} << *bits);
  if (highest && *highest >= clusters) {
    json.Fail("data cluster " + std::to_string(*highest) + " is past the end of a disk of " +
              std::to_string(*size) + " bytes");
  }
  ClusterHeader out;
  out.cluster_bits = static_cast<uint32_t>(*bits);
  out.data.size = *size;
  const ClusterMap map = b.Build();
  for (const ClusterMap::Run& r : map.runs()) {
    const uint64_t offset = r.first << *bits;
    AppendRange(out.data, offset, std::min(r.count << *bits, *size - offset));
  }
  return out;
}

DataRanges ReadDataRanges(const std::string& spec, const SourceOptions& options) {
  if (spec.rfind("fd:", 0) == 0) {
    int fd = -1;
    const auto [end, ec] = std::from_chars(spec.data() + 3, spec.data() + spec.size(), fd);
    if (ec != std::errc() || end != spec.data() + spec.size() || fd < 0) {
      throw UsageError("'" + spec + "' is not fd:N with N a descriptor number");
    }
    return ParseQemuImgMap(ReadAll(fd, spec), spec);
  }
  ChainOptions chain{.search_path = options.search_path,
                     .top_format = std::nullopt,
                     .warn = options.warn,
                     .metadata = true};
  return ReadDataRanges(ImageChain::Open(spec, chain), spec);
}

DataRanges ReadDataRanges(const ImageChain& image, const std::string& spec) {
  if (image.layers().front().format == LayerFormat::kRaw) {
    // Not qcow2: the JSON qemu-img map printed, or nothing we know.
    const std::string text = ReadAll(image.layers().front().fd, spec);
    const size_t first = text.find_first_not_of(" \t\r\n");
    if (first == std::string::npos || text[first] != '[') {
      Refuse(spec +
             " is neither a qcow2 image, nor a VHD, nor the JSON of qemu-img map "
             "--output=json");
    }
    return ParseQemuImgMap(text, spec);
  }
  DataRanges out;
  out.size = image.size();
  for (const ChainExtent& e : image.Extents()) {
    if (e.kind == ChainExtent::Kind::kData || e.kind == ChainExtent::Kind::kCompressed) {
      AppendRange(out, e.guest, e.length);
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
