// The crafted images (crafted_cases*.cc) written into a real mount's import.qcow2, front to
// back with cat and again in shuffled 4 KiB pwrites by a second writer of the same mount,
// judged like the library suite: close() 0 only when the target equals what qemu-img
// convert reads; a clean, readable image is never refused unless it was cut short.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include "crafted_cases.h"
#include "mount_fixture.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;
using namespace qcowfs_test::crafted;

std::string Status(const Mount& m) {
  auto b = ReadFile(m / "import.status");
  return std::string(b.begin(), b.end());
}

// The random layouts are left to the library suite: these are the cases made by hand.
std::vector<size_t> HandMadeCases() {
  std::vector<size_t> out;
  for (size_t i = 0; i < AllCases().size(); ++i) {
    if (AllCases()[i].name.rfind("random_layout_", 0) != 0) out.push_back(i);
  }
  return out;
}

class CraftedMount : public ::testing::TestWithParam<size_t> {};

TEST_P(CraftedMount, CloseSucceedsOnlyWithQemusBytes) {
  const Case& k = AllCases()[GetParam()];
  TempDir dir;
  const Built b = k.build();
  const std::string img = dir / "img.qcow2", raw = dir / "img.raw";
  WriteAt(img, 0, b.bytes);
  const bool clean = Sh("qemu-img check -f qcow2 " + Quote(img)).status == 0;
  const bool converted =
      Sh("qemu-img convert -f qcow2 -O raw " + Quote(img) + " " + Quote(raw)).status == 0;
  const uint64_t size = std::max<uint64_t>(b.virtual_size, 512);
  // Filled with a pattern, in place (the mount holds the file open): ranges the import
  // must zero and does not show.
  const std::vector<uint8_t> pattern(size, 0xa5);
  WriteAt(dir / "target", 0, pattern);
  Mount mount(dir / "mnt", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(mount.ok()) << mount.result().output;
  auto judge = [&](bool ok, const std::string& how) {
    const std::string status = Status(mount);
    if (ok) {
      ASSERT_TRUE(converted) << how << ": close() said done, qemu-img convert fails\n" << status;
      auto target = ReadFile(dir / "target");
      target.resize(b.virtual_size);
      EXPECT_TRUE(target == ReadFile(raw))
          << how << ": close() said done but the target differs from qemu-img convert";
    } else if (clean && converted && !k.truncated) {
      ADD_FAILURE() << how << ": a clean image that qemu-img reads was refused\n" << status;
    }
  };
  // cat: front to back.
  const bool by_cat = Sh("cat " + Quote(img) + " > " + Quote(mount / "import.qcow2")).status == 0;
  judge(by_cat, "cat");
  // A second writer of the same mount, 4 KiB pieces in a shuffled order.
  WriteAt(dir / "target", 0, pattern);
  const int fd = open((mount / "import.qcow2").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << strerror(errno);
  std::vector<uint64_t> offsets;
  for (uint64_t off = 0; off < b.bytes.size(); off += 4096) offsets.push_back(off);
  std::shuffle(offsets.begin(), offsets.end(), std::mt19937(7));
  bool written = true;
  for (uint64_t off : offsets) {
    const uint64_t n = std::min<uint64_t>(4096, b.bytes.size() - off);
    written = written && pwrite(fd, b.bytes.data() + off, n, static_cast<off_t>(off)) ==
                             static_cast<ssize_t>(n);
  }
  const bool by_pwrite = close(fd) == 0 && written;
  judge(by_pwrite, "shuffled pwrite");
}

INSTANTIATE_TEST_SUITE_P(Images, CraftedMount, ::testing::ValuesIn(HandMadeCases()),
                         [](const auto& info) { return AllCases()[info.param].name; });

}  // namespace
