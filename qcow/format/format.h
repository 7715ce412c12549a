// On-disk constants of qcow2, named after QEMU's docs/interop/qcow2.txt.
#pragma once

#include <bit>
#include <cstdint>
#include <optional>

namespace qcow {

// "Header": magic "QFI\xfb".
inline constexpr uint32_t kQcowMagic = 0x514649fb;
// "Header": cluster_bits must be at least 9; QEMU caps it at 21 (2 MiB clusters).
inline constexpr uint32_t kMinClusterBits = 9;
inline constexpr uint32_t kMaxClusterBits = 21;
// Returns log2 of a cluster size qcow2 allows (a power of two from 512 to 2 MiB), or
// nullopt for any other size.
inline constexpr std::optional<uint32_t> ClusterBitsOf(uint64_t cluster_size) {
  if (!std::has_single_bit(cluster_size)) return std::nullopt;
  const auto bits = static_cast<uint32_t>(std::countr_zero(cluster_size));
  if (bits < kMinClusterBits || bits > kMaxClusterBits) return std::nullopt;
  return bits;
}
// "Header": version 3 header is at least 104 bytes; 112 includes compression_type + padding.
inline constexpr uint32_t kV3MinHeaderLength = 104;
inline constexpr uint32_t kV3HeaderLength = 112;
inline constexpr uint32_t kV2HeaderLength = 72;
// "Header": compression_type values.
inline constexpr uint8_t kCompressionDeflate = 0;
inline constexpr uint8_t kCompressionZstd = 1;
// "Header": incompatible_features bits.
inline constexpr uint64_t kIncompatDirty = 1ull << 0;
inline constexpr uint64_t kIncompatCorrupt = 1ull << 1;
inline constexpr uint64_t kIncompatDataFile = 1ull << 2;
inline constexpr uint64_t kIncompatCompression = 1ull << 3;
inline constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;
// "Header extensions": type codes.
inline constexpr uint32_t kExtEnd = 0x00000000;
inline constexpr uint32_t kExtBackingFormat = 0xe2792aca;
inline constexpr uint32_t kExtFeatureNameTable = 0x6803f857;
inline constexpr uint32_t kExtBitmaps = 0x23852875;
inline constexpr uint32_t kBitmapsExtLength = 24;  // nb_bitmaps, reserved, dir size, dir offset
inline constexpr uint64_t kAutoclearBitmaps = 1;   // bit 0: the bitmaps extension is valid
inline constexpr uint32_t kExtFullDiskEncryption = 0x0537be77;
inline constexpr uint32_t kExtDataFileName = 0x44415441;
// "Feature name table": each entry is 48 bytes (type, bit number, 46-byte name).
inline constexpr uint32_t kFeatureNameEntrySize = 48;
inline constexpr uint32_t kFeatureNameLength = 46;
// "Cluster mapping": L1/L2 entry bits.
inline constexpr uint64_t kOflagCopied = 1ull << 63;
inline constexpr uint64_t kOflagCompressed = 1ull << 62;
inline constexpr uint64_t kOflagZero = 1ull << 0;
inline constexpr uint64_t kL1OffsetMask = 0x00fffffffffffe00ull;  // L1 bits 9-55
inline constexpr uint64_t kL2OffsetMask = 0x00fffffffffffe00ull;  // L2 standard bits 9-55
// Table offsets must lie below 2^56 (bits 56-61 are reserved).
inline constexpr uint64_t kMaxHostOffset = 1ull << 56;
// QEMU's QCOW_MAX_L1_SIZE (block/qcow2.h): the L1 table may hold at most 32 MiB.
inline constexpr uint64_t kMaxL1Bytes = 32ull << 20;
// QEMU's QCOW_MAX_REFTABLE_SIZE (block/qcow2.h): the refcount table may hold at most 8 MiB.
inline constexpr uint64_t kMaxRefcountTableBytes = 8ull << 20;
// Table entries are 8 bytes; guest sectors are 512 bytes.
inline constexpr uint64_t kTableEntrySize = 8;
inline constexpr uint64_t kSectorSize = 512;

// Returns a / b rounded up, without overflowing for any a.
inline constexpr uint64_t DivRoundUp(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

// Returns n rounded up to a multiple of g.
inline constexpr uint64_t RoundUpTo(uint64_t n, uint64_t g) { return DivRoundUp(n, g) * g; }

// Returns n rounded up to whole sectors.
inline constexpr uint64_t RoundUpToSector(uint64_t n) { return RoundUpTo(n, kSectorSize); }

}  // namespace qcow
