// Decompression of qcow2 compressed clusters (qcow2.txt, "Compressed Clusters Descriptor").
#pragma once

#include <cstdint>
#include <span>

namespace qcow {

// Decompresses `in` (raw deflate, no zlib header) into exactly out.size() bytes. Returns
// false when the data is damaged or yields less than a cluster; trailing input is allowed
// because a compressed span is rounded up to whole sectors.
bool InflateCluster(std::span<const uint8_t> in, std::span<uint8_t> out);

// Decompresses one zstd frame from `in` into exactly out.size() bytes; same rules.
bool ZstdCluster(std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace qcow
