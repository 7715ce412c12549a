#include "qcow/format/decompress.h"

#include <zlib.h>
#include <zstd.h>

#include <memory>

#include "qcow/format/format.h"

namespace qcow {

std::optional<uint64_t> InflateCluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream s{};
  // Negative window bits: raw deflate with a 4 KiB window, as QEMU writes and reads it.
  if (inflateInit2(&s, -12) != Z_OK) return std::nullopt;
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  const int ret = inflate(&s, Z_FINISH);
  const uint64_t used = s.total_in;
  const bool full = s.avail_out == 0;
  inflateEnd(&s);
  // Z_BUF_ERROR with a full output: the stream goes on past the cluster, or the span's last
  // sector holds a neighbour's bytes; QEMU accepts both.
  if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && full) return used;
  return std::nullopt;
}

std::optional<uint64_t> ZstdCluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!ctx) return std::nullopt;
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  size_t ret = 0;
  while (ob.pos < ob.size) {
    const size_t before_in = ib.pos, before_out = ob.pos;
    ret = ZSTD_decompressStream(ctx.get(), &ob, &ib);
    if (ZSTD_isError(ret)) return std::nullopt;
    // No progress: the input ended before the cluster was full.
    if (ib.pos <= before_in && ob.pos <= before_out) return std::nullopt;
  }
  // A frame still unfinished when the cluster is full decodes to more than a cluster.
  if (ret != 0) return std::nullopt;
  return ib.pos;
}

std::optional<uint64_t> DecompressCluster(uint8_t compression_type, std::span<const uint8_t> in,
                                          std::span<uint8_t> out) {
  return compression_type == kCompressionZstd ? ZstdCluster(in, out) : InflateCluster(in, out);
}

}  // namespace qcow
