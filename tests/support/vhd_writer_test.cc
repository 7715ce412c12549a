// The test-only VHD writer (vhd_writer.h) judged by independent readers, never by qcowfs:
// qemu-img reads its fixed and dynamic disks, libvhdi (tools/vhd_judge.py) those and its
// differencing chains, and header fields are checked byte by byte against literals and
// against a checksum that is itself checked on qemu-img's own VHDs.
//
// libvhdi 20210425 (Debian 12) reads a sector bitmap byte from its first set bit to its end
// from the layer, whatever the later bits say (sectors 1 and 2 set: sectors 1 to 7 come
// from the layer): it compares the byte shifted right, not the bit, with the first value of
// the range. Chains compared with Expected() therefore extend every run of set bits to the
// end of its byte (PadForLibvhdi); BitmapsAsLibvhdiReadsThem checks arbitrary bitmaps
// against a model of that reading instead. (Its other bug, reads spanning blocks, the judge
// avoids by reading at most one block at a time.)
#include "vhd_writer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <set>

#include "test_util.h"

namespace {

using qcowfs_test::CommandResult;
using qcowfs_test::JsonValues;
using qcowfs_test::MakeVhdLocator;
using qcowfs_test::PadForLibvhdi;
using qcowfs_test::Quote;
using qcowfs_test::RandomBytes;
using qcowfs_test::ReadFile;
using qcowfs_test::Sh;
using qcowfs_test::TempDir;
using qcowfs_test::VhdImage;
using qcowfs_test::VhdLocator;
using qcowfs_test::VhdLocatorKind;
using qcowfs_test::VhdQuirks;
using Bytes = std::vector<uint8_t>;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kSector = 512;
constexpr uint8_t kDiffJunk = 0xE5;  // what the writer puts in unset sectors of a child

void WriteRaw(const std::string& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

// "" if equal, else where the two first differ.
std::string FirstDifference(const Bytes& got, const Bytes& want) {
  if (got.size() != want.size()) {
    return "size " + std::to_string(got.size()) + " instead of " + std::to_string(want.size());
  }
  const auto [g, w] = std::mismatch(got.begin(), got.end(), want.begin());
  if (g == got.end()) return "";
  const uint64_t at = uint64_t(g - got.begin());
  char buf[128];
  snprintf(buf, sizeof buf, "byte %llu (sector %llu) is 0x%02x instead of 0x%02x",
           static_cast<unsigned long long>(at), static_cast<unsigned long long>(at / kSector), *g,
           *w);
  return buf;
}

// Runs the libvhdi judge on top; returns its output and, if it succeeded, what it read.
struct Judgement {
  CommandResult run;
  Bytes content;
};
Judgement Judge(const TempDir& dir, const std::string& top,
                const std::vector<std::string>& search_dirs = {}) {
  const std::string out = dir / "judge.raw";
  std::string cmd = "/usr/bin/python3 " + Quote(VHD_JUDGE) + " " + Quote(top) + " " + Quote(out);
  for (const std::string& d : search_dirs) cmd += " " + Quote(d);
  Judgement j{Sh(cmd), {}};
  if (j.run.status == 0) j.content = ReadFile(out);
  std::remove(out.c_str());
  return j;
}

::testing::AssertionResult LibvhdiReads(const TempDir& dir, const std::string& top,
                                        const Bytes& want,
                                        const std::vector<std::string>& search_dirs = {}) {
  const Judgement j = Judge(dir, top, search_dirs);
  if (j.run.status != 0) return ::testing::AssertionFailure() << "vhd_judge: " << j.run.output;
  const std::string diff = FirstDifference(j.content, want);
  if (!diff.empty())
    return ::testing::AssertionFailure() << "libvhdi reads " << top << ": " << diff;
  return ::testing::AssertionSuccess();
}

// qemu-img sees a virtual size of want.size() and the content want.
::testing::AssertionResult QemuReads(const TempDir& dir, const std::string& vhd,
                                     const Bytes& want) {
  // -f vpc: probing finds no "conectix" at offset 0 of a fixed disk and would say raw.
  const CommandResult info = Sh("qemu-img info -f vpc --output=json " + Quote(vhd));
  if (info.status != 0) return ::testing::AssertionFailure() << info.output;
  const auto sizes = JsonValues(info.output, "virtual-size");
  if (sizes.size() != 1 || std::stoull(sizes[0]) != want.size()) {
    return ::testing::AssertionFailure() << "qemu-img sees another size: " << info.output;
  }
  const std::string ref = dir / "qemu-ref.raw";
  WriteRaw(ref, want);
  const CommandResult cmp = Sh("qemu-img compare -f vpc -F raw " + Quote(vhd) + " " + Quote(ref));
  std::remove(ref.c_str());
  if (cmp.status != 0) return ::testing::AssertionFailure() << "qemu-img compare: " << cmp.output;
  return ::testing::AssertionSuccess();
}

// Writes `count` runs of 1..max_len random bytes at random byte offsets in [lo, hi).
void ScatterWrites(VhdImage& img, std::mt19937_64& rng, uint64_t lo, uint64_t hi, int count,
                   uint64_t max_len) {
  for (int i = 0; i < count; ++i) {
    const uint64_t len = 1 + rng() % max_len;
    const uint64_t at = lo + rng() % (hi - lo - len);
    img.Write(at, RandomBytes(len, rng()));
  }
}

bool AllZero(const Bytes& b) {
  return std::all_of(b.begin(), b.end(), [](uint8_t x) { return x == 0; });
}

// What libvhdi 20210425 reads from the top of `chain` (base first, as saved with junk
// `fills`, the bytes of unset sectors of each layer): in each bitmap byte with a set bit,
// the sectors from the first set bit to the end of the byte come from the layer file.
Bytes LibvhdiModel(const std::vector<VhdImage>& chain, const std::vector<uint8_t>& fills) {
  Bytes view(chain[0].size(), 0);
  for (size_t l = 0; l < chain.size(); ++l) {
    const VhdImage& layer = chain[l];
    if (layer.disk_type() == qcowfs_test::kVhdTypeFixed) {
      view = layer.Expected();
      continue;
    }
    const uint64_t sectors = layer.size() / kSector;
    for (uint64_t group = 0; group < sectors; group += 8) {
      const uint64_t end = std::min(group + 8, sectors);
      uint64_t s = group;
      while (s < end && !layer.SectorPresent(s)) ++s;
      for (; s < end; ++s) {
        uint8_t* dst = &view[s * kSector];
        if (layer.SectorPresent(s)) {
          std::copy_n(layer.Expected().begin() + s * kSector, kSector, dst);
        } else {
          std::fill_n(dst, kSector, fills[l]);
        }
      }
    }
  }
  return view;
}

uint32_t Be32(const Bytes& b, size_t at) {
  return uint32_t(b[at]) << 24 | uint32_t(b[at + 1]) << 16 | uint32_t(b[at + 2]) << 8 | b[at + 3];
}
uint64_t Be64(const Bytes& b, size_t at) { return uint64_t{Be32(b, at)} << 32 | Be32(b, at + 4); }
Bytes Slice(const Bytes& b, uint64_t at, uint64_t n) {
  return Bytes(b.begin() + at, b.begin() + at + n);
}

// The VHD checksum written again from the specification, to check the writer's; checked
// itself on qemu-img's VHDs in HeadersAndLocators.
bool ChecksumOk(const Bytes& structure, size_t field) {
  uint32_t sum = 0;
  for (size_t i = 0; i < structure.size(); ++i) {
    if (i < field || i >= field + 4) sum += structure[i];
  }
  return ~sum == Be32(structure, field);
}

Bytes Utf16Le(const std::u16string& s) {
  Bytes out;
  for (char16_t u : s) out.insert(out.end(), {uint8_t(u), uint8_t(u >> 8)});
  return out;
}
Bytes Utf16Be(const std::u16string& s) {
  Bytes out;
  for (char16_t u : s) out.insert(out.end(), {uint8_t(u >> 8), uint8_t(u)});
  return out;
}

// ---------------------------------------------------------------------------------------

TEST(VhdWriter, ChsGeometryAsQemuComputesIt) {
  // qemu-img computes the footer geometry with the specification's algorithm too, then
  // rounds the size to that geometry (its current size): on either side of each branch.
  TempDir dir;
  for (uint64_t mib : {1, 10, 63, 100, 1000, 8000, 32000, 40000, 100000}) {
    const std::string vhd = dir / "g.vhd";
    ASSERT_EQ(
        Sh("qemu-img create -q -f vpc " + Quote(vhd) + " " + std::to_string(mib) + "M").status, 0);
    const Bytes footer = Slice(ReadFile(vhd), 0, 512);
    const uint64_t size = Be64(footer, 48);
    const qcowfs_test::VhdGeometry g = qcowfs_test::VhdChsGeometry(size);
    EXPECT_EQ(Be32(footer, 56), uint32_t(g.cylinders) << 16 | g.heads << 8 | g.sectors_per_track)
        << mib << " MiB";
    std::remove(vhd.c_str());
  }
}

TEST(VhdWriter, FixedDiskReadsBack) {
  TempDir dir;
  std::mt19937_64 rng(1);
  VhdImage img = VhdImage::Fixed(6 * kMiB + 3 * kSector);
  ScatterWrites(img, rng, 0, img.size(), 30, 70 * kKiB);
  img.Write(img.size() - 5, Bytes(5, 0x77));  // up to the very last byte
  ASSERT_FALSE(AllZero(img.Expected()));
  const std::string vhd = dir / "fixed.vhd";
  img.Save(vhd);
  const Bytes file = ReadFile(vhd);
  ASSERT_EQ(file.size(), img.size() + 512);
  EXPECT_TRUE(std::equal(img.Expected().begin(), img.Expected().end(), file.begin()));
  EXPECT_TRUE(QemuReads(dir, vhd, img.Expected()));
  EXPECT_TRUE(LibvhdiReads(dir, vhd, img.Expected()));
}

struct DynamicCase {
  const char* name;
  uint64_t size;
  uint32_t block_size;
  uint32_t block_alignment;
};

void PrintTo(const DynamicCase& c, std::ostream* os) { *os << c.name; }

class VhdWriterDynamic : public ::testing::TestWithParam<DynamicCase> {};

TEST_P(VhdWriterDynamic, ReadsBackInQemuAndLibvhdi) {
  const DynamicCase& c = GetParam();
  TempDir dir;
  std::mt19937_64 rng(c.size ^ c.block_size);
  VhdImage img = VhdImage::Dynamic(c.size, c.block_size);
  // The last block first (it runs past the end of the disk when the size is not a multiple
  // of the block size), then scattered writes: blocks land in the file out of guest order.
  // Block 1 is allocated with no sector in it: it reads zeros.
  img.Write(c.size - 3000, RandomBytes(3000, 7));
  ScatterWrites(img, rng, c.size / 2, c.size - 1, 20, 9000);
  ScatterWrites(img, rng, 2 * c.block_size, c.size, 20, 3 * c.block_size / 2);
  img.Write(3, RandomBytes(100, 8));
  img.AllocateBlock(1);
  VhdQuirks quirks;
  quirks.block_alignment = c.block_alignment;
  ASSERT_FALSE(AllZero(img.Expected()));
  ASSERT_FALSE(img.SectorPresent(c.block_size / kSector));
  const auto layout = img.Layout(quirks);
  EXPECT_NE(layout.block_offsets[1], 0u) << "block 1 allocated, empty";
  bool out_of_order = false;
  uint64_t last = 0;
  for (uint64_t off : layout.block_offsets) {
    if (off == 0) continue;
    EXPECT_EQ(off % c.block_alignment, 0u);
    out_of_order |= off < last;
    last = off;
  }
  EXPECT_TRUE(out_of_order) << "blocks should not be in guest order";

  const std::string vhd = dir / "dyn.vhd";
  img.Save(vhd, quirks);
  EXPECT_TRUE(QemuReads(dir, vhd, img.Expected()));
  EXPECT_TRUE(LibvhdiReads(dir, vhd, img.Expected()));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, VhdWriterDynamic,
    ::testing::Values(DynamicCase{"TwoMiBBlocksPartialLast", 20 * kMiB + 7 * kSector, 2u << 20,
                                  512},
                      DynamicCase{"HalfMiBBlocks", 12 * kMiB, 512u << 10, 512},
                      DynamicCase{"SmallBlocks4KAligned", 3 * kMiB + kSector, 32u << 10, 4096},
                      DynamicCase{"BlocksMiBAligned", 9 * kMiB, 1u << 20, 1u << 20}),
    [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------
// Differencing chains.

enum class Paths {
  kSameDir,      // every layer in one directory, parents named by file name
  kSubdirs,      // each parent in a sub-directory "s" of its child's directory
  kAbsolute,     // parents named by absolute path
  kUnreachable,  // parents named by a path that does not exist, found by search directory
};

struct ChainCase {
  const char* name;
  uint32_t depth;  // differencing layers above the base
  bool fixed_base;
  Paths paths;
  std::vector<std::vector<VhdLocatorKind>> locators;  // per child layer, cyclically
  std::vector<uint32_t> block_sizes;                  // per layer (base first), cyclically
  std::string base_name;
};

struct Chain {
  std::vector<VhdImage> layers;  // base first
  std::vector<std::string> files;
  std::vector<std::string> search_dirs;
};

// Builds and saves c in dir: each layer written with small writes at odd offsets in a hot
// region (so 64 KiB clusters mix sectors of several layers), one across a 2 MiB boundary and
// a few large ones; padded for libvhdi if `pad`.
Chain BuildChain(const TempDir& dir, const ChainCase& c, bool pad, uint64_t seed = 0) {
  constexpr uint64_t kSize = 16 * kMiB;
  std::mt19937_64 rng(seed ^ c.depth ^ uint64_t(c.paths) << 8);
  Chain chain;
  // Directories and names, base first; the top is always in dir.
  std::vector<std::string> dirs(c.depth + 1, dir.path()), names;
  for (uint32_t i = 0; i <= c.depth; ++i) {
    names.push_back(i == 0 ? c.base_name : "layer" + std::to_string(i) + ".vhd");
  }
  if (c.paths == Paths::kSubdirs) {
    for (uint32_t i = 0; i < c.depth; ++i) {
      for (uint32_t k = i; k < c.depth; ++k) dirs[i] += "/s";
    }
    chain.search_dirs.assign(dirs.begin(), dirs.end() - 1);
  } else if (c.paths == Paths::kUnreachable) {
    for (uint32_t i = 0; i < c.depth; ++i) dirs[i] = dir / "elsewhere";
    chain.search_dirs = {dir / "elsewhere"};
  }
  for (const std::string& d : dirs) Sh("mkdir -p " + Quote(d));

  for (uint32_t i = 0; i <= c.depth; ++i) {
    const uint32_t block_size = c.block_sizes[i % c.block_sizes.size()];
    if (i == 0) {
      chain.layers.push_back(c.fixed_base ? VhdImage::Fixed(kSize)
                                          : VhdImage::Dynamic(kSize, block_size));
    } else {
      std::string parent_path = names[i - 1];
      if (c.paths == Paths::kSubdirs) parent_path = "s/" + names[i - 1];
      if (c.paths == Paths::kAbsolute) parent_path = dirs[i - 1] + "/" + names[i - 1];
      if (c.paths == Paths::kUnreachable) parent_path = "/nonexistent-vhd-dir/" + names[i - 1];
      chain.layers.push_back(VhdImage::Differencing(
          chain.layers.back(), parent_path, c.locators[(i - 1) % c.locators.size()], block_size));
    }
    VhdImage& layer = chain.layers.back();
    ScatterWrites(layer, rng, kMiB - 20000, kMiB + 300 * kKiB, 40, 1500);
    layer.Write(2 * kMiB - 777 - i * 100, RandomBytes(2000, rng()));
    ScatterWrites(layer, rng, 0, kSize, 3, 200 * kKiB);
    if (pad) PadForLibvhdi(layer);
    chain.files.push_back(dirs[i] + "/" + names[i]);
    layer.Save(chain.files.back());
  }
  return chain;
}

// The most layers any 64 KiB cluster of the top's guest content takes sectors from.
size_t MostLayersInACluster(const std::vector<VhdImage>& layers) {
  size_t most = 0;
  const uint64_t size = layers[0].size();
  for (uint64_t cluster = 0; cluster < size; cluster += 64 * kKiB) {
    std::set<size_t> owners;
    for (uint64_t s = cluster / kSector; s < (cluster + 64 * kKiB) / kSector; ++s) {
      size_t owner = layers.size() - 1;
      while (owner > 0 && !layers[owner].SectorPresent(s)) --owner;
      owners.insert(owner);
    }
    most = std::max(most, owners.size());
  }
  return most;
}

void PrintTo(const ChainCase& c, std::ostream* os) { *os << c.name; }

class VhdWriterChain : public ::testing::TestWithParam<ChainCase> {};

TEST_P(VhdWriterChain, LibvhdiReadsExpected) {
  const ChainCase& c = GetParam();
  TempDir dir;
  const Chain chain = BuildChain(dir, c, /*pad=*/true);
  EXPECT_GE(MostLayersInACluster(chain.layers), std::min<size_t>(c.depth + 1, 4));
  for (size_t i = 1; i < chain.layers.size(); ++i) {
    EXPECT_NE(chain.layers[i].Expected(), chain.layers[i - 1].Expected()) << "layer " << i;
  }
  // Every layer of the chain reads as expected, each as the top of its own chain.
  for (size_t i = 0; i < chain.layers.size(); ++i) {
    EXPECT_TRUE(LibvhdiReads(dir, chain.files[i], chain.layers[i].Expected(), chain.search_dirs))
        << "layer " << i;
  }
  if (!chain.search_dirs.empty()) {
    // The search directories are what finds the parents: without them the judge fails.
    EXPECT_NE(Judge(dir, chain.files.back()).run.status, 0);
  }
}

const auto kMacX = VhdLocatorKind::kMacX;
const auto kW2ru = VhdLocatorKind::kW2ru;
const auto kW2ku = VhdLocatorKind::kW2ku;

INSTANTIATE_TEST_SUITE_P(
    Shapes, VhdWriterChain,
    ::testing::Values(
        ChainCase{"Depth1MacX", 1, false, Paths::kSameDir, {{kMacX}}, {2u << 20}, "base.vhd"},
        ChainCase{
            "Depth1OverFixedW2ru", 1, true, Paths::kSameDir, {{kW2ru}}, {2u << 20}, "base.vhd"},
        ChainCase{"Depth2SubdirsW2ruW2ku",
                  2,
                  false,
                  Paths::kSubdirs,
                  {{kW2ru}, {kW2ku, kMacX}},
                  {2u << 20, 512u << 10},
                  "base.vhd"},
        ChainCase{"Depth2AbsoluteAllLocators",
                  2,
                  false,
                  Paths::kAbsolute,
                  {{kMacX, kW2ru, kW2ku}},
                  {512u << 10, 2u << 20, 64u << 10},
                  "base.vhd"},
        ChainCase{"Depth5MixedBlockSizes",
                  5,
                  false,
                  Paths::kSameDir,
                  {{kMacX}, {kW2ru, kW2ku}, {kW2ku}, {kMacX, kW2ru, kW2ku}, {}},
                  {2u << 20, 512u << 10, 32u << 10, 1u << 20, 4u << 10, 2u << 20},
                  "base.vhd"},
        ChainCase{"Depth5SubdirsOverFixed",
                  5,
                  true,
                  Paths::kSubdirs,
                  {{kMacX, kW2ru}, {kW2ku}},
                  {2u << 20},
                  "base.vhd"},
        ChainCase{"Depth2UnreachableNonAscii",
                  2,
                  false,
                  Paths::kUnreachable,
                  {{kW2ku, kMacX, kW2ru}},
                  {2u << 20},
                  "b\u00e4se \u20ac.vhd"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(VhdWriter, BitmapsAsLibvhdiReadsThem) {
  // Arbitrary bitmaps (no padding), junk in every unset sector, dynamic base included: the
  // writer's bitmap bits, bit order and block data against libvhdi's reading of them.
  TempDir dir;
  const ChainCase c{"Depth3Unpadded",       3,         false, Paths::kSameDir, {{kMacX}},
                    {2u << 20, 512u << 10}, "base.vhd"};
  Chain chain = BuildChain(dir, c, /*pad=*/false, /*seed=*/99);
  VhdQuirks junk;
  junk.unset_sector_fill = 0xEE;
  chain.layers[0].Save(chain.files[0], junk);
  const std::vector<uint8_t> fills = {0xEE, kDiffJunk, kDiffJunk, kDiffJunk};
  for (size_t top = 0; top < chain.layers.size(); ++top) {
    const std::vector<VhdImage> below(chain.layers.begin(), chain.layers.begin() + top + 1);
    const Bytes model = LibvhdiModel(below, fills);
    // The model reads junk somewhere: this chain has bitmap bytes libvhdi misreads (if it
    // does not, libvhdi was fixed and PadForLibvhdi can go).
    EXPECT_NE(model, chain.layers[top].Expected());
    EXPECT_TRUE(LibvhdiReads(dir, chain.files[top], model)) << "layer " << top;
  }
}

// ---------------------------------------------------------------------------------------
// Fields, byte by byte.

TEST(VhdWriter, HeadersAndLocators) {
  TempDir dir;
  // The test's checksum agrees with qemu-img's footer and dynamic header.
  const std::string q = dir / "q.vhd";
  ASSERT_EQ(Sh("qemu-img create -q -f vpc " + Quote(q) + " 10M").status, 0);
  const Bytes qemu = ReadFile(q);
  ASSERT_TRUE(ChecksumOk(Slice(qemu, 0, 512), 64));
  ASSERT_TRUE(ChecksumOk(Slice(qemu, 512, 1024), 36));

  VhdImage base = VhdImage::Dynamic(8 * kMiB);
  VhdImage child =
      VhdImage::Differencing(base, "sub/b\u00e4se \u20ac.vhd", {kMacX, kW2ru, kW2ku}, 512u << 10);
  child.Write(9 * kSector + 3, Bytes(10, 0x42));   // block 0: sector 9 only
  child.Write(3 * kMiB + 100, Bytes(1000, 0x43));  // block 6: sectors 0 to 2
  const Bytes file = child.Serialize();
  const auto layout = child.Layout();
  ASSERT_EQ(file.size(), layout.file_size);

  const Bytes footer = Slice(file, file.size() - 512, 512);
  EXPECT_EQ(Slice(file, 0, 512), footer);
  EXPECT_TRUE(ChecksumOk(footer, 64));
  EXPECT_EQ(std::string(footer.begin(), footer.begin() + 8), "conectix");
  EXPECT_EQ(Be32(footer, 8), 2u);
  EXPECT_EQ(Be32(footer, 12), 0x00010000u);
  EXPECT_EQ(Be64(footer, 16), 512u);
  EXPECT_EQ(std::string(footer.begin() + 28, footer.begin() + 32), std::string("tap\0", 4));
  EXPECT_EQ(Be64(footer, 40), 8 * kMiB);
  EXPECT_EQ(Be64(footer, 48), 8 * kMiB);
  EXPECT_EQ(Be32(footer, 56), 240u << 16 | 4 << 8 | 17);  // 8 MiB: 240 cylinders, 4 heads, 17
  EXPECT_EQ(Be32(footer, 60), 4u);
  EXPECT_TRUE(std::equal(child.uuid().begin(), child.uuid().end(), footer.begin() + 68));
  EXPECT_NE(child.uuid(), base.uuid());

  const Bytes header = Slice(file, 512, 1024);
  EXPECT_TRUE(ChecksumOk(header, 36));
  EXPECT_EQ(std::string(header.begin(), header.begin() + 8), "cxsparse");
  EXPECT_EQ(Be64(header, 8), ~uint64_t{0});
  const uint64_t bat = Be64(header, 16);
  EXPECT_EQ(bat, layout.bat_offset);
  EXPECT_EQ(Be32(header, 24), 0x00010000u);
  EXPECT_EQ(Be32(header, 28), 16u);  // 8 MiB / 512 KiB
  EXPECT_EQ(Be32(header, 32), 512u << 10);
  EXPECT_TRUE(std::equal(base.uuid().begin(), base.uuid().end(), header.begin() + 40));
  EXPECT_EQ(Be32(header, 56), base.options().timestamp);
  Bytes name = Utf16Be(u"b\u00e4se \u20ac.vhd");
  name.resize(512, 0);
  EXPECT_EQ(Slice(header, 64, 512), name);

  // Locators: codes, lengths, space in sectors, data areas between the BAT and the blocks.
  const Bytes want_data[] = {
      Bytes{'f', 'i',  'l',  'e', ':', '/', '/',  '.',  '/',  's', 'u', 'b', '/',
            'b', 0xC3, 0xA4, 's', 'e', ' ', 0xE2, 0x82, 0xAC, '.', 'v', 'h', 'd'},
      Utf16Le(u".\\sub\\b\u00e4se \u20ac.vhd"), Utf16Le(u".\\sub\\b\u00e4se \u20ac.vhd")};
  const uint32_t want_code[] = {0x4D616358, 0x57327275, 0x57326B75};  // MacX W2ru W2ku
  uint64_t first_block = UINT64_MAX;
  for (uint64_t off : layout.block_offsets) {
    if (off) first_block = std::min(first_block, off);
  }
  for (size_t i = 0; i < 8; ++i) {
    const size_t e = 576 + 24 * i;
    if (i >= 3) {
      EXPECT_EQ(Slice(header, e, 24), Bytes(24, 0)) << "entry " << i;
      continue;
    }
    EXPECT_EQ(Be32(header, e), want_code[i]);
    const uint32_t len = Be32(header, e + 8);
    EXPECT_EQ(len, want_data[i].size());
    EXPECT_EQ(Be32(header, e + 4), (len + 511) / 512) << "space in sectors";
    const uint64_t at = Be64(header, e + 16);
    EXPECT_EQ(at % 512, 0u);
    EXPECT_GE(at, bat + 512);
    EXPECT_LE(at + (len + 511) / 512 * 512, first_block);
    EXPECT_EQ(Slice(file, at, len), want_data[i]) << "locator " << i;
  }
  VhdQuirks bytes_space;
  bytes_space.locator_space_in_bytes = true;
  EXPECT_EQ(Be32(child.Serialize(bytes_space), 512 + 576 + 4), 512u);

  // The BAT: blocks 0 and 6 in the order written, each a sector bitmap (MSB first) and data.
  for (uint32_t b = 0; b < 16; ++b) {
    const uint32_t entry = Be32(file, bat + 4 * b);
    if (b != 0 && b != 6) {
      EXPECT_EQ(entry, 0xFFFFFFFFu) << "block " << b;
    }
  }
  const uint64_t block0 = uint64_t{Be32(file, bat)} * 512,
                 block6 = uint64_t{Be32(file, bat + 24)} * 512;
  EXPECT_LT(block0, block6);
  EXPECT_EQ(block6, block0 + 512 + (512u << 10));
  Bytes bitmap0(512, 0), bitmap6(512, 0);
  bitmap0[1] = 0x40;  // sector 9
  bitmap6[0] = 0xE0;  // sectors 0, 1, 2
  EXPECT_EQ(Slice(file, block0, 512), bitmap0);
  EXPECT_EQ(Slice(file, block6, 512), bitmap6);
  EXPECT_EQ(Slice(file, block0 + 512 + 9 * kSector, kSector),
            Slice(child.Expected(), 9 * kSector, kSector));
  EXPECT_EQ(Slice(file, block0 + 512 + 8 * kSector, kSector), Bytes(kSector, kDiffJunk));

  // Absolute parent paths.
  EXPECT_EQ(MakeVhdLocator(kMacX, "/vms/base.vhd").text, "file:///vms/base.vhd");
  EXPECT_EQ(MakeVhdLocator(kW2ru, "/vms/base.vhd").text, "\\vms\\base.vhd");
  EXPECT_EQ(MakeVhdLocator(kW2ku, "/vms/base.vhd").text, "C:\\vms\\base.vhd");
  EXPECT_EQ(MakeVhdLocator(kMacX, "./p.vhd").text, "file://./p.vhd");
}

// ---------------------------------------------------------------------------------------
// Damage: each knob as an independent reader (or the bytes) sees it.

TEST(VhdWriter, QuirksAsIndependentReadersSeeThem) {
  TempDir dir;
  VhdImage img = VhdImage::Dynamic(8 * kMiB);
  img.Write(3 * kMiB + 5, RandomBytes(100 * kKiB, 3));
  img.Write(kMiB - 7, RandomBytes(20, 4));
  const Bytes plain = img.Serialize();
  const auto layout = img.Layout();
  const std::string vhd = dir / "q.vhd";
  const auto save = [&](const VhdQuirks& q) {
    img.Save(vhd, q);
    return ReadFile(vhd);
  };
  const auto qemu_info = [&] { return Sh("qemu-img info -f vpc " + Quote(vhd)); };
  using Where = VhdQuirks::Where;

  {  // Footer checksum: qemu reads the copy at offset 0 of a dynamic disk, the end of a fixed one.
    VhdQuirks q;
    q.bad_footer_checksum = Where::kCopy;
    Bytes f = save(q);
    EXPECT_FALSE(ChecksumOk(Slice(f, 0, 512), 64));
    EXPECT_TRUE(ChecksumOk(Slice(f, f.size() - 512, 512), 64));
    EXPECT_NE(qemu_info().output.find("Incorrect header checksum"), std::string::npos);
    q.bad_footer_checksum = Where::kBoth;
    f = save(q);
    EXPECT_FALSE(ChecksumOk(Slice(f, f.size() - 512, 512), 64));
    EXPECT_NE(qemu_info().status, 0);
    q.bad_footer_checksum = Where::kEnd;
    f = save(q);
    EXPECT_TRUE(ChecksumOk(Slice(f, 0, 512), 64));
    EXPECT_FALSE(ChecksumOk(Slice(f, f.size() - 512, 512), 64));
    VhdImage fixed = VhdImage::Fixed(kMiB);
    fixed.Save(vhd);
    EXPECT_EQ(qemu_info().status, 0);
    fixed.Save(vhd, q);
    EXPECT_NE(qemu_info().output.find("Incorrect header checksum"), std::string::npos);
  }
  {  // Header checksum: no reader here checks it; only its 4 bytes change.
    VhdQuirks q;
    q.bad_header_checksum = true;
    const Bytes f = save(q);
    EXPECT_FALSE(ChecksumOk(Slice(f, 512, 1024), 36));
    for (size_t i = 0; i < f.size(); ++i) {
      if (f[i] != plain[i]) {
        EXPECT_TRUE(i >= 512 + 36 && i < 512 + 40) << "byte " << i;
      }
    }
  }
  {  // Disk type 5: libvhdi refuses it.
    VhdQuirks q;
    q.disk_type_field = 5;
    const Bytes f = save(q);
    EXPECT_EQ(Be32(f, 60), 5u);
    EXPECT_TRUE(ChecksumOk(Slice(f, 0, 512), 64));
    const Judgement j = Judge(dir, vhd);
    EXPECT_NE(j.run.status, 0);
    EXPECT_NE(j.run.output.find("unsupported disk type"), std::string::npos) << j.run.output;
  }
  {  // A BAT entry past the end of the file: qemu and libvhdi refuse.
    VhdQuirks q;
    q.bat_overrides[1] = uint32_t(layout.file_size / 512 + 100);
    save(q);
    EXPECT_NE(qemu_info().output.find("points after the end of file"), std::string::npos);
    EXPECT_NE(Judge(dir, vhd).run.status, 0);
  }
  {  // A BAT entry on the dynamic header (sector 1): qemu reads block 0 from there.
    VhdQuirks q;
    q.bat_overrides[0] = 1;
    const Bytes f = save(q);
    ASSERT_EQ(
        Sh("qemu-img convert -f vpc -O raw " + Quote(vhd) + " " + Quote(dir / "o.raw")).status, 0);
    const Bytes read = ReadFile(dir / "o.raw");
    EXPECT_EQ(Slice(read, 0, 2 * kMiB), Slice(f, 512 + layout.bitmap_bytes, 2 * kMiB));
  }
  {  // LV layout: zeros after the footer; qemu takes the copy at offset 0, libvhdi the end.
    VhdQuirks q;
    q.lv_padding = 4 * kMiB - layout.file_size % (4 * kMiB);
    const Bytes f = save(q);
    EXPECT_EQ(f.size() % (4 * kMiB), 0u);
    EXPECT_EQ(Slice(f, 0, plain.size()), plain);
    EXPECT_TRUE(AllZero(Slice(f, plain.size(), f.size() - plain.size())));
    EXPECT_TRUE(QemuReads(dir, vhd, img.Expected()));
    EXPECT_NE(Judge(dir, vhd).run.output.find("unsupported signature"), std::string::npos);
  }

  {  // Zeros between the blocks and the footer at the end: both readers take it.
    VhdQuirks q;
    q.footer_gap = 3 * kMiB;
    const Bytes f = save(q);
    EXPECT_EQ(f.size(), plain.size() + 3 * kMiB);
    EXPECT_EQ(Slice(f, f.size() - 512, 512), Slice(plain, 0, 512));
    EXPECT_TRUE(QemuReads(dir, vhd, img.Expected()));
    EXPECT_TRUE(LibvhdiReads(dir, vhd, img.Expected()));
  }

  // A child: wrong parent id (the judge compares libvhdi's ids), and locators.
  const std::string base = dir / "base.vhd", top = dir / "top.vhd";
  img.Save(base);
  VhdImage child = VhdImage::Differencing(img, "base.vhd");
  child.Write(3 * kMiB + 1000, RandomBytes(3 * kSector, 5));
  PadForLibvhdi(child);
  child.Save(top);
  EXPECT_TRUE(LibvhdiReads(dir, top, child.Expected()));
  VhdQuirks wrong_parent;
  wrong_parent.parent_unique_id = qcowfs_test::RandomVhdUuid();
  child.Save(top, wrong_parent);
  const Judgement j = Judge(dir, top);
  EXPECT_NE(j.run.status, 0);
  EXPECT_NE(j.run.output.find("is not the parent id"), std::string::npos) << j.run.output;

  // No locator at all, or one of an unknown platform: libvhdi goes by the unicode name.
  child.SetLocators({});
  Bytes f = child.Serialize();
  EXPECT_EQ(Slice(f, 512 + 576, 8 * 24), Bytes(8 * 24, 0));
  child.SetLocators({VhdLocator{0x57693272, "base.vhd"}});  // "Wi2r", deprecated
  f = child.Serialize();
  EXPECT_EQ(Be32(f, 512 + 576), 0x57693272u);
  child.Save(top);
  EXPECT_TRUE(LibvhdiReads(dir, top, child.Expected()));
  child.SetParentUnicodeName("");
  child.Save(top);
  EXPECT_NE(Judge(dir, top).run.output.find("without a parent name"), std::string::npos);
}

// The judges can fail: a reference one byte off is caught by both.
TEST(VhdWriter, JudgesCatchAWrongReference) {
  TempDir dir;
  VhdImage img = VhdImage::Dynamic(4 * kMiB);
  img.Write(kMiB + 1, RandomBytes(5000, 9));
  const std::string vhd = dir / "d.vhd";
  img.Save(vhd);
  Bytes wrong = img.Expected();
  wrong[kMiB + 4000] ^= 0x10;
  EXPECT_FALSE(QemuReads(dir, vhd, wrong));
  const auto verdict = LibvhdiReads(dir, vhd, wrong);
  EXPECT_FALSE(verdict);
  EXPECT_NE(std::string(verdict.message()).find("sector 2055"), std::string::npos)
      << verdict.message();
  EXPECT_TRUE(QemuReads(dir, vhd, img.Expected()));
}

}  // namespace
