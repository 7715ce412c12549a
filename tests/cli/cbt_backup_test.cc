// Backups from changed block tracking, as a backup tool takes them: a full export, then
// deltas of the blocks a CBT bitmap names (--changed-blocks) with the old snapshot's data
// gone, restored in order onto a fresh disk with serve and serve --delta, and applied by
// qemu-img and stream_decode. The tracking is simulated: the test writes the disk and
// records each write in a bitmap. No FUSE; the mount's twin is fuse/cbt_mount_test.cc.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "test_util.h"
#include "tracked_disk.h"

namespace {

using namespace qcowfs_test;

std::string Q() { return QcowfsBinary(); }

// Not a multiple of 64 KiB: the last block is short and the bitmap's last byte part padding.
constexpr uint64_t kDiskSize = (96 << 20) + 12345;

void WriteText(const std::string& path, const std::string& text) {
  std::vector<uint8_t> bytes(text.begin(), text.end());
  ASSERT_EQ(Sh("rm -f " + Quote(path)).status, 0);
  WriteAt(path, 0, bytes);
}

class CbtBackup : public ::testing::Test {
 protected:
  void SetUp() override {
    disk_.Scribble(60, 1);
    disk_.TakeBitmap();  // CBT starts with the first snapshot
  }
  // Copies the disk as it is now (a snapshot) to `name`.
  std::string Snapshot(const std::string& name) {
    const std::string to = dir_ / name;
    EXPECT_EQ(Sh("cp --sparse=always " + Quote(disk_.path()) + " " + Quote(to)).status, 0);
    return to;
  }
  // Expects file `a` to hold exactly the bytes of the disk.
  void ExpectTheDisk(const std::string& a, const std::string& how) {
    const CommandResult r = Sh("cmp " + Quote(a) + " " + Quote(disk_.path()));
    EXPECT_EQ(r.status, 0) << how << ": " << r.output;
  }
  // Writes the bitmap taken now to a file in the form of round `i`, and returns the option
  // that names it: base64 with a newline (as `xe` prints it), without one, wrapped at 76
  // columns (as base64(1) prints it), or the raw bits.
  std::string BitmapArg(int i, const std::string& bits) {
    const std::string path = dir_ / ("bitmap" + std::to_string(i));
    std::string text = Base64(bits);
    switch (i % 4) {
      case 0:
        text += "\n";
        break;
      case 1:
        break;
      case 2: {
        std::string wrapped;
        for (size_t at = 0; at < text.size(); at += 76) wrapped += text.substr(at, 76) + "\n";
        text = wrapped;
        break;
      }
      default:
        text = bits;
    }
    WriteText(path, text);
    return Quote(path);
  }

  TempDir dir_;
  TrackedDisk disk_{dir_ / "vdi", kDiskSize};
};

TEST_F(CbtBackup, AFullExportAndFiveDeltasRestoreTheFinalDisk) {
  // The full backup, restored onto a fresh disk.
  ASSERT_EQ(Sh(Q() + " stream --source " + Quote(disk_.path()) + " --destination " +
               Quote(dir_ / "full.qcow2"))
                .status,
            0);
  ASSERT_EQ(Sh("truncate -s " + std::to_string(kDiskSize) + " " + Quote(dir_ / "restored")).status,
            0);
  CommandResult r = Sh(Q() + " serve --source " + Quote(dir_ / "full.qcow2") + " --destination " +
                       Quote(dir_ / "restored"));
  ASSERT_EQ(r.status, 0) << r.output;
  Snapshot("snap0");
  // Cluster sizes: blocks of 64 KiB in clusters of 64 KiB, larger (a cluster with one changed
  // block goes whole) and smaller.
  const char* clusters[] = {"64K", "2M", "4K", "64K", "256K"};
  for (int i = 1; i <= 5; ++i) {
    SCOPED_TRACE("delta " + std::to_string(i));
    disk_.Scribble(12, 100 + i);
    const uint64_t changed = disk_.changed_blocks();
    const std::string bits = disk_.TakeBitmap();
    const std::string delta = dir_ / ("delta" + std::to_string(i) + ".qcow2");
    // The old snapshot's data is not needed: only its name goes into the delta.
    r = Sh(Q() + " stream --source " + Quote(disk_.path()) + " --changed-blocks " +
           BitmapArg(i, bits) + " --backing-name snap" + std::to_string(i - 1) +
           " --cluster-size " + clusters[i - 1] + " --destination " + Quote(delta));
    ASSERT_EQ(r.status, 0) << r.output;
    // qemu-img reads the delta over the old snapshot as the disk.
    r = Sh("qemu-img check -q " + Quote(delta) + " && qemu-img compare -q -f qcow2 -F raw " +
           Quote(delta) + " " + Quote(disk_.path()));
    EXPECT_EQ(r.status, 0) << r.output;
    // It holds the changed clusters only: no more bytes than they take, with the tables.
    struct stat st;
    ASSERT_EQ(stat(delta.c_str(), &st), 0);
    const uint64_t cluster = i == 2 ? 2 << 20 : i == 5 ? 256 << 10 : 64 << 10;
    EXPECT_LE(static_cast<uint64_t>(st.st_size),
              changed * std::max<uint64_t>(cluster, 64 << 10) + (1 << 20) + 8 * cluster);
    r = Sh(Q() + " serve --delta --source " + Quote(delta) + " --destination " +
           Quote(dir_ / "restored"));
    ASSERT_EQ(r.status, 0) << r.output;
    ExpectTheDisk(dir_ / "restored", "restored after delta " + std::to_string(i));
    Snapshot("snap" + std::to_string(i));
  }
}

TEST_F(CbtBackup, QemuImgAndStreamDecodeApplyADeltaOntoACopyOfTheBase) {
  const std::string base = Snapshot("base.raw");
  disk_.Scribble(20, 7);
  const std::string bits_arg = BitmapArg(0, disk_.TakeBitmap());
  const std::string delta = dir_ / "delta.qcow2";
  CommandResult r = Sh(Q() + " stream --source " + Quote(disk_.path()) + " --changed-blocks " +
                       bits_arg + " --backing-name base.raw --destination " + Quote(delta));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(Has(Sh("qemu-img info " + Quote(delta)).output, "backing file format: raw"));
  // qemu-img: rebase onto a copy of the base, then commit into it.
  ASSERT_EQ(Sh("cp --sparse=always " + Quote(base) + " " + Quote(dir_ / "copy1.raw")).status, 0);
  ASSERT_EQ(Sh("cp " + Quote(delta) + " " + Quote(dir_ / "d1.qcow2")).status, 0);
  r = Sh("qemu-img rebase -u -F raw -b copy1.raw " + Quote(dir_ / "d1.qcow2") +
         " && qemu-img commit -q " + Quote(dir_ / "d1.qcow2"));
  ASSERT_EQ(r.status, 0) << r.output;
  ExpectTheDisk(dir_ / "copy1.raw", "qemu-img commit");
  // stream_decode, as xapi's importer: data and zero clusters written, the rest untouched.
  ASSERT_EQ(Sh("cp --sparse=always " + Quote(base) + " " + Quote(dir_ / "copy2.raw")).status, 0);
  r = Sh(Q() + " stream_decode " + Quote(dir_ / "copy2.raw") + " < " + Quote(delta));
  ASSERT_EQ(r.status, 0) << r.output;
  ExpectTheDisk(dir_ / "copy2.raw", "stream_decode");
  // qcow2-to-stdout makes the same delta (changed clusters as data, for xapi's importer).
  r = Sh(Q() + " qcow2-to-stdout " + Quote(disk_.path()) + " --changed-blocks " + bits_arg +
         " --backing-name base.raw > " + Quote(dir_ / "d2.qcow2"));
  ASSERT_EQ(r.status, 0) << r.output;
  r = Sh("qemu-img compare -q -f qcow2 -F raw " + Quote(dir_ / "d2.qcow2") + " " +
         Quote(disk_.path()));
  EXPECT_EQ(r.status, 0) << r.output;
  ASSERT_EQ(Sh("cp --sparse=always " + Quote(base) + " " + Quote(dir_ / "copy3.raw")).status, 0);
  r = Sh(Q() + " serve --delta --source " + Quote(dir_ / "d2.qcow2") + " --destination " +
         Quote(dir_ / "copy3.raw"));
  ASSERT_EQ(r.status, 0) << r.output;
  ExpectTheDisk(dir_ / "copy3.raw", "serve --delta of qcow2-to-stdout's delta");
}

TEST_F(CbtBackup, ABitmapOfAllOnesHoldsWhatAFullExportHolds) {
  const std::string bits(disk_.TakeBitmap().size(), '\xff');
  WriteText(dir_ / "ones", Base64(bits) + "\n");
  // The backing file is junk: a delta of every cluster reads as the disk whatever it holds.
  WriteAt(dir_ / "junk.raw", 0, RandomBytes(kDiskSize, 9));
  CommandResult r = Sh(Q() + " stream --source " + Quote(disk_.path()) + " --changed-blocks " +
                       Quote(dir_ / "ones") + " --backing-name junk.raw --destination " +
                       Quote(dir_ / "all.qcow2"));
  ASSERT_EQ(r.status, 0) << r.output;
  r = Sh("qemu-img compare -q -f qcow2 -F raw " + Quote(dir_ / "all.qcow2") + " " +
         Quote(disk_.path()));
  EXPECT_EQ(r.status, 0) << r.output;
  ASSERT_EQ(Sh(Q() + " stream --source " + Quote(disk_.path()) + " --destination " +
               Quote(dir_ / "full.qcow2"))
                .status,
            0);
  r = Sh("qemu-img compare -q " + Quote(dir_ / "all.qcow2") + " " + Quote(dir_ / "full.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
}

TEST_F(CbtBackup, AnEmptyBitmapGivesAValidEmptyDelta) {
  WriteText(dir_ / "none", Base64(disk_.TakeBitmap()));
  CommandResult r = Sh(Q() + " stream --source " + Quote(disk_.path()) + " --changed-blocks " +
                       Quote(dir_ / "none") + " --backing-name base.raw --destination " +
                       Quote(dir_ / "empty.qcow2"));
  ASSERT_EQ(r.status, 0) << r.output;
  // The base (its data) is there for qemu-img to open, as it is for a restore.
  ASSERT_EQ(Sh("truncate -s " + std::to_string(kDiskSize) + " " + Quote(dir_ / "base.raw")).status,
            0);
  r = Sh("qemu-img check -q " + Quote(dir_ / "empty.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
  // Nothing allocated in the delta itself: everything reads from the backing file.
  r = Sh("qemu-img map --output=json " + Quote(dir_ / "empty.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "\"depth\": 1")) << r.output;
  EXPECT_FALSE(Has(r.output, "\"depth\": 0")) << r.output;
  // Applied, it changes nothing.
  WriteAt(dir_ / "target", 0, RandomBytes(kDiskSize, 3));
  const std::vector<uint8_t> before = ReadFile(dir_ / "target");
  r = Sh(Q() + " serve --delta --source " + Quote(dir_ / "empty.qcow2") + " --destination " +
         Quote(dir_ / "target"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(ReadFile(dir_ / "target") == before);
}

TEST_F(CbtBackup, ABitmapOfAnotherDiskOrNotBase64IsRefusedAndNothingIsWritten) {
  const std::string bits = disk_.TakeBitmap();  // 193 bytes
  struct Case {
    std::string text, says;
  } cases[] = {
      {Base64(bits + std::string(8, '\xff')) + "\n", "bitmap of 201 bytes"},
      {Base64(bits.substr(0, bits.size() - 1)) + "\n", "bitmap of 192 bytes"},
      {bits.substr(0, bits.size() - 1), "raw bitmap of 193 bytes (it has 192 bytes)"},
      {"this-is-not-base64\n", "'-', which base64 has not, at byte 4"},
  };
  for (const Case& c : cases) {
    WriteText(dir_ / "bad", c.text);
    for (const std::string& cmd :
         {Q() + " stream --source " + Quote(disk_.path()) + " --changed-blocks " +
              Quote(dir_ / "bad") + " --backing-name b --destination " + Quote(dir_ / "out"),
          Q() + " qcow2-to-stdout " + Quote(disk_.path()) + " --changed-blocks " +
              Quote(dir_ / "bad") + " --backing-name b > " + Quote(dir_ / "out")}) {
      SCOPED_TRACE(cmd);
      const CommandResult r = Sh(cmd);
      EXPECT_NE(r.status, 0);
      EXPECT_EQ(Lines(r.output), 1) << r.output;
      EXPECT_TRUE(Has(r.output, c.says)) << r.output;
      if (c.says.rfind("bitmap of", 0) == 0) {
        EXPECT_TRUE(Has(r.output, std::to_string(kDiskSize) + " bytes, which takes 193 bytes"))
            << r.output;
      }
      struct stat st;
      EXPECT_TRUE(stat((dir_ / "out").c_str(), &st) != 0 || st.st_size == 0) << "an image was left";
      Sh("rm -f " + Quote(dir_ / "out"));
    }
  }
  // --backing-name is required: the delta must say what it applies over.
  WriteText(dir_ / "good", Base64(bits));
  const CommandResult r = Sh(Q() + " stream --source " + Quote(disk_.path()) +
                             " --changed-blocks " + Quote(dir_ / "good") + " --destination null:");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(Has(r.output, "--changed-blocks needs --backing-name")) << r.output;
}

TEST_F(CbtBackup, TheBitmapFromADescriptorOrAPipe) {
  disk_.Scribble(5, 11);
  const std::string bits = disk_.TakeBitmap();
  WriteText(dir_ / "bm", Base64(bits) + "\n");
  CommandResult r = Sh(Q() + " stream --source " + Quote(disk_.path()) +
                       " --changed-blocks fd:7 --backing-name b --destination " +
                       Quote(dir_ / "a.qcow2") + " 7< " + Quote(dir_ / "bm"));
  ASSERT_EQ(r.status, 0) << r.output;
  r = Sh("cat " + Quote(dir_ / "bm") + " | " + Q() + " stream --source " + Quote(disk_.path()) +
         " --changed-blocks fd:0 --backing-name b --destination " + Quote(dir_ / "b.qcow2"));
  ASSERT_EQ(r.status, 0) << r.output;
  r = Sh(Q() + " stream --source " + Quote(disk_.path()) + " --changed-blocks " +
         Quote(dir_ / "bm") + " --backing-name b --destination " + Quote(dir_ / "c.qcow2"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(ReadFile(dir_ / "a.qcow2") == ReadFile(dir_ / "c.qcow2"));
  EXPECT_TRUE(ReadFile(dir_ / "b.qcow2") == ReadFile(dir_ / "c.qcow2"));
  // A pipe by name, as bash's <(...) gives one.
  r = Sh("bash -c " +
         Quote(Q() + " stream --source " + Quote(disk_.path()) + " --changed-blocks <(cat " +
               Quote(dir_ / "bm") + ") --backing-name b --destination " + Quote(dir_ / "d.qcow2")));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(ReadFile(dir_ / "d.qcow2") == ReadFile(dir_ / "c.qcow2"));
  // A named FIFO whose writer comes later is waited for, not read as an empty bitmap.
  ASSERT_EQ(Sh("mkfifo " + Quote(dir_ / "fifo")).status, 0);
  r = Sh("(sleep 1; cat " + Quote(dir_ / "bm") + " > " + Quote(dir_ / "fifo") + ") & " + Q() +
         " stream --source " + Quote(disk_.path()) + " --changed-blocks " + Quote(dir_ / "fifo") +
         " --backing-name b --destination " + Quote(dir_ / "e.qcow2") + "; rc=$?; wait; exit $rc");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(ReadFile(dir_ / "e.qcow2") == ReadFile(dir_ / "c.qcow2"));
  // A device is never opened (opening one may act), nor a directory.
  for (const char* path : {"/dev/null", "/dev/zero", "/tmp"}) {
    r = Sh(Q() + " stream --source " + Quote(disk_.path()) + " --changed-blocks " + path +
           " --backing-name b --destination null:");
    EXPECT_EQ(r.status, 2) << path << ": " << r.output;
    EXPECT_TRUE(Has(r.output, "is not a file or a pipe")) << r.output;
    EXPECT_EQ(Lines(r.output), 1) << r.output;
  }
  // A descriptor the command was not given is refused.
  r = Sh(Q() + " stream --source " + Quote(disk_.path()) +
         " --changed-blocks fd:9 --backing-name b --destination null:");
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(Lines(r.output), 1) << r.output;
}

}  // namespace
