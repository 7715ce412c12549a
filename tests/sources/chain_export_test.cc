// qcow2 chains as export sources, through the library and the qcowfs binary (no FUSE),
// judged by qemu-img against the chain's own guest content.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include "chain_recipes.h"
#include "qcow/export/export_layout.h"
#include "qcow/export/export_reader.h"
#include "qcow/export/export_stream.h"
#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/sources/open_source.h"
#include "test_util.h"

namespace {

using qcowfs_test::ChainRecipe;
using qcowfs_test::ChainRecipes;
using qcowfs_test::QcowfsBinary;
using qcowfs_test::Quote;
using qcowfs_test::ReadFile;
using qcowfs_test::Sh;
using qcowfs_test::TempDir;
using qcowfs_test::WriteAt;

std::string Qcowfs() { return Quote(QcowfsBinary()); }

qcow::SourceOptions OptionsFor(const TempDir& dir, const ChainRecipe& r) {
  qcow::SourceOptions o;
  if (!*r.search_dir.c_str()) return o;
  o.search_path.push_back(dir / r.search_dir);
  return o;
}

// Streams the export of `source` at 2^bits clusters into `out` as `stream` does.
void StreamTo(const qcow::Source& source, uint32_t bits, const std::string& out) {
  qcow::ExportLayout layout(source.size(), bits, source.Allocation(bits));
  const int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  qcow::WriteExport(layout, source, fd, nullptr);
  close(fd);
}

void ExpectSameGuest(const std::string& reference, const std::string& image) {
  const auto check = Sh("qemu-img check " + Quote(image));
  EXPECT_EQ(check.status, 0) << check.output;
  const auto cmp = Sh("qemu-img compare -f raw -F qcow2 " + Quote(reference) + " " + Quote(image));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
}

class ChainExport : public ::testing::TestWithParam<ChainRecipe> {};

TEST_P(ChainExport, StreamedImageIsTheTopsGuestView) {
  TempDir dir;
  const std::string top = BuildChain(dir, GetParam());
  auto source = qcow::OpenSource(top, OptionsFor(dir, GetParam()));
  for (uint32_t bits : {16u, 12u, 21u}) {
    SCOPED_TRACE("cluster bits " + std::to_string(bits));
    const std::string out = dir / ("out" + std::to_string(bits) + ".qcow2");
    StreamTo(*source, bits, out);
    ExpectSameGuest(dir / "reference.raw", out);
  }
  if (!*GetParam().search_dir.c_str()) {
    // The issue's own criterion, with qemu-img opening the chain itself.
    const auto cmp = Sh("qemu-img compare " + Quote(top) + " " + Quote(dir / "out16.qcow2"));
    EXPECT_EQ(cmp.status, 0) << cmp.output;
  }
}

TEST_P(ChainExport, RandomReadsMatchTheStream) {
  TempDir dir;
  const std::string top = BuildChain(dir, GetParam());
  auto source = qcow::OpenSource(top, OptionsFor(dir, GetParam()));
  const uint32_t bits = 16;
  StreamTo(*source, bits, dir / "out.qcow2");
  const auto whole = ReadFile(dir / "out.qcow2");
  qcow::ExportLayout layout(source->size(), bits, source->Allocation(bits));
  qcow::ExportReader reader(layout, *source);
  std::mt19937_64 rng(7);
  std::vector<uint8_t> buf;
  for (int i = 0; i < 300; ++i) {
    const uint64_t off = rng() % whole.size(), n = 1 + rng() % (300 << 10);
    buf.assign(n, 0xee);
    const uint64_t got = reader.Read(off, buf.data(), n);
    ASSERT_EQ(got, std::min<uint64_t>(n, whole.size() - off));
    ASSERT_TRUE(std::equal(buf.begin(), buf.begin() + got, whole.begin() + off))
        << "read of " << n << " bytes at " << off;
  }
}

// xapi's shape without FUSE: data from a raw copy of the top (the device), allocation from
// the chain, or from the JSON qemu-img map printed for it.
TEST_P(ChainExport, HybridTakesAllocationFromMetadata) {
  TempDir dir;
  const ChainRecipe& r = GetParam();
  const std::string top = BuildChain(dir, r);
  const std::string path = *r.search_dir.c_str() ? " --path " + Quote(dir / r.search_dir) : "";
  const std::string disk = dir / "reference.raw";
  const auto bytes = ReadFile(dir / "map.json");
  const std::string map(bytes.begin(), bytes.end());
  struct Variant {
    std::string args;
    bool data_only;  // the JSON leaves out data that also reads as zero
  };
  for (const Variant& v :
       {Variant{"--source " + Quote(disk) + " --allocation-from " + Quote(top) + path, false},
        Variant{"--source-format hybrid --source " + Quote(disk + ":" + top) + path, false},
        Variant{"--source " + Quote(disk) + " --allocation-from fd:3 3<" + Quote(dir / "map.json"),
                true},
        Variant{"--source-format hybrid --source " + Quote(disk + ":" + dir / "map.json") + path,
                true}}) {
    SCOPED_TRACE(v.args);
    const std::string out = dir / "hybrid.qcow2";
    const auto run =
        Sh(Qcowfs() + " stream " + v.args + " --destination " + Quote(out) + " --direct");
    ASSERT_EQ(run.status, 0) << run.output;
    ExpectSameGuest(disk, out);
    // Exactly the clusters the chain allocates are data in the export.
    EXPECT_EQ(qcowfs_test::MappedClusters(out, 16, false),
              qcowfs_test::ClustersOfMap(map, 16, v.data_only));
  }
}

// xapi's `read_headers`: the top's size and cluster bits, and the guest clusters (of that
// size) holding data in the chain, which are exactly the data clusters of an export with
// that cluster size.
TEST_P(ChainExport, ReadHeadersListsTheClustersHoldingData) {
  TempDir dir;
  const ChainRecipe& r = GetParam();
  const std::string top = BuildChain(dir, r);
  const std::string path = *r.search_dir.c_str() ? " --path " + Quote(dir / r.search_dir) : "";
  const auto rh = Sh(Qcowfs() + " read_headers " + Quote(top) + path + " 2>&1");
  ASSERT_EQ(rh.status, 0) << rh.output;
  const auto size = qcowfs_test::JsonValues(rh.output, "virtual_size");
  const auto bits = qcowfs_test::JsonValues(rh.output, "cluster_bits");
  ASSERT_EQ(size.size(), 1u) << rh.output;
  ASSERT_EQ(bits.size(), 1u) << rh.output;
  const auto info = Sh("qemu-img info --output=json " + Quote(top));
  EXPECT_EQ(qcowfs_test::JsonValues(info.output, "virtual-size").front(), size[0]);
  EXPECT_EQ(qcowfs_test::JsonValues(info.output, "cluster-size").front(),
            std::to_string(uint64_t{1} << std::stoul(bits[0])));
  // The list, as (first, count) runs.
  std::vector<std::pair<uint64_t, uint64_t>> listed;
  const size_t open = rh.output.find('[', rh.output.find("\"data_clusters\""));
  const size_t close = rh.output.find(']', open);
  ASSERT_NE(close, std::string::npos) << rh.output;
  std::string numbers = rh.output.substr(open + 1, close - open - 1);
  for (size_t at = 0; at < numbers.size();) {
    const size_t comma = std::min(numbers.find(',', at), numbers.size());
    const uint64_t c = std::stoull(numbers.substr(at, comma - at));
    if (!listed.empty() && listed.back().first + listed.back().second == c) {
      ++listed.back().second;
    } else {
      ASSERT_TRUE(listed.empty() || c > listed.back().first) << "not ascending at " << c;
      listed.emplace_back(c, 1);
    }
    at = comma + 1;
  }
  const std::string out = dir / "out.qcow2";
  const auto run =
      Sh(Qcowfs() + " stream --source " + Quote(top) + path + " --cluster-size " +
         std::to_string(uint64_t{1} << std::stoul(bits[0])) + " --destination " + Quote(out));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_EQ(listed,
            qcowfs_test::MappedClusters(out, static_cast<uint32_t>(std::stoul(bits[0])), false));
}

qcow::ClusterMap MapOf(const std::vector<std::pair<uint64_t, uint64_t>>& runs) {
  qcow::ClusterMap::Builder b;
  for (const auto& [first, count] : runs) b.Add(first, count);
  return b.Build();
}

bool Within(const qcow::ClusterMap& a, const qcow::ClusterMap& b) {
  return qcow::ClusterMap::Intersection(a, b).size() == a.size();
}

// A delta over each layer below the top (planned from the chain's metadata), rebased onto
// it, reads as the top; it holds what the layers above changed and nothing else. Over a raw
// copy of each layer (not in the chain: contents compared) the same holds.
TEST_P(ChainExport, DeltaOverEachBaseRebuildsTheTop) {
  TempDir dir;
  const ChainRecipe& r = GetParam();
  const std::string top = BuildChain(dir, r);
  const std::string path = *r.search_dir.c_str() ? " --path " + Quote(dir / r.search_dir) : "";
  const auto bytes = ReadFile(dir / "map.json");
  const std::string map(bytes.begin(), bytes.end());
  const std::string delta = dir / "delta.qcow2";
  for (uint32_t k = 0; k < r.bases.size(); ++k) {
    const std::string base = dir / r.bases[k];
    const uint32_t depth = k + 1;
    SCOPED_TRACE("over " + r.bases[k]);
    auto run = Sh(Qcowfs() + " stream --source " + Quote(top) + path + " --relative-to " +
                  Quote(base) + " --destination " + Quote(delta));
    ASSERT_EQ(run.status, 0) << run.output;
    const auto info = Sh("qemu-img info " + Quote(delta) + " | grep '^backing file'");
    EXPECT_NE(info.output.find("backing file format: " +
                               std::string(base.ends_with(".raw") ? "raw" : "qcow2")),
              std::string::npos)
        << info.output;
    const std::string fmt = base.ends_with(".raw") ? "raw" : "qcow2";
    run = Sh("qemu-img rebase -u -f qcow2 -b " + Quote(base) + " -F " + fmt + " " + Quote(delta));
    ASSERT_EQ(run.status, 0) << run.output;
    ExpectSameGuest(dir / "reference.raw", delta);
    // Its own clusters (depth 0): at least the data above the base, at most what the layers
    // above define (data or zero).
    const auto delta_map = Sh("qemu-img map --output=json " + Quote(delta));
    ASSERT_EQ(delta_map.status, 0) << delta_map.output;
    const auto held = MapOf(qcowfs_test::ClustersOfMap(delta_map.output, 16, false, 1));
    EXPECT_TRUE(Within(MapOf(qcowfs_test::ClustersOfMap(map, 16, false, depth)), held));
    EXPECT_TRUE(Within(held, MapOf(qcowfs_test::ClustersOfMap(map, 16, false, depth, true))));

    // The same base as a plain copy: not in the chain, so contents are compared (a base of
    // another size reads as zeros past its end, as a backing file does).
    const std::string copy = dir / "base_copy.raw";
    ASSERT_EQ(Sh("qemu-img convert -O raw " + Quote(base) + " " + Quote(copy)).status, 0);
    run = Sh(Qcowfs() + " stream --source " + Quote(top) + path + " --relative-to " + Quote(copy) +
             " --destination " + Quote(delta));
    ASSERT_EQ(run.status, 0) << run.output;
    EXPECT_NE(run.output.find("comparing"), std::string::npos) << run.output;  // progress
    ExpectSameGuest(dir / "reference.raw", delta);
  }
}

// Restores: the raw disk of a base, with a delta imported onto it by serve --delta, holds
// the top. The deltas are the layer files qemu-io wrote (extended L2, zero clusters,
// compressed clusters, v2...) and the ones qcowfs exports.
TEST_P(ChainExport, DeltaImportedOntoItsBaseGivesTheTop) {
  TempDir dir;
  const ChainRecipe& r = GetParam();
  const std::string top = BuildChain(dir, r);
  const std::string path = *r.search_dir.c_str() ? " --path " + Quote(dir / r.search_dir) : "";
  const uint64_t top_size = ReadFile(dir / "reference.raw").size();
  const std::string target = dir / "target.raw";
  auto restore = [&](const std::string& base, const std::string& delta) {
    // The target: the base's disk, as large as the top at least (bytes past the top are
    // the base's and stay so).
    ASSERT_EQ(Sh("qemu-img convert -O raw " + Quote(base) + " " + Quote(target) +
                 " && test $(stat -c %s " + Quote(target) + ") -ge " + std::to_string(top_size) +
                 " || truncate -s " + std::to_string(top_size) + " " + Quote(target))
                  .status,
              0);
    const auto before = ReadFile(target);
    const auto run = Sh(Qcowfs() + " serve --delta --prezeroed --source " + Quote(delta) +
                        " --destination " + Quote(target));
    ASSERT_EQ(run.status, 0) << run.output;
    const auto after = ReadFile(target), want = ReadFile(dir / "reference.raw");
    ASSERT_EQ(after.size(), before.size());
    EXPECT_TRUE(std::equal(want.begin(), want.end(), after.begin())) << "guest bytes differ";
    EXPECT_TRUE(std::equal(after.begin() + want.size(), after.end(), before.begin() + want.size()))
        << "bytes past the top's size changed";
  };
  // The top layer itself, onto the layer below it (qemu-img reads layer files alone only
  // where the chain is findable).
  if (!r.bases.empty() && !*r.search_dir.c_str()) {
    SCOPED_TRACE("the top layer file over " + r.bases[0]);
    restore(dir / r.bases[0], top);
  }
  for (const std::string& b : r.bases) {
    SCOPED_TRACE("exported delta over " + b);
    const std::string delta = dir / "delta.qcow2";
    const auto run = Sh(Qcowfs() + " stream --source " + Quote(top) + path + " --relative-to " +
                        Quote(dir / b) + " --destination " + Quote(delta));
    ASSERT_EQ(run.status, 0) << run.output;
    restore(dir / b, delta);
  }
}

TEST(ChainImport, BackingFileWithoutDeltaIsRefusedAndSaysSo) {
  TempDir dir;
  ASSERT_EQ(Sh("cd " + Quote(dir.path()) +
               " && qemu-img create -q -f qcow2 base.qcow2 1M"
               " && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2"
               " && qemu-io -c 'write -P 3 0 64k' top.qcow2 >/dev/null && truncate -s 1M t.raw")
                .status,
            0);
  auto r = Sh(Qcowfs() + " serve --source " + Quote(dir / "top.qcow2") + " --destination " +
              Quote(dir / "t.raw"));
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("backing file 'base.qcow2'; import it with --delta"), std::string::npos)
      << r.output;
  // check says the same, and with --delta checks it as a delta import would take it.
  EXPECT_EQ(Sh(Qcowfs() + " check " + Quote(dir / "top.qcow2")).status, 3);
  r = Sh(Qcowfs() + " check --delta " + Quote(dir / "top.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("65536 bytes of data"), std::string::npos) << r.output;
  // With --delta an image without a backing file is a full import: unallocated is zeros.
  ASSERT_EQ(Sh("cd " + Quote(dir.path()) +
               " && qemu-img convert -O qcow2 top.qcow2 full.qcow2 && head -c 1M /dev/urandom > "
               "t.raw")
                .status,
            0);
  r = Sh(Qcowfs() + " serve --delta --source " + Quote(dir / "full.qcow2") + " --destination " +
         Quote(dir / "t.raw") + " && qemu-img compare -f raw " + Quote(dir / "t.raw") + " " +
         Quote(dir / "full.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
}

// `qcowfs map --json` of each layer of the chain prints what qemu-img map prints of it, byte
// for byte (depth, offsets, holes of preallocated images). Copies made sparse by cp (which
// switch on QEMU's check of the image file's holes) too.
TEST_P(ChainExport, MapJsonIsQemuImgMapByteForByte) {
  TempDir dir;
  const ChainRecipe& r = GetParam();
  const std::string top = BuildChain(dir, r);
  std::vector<std::string> images = {top};
  for (const auto& b : r.bases) {
    // (`map` of a raw disk is the map of its export, not of the file.)
    if (!b.ends_with(".raw")) images.push_back(dir / b);
  }
  int compared = 0;
  for (const std::string& image : images) {
    const auto want = Sh("qemu-img map --output=json " + Quote(image) + " 2>/dev/null");
    if (want.status != 0) continue;  // a chain only --path finds
    const auto got = Sh(Qcowfs() + " map --json " + Quote(image));
    EXPECT_EQ(got.output, want.output) << image;
    ++compared;
  }
  EXPECT_GE(compared, *r.search_dir.c_str() ? 1 : static_cast<int>(images.size()));
  // A sparse copy of the top (same backing names: same directory).
  const std::string copy = dir / "copy.qcow2";
  if (Sh("cp --sparse=always " + Quote(top) + " " + Quote(copy)).status == 0) {
    const auto want = Sh("qemu-img map --output=json " + Quote(copy) + " 2>/dev/null");
    if (want.status == 0) {
      EXPECT_EQ(Sh(Qcowfs() + " map --json " + Quote(copy)).output, want.output);
    }
  }
}

// The map of a delta export, over its base's chain, is what qemu-img map says of the image
// once its backing name leads to the base.
TEST_P(ChainExport, MapOfADeltaIsQemuImgMapOfIt) {
  TempDir dir;
  const ChainRecipe& r = GetParam();
  const std::string top = BuildChain(dir, r);
  const std::string path = *r.search_dir.c_str() ? " --path " + Quote(dir / r.search_dir) : "";
  for (const auto& b : r.bases) {
    const std::string base = dir / b, delta = dir / "delta.qcow2";
    const std::string args = " --source " + Quote(top) + path + " --relative-to " + Quote(base) +
                             " --backing-name " + Quote(base);
    ASSERT_EQ(Sh(Qcowfs() + " stream" + args + " --destination " + Quote(delta)).status, 0);
    const auto want = Sh("qemu-img map --output=json " + Quote(delta));
    if (want.status != 0) continue;  // a base whose own chain only --path finds
    const auto got = Sh(Qcowfs() + " map --json" + args.substr(std::string(" --source").size()));
    EXPECT_EQ(got.output, want.output) << "over " << b;
  }
}

// `info` lists the chain below the image as qemu-img info --backing-chain does.
TEST_P(ChainExport, InfoShowsTheChain) {
  TempDir dir;
  const ChainRecipe& r = GetParam();
  const std::string top = BuildChain(dir, r);
  const auto info = Sh(Qcowfs() + " info --json " + Quote(top));
  ASSERT_EQ(info.status, 0) << info.output;
  if (*r.search_dir.c_str()) {
    EXPECT_NE(info.output.find("backing chain: "), std::string::npos) << info.output;
    return;
  }
  const auto want = Sh("qemu-img info --backing-chain --output=json " + Quote(top));
  ASSERT_EQ(want.status, 0) << want.output;
  auto all = [](const std::string& text, const char* key) {
    return qcowfs_test::JsonValues(text, key);
  };
  const char* size = "virtual-size";
  const char* format = "format";
  // qemu-img lists the top too; qcowfs prints the top's own fields first, then the chain.
  EXPECT_EQ(all(info.output, size), all(want.output, size)) << info.output;
  const auto got = all(info.output, format);
  EXPECT_EQ(got, all(want.output, format)) << info.output;
  EXPECT_EQ(r.bases.size() + 1, got.size());
}

INSTANTIATE_TEST_SUITE_P(Chains, ChainExport, ::testing::ValuesIn(ChainRecipes()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ChainExport, OnlyAllocatedClustersAreExported) {
  TempDir dir;
  // 1 GiB virtual, two layers with 64 KiB of data each, and zeros over the base's.
  ASSERT_EQ(Sh("cd " + Quote(dir.path()) +
               " && qemu-img create -q -f qcow2 base.qcow2 1G"
               " && qemu-io -c 'write -P 1 0 64k' -c 'write -P 2 512M 64k' base.qcow2"
               " && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2"
               " && qemu-io -c 'write -P 3 100M 64k' -c 'write -z 0 64k' top.qcow2")
                .status,
            0);
  auto source = qcow::OpenSource(dir / "top.qcow2", {});
  EXPECT_EQ(source->size(), 1u << 30);
  EXPECT_EQ(source->Allocation(16).size(), 2u);  // 512M (base) and 100M (top); 0 is zero
}

// Runs `qcowfs stream` on `source` with extra args; returns exit status and output.
qcowfs_test::CommandResult StreamCli(const std::string& source, const std::string& extra = "") {
  return Sh(Qcowfs() + " stream --source " + Quote(source) + " --destination null: " + extra);
}

void ExpectRefused(const qcowfs_test::CommandResult& r, const std::string& says) {
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find(says), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

class ChainRefusal : public ::testing::Test {
 protected:
  void Make(const std::string& commands) {
    const auto r = Sh("cd " + Quote(dir_.path()) + " && (" + commands + ")");
    ASSERT_EQ(r.status, 0) << r.output;
  }
  void Put(const std::string& image, uint64_t offset, uint64_t value, int bytes) {
    std::vector<uint8_t> b(8);
    qcow::StoreBe64(b.data(), value);
    WriteAt(dir_ / image, offset, std::vector<uint8_t>(b.end() - bytes, b.end()));
  }
  const char* kChain =
      "qemu-img create -q -f qcow2 base.qcow2 8M && qemu-io -c 'write -P 1 0 1M' base.qcow2 "
      ">/dev/null && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2";
  TempDir dir_;
};

TEST_F(ChainRefusal, MissingBackingFile) {
  Make(std::string(kChain) + " && rm base.qcow2");
  ExpectRefused(StreamCli(dir_ / "top.qcow2"), "backing file 'base.qcow2' cannot be opened");
}

TEST_F(ChainRefusal, LoopInTheChain) {
  Make(std::string(kChain) + " && qemu-img rebase -u -b top.qcow2 -F qcow2 base.qcow2");
  ExpectRefused(StreamCli(dir_ / "top.qcow2"), "the backing chain loops");
}

TEST_F(ChainRefusal, EncryptedLayer) {
  Make(kChain);
  Put("base.qcow2", 32, 1, 4);  // crypt_method 1 (AES)
  ExpectRefused(StreamCli(dir_ / "top.qcow2"), "base.qcow2: crypt_method is 1 (AES)");
}

TEST_F(ChainRefusal, ExternalDataFile) {
  Make(
      "qemu-img create -q -f qcow2 -o data_file=data.raw base.qcow2 8M && "
      "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2");
  ExpectRefused(StreamCli(dir_ / "top.qcow2"), "external data file");
}

TEST_F(ChainRefusal, CorruptBit) {
  Make(kChain);
  Put("base.qcow2", 72, 2, 8);
  ExpectRefused(StreamCli(dir_ / "top.qcow2"),
                "base.qcow2: incompatible_features has the corrupt bit");
}

TEST_F(ChainRefusal, UnknownIncompatibleFeature) {
  Make(kChain);
  Put("top.qcow2", 72, 1ull << 9, 8);
  ExpectRefused(StreamCli(dir_ / "top.qcow2"),
                "top.qcow2: incompatible_features has unknown bit 9");
}

// A backing file whose format the image does not name is probed as QEMU probes it: one of
// another format is refused, not read as raw bytes.
// Renames the backing format extension (0xe2792aca) of dir/top.qcow2 to a type QEMU
// skips, so that the backing file's format is probed.
void DropBackingFormat(const TempDir& dir) {
  auto head = ReadFile(dir / "top.qcow2");
  const uint8_t ext[] = {0xe2, 0x79, 0x2a, 0xca};
  const auto at = std::search(head.begin(), head.begin() + 65536, ext, ext + 4) - head.begin();
  ASSERT_LT(at, 65536);
  WriteAt(dir / "top.qcow2", at, {0x12, 0x34, 0x56, 0x78});
}

TEST_F(ChainRefusal, BackingOfAnotherFormatIsProbedNotTakenForRaw) {
  Make(
      "qemu-img create -q -f vhdx base.vhdx 8M && "
      "qemu-img create -q -f qcow2 -b base.vhdx -F vhdx top.qcow2 8M");
  DropBackingFormat(dir_);
  const auto probed = Sh("qemu-img info --backing-chain " + Quote(dir_ / "top.qcow2"));
  ASSERT_NE(probed.output.find("file format: vhdx"), std::string::npos) << probed.output;
  ExpectRefused(StreamCli(dir_ / "top.qcow2"),
                "its backing file 'base.vhdx': " + dir_ / "base.vhdx" + " is a vhdx image");
}

// A dynamic VHD under a qcow2 image, named or probed, is read as QEMU reads it.
TEST_F(ChainRefusal, VhdBackingIsReadNamedOrProbed) {
  for (const bool probe : {false, true}) {
    SCOPED_TRACE(probe ? "probed" : "named vpc");
    Make(
        "rm -f base.vhd top.qcow2 out.qcow2 && "
        "qemu-img create -q -f vpc -o subformat=dynamic base.vhd 8M && "
        "qemu-io -f vpc -c 'write -P 0x5a 1M 3M' base.vhd >/dev/null && "
        "qemu-img create -q -f qcow2 -b base.vhd -F vpc top.qcow2 8M && "
        "qemu-io -c 'write -P 0x6b 2M 64k' top.qcow2 >/dev/null");
    if (probe) DropBackingFormat(dir_);
    const auto r = Sh(Qcowfs() + " stream --source " + Quote(dir_ / "top.qcow2") +
                      " --destination " + Quote(dir_ / "out.qcow2") + " && qemu-img compare " +
                      Quote(dir_ / "top.qcow2") + " " + Quote(dir_ / "out.qcow2"));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("Images are identical"), std::string::npos) << r.output;
  }
}

TEST_F(ChainRefusal, BackingFileThatIsADirectory) {
  Make(std::string(kChain) + " && rm base.qcow2 && mkdir base.qcow2");
  ExpectRefused(StreamCli(dir_ / "top.qcow2"),
                "top.qcow2: its backing file 'base.qcow2' (" + dir_ / "base.qcow2" +
                    ") is neither a regular file nor a block device");
}

TEST_F(ChainRefusal, DirtyBitOnlyWarns) {
  Make(kChain);
  Put("base.qcow2", 72, 1, 8);
  const auto r = StreamCli(dir_ / "top.qcow2");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("warning: " + dir_ / "base.qcow2" + ": the image's dirty bit"),
            std::string::npos)
      << r.output;
  // An export reads the image: it says so, not what an import would say.
  EXPECT_NE(r.output.find("reading it anyway"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("import"), std::string::npos) << r.output;
}

TEST_F(ChainRefusal, AllocationOfAnotherSize) {
  Make(std::string(kChain) +
       " && truncate -s 4M disk.raw && qemu-img map --output=json "
       "top.qcow2 > map.json");
  for (const std::string meta : {"top.qcow2", "map.json"}) {
    const auto r = StreamCli(dir_ / "disk.raw", "--allocation-from " + Quote(dir_ / meta));
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(
        r.output.find("is 4194304 bytes but " + dir_ / meta + " describes a disk of 8388608 bytes"),
        std::string::npos)
        << r.output;
  }
}

TEST_F(ChainRefusal, AllocationFromSomethingElse) {
  Make("truncate -s 8M disk.raw && echo '[{ \"start\": 0, \"length\": 4096}]' > bad.json");
  ExpectRefused(StreamCli(dir_ / "disk.raw", "--allocation-from /etc/passwd"),
                "is neither a qcow2 image, nor a VHD, nor the JSON of qemu-img map");
  ExpectRefused(StreamCli(dir_ / "disk.raw", "--allocation-from " + Quote(dir_ / "bad.json")),
                "an entry without start, length, data and zero");
  EXPECT_EQ(StreamCli(dir_ / "disk.raw", "--allocation-from fd:x").status, 2);
  EXPECT_EQ(StreamCli("nocolon", "--source-format hybrid").status, 2);
}

TEST_F(ChainRefusal, DeltaNamesItsBase) {
  Make(std::string(kChain) + " && qemu-io -c 'write -P 9 64k 64k' top.qcow2 >/dev/null");
  const std::string delta = dir_ / "delta.qcow2";
  auto name = [&] {
    return Sh("qemu-img info --output=json " + Quote(delta) + " | grep backing").output;
  };
  ASSERT_EQ(StreamCli(dir_ / "top.qcow2", "--relative-to " + Quote(dir_ / "base.qcow2")).status, 0);
  ASSERT_EQ(Sh(Qcowfs() + " stream --source " + Quote(dir_ / "top.qcow2") + " --relative-to " +
               Quote(dir_ / "base.qcow2") + " --destination " + Quote(delta))
                .status,
            0);
  EXPECT_NE(name().find("\"backing-filename\": \"base.qcow2\""), std::string::npos) << name();
  EXPECT_NE(name().find("\"backing-filename-format\": \"qcow2\""), std::string::npos) << name();
  ASSERT_EQ(Sh(Qcowfs() + " stream --source " + Quote(dir_ / "top.qcow2") + " --relative-to " +
               Quote(dir_ / "base.qcow2") +
               " --backing-name snapshots/base-1.qcow2 --destination " + Quote(delta))
                .status,
            0);
  EXPECT_NE(name().find("\"backing-filename\": \"snapshots/base-1.qcow2\""), std::string::npos)
      << name();
  // The delta over base holds the one cluster top wrote.
  // (Opened without its backing file, so that only its own clusters show.)
  const auto map =
      Sh("qemu-img map --output=json --image-opts \"driver=qcow2,file.filename=" + delta +
         ",backing=\" 2>/dev/null");
  EXPECT_NE(map.output.find("\"start\": 65536, \"length\": 65536, \"depth\": 0, \"present\": true, "
                            "\"zero\": false, \"data\": true"),
            std::string::npos)
      << map.output;
  EXPECT_EQ(StreamCli(dir_ / "top.qcow2", "--backing-name x").status, 2);
  EXPECT_EQ(
      StreamCli(dir_ / "top.qcow2", "--scan-zeros --relative-to " + Quote(dir_ / "base.qcow2"))
          .status,
      2);
}

TEST_F(ChainRefusal, QcowSourceReadAsRawWhenAsked) {
  Make(kChain);
  // --source-format raw exports the file's own bytes: qemu-img sees a qcow2 file inside.
  ASSERT_EQ(StreamCli(dir_ / "top.qcow2", "--source-format raw").status, 0);
  const auto r = Sh(Qcowfs() + " stream --source-format raw --source " + Quote(dir_ / "top.qcow2") +
                    " --destination " + Quote(dir_ / "out.qcow2") + " && qemu-img compare -f raw " +
                    Quote(dir_ / "top.qcow2") + " " + Quote(dir_ / "out.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(StreamCli(dir_ / "top.qcow2", "--source-format vmdk").status, 2);
}

}  // namespace
