// The layout planner for exported images: an allocation map in, any byte range of the
// synthetic qcow2 image out, computed on demand.
//
// The image is laid out as QEMU's scripts/qcow2-to-stdout.py lays it out, so importers that
// only accept that order take ours too: header, refcount table, refcount blocks, L1 table,
// L2 tables (only non-empty ones, in guest order), data clusters (only allocated ones, in
// guest order). Every cluster in use has refcount exactly 1 and every L1/L2 entry carries
// the copied bit. The k-th allocated data cluster sits at data_offset() + k * cluster size,
// so every byte follows from rank/select queries over the map: nothing is materialised.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qcow/export/cluster_map.h"
#include "qcow/format/header.h"

namespace qcow {

// Where bytes of a planned range come from.
struct ExportSegment {
  enum class Kind {
    kBytes,   // metadata generated into the caller's scratch buffer at `position`
    kSource,  // the source's bytes starting at offset `position`
    kZero,    // zeros (padding past the end of the source)
  };
  Kind kind;
  uint64_t position;
  uint64_t length;
};

// What a delta image adds to a full one.
struct DeltaOptions {
  // Guest clusters that read as zeros over the backing file: L2 entries with the zero flag
  // (version 3), no data cluster. Clusters also in the data map are data.
  ClusterMap zero;
  std::string backing_file;    // written in cluster 0
  std::string backing_format;  // the backing format extension ("raw", "qcow2")
};

class ExportLayout {
 public:
  // Refcount entries are 16 bits wide (qcow2.txt: refcount_order 4), the QEMU default.
  static constexpr uint32_t kRefcountOrder = 4;

  // Plans an image of a source of `source_size` bytes whose allocated clusters (of
  // 2^cluster_bits bytes, indices into the source) are `data`. Indices past the virtual size
  // are ignored. Throws UsageError when cluster_bits is outside 9..21 or the disk needs an
  // L1 table larger than QEMU's 32 MiB limit. With `delta`, the image names a backing
  // file and what the data map does not hold reads from it, except the zero clusters.
  ExportLayout(uint64_t source_size, uint32_t cluster_bits, ClusterMap data,
               const DeltaOptions* delta = nullptr);

  // Returns the exact size of the image file in bytes.
  uint64_t image_size() const { return total_clusters_ * cluster_size_; }
  // Returns the guest-visible size: the source size rounded up to 512.
  uint64_t virtual_size() const { return virtual_size_; }
  uint64_t source_size() const { return source_size_; }
  uint64_t cluster_size() const { return cluster_size_; }
  uint32_t cluster_bits() const { return cluster_bits_; }
  // Returns the header as written in cluster 0.
  const QcowHeader& header() const { return header_; }
  // Returns the allocated guest clusters, each exported as one data cluster.
  const ClusterMap& data_clusters() const { return data_; }
  // Returns the guest clusters exported as zero clusters (deltas only).
  const ClusterMap& zero_clusters() const { return zero_; }
  // Returns the backing file the image names ("" for none).
  const std::string& backing_file() const { return backing_file_; }
  // Returns the file offset of the first data cluster (= the size of all metadata).
  uint64_t data_offset() const { return data_start_ * cluster_size_; }
  // Returns the number of clusters of each region, in file order.
  uint64_t refcount_table_clusters() const { return refcount_table_clusters_; }
  uint64_t refcount_block_clusters() const { return refcount_block_clusters_; }
  uint64_t l1_clusters() const { return l1_clusters_; }
  uint64_t l2_clusters() const { return l2_.size(); }

  // Describes the bytes [offset, offset + length) of the image, clipped at image_size(), as
  // segments in order: metadata is generated into `scratch` (resized as needed), data is
  // named by source offset. Adjacent segments of one kind are merged. Returns the number of
  // bytes described.
  uint64_t Plan(uint64_t offset, uint64_t length, std::vector<uint8_t>& scratch,
                std::vector<ExportSegment>& segments) const;

  // Writes the metadata bytes [offset, offset + length) into out; the range must lie below
  // data_offset().
  void FillMetadata(uint64_t offset, uint8_t* out, uint64_t length) const;

 private:
  uint64_t L1Entry(uint64_t index) const;
  uint64_t L2Entry(uint64_t l2_cluster, uint64_t index) const;

  uint64_t source_size_;
  uint32_t cluster_bits_;
  uint64_t cluster_size_;
  uint64_t virtual_size_;
  uint64_t entries_per_table_;  // 8-byte entries per cluster (L1, L2, refcount table)
  uint64_t l1_size_;
  ClusterMap data_;  // allocated guest clusters
  ClusterMap zero_;  // zero clusters (deltas), none of them in data_
  ClusterMap l2_;    // L1 indices whose L2 table is non-empty
  std::string backing_file_;
  uint64_t refcount_table_clusters_ = 0;
  uint64_t refcount_block_clusters_ = 0;
  uint64_t l1_clusters_ = 0;
  // First cluster index of each region.
  uint64_t refcount_table_start_ = 1;
  uint64_t refcount_block_start_ = 0;
  uint64_t l1_start_ = 0;
  uint64_t l2_start_ = 0;
  uint64_t data_start_ = 0;
  uint64_t total_clusters_ = 0;
  QcowHeader header_;
  std::vector<uint8_t> header_bytes_;  // encoded prefix of cluster 0
};

}  // namespace qcow
