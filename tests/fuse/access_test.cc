// Who may use a mount: without allow_other only its owner; with it, other users get exactly
// the access the disks themselves give them (the mount always uses default_permissions).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <tuple>

#include "image_recipes.h"
#include "mount_fixture.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

// Runs a shell command as the unprivileged user nobody.
CommandResult AsNobody(const std::string& command) {
  return Sh("setpriv --reuid=65534 --regid=65534 --clear-groups sh -c " + Quote(command));
}

class Access : public ::testing::Test {
 protected:
  void SetUp() override {
    // Other users must be able to reach the mount points and the image.
    ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
    WriteAt(dir_ / "private", 4096, RandomBytes(1 << 20, 1));
    WriteAt(dir_ / "public", 4096, RandomBytes(1 << 20, 2));
    ASSERT_EQ(chmod((dir_ / "private").c_str(), 0600), 0);
    ASSERT_EQ(chmod((dir_ / "public").c_str(), 0644), 0);
    img_ = BuildImage(dir_, ValidImages()[0]);
    ASSERT_EQ(chmod(img_.c_str(), 0644), 0);
    MakePatternTarget(dir_ / "target", VirtualSize(img_));
    ASSERT_EQ(chmod((dir_ / "target").c_str(), 0600), 0);
  }
  TempDir dir_;
  std::string img_;
};

TEST_F(Access, WithoutAllowOtherOnlyTheOwnerGetsIn) {
  Mount m(dir_ / "mnt",
          "--export " + Quote(dir_ / "public") + " --import " + Quote(dir_ / "target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  auto r = AsNobody("cat " + Quote(m / "disk.qcow2") + " > /dev/null");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("Permission denied"), std::string::npos) << r.output;
  r = AsNobody("cat " + Quote(img_) + " > " + Quote(m / "import.qcow2"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("Permission denied"), std::string::npos) << r.output;
  EXPECT_EQ(Sh("cat " + Quote(m / "disk.qcow2") + " > /dev/null").status, 0);
}

TEST_F(Access, WithAllowOtherTheDisksPermissionsDecide) {
  // A disk only root may read: its image is root's alone too.
  Mount priv(dir_ / "mnt1", "-o allow_other --export " + Quote(dir_ / "private") + " --import " +
                                Quote(dir_ / "target"));
  ASSERT_TRUE(priv.ok()) << priv.result().output;
  struct stat st;
  ASSERT_EQ(stat((priv / "disk.qcow2").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0400u);
  EXPECT_EQ(st.st_uid, 0u);
  auto r = AsNobody("cat " + Quote(priv / "disk.qcow2") + " > /dev/null");
  EXPECT_NE(r.status, 0) << "nobody read a 0600 disk through the mount";
  EXPECT_NE(r.output.find("Permission denied"), std::string::npos) << r.output;
  // A root-only target: nobody may import into it, but may read the status.
  ASSERT_EQ(stat((priv / "import.qcow2").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0200u);
  r = AsNobody("cat " + Quote(img_) + " > " + Quote(priv / "import.qcow2"));
  EXPECT_NE(r.status, 0) << "nobody imported into a 0600 target through the mount";
  EXPECT_NE(r.output.find("Permission denied"), std::string::npos) << r.output;
  EXPECT_EQ(AsNobody("cat " + Quote(priv / "import.status")).status, 0);
  EXPECT_NE(ReadFile(dir_ / "target").size(), 0u);
  // A world-readable disk: anyone may read its image, and gets the same bytes as root.
  Mount pub(dir_ / "mnt2", "-o allow_other --export " + Quote(dir_ / "public"));
  ASSERT_TRUE(pub.ok()) << pub.result().output;
  r = AsNobody("cat " + Quote(pub / "disk.qcow2") + " > " +
               Quote("/tmp/qcowfs-access-" + std::to_string(getpid())));
  EXPECT_EQ(r.status, 0) << r.output;
  const std::string copy = "/tmp/qcowfs-access-" + std::to_string(getpid());
  EXPECT_TRUE(ReadFile(copy) == ReadFile(pub / "disk.qcow2"));
  unlink(copy.c_str());
  // The owner (root) still imports.
  EXPECT_EQ(Sh("cat " + Quote(img_) + " > " + Quote(priv / "import.qcow2")).status, 0);
}

// Whoever reads a chain's image reads every layer: a layer another user may not read takes
// their access away, whatever the top grants (a world-readable image, or one of their own,
// naming a root-only file as its backing file gave them that file through the mount).
TEST_F(Access, WithAllowOtherEveryLayerOfAChainDecides) {
  const std::string top = dir_ / "top.qcow2";
  ASSERT_EQ(
      Sh("qemu-img create -q -f qcow2 -F raw -b " + Quote(dir_ / "private") + " " + Quote(top))
          .status,
      0);
  // The top: world-readable, or nobody's own; the base: 0600 root's, then 0644.
  for (const auto& [base_mode, top_mode, top_owner, readable] :
       std::vector<std::tuple<mode_t, mode_t, uid_t, bool>>{{0600, 0644, 0, false},
                                                            {0600, 0600, 65534, false},
                                                            {0644, 0644, 0, true},
                                                            {0644, 0600, 65534, true}}) {
    char trace[64];
    std::snprintf(trace, sizeof trace, "base %04o, top %04o owned by %u", base_mode, top_mode,
                  top_owner);
    SCOPED_TRACE(trace);
    ASSERT_EQ(chmod((dir_ / "private").c_str(), base_mode), 0);
    ASSERT_EQ(chmod(top.c_str(), top_mode), 0);
    ASSERT_EQ(chown(top.c_str(), top_owner, top_owner), 0);
    Mount m(dir_ / "mnt", "-o allow_other --export " + Quote(top));
    ASSERT_TRUE(m.ok()) << m.result().output;
    const auto r = AsNobody("cat " + Quote(m / "disk.qcow2") + " > /dev/null");
    if (readable) {
      EXPECT_EQ(r.status, 0) << r.output;
    } else {
      EXPECT_NE(r.status, 0) << "nobody read a root-only backing file through the mount";
      EXPECT_NE(r.output.find("Permission denied"), std::string::npos) << r.output;
    }
  }
}

// The commands without a mount open disks as whoever runs them: another user gets one line
// naming the disk and "Permission denied", and writes nothing.
TEST_F(Access, CommandsAsAnotherUserCannotReadARootOnlyDisk) {
  const std::string out = "/tmp/qcowfs-access-out-" + std::to_string(getpid());
  const std::string priv = dir_ / "private", target = dir_ / "target";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"qcow2-to-stdout " + Quote(priv) + " > " + out, priv},
      {"qcow2-to-stdout " + Quote(dir_ / "public") + " --diff " + Quote(priv) + " > " + out, priv},
      {"stream --source " + Quote(priv) + " --destination " + out, priv},
      {"stream_decode " + Quote(target) + " < " + Quote(img_), target},
  };
  for (const auto& [cmd, named] : cases) {
    SCOPED_TRACE(cmd);
    const auto r = AsNobody("rm -f " + out + "; " + Quote(QcowfsBinary()) + " " + cmd);
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_EQ(r.output.rfind("qcowfs: error: ", 0), 0u) << r.output;
    EXPECT_NE(r.output.find("Permission denied"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(named), std::string::npos) << r.output;
    struct stat st {};
    EXPECT_TRUE(stat(out.c_str(), &st) != 0 || st.st_size == 0) << "an image was written";
  }
  unlink(out.c_str());
}

}  // namespace
