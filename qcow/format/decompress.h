// Decompression of qcow2 compressed clusters (qcow2.txt, "Compressed Clusters Descriptor"),
// with QEMU's rules (block/qcow2-threads.c), so that what decodes here is exactly what
// `qemu-img convert` reads.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace qcow {

// Decompresses raw deflate (no zlib header, 4 KiB window) from `in` into exactly out.size()
// bytes. As QEMU: the output must be filled; input may be left over (a span is rounded up
// to whole sectors) and a stream that would produce more is cut at the cluster. Returns the
// number of input bytes used, or nullopt when the data is damaged or yields less.
std::optional<uint64_t> InflateCluster(std::span<const uint8_t> in, std::span<uint8_t> out);

// Decompresses zstd frames from `in` into exactly out.size() bytes. As QEMU: one frame after
// another until the output is full, which must happen exactly at the end of a frame (a frame
// decoding to more than the cluster is damage); input after that is ignored. Returns the
// number of input bytes used, or nullopt.
std::optional<uint64_t> ZstdCluster(std::span<const uint8_t> in, std::span<uint8_t> out);

// Decompresses a cluster of an image whose header names compression_type (the header's
// field: deflate or zstd) with InflateCluster or ZstdCluster.
std::optional<uint64_t> DecompressCluster(uint8_t compression_type, std::span<const uint8_t> in,
                                          std::span<uint8_t> out);

}  // namespace qcow
