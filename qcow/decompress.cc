#include "qcow/decompress.h"

#include <zlib.h>
#include <zstd.h>

#include <memory>

namespace qcow {

bool InflateCluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream s{};
  // Negative window bits: raw deflate with a 4 KiB window, as QEMU writes it.
  if (inflateInit2(&s, -12) != Z_OK) return false;
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  int ret = inflate(&s, Z_FINISH);
  const bool full = s.avail_out == 0;
  inflateEnd(&s);
  return full && (ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK);
}

bool ZstdCluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!ctx) return false;
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  while (ob.pos < ob.size) {
    const size_t before_in = ib.pos, before_out = ob.pos;
    size_t ret = ZSTD_decompressStream(ctx.get(), &ob, &ib);
    if (ZSTD_isError(ret)) return false;
    if (ret == 0) break;                                            // frame complete
    if (ib.pos == before_in && ob.pos == before_out) return false;  // no progress: truncated
  }
  return ob.pos == ob.size;
}

}  // namespace qcow
