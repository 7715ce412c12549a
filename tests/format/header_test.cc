#include "qcow/format/header.h"

#include <gtest/gtest.h>

#include <cstring>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/format/image_header.h"

namespace {

qcow::QcowHeader SampleV3() {
  qcow::QcowHeader h;
  h.magic = qcow::kQcowMagic;
  h.version = 3;
  h.cluster_bits = 16;
  h.size = 0x123456789a00ull;
  h.l1_size = 0x1234;
  h.l1_table_offset = 0x30000;
  h.refcount_table_offset = 0x10000;
  h.refcount_table_clusters = 1;
  h.nb_snapshots = 2;
  h.snapshots_offset = 0x70000;
  h.incompatible_features = 0;
  h.compatible_features = 1;
  h.autoclear_features = 2;
  h.refcount_order = 4;
  h.header_length = 112;
  h.compression_type = 1;
  return h;
}

TEST(Header, FieldsSitAtTheSpecOffsets) {
  auto b = qcow::EncodeHeader(SampleV3());
  ASSERT_GE(b.size(), 112u);
  EXPECT_EQ(b[0], 'Q');
  EXPECT_EQ(b[1], 'F');
  EXPECT_EQ(b[2], 'I');
  EXPECT_EQ(b[3], 0xfb);
  EXPECT_EQ(qcow::LoadBe32(&b[4]), 3u);
  EXPECT_EQ(qcow::LoadBe32(&b[20]), 16u);
  EXPECT_EQ(qcow::LoadBe64(&b[24]), 0x123456789a00ull);
  EXPECT_EQ(qcow::LoadBe32(&b[36]), 0x1234u);
  EXPECT_EQ(qcow::LoadBe64(&b[40]), 0x30000u);
  EXPECT_EQ(qcow::LoadBe64(&b[48]), 0x10000u);
  EXPECT_EQ(qcow::LoadBe32(&b[56]), 1u);
  EXPECT_EQ(qcow::LoadBe32(&b[60]), 2u);
  EXPECT_EQ(qcow::LoadBe64(&b[64]), 0x70000u);
  EXPECT_EQ(qcow::LoadBe64(&b[80]), 1u);
  EXPECT_EQ(qcow::LoadBe64(&b[88]), 2u);
  EXPECT_EQ(qcow::LoadBe32(&b[96]), 4u);
  EXPECT_EQ(qcow::LoadBe32(&b[100]), 112u);
  EXPECT_EQ(b[104], 1);
  for (int i = 105; i < 112; ++i) EXPECT_EQ(b[i], 0) << i;
}

TEST(Header, FeatureNameTableThenEndMarker) {
  auto b = qcow::EncodeHeader(SampleV3());
  EXPECT_EQ(qcow::LoadBe32(&b[112]), qcow::kExtFeatureNameTable);
  const uint32_t len = qcow::LoadBe32(&b[116]);
  EXPECT_EQ(len % 48, 0u);
  EXPECT_EQ(len / 48, qcow::KnownFeatureNames().size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&b[120 + 2])), "dirty bit");
  ASSERT_EQ(b.size(), 120u + len + 8);
  EXPECT_EQ(qcow::LoadBe64(&b[120 + len]), 0u);  // end of extensions
  // With 512-byte clusters everything still fits in cluster 0.
  EXPECT_LE(b.size(), 512u);
}

TEST(Header, RoundTripsV3) {
  auto h = SampleV3();
  EXPECT_EQ(qcow::DecodeHeader(qcow::EncodeHeader(h)), h);
}

TEST(Header, RoundTripsV2) {
  auto h = SampleV3();
  h.version = 2;
  h.incompatible_features = h.compatible_features = h.autoclear_features = 0;
  h.header_length = 72;
  h.refcount_order = 4;
  h.compression_type = 0;
  EXPECT_EQ(qcow::DecodeHeader(qcow::EncodeHeader(h)), h);
}

TEST(Header, DecodeRefusesBadMagicVersionAndShortInput) {
  auto b = qcow::EncodeHeader(SampleV3());
  auto bad = b;
  bad[0] = 'X';
  EXPECT_THROW(qcow::DecodeHeader(bad), qcow::FormatError);
  bad = b;
  qcow::StoreBe32(&bad[4], 4);
  try {
    qcow::DecodeHeader(bad);
    FAIL() << "version 4 accepted";
  } catch (const qcow::FormatError& e) {
    EXPECT_STREQ(e.what(), "version is 4; qcow2 allows 2 or 3");
  }
  EXPECT_THROW(qcow::DecodeHeader(std::span(b.data(), 50)), qcow::FormatError);
}

TEST(Header, EncodeRefusesABadHeaderLength) {
  auto h = SampleV3();
  h.header_length = 100;
  EXPECT_THROW(qcow::EncodeHeader(h), qcow::UsageError);
}

// Found by fuzzing: an offset and a length that wrap around 2^64 must not pass as "inside
// cluster 0" (they read far outside it).
TEST(Header, BackingFileNameStaysInsideTheBytesGiven) {
  std::vector<uint8_t> c0(4096, 'x');
  auto h = SampleV3();
  h.backing_file_offset = 1000;
  h.backing_file_size = 10;
  EXPECT_EQ(qcow::BackingFileName(h, c0), "xxxxxxxxxx");
  h.backing_file_offset = UINT64_MAX - 4;
  h.backing_file_size = 10;
  EXPECT_EQ(qcow::BackingFileName(h, c0), "");
  h.backing_file_offset = 4090;
  EXPECT_EQ(qcow::BackingFileName(h, c0), "");
  h.backing_file_offset = 100;
  h.backing_file_size = 1024;
  EXPECT_EQ(qcow::BackingFileName(h, c0), "");
  // And the header check refuses the image naming a backing file, without reading it.
  auto bytes = qcow::EncodeHeader(SampleV3());
  bytes.resize(65536, 0);
  qcow::StoreBe64(&bytes[8], UINT64_MAX - 4);
  qcow::StoreBe32(&bytes[16], 10);
  EXPECT_THROW(qcow::ParseImageHeader(bytes, nullptr), qcow::FormatError);
}

// Header extensions end where the backing file name starts, as QEMU reads them: an old
// version 2 image with the name right after its 72-byte header and no end marker names
// that file; extensions running into the name are refused.
TEST(Header, ExtensionsStopAtTheBackingFileName) {
  // A 1 MiB disk without snapshots whose backing file name (8 bytes) is at name_offset.
  auto small = [](uint32_t version, uint64_t name_offset) {
    qcow::QcowHeader h = SampleV3();
    h.version = version;
    if (version == 2) {
      h.incompatible_features = h.compatible_features = h.autoclear_features = 0;
      h.header_length = 72;
    }
    h.compression_type = 0;
    h.size = 1 << 20;
    h.l1_size = 1;
    h.nb_snapshots = 0;
    h.snapshots_offset = 0;
    h.backing_file_offset = name_offset;
    h.backing_file_size = 8;
    return h;
  };
  auto bytes = qcow::EncodeHeader(small(2, 72));
  bytes.resize(65536, 0);
  std::memcpy(&bytes[72], "base.img", 8);
  EXPECT_EQ(qcow::ParseImageHeader(bytes, nullptr).backing_file, "base.img");
  // A version 3 header whose extension runs into the name.
  bytes = qcow::EncodeHeader(small(3, 128));
  bytes.resize(65536, 0);
  qcow::StoreBe32(&bytes[112], 0xe2792aca);  // backing format, 16 bytes: past 128
  qcow::StoreBe32(&bytes[116], 16);
  std::memcpy(&bytes[128], "base.img", 8);
  try {
    qcow::ParseImageHeader(bytes, nullptr);
    FAIL() << "an extension over the backing file name was accepted";
  } catch (const qcow::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("past the backing file name at offset 128"),
              std::string::npos)
        << e.what();
  }
  // An empty snapshot table must still sit on a cluster boundary (QEMU refuses it too).
  qcow::StoreBe32(&bytes[112], 0);  // the end marker instead
  qcow::StoreBe32(&bytes[116], 0);
  EXPECT_EQ(qcow::ParseImageHeader(bytes, nullptr).backing_file, "base.img");
  qcow::StoreBe64(&bytes[64], 12345);
  EXPECT_THROW(qcow::ParseImageHeader(bytes, nullptr), qcow::FormatError);
}

}  // namespace
