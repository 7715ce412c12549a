// Changed block tracking: the bitmap xapi's VDI.list_changed_blocks returns (and `xe
// vdi-list-changed-blocks` prints) for two snapshots of a VDI. One bit per 64 KiB block of
// the disk, the most significant bit of the first byte for block 0, set where the two
// differ; as base64 text or as the raw bytes.
#pragma once

#include <cstdint>
#include <string>

#include "qcow/export/cluster_map.h"
#include "qcow/export/source.h"
#include "qcow/sources/allocation_map.h"
#include "qcow/sources/delta.h"
#include "qcow/sources/json_text.h"

namespace qcow {

inline constexpr uint64_t kChangedBlockSize = 64 << 10;

// Returns the bytes of a bitmap for a disk of disk_size bytes: a bit per block, the last
// block possibly short, the last byte possibly part padding.
constexpr uint64_t ChangedBitmapBytes(uint64_t disk_size) {
  return (disk_size / kChangedBlockSize + (disk_size % kChangedBlockSize != 0) + 7) / 8;
}

// Reads a bitmap for a disk of disk_size bytes through `pull` up to its end: base64 text
// (line breaks anywhere, padding as base64 has it) or the raw bitmap, told apart by their
// lengths. Returns the changed blocks as byte ranges of the disk (DataRanges, clipped at
// disk_size; padding bits name no block). Reads at most a few bytes more than the text of
// such a bitmap; memory grows with the runs of changed blocks, and is bounded as DataRanges
// is. Throws FormatError naming `name`: text that is not base64, or a bitmap whose length
// does not match the disk's size (both numbers given).
DataRanges ReadChangedBlocks(const JsonText::Pull& pull, const std::string& name,
                             uint64_t disk_size);

// The same from a file or, as "fd:N", an open descriptor read to its end. Throws also
// UsageError (not fd:N) and std::system_error (cannot open or read).
DataRanges ReadChangedBlocks(const std::string& spec, uint64_t disk_size);

// Returns the clusters (of 2^bits bytes) that hold a changed block.
ClusterMap ChangedClusters(const DataRanges& changed, uint32_t bits);

// Plans the delta of `source` holding every cluster (of 2^bits bytes) with a changed block:
// data where the source may hold data, zero clusters where it reads as zeros (hiding the
// base). The backing file is left to the caller.
DeltaPlan ChangedBlocksDelta(const Source& source, const DataRanges& changed, uint32_t bits);

}  // namespace qcow
