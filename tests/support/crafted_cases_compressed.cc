// Cases of hand-made compressed streams (zstd frames, deflate streams QEMU accepts or not)
// and of compressed data that shares its bytes with other structures.
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "crafted_cases.h"
#include "crafted_image.h"
#include "test_util.h"

namespace qcowfs_test::crafted {

namespace {

// Returns a zstd image of 64 KiB clusters whose guest cluster 0 holds `stream` and cluster 1
// an ordinary zstd cluster.
Built ZstdImage(const std::vector<uint8_t>& stream) {
  CraftedOptions o = Opt(16, 1 << 20);
  o.compression = Compression::kZstd;
  CraftedImage im(o);
  im.MapCompressed(0, im.PackCompressed(stream));
  im.MapCompressed(1 << 16, im.PackCompressed(ZstdFrame(CompressibleBytes(1 << 16, 8))));
  im.MapData(2 << 16, im.AddDataCluster(1));
  return Done(im);
}

// Returns a deflate image whose guest cluster 0 holds `stream`.
Built DeflateImage(const std::vector<uint8_t>& stream, uint32_t cluster_bits = k4K) {
  CraftedImage im(Opt(cluster_bits, 1 << 20));
  const uint64_t c = im.cluster_size();
  im.MapCompressed(0, im.PackCompressed(stream));
  im.MapCompressed(c, im.PackCompressed(Deflated(c, 8)));
  return Done(im);
}

std::vector<uint8_t> Cat(std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Returns the plain cluster the zstd cases compress (kept for the whole run: the cases'
// builders refer to it).
std::span<const uint8_t> ZstdPlain() {
  static const std::vector<uint8_t> plain = CompressibleBytes(1 << 16, 9);
  return plain;
}

}  // namespace

std::vector<Case> CompressionCases() {
  constexpr uint64_t c = 1 << 16;
  const std::span<const uint8_t> d = ZstdPlain();
  std::vector<Case> v;
  // 7. zstd: QEMU loops over frames until the cluster is full, and refuses a frame that is
  // still unfinished when it is.
  v.push_back({"zstd_two_frames",
               [=] {
                 return ZstdImage(Cat({ZstdFrame(d.first(c / 2)), ZstdFrame(d.subspan(c / 2))}));
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"zstd_skippable_and_three_frames",
               [=] {
                 return ZstdImage(
                     Cat({ZstdSkippableFrame(100), ZstdFrame(d.first(1000), true),
                          ZstdFrame(d.subspan(1000, 30000)), ZstdFrame(d.subspan(31000), true)}));
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back(
      {"zstd_frame_then_more_frames_after_a_full_cluster",
       [=] {
         return ZstdImage(Cat({ZstdFrame(d), ZstdFrame(d.first(5000)), RandomBytes(300, 1)}));
       },
       Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"zstd_frame_longer_than_a_cluster",
               [] { return ZstdImage(ZstdFrame(CompressibleBytes(c + 4096, 9))); }, Check::kAny,
               Convert::kFails, Want::kRefuse});
  v.push_back({"zstd_frames_longer_than_a_cluster",
               [=] {
                 return ZstdImage(Cat({ZstdFrame(d.first(c * 3 / 4)), ZstdFrame(d.first(c / 2))}));
               },
               Check::kAny, Convert::kFails, Want::kRefuse});
  v.push_back({"zstd_frame_shorter_than_a_cluster",
               [=] { return ZstdImage(ZstdFrame(d.first(c - 512))); }, Check::kAny, Convert::kFails,
               Want::kRefuse});
  // Deflate: QEMU stops when the cluster is full, so a longer stream is fine.
  v.push_back({"deflate_stream_longer_than_a_cluster",
               [] { return DeflateImage(Deflate(CompressibleBytes(kC + 3000, 2))); }, Check::kClean,
               Convert::kOk, Want::kImport});
  v.push_back({"deflate_stream_shorter_than_a_cluster",
               [] { return DeflateImage(Deflate(CompressibleBytes(kC - 512, 2))); }, Check::kAny,
               Convert::kFails, Want::kRefuse});
  v.push_back({"deflate_stored_blocks",
               [] { return DeflateImage(DeflateStored(RandomBytes(kC, 4))); }, Check::kClean,
               Convert::kOk, Want::kImport});
  v.push_back({"deflate_window_32k",
               [] {
                 // Matches 20000 bytes back: made with a 32 KiB window. QEMU inflates with a
                 // 4 KiB window but into the whole cluster at once, which resolves them.
                 std::vector<uint8_t> plain = RandomBytes(1 << 16, 5);
                 std::copy_n(plain.begin(), 8000, plain.begin() + 20000);
                 z_stream s{};
                 deflateInit2(&s, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY);
                 std::vector<uint8_t> out(deflateBound(&s, plain.size()));
                 s.next_in = plain.data();
                 s.avail_in = static_cast<uInt>(plain.size());
                 s.next_out = out.data();
                 s.avail_out = static_cast<uInt>(out.size());
                 deflate(&s, Z_FINISH);
                 out.resize(s.total_out);
                 deflateEnd(&s);
                 return DeflateImage(out, 16);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  return v;
}

// Compressed data that shares its bytes with other structures: a data cluster, another
// compressed cluster, an L2 table, the header cluster. All are clean for check (the
// refcounts count every reference) and readable for QEMU.
std::vector<Case> OverlapCases() {
  std::vector<Case> v;
  v.push_back({"compressed_in_the_header_cluster",
               [] {
                 CraftedImage im(Opt(k4K, 1 << 20));
                 im.MapCompressed(0, im.PutCompressed(2048, Deflated(kC, 1)));
                 im.MapData(kC, im.AddDataCluster(2));
                 return Done(im);
               },
               Check::kClean, Convert::kOk});
  for (bool data_first : {false, true}) {
    v.push_back({data_first ? "compressed_inside_a_data_cluster_named_first"
                            : "compressed_inside_a_data_cluster_named_later",
                 [data_first] {
                   CraftedImage im(Opt(k4K, 4 << 20));
                   im.AddL2Table(0);
                   const uint64_t d = im.Allocate();
                   std::vector<uint8_t> bytes = RandomBytes(kC, 1);
                   const auto stream = Deflated(kC, 2);
                   std::copy(stream.begin(), stream.end(), bytes.begin() + 512);
                   im.PutData(d, bytes);
                   im.AddL2Table(1);
                   const CompressedSpan z{d + 512, (stream.size() + 511) / 512};
                   // The table at guest 0 comes first in the file.
                   if (data_first) {
                     im.MapData(0, d);
                     im.MapCompressed(kSpan, z);
                   } else {
                     im.MapCompressed(0, z);
                     im.MapData(kSpan, d);
                   }
                   return Done(im);
                 },
                 Check::kClean, Convert::kOk});
  }
  v.push_back({"compressed_named_again_with_a_shorter_span",
               [] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 im.AddL2Table(0);
                 const CompressedSpan z = im.PackCompressed(Deflate(std::vector<uint8_t>(kC, 'x')));
                 im.AddL2Table(1);
                 im.MapCompressed(0, {z.offset, 3});
                 im.MapCompressed(kSpan, z);  // one sector holds the whole stream
                 return Done(im);
               },
               Check::kClean, Convert::kOk});
  v.push_back({"compressed_named_again_with_a_span_too_short",
               [] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 im.AddL2Table(0);
                 std::vector<uint8_t> plain = RandomBytes(kC / 4, 3);
                 plain.resize(kC);
                 const CompressedSpan z = im.PackCompressed(Deflate(plain));
                 im.AddL2Table(1);
                 im.MapCompressed(0, z);
                 im.MapCompressed(kSpan, {z.offset, 1});  // cuts the stream
                 return Done(im);
               },
               Check::kAny, Convert::kFails, Want::kRefuse});
  v.push_back({"compressed_shared_with_the_partial_last_cluster",
               [] {
                 // Decoded first for the disk's last, 1 KiB cluster; then named for a full one.
                 CraftedImage im(Opt(k4K, kSpan + 2 * kC + 1024));
                 im.AddL2Table(1);
                 const CompressedSpan z = im.PackCompressed(Deflated(kC, 4));
                 im.AddL2Table(0);
                 im.MapCompressed(kSpan + 2 * kC, z);
                 im.MapCompressed(0, z);
                 return Done(im);
               },
               Check::kClean, Convert::kOk});
  v.push_back({"compressed_stored_block_over_an_l2_table_named_twice",
               [] {
                 // A stored deflate block of one cluster whose header and first 100 bytes lie
                 // in one cluster and the rest is the L2 table that names it.
                 CraftedImage im(Opt(k4K, 4 << 20));
                 const uint64_t p = im.Allocate();
                 const uint64_t t = im.AddL2Table(0);
                 im.SetL1Entry(1, t);
                 const uint64_t start = p + kC - 105;
                 std::vector<uint8_t> head = {1, 0x00, 0x10, 0xff, 0xef};  // LEN 4096
                 const auto fill = RandomBytes(100, 7);
                 head.insert(head.end(), fill.begin(), fill.end());
                 im.PutData(start, head);
                 im.MapCompressed(5 * kC, {start, (start % 512 + 5 + kC + 511) / 512});
                 im.MapData(0, im.AddDataCluster(1));
                 return Done(im);
               },
               Check::kClean, Convert::kOk});
  for (bool outer_first : {false, true}) {
    v.push_back(
        {outer_first ? "compressed_starting_inside_another_named_later"
                     : "compressed_enclosing_another_named_later",
         [outer_first] {
           // B is a stored block of one cluster whose bytes begin with A's stream.
           CraftedImage im(Opt(k4K, 4 << 20));
           im.AddL2Table(0);
           const auto a = Deflated(kC, 1);
           std::vector<uint8_t> literal = a;
           const auto rest = RandomBytes(kC - a.size(), 2);
           literal.insert(literal.end(), rest.begin(), rest.end());
           const CompressedSpan zb = im.PackCompressed(DeflateStored(literal));
           const CompressedSpan za{zb.offset + 5, ((zb.offset + 5) % 512 + a.size() + 511) / 512};
           im.AddL2Table(1);
           im.MapCompressed(0, outer_first ? zb : za);
           im.MapCompressed(kSpan, outer_first ? za : zb);
           return Done(im);
         },
         Check::kClean, Convert::kOk});
  }
  return v;
}

}  // namespace qcowfs_test::crafted
