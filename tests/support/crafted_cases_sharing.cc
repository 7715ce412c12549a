// Cases of shared and aliased clusters (data named many times, tables that are also data)
// and of refcount structures that lie.
#include <cstdint>
#include <string>
#include <vector>

#include "crafted_cases.h"
#include "crafted_image.h"
#include "test_util.h"

namespace qcowfs_test::crafted {

std::vector<Case> SharingCases() {
  std::vector<Case> v;
  // 1. Data clusters named by several L2 entries (refcount 2 or 3, no COPIED).
  v.push_back({"shared_data_same_l2",
               [] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 const uint64_t d = im.AddDataCluster(1);
                 im.MapData(0, d);
                 im.MapData(5 * kC, d);
                 im.MapData(6 * kC, im.AddDataCluster(2));
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"shared_data_across_l2_tables",
               [] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 const uint64_t d1 = im.AddDataCluster(1), d2 = im.AddDataCluster(2),
                                d3 = im.AddDataCluster(3);
                 // A run of three clusters, contiguous in host and guest, whose pieces the
                 // other table names again out of order.
                 im.MapData(0, d1);
                 im.MapData(kC, d2);
                 im.MapData(2 * kC, d3);
                 im.MapData(kSpan + 7 * kC, d2);
                 im.MapData(kSpan + 8 * kC, d1);
                 im.MapData(kSpan + 9 * kC, d3);
                 im.MapData(kSpan + 10 * kC, d3);
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"shared_data_with_partial_last_cluster",
               [] {
                 // The disk's last cluster is 1.5 KiB long; its table comes first in the
                 // file, so the short mapping of the shared cluster is known first.
                 CraftedImage im(Opt(k4K, kSpan + 3 * kC + 1536));
                 im.AddL2Table(1);
                 im.AddL2Table(0);
                 const uint64_t d = im.AddDataCluster(1);
                 im.MapData(kSpan + 3 * kC, d);
                 im.MapData(0, d);
                 im.MapData(kC, im.AddDataCluster(2));
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  // 2. One L2 table named by two L1 entries: its data is counted twice too.
  v.push_back({"l2_named_by_two_l1_entries",
               [] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 const uint64_t t = im.AddL2Table(0);
                 im.SetL1Entry(1, t);
                 im.MapData(0, im.AddDataCluster(1));
                 im.MapData(3 * kC, im.AddDataCluster(2));
                 im.MapCompressed(5 * kC, im.PackCompressed(Deflated(kC, 3)));
                 im.MapZero(7 * kC);
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"l2_named_by_two_l1_entries_after_its_data",
               [] {
                 CraftedOptions o = Opt(k4K, 4 << 20);
                 o.tables_first = false;
                 CraftedImage im(o);
                 const uint64_t d = im.AddDataCluster(1);
                 const CompressedSpan z = im.PackCompressed(Deflated(kC, 4));
                 const uint64_t t = im.AddL2Table(0);
                 im.SetL1Entry(1, t);
                 im.MapData(0, d);
                 im.MapCompressed(kC, z);
                 im.PlaceL1(im.Allocate());
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  // 5. Data clusters that are also tables, with refcounts that say so (check is clean).
  v.push_back({"data_is_its_own_l2_table",
               [] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 const uint64_t t = im.AddL2Table(0);
                 im.MapData(3 * kC, t);
                 im.MapData(0, im.AddDataCluster(1));
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"l2_tables_are_each_others_data",
               [] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 const uint64_t t0 = im.AddL2Table(0);
                 const uint64_t d = im.AddDataCluster(1);
                 const uint64_t t1 = im.AddL2Table(1);
                 im.MapData(4 * kC, t1);          // arrives after the table that maps it
                 im.MapData(kSpan + 2 * kC, t0);  // arrived before
                 im.MapData(0, d);
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"data_is_the_l1_table",
               [] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 im.MapData(kC, im.l1_offset());
                 im.MapData(0, im.AddDataCluster(1));
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"data_is_the_l1_table_at_the_end",
               [] {
                 CraftedOptions o = Opt(k4K, 4 << 20);
                 o.tables_first = false;
                 CraftedImage im(o);
                 const uint64_t d = im.AddDataCluster(1);
                 im.AddL2Table(0);
                 im.AddL2Table(1);
                 const uint64_t l1 = im.Allocate();
                 im.PlaceL1(l1);
                 im.MapData(0, d);
                 im.MapData(kSpan + kC, l1);
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"l1_table_is_also_an_l2_table",
               [] {
                 // L1 entry 0 names the L1 table's own cluster as an L2 table, whose entries
                 // (the L1 entries) then map guest clusters 0 and 1 to the L1 cluster and to
                 // the real L2 table of L1 entry 1.
                 CraftedImage im(Opt(k4K, 4 << 20));
                 im.SetL1Entry(0, im.l1_offset());
                 im.AddL2Table(1);
                 im.MapData(kSpan + kC, im.AddDataCluster(1));
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"data_is_the_refcount_table",
               [] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 im.MapData(0, im.refcount_table_offset());
                 im.MapData(kC, im.AddDataCluster(1));
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  v.push_back({"data_is_its_own_l2_table_named_twice",
               [] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 const uint64_t t = im.AddL2Table(0);
                 im.SetL1Entry(1, t);
                 im.MapData(3 * kC, t);
                 im.MapData(0, im.AddDataCluster(1));
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  // Many guests per host cluster: the decoder's host-to-guest index holds hundreds of
  // identical segments, more than one of its chunks.
  v.push_back(
      {"shared_data_fanout_1536",
       [] {
         CraftedImage im(Opt(k4K, 6 << 20));
         for (uint64_t i = 0; i < 3; ++i) im.AddL2Table(i);
         const uint64_t h[3] = {im.AddDataCluster(1), im.AddDataCluster(2), im.AddDataCluster(3)};
         for (uint64_t i = 0; i < 1536; ++i) im.MapData(i * kC, h[i % 3]);
         return Done(im);
       },
       Check::kClean, Convert::kOk, Want::kImport});
  for (uint64_t n : {512u, 513u}) {
    v.push_back({"shared_data_one_cluster_" + std::to_string(n) + "_times",
                 [n] {
                   CraftedImage im(Opt(k4K, 4 << 20));
                   const uint64_t h = im.AddDataCluster(1);
                   for (uint64_t i = 0; i < n; ++i) im.MapData(i * kC, h);
                   return Done(im);
                 },
                 Check::kClean, Convert::kOk, Want::kImport});
  }
  v.push_back({"shared_data_scrambled_1536",
               [] {
                 // 40 contiguous host clusters, named out of order and in overlapping runs.
                 CraftedImage im(Opt(k4K, 6 << 20));
                 std::vector<uint64_t> h;
                 for (uint64_t i = 0; i < 40; ++i) h.push_back(im.AddDataCluster(i));
                 for (uint64_t i = 0; i < 1536; ++i) im.MapData(i * kC, h[(i * 7 + i / 40) % 40]);
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport});
  // 6. Compressed fan-out: one descriptor named many times, in bounded memory.
  v.push_back({"compressed_fanout_200",
               [] {
                 CraftedImage im(Opt(16, 200 << 16));
                 const CompressedSpan z = im.PackCompressed(Deflated(1 << 16, 5));
                 for (uint64_t i = 0; i < 200; ++i) im.MapCompressed(i << 16, z);
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport, 1 << 20, 4 << 20});
  v.push_back({"compressed_fanout_across_tables_after_decoding",
               [] {
                 // 1024 names; the second table arrives after the data was decoded.
                 CraftedImage im(Opt(k4K, 4 << 20));
                 im.AddL2Table(0);
                 const CompressedSpan z = im.PackCompressed(Deflated(kC, 6));
                 im.AddL2Table(1);
                 for (uint64_t g = 0; g < (4 << 20); g += kC) im.MapCompressed(g, z);
                 return Done(im);
               },
               Check::kClean, Convert::kOk, Want::kImport, 1 << 20, 4 << 20});
  return v;
}

std::vector<Case> RefcountCases() {
  std::vector<Case> v;
  auto base = [](CraftedImage& im) {
    const uint64_t d = im.AddDataCluster(1);
    im.MapData(0, d);
    im.MapData(kC, im.AddDataCluster(2));
    im.MapCompressed(2 * kC, im.PackCompressed(Deflated(kC, 2)));
    return d;
  };
  // 3. Refcount tables that lie: check calls them corrupt, convert never reads them.
  v.push_back({"refcount_table_names_a_data_cluster",
               [base] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 im.OverrideRefcountTableEntry(1, base(im));
                 return Done(im);
               },
               Check::kCorrupt, Convert::kOk});
  v.push_back({"refcount_table_first_block_is_a_data_cluster",
               [base] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 im.OverrideRefcountTableEntry(0, base(im));
                 return Done(im);
               },
               Check::kCorrupt, Convert::kOk});
  v.push_back({"refcount_table_names_an_l2_table",
               [base] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 base(im);
                 im.OverrideRefcountTableEntry(1, im.AddL2Table(1));
                 return Done(im);
               },
               Check::kCorrupt, Convert::kOk});
  v.push_back({"refcount_table_names_a_block_past_the_end",
               [base] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 base(im);
                 im.OverrideRefcountTableEntry(1, 1ull << 30);
                 return Done(im);
               },
               Check::kCorrupt, Convert::kOk});
  // 4. Guest data and tables inside refcount structures.
  v.push_back({"data_is_a_refcount_block",
               [base] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 base(im);
                 im.MapData(kSpan, im.first_block_slot());
                 return Done(im);
               },
               Check::kCorrupt, Convert::kOk});
  v.push_back({"l1_names_the_refcount_table_as_l2",
               [base] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 base(im);
                 im.SetL1Entry(1, im.refcount_table_offset());
                 return Done(im);
               },
               Check::kCorrupt, Convert::kOk});
  v.push_back({"l1_names_a_refcount_block_as_l2",
               [base] {
                 CraftedImage im(Opt(k4K, 4 << 20));
                 base(im);
                 im.SetL1Entry(1, im.first_block_slot());
                 return Done(im);
               },
               Check::kCorrupt, Convert::kOk});
  v.push_back({"refcounts_understate_sharing",
               [] {
                 // A shared cluster whose refcount says 1, and the COPIED bits with it.
                 CraftedImage im(Opt(k4K, 4 << 20));
                 const uint64_t d = im.AddDataCluster(1);
                 im.MapData(0, d);
                 im.MapData(kSpan, d);
                 im.OverrideRefcount(d / kC, 1);
                 return Done(im);
               },
               Check::kCorrupt, Convert::kOk});
  // Every refcount width.
  for (uint32_t order : {0u, 1u, 2u, 3u, 5u, 6u}) {
    v.push_back({"refcount_order_" + std::to_string(order),
                 [order] {
                   CraftedOptions o = Opt(k4K, 4 << 20);
                   o.refcount_order = order;
                   CraftedImage im(o);
                   im.MapData(0, im.AddDataCluster(1));
                   im.MapData(kSpan + kC, im.AddDataCluster(2));
                   im.MapCompressed(kC, im.PackCompressed(Deflated(kC, 3)));
                   im.MapZero(2 * kC, im.AddDataCluster(4));
                   return Done(im);
                 },
                 Check::kClean, Convert::kOk, Want::kImport});
  }
  return v;
}

}  // namespace qcowfs_test::crafted
