// Who decides a disk's format (qcow/sources/format_policy.h), over bytes in memory: the
// name decides, the bytes only confirm it or make it ambiguous.
#include "qcow/sources/format_policy.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <string>
#include <vector>

#include "qcow/format/errors.h"

namespace {

using qcow::DecideFormat;
using qcow::FormatRole;
using qcow::LayerFormat;

std::vector<uint8_t> Head(const std::string& magic, size_t at = 0) {
  std::vector<uint8_t> head(512, 0xab);
  std::memcpy(head.data() + at, magic.data(), magic.size());
  return head;
}

const std::vector<uint8_t> kQcow2 = Head("QFI\xfb");
const std::vector<uint8_t> kVhdCopy = Head("conectix");
const std::vector<uint8_t> kRawBytes = Head("");

struct stat Stat(mode_t type) {
  struct stat st {};
  st.st_mode = type | 0644;
  return st;
}

qcow::TailReader Tail(const std::vector<uint8_t>& bytes, int* reads = nullptr) {
  return [=] {
    if (reads) ++*reads;
    return bytes;
  };
}

LayerFormat Decide(const std::string& path, mode_t type, const std::vector<uint8_t>& head,
                   FormatRole role, const std::vector<uint8_t>& tail = kRawBytes,
                   std::string* warning = nullptr) {
  return DecideFormat(path, Stat(type), head, Tail(tail), role, [&](const std::string& w) {
    if (warning) *warning = w;
  });
}

TEST(FormatPolicy, NamesSayTheFormat) {
  EXPECT_EQ(qcow::FormatOfName("/sr/0f1e.qcow2"), LayerFormat::kQcow2);
  EXPECT_EQ(qcow::FormatOfName("/sr/0f1e.QCOW2"), LayerFormat::kQcow2);
  EXPECT_EQ(qcow::FormatOfName("/sr/0f1e.vhd"), LayerFormat::kVhd);
  EXPECT_EQ(qcow::FormatOfName("/sr/0f1e.vpc"), LayerFormat::kVhd);
  EXPECT_EQ(qcow::FormatOfName("/sr/0f1e.raw"), LayerFormat::kRaw);
  for (const char* name : {"/sr/disk", "/sr/disk.img", "/sr/qcow2", "/sr/x.qcow2.part", "vhd"}) {
    EXPECT_EQ(qcow::FormatOfName(name), std::nullopt) << name;
  }
}

TEST(FormatPolicy, ProbesAsQemuProbes) {
  EXPECT_EQ(qcow::ProbedFormat(kQcow2), "qcow2");
  EXPECT_EQ(qcow::ProbedFormat(kVhdCopy), "vpc");
  EXPECT_EQ(qcow::ProbedFormat(Head("KDMV")), "vmdk");
  EXPECT_EQ(qcow::ProbedFormat(Head("\x7f\x10\xda\xbe", 64)), "vdi");
  EXPECT_EQ(qcow::ProbedFormat(Head("LUKS\xba\xbe")), "luks");
  EXPECT_EQ(qcow::ProbedFormat(kRawBytes), "");
  EXPECT_EQ(qcow::ProbedFormat({}), "");
}

TEST(FormatPolicy, TheTopIsAnImageOnlyByItsName) {
  for (const auto& head : {kQcow2, kVhdCopy, kRawBytes}) {
    EXPECT_EQ(Decide("/sr/a.raw", S_IFREG, head, FormatRole::kTop, Head("conectix")),
              LayerFormat::kRaw);
    EXPECT_EQ(Decide("/sr/a.qcow2", S_IFREG, head, FormatRole::kTop), LayerFormat::kQcow2);
    EXPECT_EQ(Decide("/sr/a.vhd", S_IFREG, head, FormatRole::kTop), LayerFormat::kVhd);
  }
  EXPECT_EQ(Decide("/sr/disk", S_IFREG, kRawBytes, FormatRole::kTop), LayerFormat::kRaw);
}

TEST(FormatPolicy, AFileNamedNothingThatLooksLikeAnImageIsAmbiguous) {
  for (const auto& [head, tail] :
       {std::pair{kQcow2, kRawBytes}, std::pair{kVhdCopy, kRawBytes},
        std::pair{kRawBytes, Head("conectix")}, std::pair{Head("KDMV"), kRawBytes}}) {
    try {
      Decide("/sr/disk", S_IFREG, head, FormatRole::kTop, tail);
      ADD_FAILURE() << "not refused";
    } catch (const qcow::FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("its name does not say so"), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("--source-format raw"), std::string::npos) << e.what();
    }
  }
}

TEST(FormatPolicy, ABlockDeviceIsRawWithAWarning) {
  std::string warning;
  EXPECT_EQ(
      Decide("/dev/sm/backend/sr/vdi", S_IFBLK, kQcow2, FormatRole::kTop, kRawBytes, &warning),
      LayerFormat::kRaw);
  EXPECT_NE(warning.find("never taken from its bytes"), std::string::npos) << warning;
  warning.clear();
  EXPECT_EQ(Decide("/dev/vg/lv", S_IFBLK, kRawBytes, FormatRole::kTop, kRawBytes, &warning),
            LayerFormat::kRaw);
  EXPECT_EQ(warning, "");
}

// The last sector is read only when the name leaves the question open (a read puts the
// page in the cache, which ext4's SEEK_DATA then reports as data).
TEST(FormatPolicy, TheLastSectorIsReadOnlyWhenNeeded) {
  int reads = 0;
  qcow::DecideFormat("/sr/a.qcow2", Stat(S_IFREG), kQcow2, Tail(kRawBytes, &reads),
                     FormatRole::kTop, nullptr);
  qcow::DecideFormat("/sr/a.raw", Stat(S_IFREG), kRawBytes, Tail(kRawBytes, &reads),
                     FormatRole::kTop, nullptr);
  qcow::DecideFormat("/sr/base", Stat(S_IFREG), kRawBytes, Tail(kRawBytes, &reads),
                     FormatRole::kBacking, nullptr);
  EXPECT_EQ(reads, 0);
  qcow::DecideFormat("/sr/disk", Stat(S_IFREG), kRawBytes, Tail(kRawBytes, &reads),
                     FormatRole::kTop, nullptr);
  EXPECT_EQ(reads, 1);
}

TEST(FormatPolicy, MetadataIsWhatItsBytesSay) {
  EXPECT_EQ(Decide("/dev/vg/VHD-x", S_IFBLK, kVhdCopy, FormatRole::kMetadata), LayerFormat::kVhd);
  EXPECT_EQ(Decide("/sr/map.json", S_IFREG, kQcow2, FormatRole::kMetadata), LayerFormat::kQcow2);
  EXPECT_EQ(Decide("/sr/fixed", S_IFREG, kRawBytes, FormatRole::kMetadata, Head("conectix")),
            LayerFormat::kVhd);
  EXPECT_EQ(Decide("/sr/a.qcow2", S_IFREG, kRawBytes, FormatRole::kMetadata), LayerFormat::kRaw);
}

TEST(FormatPolicy, ABackingFileIsAnImageWhenQemuAndItsNameAgree) {
  EXPECT_EQ(Decide("/sr/base", S_IFREG, kRawBytes, FormatRole::kBacking), LayerFormat::kRaw);
  EXPECT_EQ(Decide("/sr/base.qcow2", S_IFREG, kRawBytes, FormatRole::kBacking), LayerFormat::kRaw);
  EXPECT_EQ(Decide("/sr/base.qcow2", S_IFREG, kQcow2, FormatRole::kBacking), LayerFormat::kQcow2);
  EXPECT_EQ(Decide("/sr/base.vhd", S_IFREG, kVhdCopy, FormatRole::kBacking), LayerFormat::kVhd);
  // QEMU reads a fixed VHD (no copy at its start) under an image as raw.
  EXPECT_EQ(Decide("/sr/base.vhd", S_IFREG, kRawBytes, FormatRole::kBacking, Head("conectix")),
            LayerFormat::kRaw);
  for (const auto& [name, head] :
       {std::pair{"/sr/base", kQcow2}, std::pair{"/sr/base.raw", kQcow2},
        std::pair{"/sr/base.vhd", kQcow2}, std::pair{"/sr/base.qcow2", kVhdCopy},
        std::pair{"/dev/vg/lv", kQcow2}}) {
    EXPECT_THROW(Decide(name, S_IFREG, head, FormatRole::kBacking), qcow::FormatError) << name;
  }
}

}  // namespace
