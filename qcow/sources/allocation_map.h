// Where a raw disk holds data, learned from metadata rather than from the disk: the qcow2
// chain the disk is the guest view of (xapi hands tapdisk's device for a VDI whose chain
// is on the SR), or the JSON `qemu-img map --output=json` printed for it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qcow/export/source.h"
#include "qcow/format/format.h"
#include "qcow/sources/image_chain.h"
#include "qcow/sources/json_text.h"
#include "qcow/sources/open_source.h"

namespace qcow {

struct DataRanges {
  uint64_t size = 0;  // the guest size the metadata describes
  // (offset, length) holding data, in order, on multiples of `granularity` (but the last,
  // which ends at `size`). The allocation is used in clusters, so a range may take in up to
  // a granule around what the metadata names; the granularity starts at a sector and
  // doubles whenever there would be more than kMaxDataRanges ranges, so that memory stays
  // bounded whatever the metadata says. What is added then reads as zeros, and is exported
  // as data clusters of zeros: the image reads the same.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  uint64_t granularity = kSectorSize;
};

// The most ranges DataRanges holds (8 MiB of them).
inline constexpr size_t kMaxDataRanges = size_t{1} << 19;

// Appends [offset, offset + length) to `out`, which must end at or below offset: widened to
// its granularity, merged with the last range when they touch, the granularity doubled when
// there would be more than kMaxDataRanges ranges.
void AppendDataRange(DataRanges& out, uint64_t offset, uint64_t length);

// The JSON readers below pull their text through `pull` (see PullFromFd) and never read
// more than the limits of JsonText and their own bounds allow; `name` starts every refusal.
// Given `disk_size`, the size of the disk the metadata must describe, they also stop
// reading where it ends: then a size that does not match is the caller's to refuse.

// Returns the ranges of `qemu-img map --output=json` output that hold data ("data": true
// and "zero": false) and the size it covers (the end of its last entry). Entries must run
// from 0 without gaps, each longer than 0 (but an empty disk's single entry); once they
// reach RoundUpToSector(*disk_size), only the end of the array may follow. Throws
// FormatError naming `name` and the byte where the text stops being such JSON.
DataRanges ParseQemuImgMap(const JsonText::Pull& pull, const std::string& name,
                           std::optional<uint64_t> disk_size = std::nullopt);
DataRanges ParseQemuImgMap(std::string_view json, const std::string& name);

// What `qemu-img info --output=json` says of an image.
struct ImageSummary {
  uint64_t virtual_size = 0;
  std::optional<uint32_t> cluster_bits;  // "cluster-size" as a power of two, when given
  std::string format;
};

// The most qemu-img info JSON read (its size follows the image's snapshots and bitmaps,
// not its disk's size).
inline constexpr uint64_t kMaxInfoJson = 16 << 20;

// Returns the virtual size, cluster size and format of qemu-img info JSON. Throws
// FormatError naming `name` when the text is not such JSON, is longer than kMaxInfoJson or
// lacks the virtual size.
ImageSummary ParseQemuImgInfo(const JsonText::Pull& pull, const std::string& name);
ImageSummary ParseQemuImgInfo(std::string_view json, const std::string& name);

// The JSON xapi's qcow-stream-tool read_headers prints (and QEMU's qcow2-to-stdout as xapi
// ships it reads with --json-header): {"virtual_size": N, "cluster_bits": B,
// "data_clusters": [...]}, the clusters as indices (in any order) or [first, last] pairs.
struct ClusterHeader {
  uint32_t cluster_bits = 16;
  DataRanges data;  // the clusters as byte ranges, clipped at the virtual size
};

// Returns the header's allocation. Throws FormatError naming `name` when the text is not
// such JSON, cluster_bits is outside 9..21, a cluster lies past the virtual size, there are
// more entries than clusters, or virtual_size does not describe a disk of *disk_size bytes
// (see DescribesDiskOf).
ClusterHeader ParseClusterHeader(const JsonText::Pull& pull, const std::string& name,
                                 std::optional<uint64_t> disk_size = std::nullopt);
ClusterHeader ParseClusterHeader(std::string_view json, const std::string& name);

// Reads the allocation that `spec` describes: a qcow2 image or VHD with its chain (data and
// compressed clusters of any layer), or qemu-img map JSON in a file or, as "fd:N", on an
// open descriptor (read up to the end of the array), for a disk of disk_size bytes when
// known. Throws FormatError/UsageError/std::system_error.
DataRanges ReadDataRanges(const std::string& spec, const SourceOptions& options,
                          std::optional<uint64_t> disk_size);

// The same for `spec` opened as `image` already: the chain's allocation, or, when its top is
// raw, the qemu-img map JSON the file holds (refused at its first byte when that cannot
// start such JSON).
DataRanges ReadDataRanges(const ImageChain& image, const std::string& spec,
                          std::optional<uint64_t> disk_size);

// Whether metadata describing a disk of `described` bytes can be about a disk of
// `disk_size` bytes: the same size, or that size rounded up to a sector as qemu-img and
// qcowfs give images of it.
constexpr bool DescribesDiskOf(uint64_t described, uint64_t disk_size) {
  return described == disk_size || described == RoundUpToSector(disk_size);
}

// Returns `disk` with its allocation replaced by `data` (at cluster granularity). Throws
// UsageError when the sizes differ (see DescribesDiskOf).
std::unique_ptr<Source> WithAllocation(std::unique_ptr<Source> disk, DataRanges data,
                                       const std::string& data_name);

}  // namespace qcow
