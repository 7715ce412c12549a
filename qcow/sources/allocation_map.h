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
#include "qcow/sources/open_source.h"

namespace qcow {

struct DataRanges {
  uint64_t size = 0;                                  // the guest size the metadata describes
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // (offset, length) holding data, in order
};

// Returns the ranges of `qemu-img map --output=json` output that hold data ("data": true
// and "zero": false) and the size it covers (the end of its last entry). Throws FormatError
// naming `name` and the byte where the text stops being such JSON.
DataRanges ParseQemuImgMap(std::string_view json, const std::string& name);

// What `qemu-img info --output=json` says of an image.
struct ImageSummary {
  uint64_t virtual_size = 0;
  std::optional<uint32_t> cluster_bits;  // "cluster-size" as a power of two, when given
  std::string format;
};

// Returns the virtual size, cluster size and format of qemu-img info JSON. Throws
// FormatError naming `name` when the text is not such JSON or lacks the virtual size.
ImageSummary ParseQemuImgInfo(std::string_view json, const std::string& name);

// The JSON xapi's qcow-stream-tool read_headers prints (and QEMU's qcow2-to-stdout as xapi
// ships it reads with --json-header): {"virtual_size": N, "cluster_bits": B,
// "data_clusters": [...]}, the clusters as indices (in any order) or [first, last] pairs.
struct ClusterHeader {
  uint32_t cluster_bits = 16;
  DataRanges data;  // the clusters as byte ranges, clipped at the virtual size
};

// Returns the header's allocation. Throws FormatError naming `name` when the text is not
// such JSON, cluster_bits is outside 9..21 or a cluster lies past the virtual size.
ClusterHeader ParseClusterHeader(std::string_view json, const std::string& name);

// Returns everything left to read on fd (a pipe, say), named `name` in errors. Throws
// std::system_error.
std::string ReadAll(int fd, const std::string& name);

// Reads the allocation that `spec` describes: a qcow2 image or VHD with its chain (data and
// compressed clusters of any layer), or qemu-img map JSON in a file or, as "fd:N", on an
// open descriptor (read to its end). Throws FormatError/UsageError/std::system_error.
DataRanges ReadDataRanges(const std::string& spec, const SourceOptions& options);

// The same for `spec` opened as `image` already: the chain's allocation, or, when its top is
// raw, the qemu-img map JSON the file holds.
DataRanges ReadDataRanges(const ImageChain& image, const std::string& spec);

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
