// Differential tests of the streaming decoder on crafted qcow2 images (layouts qemu-img
// never writes), judged by qemu-img itself. The rule for every image and every way of
// feeding it:
//   - Finish() succeeds only if the decoded disk equals `qemu-img convert -O raw`;
//   - an image that `qemu-img check` calls clean, and that convert reads, is never refused.
// (An image that check calls clean but convert cannot read, such as a zstd frame longer
// than a cluster, must be refused: no decoded disk can equal a conversion that failed.)
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "crafted_image.h"
#include "qcow/format/errors.h"
#include "qcow/import/import_job.h"
#include "qcow/import/spool.h"
#include "qcow/import/stream_decoder.h"
#include "qcow/import/target.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

// Sinks and targets start with this byte everywhere, so that a guest range the decoder
// forgets to zero shows up as a difference.
constexpr uint8_t kFill = 0xa5;
// Feeding one byte at a time is only for images up to this size.
constexpr uint64_t kMaxByteByByte = 128 << 10;
// Virtual sizes of crafted images are kept small; the in-memory sink refuses more.
constexpr uint64_t kMaxSinkBytes = 256ull << 20;

// ---- What qemu-img says ------------------------------------------------------------------

struct QemuView {
  int check_status = -1;
  std::string check_output;
  bool converted = false;
  std::string convert_output;
  std::vector<uint8_t> raw;
  bool clean() const { return check_status == 0; }
};

std::string FirstLines(const std::string& s, int n = 6) {
  std::string out;
  std::istringstream in(s);
  std::string line;
  for (int i = 0; i < n && std::getline(in, line); ++i) out += (i ? " | " : "") + line;
  return out;
}

QemuView AskQemu(const TempDir& dir, const std::vector<uint8_t>& image) {
  const std::string img = dir / "img.qcow2", raw = dir / "img.raw";
  Sh("rm -f " + Quote(img) + " " + Quote(raw));
  WriteAt(img, 0, image);
  QemuView q;
  auto check = Sh("qemu-img check -f qcow2 " + Quote(img));
  q.check_status = check.status;
  q.check_output = check.output;
  auto convert = Sh("qemu-img convert -f qcow2 -O raw " + Quote(img) + " " + Quote(raw));
  q.converted = convert.status == 0;
  q.convert_output = convert.output;
  if (q.converted) q.raw = ReadFile(raw);
  return q;
}

// ---- The decoder, fed from memory --------------------------------------------------------

// A disk in memory that checks what the decoder asks of it.
class MemorySink : public qcow::ImageSink {
 public:
  void Resize(uint64_t size) {
    if (size > kMaxSinkBytes) throw std::runtime_error("test sink: virtual size too large");
    disk_.assign(size, kFill);
    state_.assign(size, kUntouched);
  }
  void Write(uint64_t off, const uint8_t* data, uint64_t n) override {
    if (!Inside("Write", off, n)) return;
    std::memcpy(&disk_[off], data, n);
    std::fill_n(&state_[off], n, kWritten);
  }
  void Zero(uint64_t off, uint64_t n) override {
    if (!Inside("Zero", off, n)) return;
    std::fill_n(&disk_[off], n, 0);
    std::fill_n(&state_[off], n, kZeroed);
  }
  void Read(uint64_t off, uint8_t* out, uint64_t n) override {
    if (!Inside("Read", off, n)) return;
    for (uint64_t i = 0; i < n; ++i) {
      if (state_[off + i] != kWritten) {
        Problem("Read of [" + std::to_string(off) + ", +" + std::to_string(n) + ") covers byte " +
                std::to_string(off + i) + " that Write never stored");
        break;
      }
    }
    std::memcpy(out, &disk_[off], n);
  }
  const std::vector<uint8_t>& disk() const { return disk_; }
  // Returns what happened to guest byte i: written, zeroed or untouched.
  const char* StateOf(uint64_t i) const {
    return i >= state_.size()      ? "beyond the disk"
           : state_[i] == kWritten ? "written"
           : state_[i] == kZeroed  ? "zeroed"
                                   : "never written or zeroed";
  }
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  enum : uint8_t { kUntouched, kWritten, kZeroed };
  bool Inside(const char* what, uint64_t off, uint64_t n) {
    if (off <= disk_.size() && n <= disk_.size() - off) return true;
    Problem(std::string(what) + " of [" + std::to_string(off) + ", +" + std::to_string(n) +
            ") lies outside the virtual size " + std::to_string(disk_.size()));
    return false;
  }
  void Problem(const std::string& p) {
    if (problems_.size() < 5) problems_.push_back(p);
  }
  std::vector<uint8_t> disk_;
  std::vector<uint8_t> state_;
  std::vector<std::string> problems_;
};

enum class Way {
  kByte,
  kSeq512,
  kSeq64K,
  kSeq4M,
  kReverse64K,
  kShuffle4KSeed1,
  kShuffle4KSeed2,
  kSeq64KUntilComplete,  // stops feeding as soon as Complete() says so
};
constexpr Way kWays[] = {
    Way::kByte,       Way::kSeq512,         Way::kSeq64K,         Way::kSeq4M,
    Way::kReverse64K, Way::kShuffle4KSeed1, Way::kShuffle4KSeed2, Way::kSeq64KUntilComplete};

const char* WayName(Way w) {
  switch (w) {
    case Way::kByte:
      return "1-byte chunks";
    case Way::kSeq512:
      return "512 B chunks";
    case Way::kSeq64K:
      return "64 KiB chunks";
    case Way::kSeq4M:
      return "4 MiB chunks";
    case Way::kReverse64K:
      return "64 KiB chunks in reverse";
    case Way::kShuffle4KSeed1:
      return "4 KiB chunks shuffled (seed 1)";
    case Way::kShuffle4KSeed2:
      return "4 KiB chunks shuffled (seed 2)";
    case Way::kSeq64KUntilComplete:
      return "64 KiB chunks until Complete()";
  }
  return "?";
}

// Returns the (offset, length) pieces of an image of `size` bytes in the order `w` feeds them.
std::vector<std::pair<uint64_t, uint64_t>> Pieces(uint64_t size, Way w) {
  uint64_t chunk = 64 << 10;
  if (w == Way::kByte) chunk = 1;
  if (w == Way::kSeq512) chunk = 512;
  if (w == Way::kSeq4M) chunk = 4 << 20;
  if (w == Way::kShuffle4KSeed1 || w == Way::kShuffle4KSeed2) chunk = 4 << 10;
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (uint64_t off = 0; off < size; off += chunk) {
    out.emplace_back(off, std::min(chunk, size - off));
  }
  if (w == Way::kReverse64K) std::reverse(out.begin(), out.end());
  if (w == Way::kShuffle4KSeed1) std::shuffle(out.begin(), out.end(), std::mt19937(1));
  if (w == Way::kShuffle4KSeed2) std::shuffle(out.begin(), out.end(), std::mt19937(2));
  return out;
}

struct Outcome {
  bool ok = false;
  std::string error;  // Finish()'s or Feed()'s exception, when refused
  bool typed = true;  // the refusal was a FormatError or SpoolFullError
  std::vector<uint8_t> disk;
  uint64_t peak_memory = 0;
  std::vector<std::string> sink_problems;
  std::function<const char*(uint64_t)> state_of = [](uint64_t) { return "?"; };
};

qcow::Spool::Limits Limits(const TempDir& dir, uint64_t memory) {
  qcow::Spool::Limits l;
  l.dir = dir.path();
  if (memory) l.memory = memory;
  return l;
}

Outcome Decode(const std::vector<uint8_t>& image, Way way, const qcow::Spool::Limits& limits) {
  auto sink = std::make_shared<MemorySink>();
  qcow::DecoderOptions options;
  options.spool = limits;
  options.on_header = [&](const qcow::ImageInfo& info) { sink->Resize(info.virtual_size); };
  qcow::StreamDecoder decoder(*sink, options);
  Outcome out;
  try {
    for (const auto& [off, n] : Pieces(image.size(), way)) {
      decoder.Feed(off, std::span(image).subspan(off, n));
      if (way == Way::kSeq64KUntilComplete && decoder.Complete()) break;
    }
    decoder.Finish();
    out.ok = true;
  } catch (const qcow::FormatError& e) {
    out.error = e.what();
  } catch (const qcow::SpoolFullError& e) {
    out.error = e.what();
  } catch (const std::exception& e) {
    out.error = e.what();
    out.typed = false;
  }
  out.peak_memory = decoder.peak_memory_bytes();
  out.disk = sink->disk();
  out.sink_problems = sink->problems();
  out.state_of = [sink](uint64_t i) { return sink->StateOf(i); };
  return out;
}

// Feeds the image through ImportJob into a RawTarget file of `virtual_size` bytes.
Outcome DecodeWithJob(const TempDir& dir, const std::vector<uint8_t>& image, uint64_t virtual_size,
                      const qcow::Spool::Limits& limits) {
  const std::string target = dir / "target";
  Sh("rm -f " + Quote(target));
  WriteAt(target, 0, std::vector<uint8_t>(virtual_size, kFill));
  Outcome out;
  qcow::RawTarget t(target, {});
  qcow::ImportJob job(t, {limits, nullptr});
  uint64_t h = 0;
  EXPECT_EQ(job.Begin(&h), 0);
  int rc = 0;
  for (const auto& [off, n] : Pieces(image.size(), Way::kSeq64K)) {
    rc = job.Write(h, off, std::span(image).subspan(off, n));
    if (rc) break;
  }
  if (!rc) rc = job.Finish(h);
  job.Release(h);
  out.ok = rc == 0;
  out.error = job.error();
  out.disk = ReadFile(target);
  return out;
}

// ---- The rule ----------------------------------------------------------------------------

std::string Hex8(uint8_t b) {
  char s[8];
  std::snprintf(s, sizeof s, "0x%02x", b);
  return s;
}

std::string HexOffset(uint64_t v) {
  char s[24];
  std::snprintf(s, sizeof s, "0x%llx", static_cast<unsigned long long>(v));
  return s;
}

// Checks the rule for one way of feeding; returns a one-word summary for the log.
// truncated: the image was cut short. A range that never arrived is missing, never a hole
// (the import issue's rule), so a cut that QEMU's check lets pass (a last data cluster less
// than a cluster past the end of the file, which QEMU reads as zeros) is still refused.
std::string ExpectRule(const QemuView& q, const Outcome& d, const std::string& way,
                       bool truncated = false) {
  for (const auto& p : d.sink_problems) ADD_FAILURE() << way << ": sink: " << p;
  if (!d.ok && !d.typed) {
    ADD_FAILURE() << way << ": the decoder failed with an untyped exception: " << d.error;
  }
  if (!d.ok && d.error.find("internal error") != std::string::npos) {
    ADD_FAILURE() << way << ": the decoder reports an internal error: " << d.error;
  }
  if (d.ok && !q.converted) {
    ADD_FAILURE() << way << ": Finish() succeeded but qemu-img convert failed: "
                  << FirstLines(q.convert_output);
  } else if (d.ok && d.disk != q.raw) {
    uint64_t i = 0;
    while (i < std::min(d.disk.size(), q.raw.size()) && d.disk[i] == q.raw[i]) ++i;
    ADD_FAILURE() << way << ": Finish() succeeded but the disk differs from qemu-img convert"
                  << " (sizes " << d.disk.size() << " and " << q.raw.size()
                  << "): first difference at guest byte " << i << " (" << HexOffset(i)
                  << "), decoder " << (i < d.disk.size() ? Hex8(d.disk[i]) : "none") << " ("
                  << d.state_of(i) << "), convert " << (i < q.raw.size() ? Hex8(q.raw[i]) : "none");
  }
  if (q.clean() && q.converted && !d.ok && !truncated) {
    ADD_FAILURE() << way << ": qemu-img check is clean and convert reads the image, but the "
                  << "decoder refused it: " << d.error;
  }
  return d.ok ? "ok" : "refused";
}

// ---- Cases -------------------------------------------------------------------------------

enum class Check { kAny, kClean, kCorrupt };  // what `qemu-img check` is expected to say
enum class Convert { kAny, kOk, kFails };     // what `qemu-img convert` is expected to do
enum class Want { kRule, kImport, kRefuse };  // what the decoder must do beyond the rule

struct Built {
  std::vector<uint8_t> bytes;
  uint64_t virtual_size;  // as QEMU reads it (floored to 512)
};

struct Case {
  std::string name;
  std::function<Built()> build;
  Check check = Check::kAny;
  Convert convert = Convert::kAny;
  Want want = Want::kRule;
  uint64_t spool_memory = 0;     // 0: the decoder's default
  uint64_t max_peak_memory = 0;  // 0: no bound
  bool truncated = false;        // cut short: refusal overrides a clean check (ExpectRule)
};

Built Done(const CraftedImage& im) { return {im.Build(), im.options().virtual_size / 512 * 512}; }

CraftedOptions Opt(uint32_t cluster_bits, uint64_t virtual_size) {
  CraftedOptions o;
  o.cluster_bits = cluster_bits;
  o.virtual_size = virtual_size;
  return o;
}

void RunCase(const Case& k) {
  TempDir dir;
  const Built b = k.build();
  // CRAFTED_KEEP=DIR keeps a copy of every image, to reproduce a failure by hand.
  if (const char* keep = getenv("CRAFTED_KEEP"); keep && *keep) {
    const std::string path = std::string(keep) + "/" + k.name + ".qcow2";
    Sh("rm -f " + Quote(path));
    WriteAt(path, 0, b.bytes);
  }
  const QemuView q = AskQemu(dir, b.bytes);
  // First the builder: does the image say what the case means it to say?
  if (k.check == Check::kClean) {
    EXPECT_TRUE(q.clean()) << "builder: qemu-img check is not clean: " << q.check_output;
  }
  if (k.check == Check::kCorrupt) {
    EXPECT_FALSE(q.clean()) << "builder: qemu-img check is clean";
  }
  if (k.convert == Convert::kOk) {
    EXPECT_TRUE(q.converted) << "builder: qemu-img convert fails: " << q.convert_output;
  }
  if (k.convert == Convert::kFails) {
    EXPECT_FALSE(q.converted) << "builder: qemu-img convert reads the image";
  }
  // One line per case for the log: what qemu-img said, and what the decoder did each way
  // (ways with the same result are grouped).
  std::map<std::string, std::vector<std::string>> results;
  uint64_t peak = 0;
  auto judge = [&](const Outcome& d, const std::string& way) {
    results[ExpectRule(q, d, way, k.truncated) + (d.ok ? "" : ": " + d.error)].push_back(way);
    if (k.want == Want::kImport) {
      EXPECT_TRUE(d.ok) << way << ": must import: " << d.error;
    }
    if (k.want == Want::kRefuse) {
      EXPECT_FALSE(d.ok) << way << ": must refuse";
    }
  };
  for (Way w : kWays) {
    if (w == Way::kByte && b.bytes.size() > kMaxByteByByte) continue;
    const Outcome d = Decode(b.bytes, w, Limits(dir, k.spool_memory));
    judge(d, WayName(w));
    peak = std::max(peak, d.peak_memory);
    if (k.max_peak_memory) {
      EXPECT_LE(d.peak_memory, k.max_peak_memory) << WayName(w) << ": peak memory";
    }
  }
  judge(DecodeWithJob(dir, b.bytes, b.virtual_size, Limits(dir, k.spool_memory)),
        "ImportJob + RawTarget");
  if (::testing::Test::HasFailure()) {
    std::cout << "qemu-img check (" << q.check_status << "): " << FirstLines(q.check_output, 12)
              << "\n";
  }
  std::cout << "[crafted] " << k.name << ": " << b.bytes.size() << " bytes; check "
            << q.check_status << ", convert "
            << (q.converted ? "ok" : "fails (" + FirstLines(q.convert_output, 1) + ")")
            << "; decoder peak memory " << peak << " B";
  for (const auto& [result, ways] : results) {
    std::cout << "; " << result.substr(0, 240) << " <- ";
    for (size_t i = 0; i < ways.size(); ++i) std::cout << (i ? ", " : "") << ways[i];
  }
  std::cout << "\n";
}

// 4 KiB clusters: one L2 table maps 2 MiB, so a 4 MiB disk has two.
constexpr uint32_t k4K = 12;
constexpr uint64_t kC = 4096, kSpan = 2 << 20;

// Returns compressed bytes of a compressible cluster of `size` bytes.
std::vector<uint8_t> Deflated(uint64_t size, uint64_t seed) {
  return Deflate(CompressibleBytes(size, seed));
}

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

// 11. One valid image cut at several points. Where it lies in the file: the L2 table, the
// first data cluster, the last compressed span (its stream and the end of its sectors).
struct Cuts {
  uint64_t l2, data, last_data, stream, stream_end, span_end;
};

Case Truncated(const std::string& name, bool data_last,
               const std::function<uint64_t(const Cuts&)>& cut, Want want) {
  return {name,
          [=] {
            CraftedImage im(Opt(k4K, 1 << 20));
            Cuts at{};
            at.l2 = im.AddL2Table(0);
            at.data = im.AddDataCluster(1);
            im.MapData(0, at.data);
            std::vector<uint8_t> stream = Deflated(kC, 3);
            if (stream.size() % 512 == 0) stream = Deflated(kC, 4);
            auto compressed = [&] {
              const CompressedSpan z = im.PackCompressed(stream);
              im.MapCompressed(2 * kC, z);
              at.stream = z.offset;
              at.stream_end = z.offset + stream.size();
              at.span_end = z.end();
            };
            if (data_last) compressed();
            at.last_data = im.AddDataCluster(2);
            im.MapData(kC, at.last_data);
            if (!data_last) compressed();
            std::vector<uint8_t> bytes = im.Build();
            bytes.resize(cut(at));
            return Built{bytes, 1 << 20};
          },
          Check::kAny,
          Convert::kAny,
          want,
          0,
          0,
          /*truncated=*/true};
}

std::vector<Case> TruncationCases() {
  return {
      Truncated(
          "truncated_to_nothing", false, [](const Cuts&) { return 0; }, Want::kRefuse),
      Truncated(
          "truncated_inside_the_header", false, [](const Cuts&) { return 50; }, Want::kRefuse),
      Truncated(
          "truncated_inside_the_header_cluster", false, [](const Cuts&) { return 2000; },
          Want::kRefuse),
      Truncated(
          "truncated_inside_the_l2_table", false, [](const Cuts& c) { return c.l2 + 1000; },
          Want::kRefuse),
      Truncated(
          "truncated_inside_a_data_cluster", false, [](const Cuts& c) { return c.data + 1000; },
          Want::kRefuse),
      Truncated(
          "truncated_inside_the_last_data_cluster", true,
          [](const Cuts& c) { return c.last_data + kC / 2; }, Want::kRefuse),
      Truncated(
          "truncated_inside_the_last_compressed_stream", false,
          [](const Cuts& c) { return (c.stream + c.stream_end) / 2; }, Want::kRefuse),
      Truncated(
          "truncated_inside_the_last_compressed_padding", false,
          [](const Cuts& c) { return c.stream_end + (c.span_end - c.stream_end) / 2; },
          Want::kImport),
      Truncated(
          "truncated_right_after_the_last_compressed_stream", false,
          [](const Cuts& c) { return c.stream_end; }, Want::kImport),
      Truncated(
          "truncated_at_the_end_of_the_last_compressed_span", false,
          [](const Cuts& c) { return c.span_end; }, Want::kImport),
  };
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

// ---- Random layouts ----------------------------------------------------------------------

// Returns a small random image: every kind of entry, shared clusters, objects placed in a
// random order. `chaos` adds a few random pointers and cuts afterwards (anything may
// alias anything then; the refcounts still count it all). Throws std::runtime_error when a
// refcount does not fit the chosen width.
Built RandomLayout(uint64_t seed, bool chaos, std::optional<uint32_t> refcount_order) {
  std::mt19937_64 r(seed);
  auto pick = [&](uint64_t n) { return n ? r() % n : 0; };
  CraftedOptions o;
  const uint32_t bits[] = {9, 10, 12, 14, 16};
  o.cluster_bits = bits[pick(5)];
  o.version = pick(5) == 0 ? 2 : 3;
  if (o.version == 3) {
    o.refcount_order = refcount_order.value_or(static_cast<uint32_t>(pick(7)));
    o.compression = pick(2) ? Compression::kZstd : Compression::kDeflate;
    o.extended_l2 = o.cluster_bits >= 14 && pick(2);
  }
  o.tables_first = pick(2);
  const uint64_t c = uint64_t{1} << o.cluster_bits;
  const uint64_t entries = c / (o.extended_l2 ? 16 : 8);
  const uint64_t n = 1 + pick(std::min<uint64_t>({3 * entries, 1024, (8 << 20) / c}));
  o.virtual_size = (n - 1) * c + 512 * (1 + pick(c / 512));
  if (pick(8) == 0) o.virtual_size += 1 + pick(511);
  if (pick(6) == 0) o.l1_size = static_cast<uint32_t>((n + entries - 1) / entries + 1 + pick(3));
  CraftedImage im(o);
  const uint64_t vclusters = (o.virtual_size + c - 1) / c;

  // What each chosen guest cluster becomes.
  enum Kind { kData, kCompressed, kZero, kZeroAlloc, kShareData, kShareCompressed, kSub };
  std::vector<std::pair<uint64_t, Kind>> guests;
  std::vector<uint64_t> chosen;
  for (uint64_t i = 0, m = 1 + pick(std::min<uint64_t>(vclusters, 48)); i < m; ++i) {
    chosen.push_back(pick(vclusters));
  }
  std::sort(chosen.begin(), chosen.end());
  chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
  std::shuffle(chosen.begin(), chosen.end(), r);
  for (uint64_t g : chosen) {
    Kind k = static_cast<Kind>(pick(7));
    if (o.version == 2 && (k == kZero || k == kZeroAlloc)) k = kData;
    if (!o.extended_l2 && k == kSub) k = kData;
    guests.emplace_back(g * c, k);
  }
  // Objects placed in a random order: data clusters, compressed streams, L2 tables, and
  // the L1 and refcount tables when they do not come first.
  std::vector<std::function<void()>> objects;
  std::map<uint64_t, uint64_t> host;         // guest -> data cluster
  std::map<uint64_t, CompressedSpan> spans;  // guest -> compressed span
  for (const auto& [g, k] : guests) {
    if (k == kData || k == kZeroAlloc || k == kSub) {
      objects.push_back([&, g = g, s = r()] { host[g] = im.AddDataCluster(s); });
    }
    if (k == kCompressed) {
      objects.push_back([&, g = g, s = r()] {
        const auto plain = CompressibleBytes(c, s);
        spans[g] = im.PackCompressed(o.compression == Compression::kZstd ? ZstdFrame(plain)
                                                                         : Deflate(plain));
      });
    }
  }
  std::set<uint64_t> l1_indices;
  for (const auto& [g, k] : guests) l1_indices.insert(g / (c * entries));
  for (uint64_t i : l1_indices) objects.push_back([&, i] { im.AddL2Table(i); });
  if (!o.tables_first) {
    objects.push_back(
        [&] { im.PlaceL1(im.Allocate(std::max<uint64_t>(1, (im.l1_size() * 8 + c - 1) / c))); });
    if (pick(2)) objects.push_back([&] { im.PlaceRefcountTable(im.Allocate(), 1); });
    if (pick(2)) objects.push_back([&] { im.AddRefcountBlockSlot(im.Allocate()); });
  }
  std::shuffle(objects.begin(), objects.end(), r);
  for (auto& place : objects) place();

  for (const auto& [g, k] : guests) {
    auto any_data = [&]() -> std::optional<uint64_t> {
      if (host.empty()) return std::nullopt;
      auto it = host.begin();
      std::advance(it, static_cast<std::ptrdiff_t>(pick(host.size())));
      return it->second;
    };
    switch (k) {
      case kData:
        im.MapData(g, host.at(g));
        break;
      case kCompressed:
        im.MapCompressed(g, spans.at(g));
        break;
      case kZero:
        im.MapZero(g);
        break;
      case kZeroAlloc:
        im.MapZero(g, host.at(g));
        break;
      case kSub: {
        const uint32_t alloc = static_cast<uint32_t>(r());
        im.MapSubclusters(g, host.at(g), alloc, static_cast<uint32_t>(r()) & ~alloc);
        break;
      }
      case kShareData:
        if (auto h = any_data()) im.MapData(g, *h);
        break;
      case kShareCompressed:
        if (!spans.empty()) {
          auto it = spans.begin();
          std::advance(it, static_cast<std::ptrdiff_t>(pick(spans.size())));
          im.MapCompressed(g, it->second);
        }
        break;
    }
  }
  if (chaos) {
    const uint64_t clusters = im.end() / c;
    for (uint64_t i = 0, m = 1 + pick(3); i < m; ++i) {
      const uint64_t g = pick(vclusters) * c, target = (1 + pick(clusters)) * c;
      switch (pick(4)) {
        case 0:
          im.MapData(g, target);
          break;
        case 1:
          im.SetL1Entry(pick(im.l1_size()), target);
          break;
        case 2:
          im.MapCompressed(g, {target - pick(c), 1 + pick(2)});
          break;
        case 3:
          im.SetFileSize(pick(im.end() + c));
          break;
      }
    }
  }
  return {im.Build(), o.virtual_size / 512 * 512};
}

constexpr uint64_t kRandomLayouts = 72;

Case RandomCase(uint64_t seed) {
  const bool chaos = seed % 3 == 2;
  return {"random_layout_" + std::to_string(seed) + (chaos ? "_chaos" : ""),
          [seed, chaos] {
            try {
              return RandomLayout(seed, chaos, std::nullopt);
            } catch (const std::runtime_error&) {
              return RandomLayout(seed, chaos, 4);  // sharing needs wider refcounts
            }
          },
          chaos ? Check::kAny : Check::kClean, chaos ? Convert::kAny : Convert::kOk,
          chaos ? Want::kRule : Want::kImport};
}

// ---- Registration ------------------------------------------------------------------------

const std::vector<Case>& AllCases() {
  static const std::vector<Case> all = [] {
    std::vector<Case> v;
    for (auto group : {SharingCases, RefcountCases, CompressionCases, LayoutCases, FormatCases,
                       TruncationCases, OverlapCases}) {
      for (Case& k : group()) v.push_back(std::move(k));
    }
    for (uint64_t seed = 0; seed < kRandomLayouts; ++seed) v.push_back(RandomCase(seed));
    return v;
  }();
  return all;
}

class Crafted : public ::testing::TestWithParam<size_t> {};

TEST_P(Crafted, DecoderAgreesWithQemu) { RunCase(AllCases()[GetParam()]); }

INSTANTIATE_TEST_SUITE_P(Images, Crafted, ::testing::Range<size_t>(0, AllCases().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return AllCases()[info.param].name;
                         });

}  // namespace
