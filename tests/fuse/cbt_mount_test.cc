// Backups from changed block tracking through the mount: disk.qcow2 of `mount --export
// --changed-blocks` copied out as a backup tool would, each delta written into a mount's
// import.qcow2 (--import, then --import --delta) over a fresh disk. The same without FUSE:
// cli/cbt_backup_test.cc.
#include <gtest/gtest.h>

#include <string>

#include "mount_fixture.h"
#include "test_util.h"
#include "tracked_disk.h"

namespace {

using namespace qcowfs_test;

constexpr uint64_t kDiskSize = (80 << 20) + 4096;

std::string Status(const Mount& m) {
  auto b = ReadFile(m / "import.status");
  return std::string(b.begin(), b.end());
}

// Writes `image` into a mount's import.qcow2 over `target` (with --delta when asked); expects
// success and state: done.
void Import(const TempDir& dir, const std::string& image, const std::string& target, bool delta) {
  Mount m(dir / "in", "--import " + Quote(target) + (delta ? " --delta" : ""));
  ASSERT_TRUE(m.ok()) << m.result().output;
  const CommandResult r = Sh("cp " + Quote(image) + " " + Quote(m / "import.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output << Status(m);
  EXPECT_TRUE(Has(Status(m), "state: done")) << Status(m);
  EXPECT_TRUE(m.Unmount());
}

TEST(CbtMount, AFullExportAndFiveDeltasThroughTheMountRestoreTheFinalDisk) {
  TempDir dir;
  TrackedDisk disk(dir / "vdi", kDiskSize);
  disk.Scribble(40, 21);
  disk.TakeBitmap();
  {
    Mount out(dir / "out", "--export " + Quote(disk.path()));
    ASSERT_TRUE(out.ok()) << out.result().output;
    ASSERT_EQ(Sh("cp " + Quote(out / "disk.qcow2") + " " + Quote(dir / "full.qcow2")).status, 0);
  }
  ASSERT_EQ(Sh("truncate -s " + std::to_string(kDiskSize) + " " + Quote(dir / "restored")).status,
            0);
  Import(dir, dir / "full.qcow2", dir / "restored", false);
  for (int i = 1; i <= 5; ++i) {
    SCOPED_TRACE("delta " + std::to_string(i));
    disk.Scribble(10, 200 + i);
    const std::string text = Base64(disk.TakeBitmap()) + "\n";
    ASSERT_EQ(Sh("printf %s " + Quote(text) + " > " + Quote(dir / "bitmap")).status, 0);
    const std::string delta = dir / ("delta" + std::to_string(i) + ".qcow2");
    {
      Mount out(dir / "out", "--export " + Quote(disk.path()) + " --changed-blocks " +
                                 Quote(dir / "bitmap") + " --backing-name base.raw" +
                                 (i % 2 ? "" : " --cluster-size 1M"));
      ASSERT_TRUE(out.ok()) << out.result().output;
      ASSERT_EQ(Sh("cp " + Quote(out / "disk.qcow2") + " " + Quote(delta)).status, 0);
      // qemu-img reads the file in place as a delta with that backing name.
      EXPECT_TRUE(
          Has(Sh("qemu-img info " + Quote(out / "disk.qcow2")).output, "backing file: base.raw"));
    }
    Import(dir, delta, dir / "restored", true);
    const CommandResult r = Sh("cmp " + Quote(dir / "restored") + " " + Quote(disk.path()));
    EXPECT_EQ(r.status, 0) << r.output;
  }
}

TEST(CbtMount, ABitmapOfAnotherDiskIsRefusedBeforeMounting) {
  TempDir dir;
  TrackedDisk disk(dir / "vdi", kDiskSize);
  const std::string text = Base64(std::string(disk.TakeBitmap().size() + 1, '\0'));
  ASSERT_EQ(Sh("printf %s " + Quote(text) + " > " + Quote(dir / "bitmap")).status, 0);
  Mount out(dir / "out", "--export " + Quote(disk.path()) + " --changed-blocks " +
                             Quote(dir / "bitmap") + " --backing-name base.raw");
  EXPECT_FALSE(out.ok());
  EXPECT_EQ(Lines(out.result().output), 1) << out.result().output;
  EXPECT_TRUE(Has(out.result().output, "takes 161 bytes")) << out.result().output;
  EXPECT_FALSE(IsMounted(dir / "out"));
}

}  // namespace
