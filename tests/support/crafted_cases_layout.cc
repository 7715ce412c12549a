// Cases of unusual layouts (data before its tables, entries past the virtual size, spans
// over tables) and of format variants (version 2, cluster sizes, extended L2, headers).
#include <cstdint>
#include <string>
#include <vector>

#include "crafted_cases.h"
#include "crafted_image.h"
#include "test_util.h"

namespace qcowfs_test::crafted {

std::vector<Case> LayoutCases() {
  std::vector<Case> v;
  // 8. Everything the tables map arrives before them; the L1 table comes last.
  v.push_back({"data_before_tables_l1_last",
               [] {
                 CraftedOptions o = Opt(k4K, 4 << 20);
                 o.tables_first = false;
                 CraftedImage im(o);
                 std::vector<uint64_t> d;
                 for (uint64_t k = 0; k < 16; ++k) d.push_back(im.AddDataCluster(k));
                 im.AddL2Table(1);
                 im.AddL2Table(0);
                 for (uint64_t k = 0; k < 16; ++k) {
                   im.MapData(k % 2 ? kSpan + (15 - k) * 5 * kC : k * 3 * kC, d[k]);
                 }
                 im.PlaceL1(im.Allocate());
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"data_before_tables_spooled_to_a_file",
               [] {
                 // The same order with a 16 KiB spool budget: the rest goes to its temp file.
                 CraftedOptions o = Opt(k4K, 4 << 20);
                 o.tables_first = false;
                 CraftedImage im(o);
                 std::vector<uint64_t> d;
                 for (uint64_t k = 0; k < 64; ++k) d.push_back(im.AddDataCluster(k));
                 const CompressedSpan z = im.PackCompressed(Deflated(kC, 1));
                 im.AddL2Table(1);
                 im.AddL2Table(0);
                 for (uint64_t k = 0; k < 64; ++k) im.MapData((k % 2) * kSpan + k * kC, d[k]);
                 im.MapCompressed(kSpan - kC, z);
                 im.PlaceL1(im.Allocate());
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport, 16 << 10});
  for (Compression comp : {Compression::kDeflate, Compression::kZstd}) {
    const bool zstd = comp == Compression::kZstd;
    v.push_back(
        {zstd ? "zstd_before_tables_sharing_sectors" : "deflate_before_tables_sharing_sectors",
         [comp, zstd] {
           CraftedOptions o = Opt(k4K, 4 << 20);
           o.tables_first = false;
           o.compression = comp;
           CraftedImage im(o);
           std::vector<CompressedSpan> z;
           for (uint64_t k = 0; k < 24; ++k) {
             const auto plain = CompressibleBytes(kC, 100 + k);
             z.push_back(im.PackCompressed(zstd ? ZstdFrame(plain) : Deflate(plain)));
           }
           im.AddL2Table(1);
           im.AddL2Table(0);
           // Neighbours in the file go to different tables.
           for (uint64_t k = 0; k < 24; ++k) im.MapCompressed((k % 2) * kSpan + k * kC, z[k]);
           im.PlaceL1(im.Allocate());
           return Done(im);
         },
         Check::kClean, Convert::kOk, Want::kImport});
  }
  v.push_back({"l1_entry_past_the_virtual_size",
               [] {
                 CraftedOptions o = Opt(k4K, 4 << 20);
                 o.l1_size = 4;
                 CraftedImage im(o);
                 im.MapData(0, im.AddDataCluster(1));
                 const uint64_t t = im.AddL2Table(3);
                 im.SetL2Entry(t, 0, im.AddDataCluster(2));
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"l2_entries_past_the_virtual_size",
               [] {
                 CraftedImage im(Opt(k4K, (1 << 20) + 1536));
                 im.MapData(256 * kC, im.AddDataCluster(1));  // the partial last cluster
                 im.MapData(300 * kC, im.AddDataCluster(2));
                 im.MapCompressed(301 * kC, im.PackCompressed(Deflated(kC, 3)));
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"virtual_size_not_a_sector_multiple",
               [] {
                 CraftedImage im(Opt(k4K, (1 << 20) + 700));
                 im.MapData(256 * kC, im.AddDataCluster(1));
                 im.MapData(0, im.AddDataCluster(2));
                 return Done(im);
               },
               Check::kAny, Convert::kOk});
  v.push_back(
      {"empty_disk", [] { return Done(CraftedImage(Opt(k4K, 0))); }, Check::kAny, Convert::kOk});
  v.push_back({"zero_allocated_cluster_over_garbage",
               [] {
                 CraftedImage im(Opt(k4K, 1 << 20));
                 im.MapZero(0, im.AddDataCluster(1));
                 im.MapData(kC, im.AddDataCluster(2));
                 im.MapZero(2 * kC);
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"compressed_span_reaches_into_an_l2_table",
               [] {
                 // The span's last sectors are the next cluster: an L2 table, not yet read.
                 CraftedImage im(Opt(k4K, 4 << 20));
                 const uint64_t p = im.Allocate();
                 const auto stream = Deflate(std::vector<uint8_t>(kC, 'q'));
                 const CompressedSpan z = im.PutCompressed(p + kC - 512, stream, 2);
                 im.AddL2Table(0);
                 im.MapCompressed(kSpan, z);
                 im.MapCompressed(kC, z);
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"compressed_span_runs_far_past_the_end",
               [] {
                 // The last stream's descriptor claims 16 sectors; the file ends at the stream.
                 CraftedImage im(Opt(k4K, 1 << 20));
                 im.MapData(0, im.AddDataCluster(1));
                 const auto stream = Deflated(kC, 5);
                 const CompressedSpan z = im.PutCompressed(im.Allocate(), stream, 0);
                 im.MapCompressed(kC, {z.offset, 16});
                 std::vector<uint8_t> bytes = im.Build();
                 bytes.resize(z.offset + stream.size());
                 return Built{bytes, 1 << 20};
               },
               Check::kAny, Convert::kOk});
  v.push_back({"compressed_in_the_l1_cluster_tail",
               [] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 const auto stream = Deflated(kC, 12);
                 im.MapCompressed(0, im.PutCompressed(im.l1_offset() + 1024, stream));
                 im.MapData(kC, im.AddDataCluster(1));
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  return v;
}

std::vector<Case> FormatCases() {
  std::vector<Case> v;
  // 9. Version 2, 512-byte clusters, extended L2 entries.
  v.push_back({"version_2",
               [] {
                 CraftedOptions o = Opt(16, 1 << 20);
                 o.version = 2;
                 CraftedImage im(o);
                 im.MapData(0, im.AddDataCluster(1));
                 im.MapCompressed(3 << 16, im.PackCompressed(Deflated(1 << 16, 2)));
                 im.MapData(5 << 16, im.AddDataCluster(2));
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"version_2_zero_bit",
               [] {
                 CraftedOptions o = Opt(16, 1 << 20);
                 o.version = 2;
                 CraftedImage im(o);
                 im.MapData(0, im.AddDataCluster(1));
                 im.MapRaw(1 << 16, 1);  // the zero bit, which version 2 does not have
                 return Done(im);
               },
               Check::kClean, Convert::kFails, Want::kRefuse});
  v.push_back({"clusters_512_bytes",
               [] {
                 // 64 entries per table: a 4 MiB disk needs a two-cluster L1 table.
                 CraftedImage im(Opt(9, 4 << 20));
                 for (uint64_t k = 0; k < 40; ++k) {
                   const uint64_t g = k * 99 * 512;
                   if (k % 3 == 0) im.MapData(g, im.AddDataCluster(k));
                   if (k % 3 == 1) im.MapCompressed(g, im.PackCompressed(Deflated(512, k)));
                   if (k % 3 == 2) im.MapZero(g);
                 }
                 im.MapData((4 << 20) - 512, im.l1_offset() + 512);  // the L1's second cluster
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"clusters_2m",
               [] {
                 CraftedImage im(Opt(21, 8 << 20));
                 const uint64_t c = im.cluster_size();
                 im.MapData(0, im.AddDataCluster(1));
                 im.MapCompressed(c, im.PackCompressed(Deflated(c, 2)));
                 im.MapCompressed(3 * c, im.PackCompressed(Deflated(c, 3)));
                 im.MapZero(2 * c);
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  for (uint32_t bits : {14u, 16u}) {
    v.push_back({"extended_l2_" + std::to_string(1 << (bits - 10)) + "k",
                 [bits] {
                   CraftedOptions o = Opt(bits, 4 << 20);
                   o.extended_l2 = true;
                   CraftedImage im(o);
                   const uint64_t c = im.cluster_size();
                   const uint64_t h1 = im.AddDataCluster(1), h2 = im.AddDataCluster(2);
                   im.MapSubclusters(0, h1, 0x0000ffff, 0xffff0000);
                   im.MapSubclusters(c, h2, 0x00ff00ff, 0);     // the rest unallocated
                   im.MapSubclusters(2 * c, 0, 0, 0xffffffff);  // zero, no host cluster
                   im.MapSubclusters(3 * c, 0, 0, 0x0f0f0f0f);
                   im.MapSubclusters(4 * c, im.AddDataCluster(3), 0, 0);  // allocated, unused
                   im.MapSubclusters(5 * c, h1, 0xffffffff, 0);           // shares h1
                   im.MapSubclusters(6 * c, h2, 0x00000100, 0);           // shares one subcluster
                   im.MapCompressed(7 * c, im.PackCompressed(Deflated(c, 3)));
                   im.MapData(8 * c, im.AddDataCluster(4));
                   return Done(im);
                 },
                 Check::kClean, Convert::kOk, Want::kImport});
  }
  v.push_back({"extended_l2_bit_0_set",
               [] {
                 // QEMU ignores bit 0 of extended L2 entries (no zero bit with subclusters).
                 CraftedOptions o = Opt(14, 4 << 20);
                 o.extended_l2 = true;
                 CraftedImage im(o);
                 const uint64_t c = im.cluster_size();
                 im.MapRaw(0, im.AddDataCluster(1) | 1, 0xffffffff);
                 im.MapRaw(c, im.AddDataCluster(2) | 1, 0x0000ffff);
                 im.MapRaw(2 * c, 1, 0);
                 im.MapRaw(3 * c, 1, 0xffff000000000000ull);
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  // 10. Header lengths QEMU accepts.
  for (uint32_t length : {104u, 108u, 120u}) {
    v.push_back({"header_length_" + std::to_string(length),
                 [length] {
                   CraftedOptions o = Opt(k4K, 1 << 20);
                   o.header_length = length;
                   CraftedImage im(o);
                   im.MapData(0, im.AddDataCluster(1));
                   im.MapCompressed(kC, im.PackCompressed(Deflated(kC, 3)));
                   return Done(im);
                 },
                 Check::kClean, Convert::kOk});
  }
  v.push_back(
      {"unknown_header_extension",
       [] {
         CraftedImage im(Opt(k4K, 1 << 20));
         im.SetHeaderExtensions({0x12, 0x34, 0x56, 0x78, 0, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0});
         im.MapData(0, im.AddDataCluster(1));
         return Done(im);
       },
       Check::kClean, Convert::kOk, Want::kImport});
  return v;
}

}  // namespace qcowfs_test::crafted
