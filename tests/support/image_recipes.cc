#include "image_recipes.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>

namespace qcowfs_test {

namespace {
// A 64 MiB raw disk with data at odd places and a hole in the middle.
const char* kRaw =
    "truncate -s 64M raw && "
    "dd if=/dev/urandom of=raw bs=64k count=40 seek=3 conv=notrunc status=none && "
    "dd if=/dev/urandom of=raw bs=1k count=7 seek=20001 conv=notrunc status=none && "
    "dd if=/dev/urandom of=raw bs=512 count=1 seek=131071 conv=notrunc status=none && ";
}  // namespace

const std::vector<ImageRecipe>& ValidImages() {
  static const std::vector<ImageRecipe> images = {
      {"plain_convert", std::string(kRaw) + "qemu-img convert -f raw -O qcow2 raw img.qcow2"},
      {"compat_0_10",
       std::string(kRaw) + "qemu-img convert -f raw -O qcow2 -o compat=0.10 raw img.qcow2"},
      {"cluster_512",
       std::string(kRaw) + "qemu-img convert -f raw -O qcow2 -o cluster_size=512 raw img.qcow2"},
      {"cluster_2m",
       std::string(kRaw) + "qemu-img convert -f raw -O qcow2 -o cluster_size=2M raw img.qcow2"},
      {"refcount_bits_1",
       std::string(kRaw) + "qemu-img convert -f raw -O qcow2 -o refcount_bits=1 raw img.qcow2"},
      {"refcount_bits_64",
       std::string(kRaw) + "qemu-img convert -f raw -O qcow2 -o refcount_bits=64 raw img.qcow2"},
      {"compressed_zlib", std::string(kRaw) + "qemu-img convert -c -f raw -O qcow2 raw img.qcow2"},
      {"compressed_zstd", std::string(kRaw) +
                              "qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd "
                              "raw img.qcow2"},
      // Compressible data in a sparse disk: many data clusters before their L2 table.
      {"compressed_sparse",
       "truncate -s 256M raw && for i in 1 7 40 100 200 255; do "
       "yes qcowfs-$i | head -c 3M | dd of=raw bs=1M seek=$i conv=notrunc status=none; done && "
       "qemu-img convert -c -f raw -O qcow2 -o cluster_size=4k raw img.qcow2"},
      // Growing the disk moves the L1 table to the end of the file, after all data.
      {"resized",
       "qemu-img create -q -f qcow2 img.qcow2 64M && "
       "qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x22 60M 3M' img.qcow2 >/dev/null && "
       "qemu-img resize -q img.qcow2 8G && "
       "qemu-io -c 'write -P 0x33 5G 1M' img.qcow2 >/dev/null"},
      {"extended_l2",
       "qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k img.qcow2 32M && "
       "qemu-io -c 'write -P 0xaa 4k 4k' -c 'write -P 0xbb 100k 8k' -c 'write -P 0xcc 1M 300k' "
       "-c 'write -z 1100k 8k' -c 'write -z -u 4M 128k' -c 'write -P 0xdd 20M 4k' "
       "img.qcow2 >/dev/null"},
      {"write_zeroes",
       "qemu-img create -q -f qcow2 img.qcow2 16M && "
       "qemu-io -c 'write -P 0x01 0 4M' -c 'write -z 64k 64k' -c 'write -z -u 256k 128k' "
       "-c 'write -z 3M 2M' img.qcow2 >/dev/null"},
      {"random_writes_discards",
       "qemu-img create -q -f qcow2 img.qcow2 32M && "
       "qemu-io -c 'write -P 0x41 20M 1M' -c 'write -P 0x42 1M 64k' -c 'write -P 0x43 30M 512' "
       "-c 'write -P 0x44 7M 100k' -c 'discard 20M 512k' -c 'write -P 0x45 0 8k' "
       "-c 'discard 7M 64k' -c 'write -P 0x46 12M 3M' -c 'write -P 0x47 20M 64k' "
       "img.qcow2 >/dev/null"},
      {"snapshot_then_writes",
       "qemu-img create -q -f qcow2 img.qcow2 16M && "
       "qemu-io -c 'write -P 0x51 0 2M' img.qcow2 >/dev/null && "
       "qemu-img snapshot -c snap1 img.qcow2 && "
       "qemu-io -c 'write -P 0x52 1M 2M' -c 'write -z 0 64k' img.qcow2 >/dev/null"},
      {"persistent_bitmap",
       "qemu-img create -q -f qcow2 img.qcow2 16M && qemu-img bitmap --add img.qcow2 bm0 && "
       "qemu-io -c 'write -P 0x61 3M 1M' img.qcow2 >/dev/null"},
      {"preallocation_metadata",
       "qemu-img create -q -f qcow2 -o preallocation=metadata img.qcow2 8M && "
       "qemu-io -c 'write -P 0x71 1M 64k' img.qcow2 >/dev/null"},
      // The last compressed cluster's sector span runs past the end of the file, which the
      // format allows: the zero padding after the last deflate stream is cut off.
      {"compressed_span_past_end",
       "yes qcowfs-span | head -c 5M > raw && qemu-img convert -c -f raw -O qcow2 raw img.qcow2",
       [](const std::string& img) {
         const auto b = ReadFile(img);
         size_t end = b.size();
         while (end > 0 && b[end - 1] == 0) --end;
         ASSERT_LT(end, b.size()) << "no padding to cut";
         ASSERT_EQ(truncate(img.c_str(), static_cast<off_t>(end)), 0);
       }},
      {"empty_image", "qemu-img create -q -f qcow2 img.qcow2 16M"},
      {"zero_size_image", "qemu-img create -q -f qcow2 img.qcow2 0"},
  };
  return images;
}

std::string BuildImage(const TempDir& dir, const ImageRecipe& r) {
  auto out = Sh("cd " + Quote(dir.path()) + " && " + r.commands);
  EXPECT_EQ(out.status, 0) << r.name << ": " << out.output;
  if (r.after) r.after(dir / "img.qcow2");
  return dir / "img.qcow2";
}

uint64_t VirtualSize(const std::string& image) {
  auto r = Sh("qemu-img info --output=json " + Quote(image) +
              " | sed -n 's/.*\"virtual-size\": \\([0-9]*\\).*/\\1/p' | head -1");
  EXPECT_EQ(r.status, 0) << r.output;
  return std::stoull(r.output);
}

void ExpectAppliedOntoPattern(const TempDir& dir, const std::string& image,
                              const std::string& target) {
  const std::string raw = dir / "applied_image.raw", expected = dir / "applied_expected";
  ASSERT_EQ(Sh("qemu-img convert -O raw " + Quote(image) + " " + Quote(raw)).status, 0);
  MakePatternTarget(expected, VirtualSize(image));
  const auto map = Sh("qemu-img map --output=json " + Quote(image));
  ASSERT_EQ(map.status, 0) << map.output;
  const auto starts = JsonValues(map.output, "start"), lengths = JsonValues(map.output, "length"),
             present = JsonValues(map.output, "present");
  ASSERT_EQ(starts.size(), present.size()) << map.output;
  ASSERT_EQ(starts.size(), lengths.size()) << map.output;
  bool some_present = false;
  for (size_t i = 0; i < starts.size(); ++i) {
    if (present[i] != "true") continue;
    some_present = true;
    ASSERT_EQ(Sh("dd if=" + Quote(raw) + " of=" + Quote(expected) +
                 " bs=64K iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc"
                 " status=none skip=" +
                 starts[i] + " seek=" + starts[i] + " count=" + lengths[i])
                  .status,
              0);
  }
  EXPECT_TRUE(some_present) << "the image allocates nothing: the check proves little";
  // qemu-img compare skips the holes both files have (an 8 GiB target is mostly holes).
  const auto cmp = Sh("qemu-img compare -q -f raw -F raw " + Quote(expected) + " " + Quote(target));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
}

void MakePatternTarget(const std::string& path, uint64_t size) {
  // The whole of a small target, the first 64 MiB of a large one, then a MiB every
  // 1/64th of it and its last MiB: enough that a range the import fails to zero shows,
  // without writing gigabytes for every test.
  constexpr uint64_t kDense = 64ull << 20, kBlock = 1ull << 20;
  std::vector<uint8_t> pattern(std::min(size, kDense));
  static const char kText[] = "qcowfs-pattern\n";
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = kText[i % (sizeof kText - 1)];
  ASSERT_EQ(
      Sh("rm -f " + Quote(path) + " && truncate -s " + std::to_string(size) + " " + Quote(path))
          .status,
      0);
  WriteAt(path, 0, pattern);
  if (size <= kDense) return;
  pattern.resize(kBlock);
  const uint64_t step = std::max(kDense, size / 64 / kBlock * kBlock);
  for (uint64_t off = kDense; off + kBlock <= size; off += step) WriteAt(path, off, pattern);
  WriteAt(path, size - kBlock, pattern);
}

}  // namespace qcowfs_test
