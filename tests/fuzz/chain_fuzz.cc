// libFuzzer target: a qcow2 image as an export source, the chain reader's side of the trust
// boundary (an image a user uploaded, then exported). Any bytes in, as the whole file of a
// top layer (a memfd; its backing file is not looked for); its header, L1 and L2 tables
// decoded into extents and its guest bytes read, or a FormatError / EIO out, never a crash,
// an out-of-bounds read or an overflow (ASan/UBSan watch). What must hold:
// - the extents are in guest order, inside the disk;
// - bytes outside the clusters the source reports as allocated read as zeros (the export
//   leaves those clusters out);
// - the pieces the export splices from the file hold the bytes ReadAt reads.
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "memfd_input.h"
#include "qcow/export/source.h"
#include "qcow/format/errors.h"
#include "qcow/sources/chain_source.h"
#include "qcow/sources/image_chain.h"

#ifndef QCOWFS_FUZZ_ENTRY
#define QCOWFS_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

namespace {

constexpr uint64_t kMaxRead = 4u << 20;  // guest bytes read per input, so that an exec stays fast
constexpr uint32_t kSectorBits = 9;

// Reads [offset, offset + n) with ReadAt and through Pieces, and checks both agree and that
// what lies outside `allocated` is zero.
void Check(const qcow::Source& source, const qcow::ClusterMap& allocated, uint64_t offset,
           uint64_t n) {
  std::vector<uint8_t> bytes(n), piece_bytes;
  source.ReadAt(offset, bytes.data(), n);
  for (uint64_t s = offset >> kSectorBits; s << kSectorBits < offset + n; ++s) {
    if (allocated.Contains(s)) continue;
    const uint64_t a = std::max(offset, s << kSectorBits),
                   b = std::min(offset + n, (s + 1) << kSectorBits);
    if (std::any_of(bytes.begin() + (a - offset), bytes.begin() + (b - offset),
                    [](uint8_t c) { return c != 0; })) {
      __builtin_trap();  // data the export would leave out
    }
  }
  std::vector<qcow::SourcePiece> pieces;
  source.Pieces(offset, n, pieces);
  uint64_t at = offset;
  for (const qcow::SourcePiece& p : pieces) {
    if (p.offset != at || p.length == 0 || p.length > offset + n - at) __builtin_trap();
    if (p.fd >= 0) {
      piece_bytes.resize(p.length);
      if (::pread(p.fd, piece_bytes.data(), p.length, static_cast<off_t>(p.position)) !=
              static_cast<ssize_t>(p.length) ||
          !std::equal(piece_bytes.begin(), piece_bytes.end(), bytes.begin() + (at - offset))) {
        __builtin_trap();  // a spliced piece that is not what ReadAt reads
      }
    }
    at += p.length;
  }
  if (at != offset + n) __builtin_trap();
}

}  // namespace

extern "C" int QCOWFS_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  const int fd = MemfdInput("qcow2", data, size);
  if (fd < 0) return 0;
  qcow::ChainOptions options;
  options.top_format = qcow::LayerFormat::kQcow2;
  options.top_only = true;  // the fuzzer's backing names name nothing
  try {
    qcow::ImageChain chain = qcow::ImageChain::Open("/proc/self/fd/" + std::to_string(fd), options);
    const uint64_t disk = chain.size();
    uint64_t end = 0;
    std::vector<std::pair<uint64_t, uint64_t>> reads = {{0, std::min(disk, kMaxRead / 4)}};
    for (const qcow::ChainExtent& e : chain.Extents()) {
      if (e.guest < end || e.length == 0 || e.guest + e.length > disk) __builtin_trap();
      end = e.guest + e.length;
      if (e.kind == qcow::ChainExtent::Kind::kData ||
          e.kind == qcow::ChainExtent::Kind::kCompressed) {
        reads.emplace_back(e.guest, e.length);
      }
    }
    const std::unique_ptr<qcow::Source> source = qcow::MakeChainSource(std::move(chain));
    const qcow::ClusterMap allocated = source->Allocation(kSectorBits);
    uint64_t budget = kMaxRead;
    for (const auto& [offset, length] : reads) {
      const uint64_t n = std::min({length, budget, uint64_t{1} << 20});
      if (n == 0) break;
      Check(*source, allocated, offset, n);
      budget -= n;
    }
  } catch (const qcow::FormatError&) {
  } catch (const qcow::UsageError&) {
  } catch (const std::system_error&) {  // a compressed cluster that does not decompress
  }
  ::close(fd);
  return 0;
}
