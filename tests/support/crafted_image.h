// A byte-by-byte builder of qcow2 images (version 2 and 3) for layouts qemu-img never
// writes: shared and aliased clusters, tables after their data, odd header lengths,
// hand-made compressed streams, refcount structures that lie. It depends on nothing in
// qcow/, so that it judges the decoder rather than repeating it.
//
// By default the result passes `qemu-img check`: refcounts are computed at Build() by
// walking the finished bytes the way QEMU's check does (header, L1, every L2 table once per
// L1 entry naming it, data and compressed spans, the refcount table and blocks), and the
// COPIED bit of every L1 entry and standard L2 entry is set exactly when the stored
// refcount is 1. Overrides make the refcounts lie.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace qcowfs_test {

enum class Compression : uint8_t { kDeflate = 0, kZstd = 1 };

struct CraftedOptions {
  uint32_t cluster_bits = 16;
  uint64_t virtual_size = 1 << 20;  // the header's size field, written as is
  uint32_t version = 3;
  uint32_t refcount_order = 4;  // version 2 images must keep 4
  Compression compression = Compression::kDeflate;
  bool extended_l2 = false;
  uint32_t header_length = 0;  // version 3 only; 0 means 112, as QEMU 7.2 writes
  uint32_t l1_size = 0;        // 0 means just enough entries for virtual_size
  // Reserves cluster 1 for the refcount table, 2 for the first refcount block and 3.. for
  // the L1 table, as qemu-img lays them out. Otherwise the test places them (PlaceL1,
  // PlaceRefcountTable, AddRefcountBlockSlot) or Build() appends them at the end.
  bool tables_first = true;
  // Sets the COPIED bit of L1 and standard L2 entries from the stored refcounts at Build().
  bool auto_copied = true;
};

// Where a compressed cluster's data lies, as its L2 descriptor names it: a byte offset and
// the number of 512-byte sectors the span touches.
struct CompressedSpan {
  uint64_t offset = 0;
  uint64_t sectors = 0;
  uint64_t end() const { return (offset / 512 + sectors) * 512; }
};

class CraftedImage {
 public:
  // Throws std::invalid_argument for options qcow2 cannot express.
  explicit CraftedImage(const CraftedOptions& options);

  const CraftedOptions& options() const { return o_; }
  uint64_t cluster_size() const { return uint64_t{1} << o_.cluster_bits; }
  // Returns the number of entries of an L2 table, and the guest bytes one table maps.
  uint64_t l2_entries() const { return cluster_size() / (o_.extended_l2 ? 16 : 8); }
  uint64_t l2_span() const { return cluster_size() * l2_entries(); }
  uint32_t l1_size() const { return l1_size_; }
  // Returns the end of everything placed so far.
  uint64_t end() const { return end_; }
  // Returns where the L1 table and the refcount table were placed (0 when Build() will
  // append them), and the first refcount block slot (0 when none).
  uint64_t l1_offset() const { return l1_offset_.value_or(0); }
  uint64_t refcount_table_offset() const { return refcount_table_ ? refcount_table_->first : 0; }
  uint64_t first_block_slot() const { return block_slots_.empty() ? 0 : block_slots_[0]; }

  // Returns the offset of `clusters` fresh clusters at the end of the file.
  uint64_t Allocate(uint64_t clusters = 1);
  // Puts the L1 table / the refcount table at offset (cluster aligned, already allocated or
  // allocated by this call when past the end).
  void PlaceL1(uint64_t offset);
  void PlaceRefcountTable(uint64_t offset, uint32_t clusters);
  // Adds a cluster for a refcount block; slots are used in order for blocks 0, 1, ...;
  // blocks that find no slot are appended at the end by Build().
  void AddRefcountBlockSlot(uint64_t offset);

  // Makes an L2 table for L1 entry l1_index at offset (allocated at the end when absent)
  // and returns its offset.
  uint64_t AddL2Table(uint64_t l1_index, std::optional<uint64_t> offset = std::nullopt);
  // Sets a raw L1 entry (no table is created).
  void SetL1Entry(uint64_t index, uint64_t raw);
  // Sets entry `index` of the L2 table at table_offset (a table is created there if needed):
  // the 64-bit word, and with extended L2 the subcluster bitmap word.
  void SetL2Entry(uint64_t table_offset, uint64_t index, uint64_t word, uint64_t bitmap = 0);

  // Guest mappings of the cluster holding guest offset `guest`, in the L2 table its L1 entry
  // names (created at the end of the file when there is none yet).
  void MapData(uint64_t guest, uint64_t host);
  void MapZero(uint64_t guest, uint64_t host = 0);  // extended L2: all subclusters zero
  void MapSubclusters(uint64_t guest, uint64_t host, uint32_t alloc, uint32_t zero);
  void MapCompressed(uint64_t guest, const CompressedSpan& span);
  void MapRaw(uint64_t guest, uint64_t word, uint64_t bitmap = 0);
  // Returns the L2 descriptor (word 0) of a compressed span.
  uint64_t CompressedEntry(const CompressedSpan& span) const;

  // Writes bytes at a host offset (extending the file when needed).
  void PutData(uint64_t offset, std::span<const uint8_t> bytes);
  // Allocates one cluster, fills it with RandomBytes(cluster, seed) and returns its offset.
  uint64_t AddDataCluster(uint64_t seed);
  // Writes compressed bytes at offset; the span covers them plus extra_sectors.
  CompressedSpan PutCompressed(uint64_t offset, std::span<const uint8_t> compressed,
                               uint64_t extra_sectors = 0);
  // Writes compressed bytes right after the ones packed before, as QEMU packs them
  // (neighbours share sectors; a fresh cluster when something else was allocated since).
  CompressedSpan PackCompressed(std::span<const uint8_t> compressed);

  // Counts a reference the walk cannot see (as check would count it).
  void AddReference(uint64_t offset, uint64_t length = 1);
  // Stores `value` as the refcount of host cluster `cluster`, whatever the walk found.
  void OverrideRefcount(uint64_t cluster, uint64_t value);
  // Stores a raw refcount table entry (a block that lies, or none).
  void OverrideRefcountTableEntry(uint64_t index, uint64_t raw);
  // Sets raw header extension bytes (placed at header_length; an end marker follows).
  void SetHeaderExtensions(std::vector<uint8_t> bytes) { extensions_ = std::move(bytes); }
  // Cuts or pads the built file to exactly `size` bytes.
  void SetFileSize(uint64_t size) { file_size_ = size; }

  // Returns the image. Throws std::runtime_error when a refcount does not fit the width.
  std::vector<uint8_t> Build() const;
  // Returns the refcounts stored by the last Build(), by cluster index.
  const std::map<uint64_t, uint64_t>& stored_refcounts() const { return stored_; }

 private:
  std::vector<uint8_t>& TableFor(uint64_t guest, uint64_t* index);
  void Extend(uint64_t end);
  std::vector<uint8_t> EncodeHeader(uint64_t l1_offset, uint64_t rt_offset,
                                    uint32_t rt_clusters) const;

  CraftedOptions o_;
  uint32_t l1_size_ = 0;
  uint64_t end_ = 0;
  std::optional<uint64_t> l1_offset_;
  std::optional<std::pair<uint64_t, uint32_t>> refcount_table_;
  std::vector<uint64_t> block_slots_;
  std::map<uint64_t, uint64_t> l1_;                  // index -> raw entry
  std::map<uint64_t, std::vector<uint8_t>> tables_;  // offset -> L2 table bytes
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> data_;
  uint64_t packed_end_ = 0, packed_limit_ = 0;
  std::vector<std::pair<uint64_t, uint64_t>> extra_refs_;
  std::map<uint64_t, uint64_t> refcount_overrides_;
  std::map<uint64_t, uint64_t> table_overrides_;
  std::vector<uint8_t> extensions_;
  std::optional<uint64_t> file_size_;
  mutable std::map<uint64_t, uint64_t> stored_;
};

// Returns data compressed as QEMU compresses a cluster: raw deflate, 4 KiB window.
std::vector<uint8_t> Deflate(std::span<const uint8_t> data);
// Returns data as raw deflate stored blocks: the bytes appear verbatim in the stream.
std::vector<uint8_t> DeflateStored(std::span<const uint8_t> data);
// Returns data as one zstd frame (with its content size and a checksum when asked).
std::vector<uint8_t> ZstdFrame(std::span<const uint8_t> data, bool checksum = false);
// Returns a zstd skippable frame carrying n bytes.
std::vector<uint8_t> ZstdSkippableFrame(uint64_t n);
// Returns n bytes that compress well but differ with the seed and have no zero sector.
std::vector<uint8_t> CompressibleBytes(uint64_t n, uint64_t seed);

}  // namespace qcowfs_test
