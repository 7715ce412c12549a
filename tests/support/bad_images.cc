#include "bad_images.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>

#include "qcow/format/byte_order.h"
#include "test_util.h"

namespace qcowfs_test {
namespace {

uint64_t Be64At(const std::string& path, uint64_t off) {
  auto b = ReadFile(path);
  return qcow::LoadBe64(&b[off]);
}
void Put32(const std::string& path, uint64_t off, uint32_t v) {
  std::vector<uint8_t> b(4);
  qcow::StoreBe32(b.data(), v);
  WriteAt(path, off, b);
}
void Put64(const std::string& path, uint64_t off, uint64_t v) {
  std::vector<uint8_t> b(8);
  qcow::StoreBe64(b.data(), v);
  WriteAt(path, off, b);
}
// File offset of the first L2 table (from L1 entry 0).
uint64_t FirstL2(const std::string& img) {
  return Be64At(img, Be64At(img, 40)) & 0x00fffffffffffe00ull;
}
void Truncate(const std::string& img, uint64_t size) { ASSERT_EQ(truncate(img.c_str(), size), 0); }

const char* kSmall =
    "qemu-img create -q -f qcow2 img.qcow2 8M && "
    "qemu-io -c 'write -P 0x5 0 1M' -c 'write -P 0x6 5M 64k' img.qcow2 >/dev/null";

}  // namespace

const std::vector<BadCase>& BadImages() {
  static const std::vector<BadCase> cases = {
      {"bad_magic", kSmall, [](auto& p) { Put32(p, 0, 0x51464900); }, EIO, "magic is 0x51464900",
       true},
      {"version_4", kSmall, [](auto& p) { Put32(p, 4, 4); }, EIO, "version is 4", true},
      {"cluster_bits_8", kSmall, [](auto& p) { Put32(p, 20, 8); }, EIO, "cluster_bits is 8", true},
      {"cluster_bits_22", kSmall, [](auto& p) { Put32(p, 20, 22); }, EIO, "cluster_bits is 22",
       true},
      {"header_length_100", kSmall, [](auto& p) { Put32(p, 100, 100); }, EIO,
       "header_length is 100", true},
      {"unknown_incompatible_bit", kSmall, [](auto& p) { Put64(p, 72, 1ull << 5); }, EIO,
       "unknown bit 5", true},
      {"corrupt_bit", kSmall, [](auto& p) { Put64(p, 72, 2); }, EIO, "corrupt bit", true},
      {"external_data_file", "qemu-img create -q -f qcow2 -o data_file=data.raw img.qcow2 8M",
       nullptr, EIO, "external data file", true},
      // qemu-img times PBKDF with the CPU clock and now and then gives up on a busy machine:
      // retry, each time from nothing (a failed attempt may leave a partial file behind).
      {"encrypted_luks",
       "ok=; for i in $(seq 20); do rm -f img.qcow2; if qemu-img create -q -f qcow2 "
       "--object secret,id=s0,data=pw -o encrypt.format=luks,encrypt.key-secret=s0,"
       "encrypt.iter-time=200 img.qcow2 8M 2> err; then ok=1; break; fi; sleep 0.3; done; "
       "test -n \"$ok\" || { cat err; exit 1; }",
       nullptr, EIO, "encrypt", true},
      {"crypt_method_aes", kSmall, [](auto& p) { Put32(p, 32, 1); }, EIO, "crypt_method is 1 (AES)",
       true},
      {"compression_type_2", kSmall,
       [](auto& p) {
         Put64(p, 72, 1ull << 3);
         WriteAt(p, 104, {2});
       },
       EIO, "compression_type is 2", true},
      {"zstd_without_its_bit", kSmall, [](auto& p) { WriteAt(p, 104, {1}); }, EIO,
       "compression type bit (3)", true},
      {"refcount_order_7", kSmall, [](auto& p) { Put32(p, 96, 7); }, EIO, "refcount_order is 7",
       true},
      {"l1_too_small", kSmall, [](auto& p) { Put32(p, 36, 0); }, EIO, "l1_size is 0", true},
      // QEMU counts the L1 entries a size needs before rounding it down to a sector.
      {"l1_too_small_for_an_odd_size",
       "qemu-img create -q -f qcow2 -o cluster_size=512 img.qcow2 1M && "
       "qemu-io -c 'write -P 0x5 0 64k' img.qcow2 >/dev/null",
       [](auto& p) { Put64(p, 24, (1 << 20) + 1); }, EIO, "l1_size is 32", true},
      {"l1_absurd", kSmall, [](auto& p) { Put32(p, 36, 5'000'000); }, EIO, "at most 32 MiB", true},
      {"l1_offset_unaligned", kSmall, [](auto& p) { Put64(p, 40, Be64At(p, 40) + 8); }, EIO,
       "l1_table_offset is", true},
      {"l1_offset_beyond_2_56", kSmall, [](auto& p) { Put64(p, 40, 1ull << 57); }, EIO,
       "below 2^56", true},
      {"refcount_table_absurd", kSmall, [](auto& p) { Put32(p, 56, 1'000'000); }, EIO,
       "refcount_table_clusters", true},
      {"snapshots_offset_unaligned_empty_table", kSmall, [](auto& p) { Put64(p, 64, 12345); }, EIO,
       "even with no snapshots", true},
      {"extensions_past_backing_file_offset", kSmall, [](auto& p) { Put64(p, 8, 200); }, EIO,
       "past the backing file name at offset 200", true},
      {"backing_file",
       "qemu-img create -q -f qcow2 base.qcow2 8M && "
       "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 img.qcow2",
       nullptr, EIO, "backing file 'base.qcow2'", true},
      {"larger_than_target", kSmall, nullptr, EFBIG, "the target holds only", true, 4 << 20},
      {"truncated_in_header", kSmall, [](auto& p) { Truncate(p, 50); }, EIO, "inside its header",
       true},
      {"truncated_in_first_cluster", kSmall, [](auto& p) { Truncate(p, 4000); }, EIO,
       "ends at byte 4000, inside its header (65536 bytes", true},
      {"truncated_before_l2", kSmall, [](auto& p) { Truncate(p, FirstL2(p) + 100); }, EIO,
       "past the end of the image", false},
      {"truncated_in_data", kSmall, [](auto& p) { Truncate(p, FirstL2(p) + (300 << 10)); }, EIO,
       "the image is truncated", false},
      {"l2_zero_bit_in_v2",
       "qemu-img create -q -f qcow2 -o compat=0.10 img.qcow2 8M && "
       "qemu-io -c 'write -P 0x5 0 64k' img.qcow2 >/dev/null",
       [](auto& p) { Put64(p, FirstL2(p), Be64At(p, FirstL2(p)) | 1); }, EIO,
       "version 2 does not allow", false},
      {"l2_reserved_bits", kSmall, [](auto& p) { Put64(p, FirstL2(p), Be64At(p, FirstL2(p)) | 2); },
       EIO, "reserved bits", false},
      {"damaged_compressed_data",
       "yes qcowfs | head -c 1M > raw && qemu-img convert -c -f raw -O qcow2 raw img.qcow2",
       [](auto& p) {
         const uint64_t e = Be64At(p, FirstL2(p));
         WriteAt(p, e & ((1ull << 54) - 1), std::vector<uint8_t>(64, 0xff));
       },
       EIO, "decompress", false},
      {"subcluster_both_allocated_and_zero",
       "qemu-img create -q -f qcow2 -o extended_l2=on img.qcow2 8M && "
       "qemu-io -c 'write -P 0x5 0 4k' img.qcow2 >/dev/null",
       [](auto& p) { Put64(p, FirstL2(p) + 8, 0x0000000100000001ull); }, EIO,
       "both allocated and zero", false},
      {"data_beyond_the_end", kSmall,
       [](auto& p) { Put64(p, FirstL2(p), (1ull << 40) | (1ull << 63)); }, EIO,
       "past the end of the image", false},
  };
  return cases;
}

}  // namespace qcowfs_test
