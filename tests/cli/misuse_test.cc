// The command line refusing what cannot work, up front and with one line: a second mount
// over a qcowfs mount, a directory as target, a spool directory that cannot hold files; and
// serve keeping its word when its progress reader goes away or a signal stops it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>

#include "image_recipes.h"
#include "mount_fixture.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

std::string Q() { return QcowfsBinary(); }

size_t CountOf(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(Misuse, MountingOverAQcowfsMountIsRefused) {
  TempDir dir;
  WriteAt(dir / "src", 0, RandomBytes(1 << 20, 1));
  Mount m(dir / "mnt", "--export " + Quote(dir / "src"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  const int first = DaemonPid(dir / "mnt");
  auto r =
      Sh("timeout 60 " + Q() + " mount --export " + Quote(dir / "src") + " " + Quote(dir / "mnt"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("is already a qcowfs mount"), std::string::npos) << r.output;
  EXPECT_EQ(Lines(r.output), 1) << r.output;
  EXPECT_EQ(DaemonPid(dir / "mnt"), first) << "a second daemon is serving";
}

// Unmounts `path` on destruction if a command under test mounted it after all.
struct NoMountLeft {
  std::string path;
  ~NoMountLeft() {
    for (int i = 0; i < 10 && IsMounted(path); ++i) Sh("fusermount3 -u " + Quote(path));
    if (IsMounted(path)) Sh("umount -l " + Quote(path));
  }
};

// Several qcowfs started at once on one directory: one mounts, the others refuse.
TEST(Misuse, ConcurrentMountsOnOneDirectoryStackNothing) {
  TempDir dir;
  WriteAt(dir / "src", 0, RandomBytes(1 << 20, 1));
  Sh("mkdir -p " + Quote(dir / "mnt"));
  NoMountLeft guard{dir / "mnt"};
  for (int round = 0; round < 5; ++round) {
    const std::string one = "timeout 60 " + Q() + " mount --export " + Quote(dir / "src") + " " +
                            Quote(dir / "mnt") + " 2>&1; echo \"exit $?\"";
    auto r = Sh("(" + one + ") & (" + one + ") & (" + one + ") & wait");
    EXPECT_EQ(CountOf(r.output, "exit 0"), 1u) << r.output;
    EXPECT_EQ(CountOf(r.output, "is already a qcowfs mount"), 2u) << r.output;
    auto mounts = Sh("grep -c ' " + (dir / "mnt") + " ' /proc/mounts");
    EXPECT_EQ(mounts.output, "1\n") << "round " << round;
    for (int i = 0; i < 5 && IsMounted(dir / "mnt"); ++i)
      Sh("fusermount3 -u " + Quote(dir / "mnt"));
  }
}

TEST(Misuse, DirectoryTargetsAndUnusableSpoolDirectoriesAreUsageErrors) {
  TempDir dir;
  NoMountLeft guard{dir / "mnt"};
  const std::string img = BuildImage(dir, ValidImages()[0]);
  Sh("mkdir -p " + Quote(dir / "adir") + " " + Quote(dir / "mnt"));
  for (const std::string& cmd :
       {"serve --destination " + Quote(dir / "adir") + " < " + Quote(img),
        "stream_decode " + Quote(dir / "adir") + " < " + Quote(img),
        "mount --import " + Quote(dir / "adir") + " " + Quote(dir / "mnt")}) {
    auto r = Sh("timeout 60 " + Q() + " " + cmd);
    EXPECT_EQ(r.status, 2) << cmd << ": " << r.output;
    EXPECT_NE(r.output.find("neither a regular file nor a block device"), std::string::npos)
        << r.output;
    EXPECT_EQ(Lines(r.output), 1) << r.output;
  }
  MakePatternTarget(dir / "target", VirtualSize(img));
  for (const std::string& spool : {std::string("/nonexistent/qcowfs"), img}) {
    for (const std::string& cmd : {"serve --spool-dir " + Quote(spool) + " --destination " +
                                       Quote(dir / "target") + " < " + Quote(img),
                                   "mount --import " + Quote(dir / "target") + " --spool-dir " +
                                       Quote(spool) + " " + Quote(dir / "mnt")}) {
      auto r = Sh("timeout 60 " + Q() + " " + cmd);
      EXPECT_EQ(r.status, 2) << cmd << ": " << r.output;
      EXPECT_NE(r.output.find("--spool-dir"), std::string::npos) << r.output;
      EXPECT_EQ(Lines(r.output), 1) << r.output;
      EXPECT_FALSE(IsMounted(dir / "mnt")) << cmd;
    }
  }
  // The default directory ($TMPDIR) missing is no reason to refuse an import that never
  // spills (an empty root has no /tmp).
  auto r = Sh("TMPDIR=/nonexistent/qcowfs timeout 60 " + Q() + " serve --destination " +
              Quote(dir / "target") + " < " + Quote(img));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "");
}

TEST(Misuse, ServeOutlivesItsProgressReaderAndFailsClearlyWhenStopped) {
  TempDir dir;
  const std::string img = BuildImage(dir, ValidImages()[0]);
  MakePatternTarget(dir / "target", VirtualSize(img));
  // The progress reader reads three bytes and leaves: no SIGPIPE death, the import goes on.
  auto r = Sh("bash -c " +
              Quote(Q() + " serve --progress --machine --destination " + Quote(dir / "target") +
                    " < " + Quote(img) + " 2> " + Quote(dir / "err") +
                    " | head -c 3 > /dev/null; echo ${PIPESTATUS[0]}"));
  EXPECT_EQ(r.output, "0\n") << r.output
                             << std::string(ReadFile(dir / "err").begin(),
                                            ReadFile(dir / "err").end());
  EXPECT_EQ(
      Sh("qemu-img compare -f qcow2 -F raw " + Quote(img) + " " + Quote(dir / "target")).status, 0);
  // SIGTERM while waiting for the rest of the image: a failure, said in one line.
  r = Sh("cd " + Quote(dir.path()) + " && mkfifo in || exit 1\n" + Q() +
         " serve --destination target < in 2> err2 &\npid=$!\n"
         "exec 3> in\nhead -c 100000 " +
         Quote(img) +
         " >&3\nsleep 0.5\n"
         "kill -TERM $pid\nwait $pid\necho $?\ncat err2");
  EXPECT_EQ(r.output.substr(0, 2), "1\n") << r.output;
  EXPECT_NE(r.output.find("interrupted by SIGTERM after"), std::string::npos) << r.output;
  EXPECT_EQ(Lines(r.output), 2) << r.output;
}

// Every subcommand answers --version as the tool does, and a usage error names the help of
// the subcommand it is in.
TEST(Misuse, SubcommandsAnswerVersionAndPointAtTheirHelp) {
  const auto version = Sh(Q() + " --version");
  ASSERT_EQ(version.status, 0) << version.output;
  ASSERT_EQ(version.output.rfind("qcowfs ", 0), 0u) << version.output;
  for (const std::string sub : {"mount", "stream", "serve", "stream_decode", "info", "map", "check",
                                "read_headers", "qcow2-to-stdout"}) {
    SCOPED_TRACE(sub);
    const auto r = Sh(Q() + " " + sub + " --version");
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output, version.output);
    const auto bad = Sh(Q() + " " + sub + " --no-such-option < /dev/null");
    EXPECT_EQ(bad.status, 2) << bad.output;
    EXPECT_EQ(Lines(bad.output), 1) << bad.output;
    EXPECT_EQ(bad.output.rfind("qcowfs: error: ", 0), 0u) << bad.output;
    EXPECT_NE(bad.output.find("(see qcowfs " + sub + " --help)"), std::string::npos) << bad.output;
  }
}

// A closed standard descriptor is never taken by the disk: with stdin closed the import
// fails (empty input) instead of decoding the target onto itself, and with stderr closed
// the error goes nowhere instead of into the disk.
TEST(Misuse, ClosedStandardDescriptorsNeverReachTheDisk) {
  TempDir dir;
  // The disk is itself an image its size can take: read as the input, it would decode.
  const std::string victim = dir / "victim";
  ASSERT_EQ(Sh("qemu-img create -q -f qcow2 " + Quote(victim) +
               " 64K && qemu-io -c 'write -P 1 0 "
               "64k' " +
               Quote(victim) + " > /dev/null && echo junk > " + Quote(dir / "junk"))
                .status,
            0);
  const auto before = ReadFile(victim);
  for (const std::string& cmd :
       {"stream_decode " + Quote(victim) + " <&-",
        "serve --source - --destination " + Quote(victim) + " <&-",
        "stream_decode " + Quote(victim) + " < " + Quote(dir / "junk") + " 2>&-",
        "serve --source - --destination " + Quote(victim) + " < " + Quote(dir / "junk") +
            " 2>&- >&-"}) {
    SCOPED_TRACE(cmd);
    const auto r = Sh("timeout 60 " + Q() + " " + cmd);
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_TRUE(ReadFile(victim) == before) << "the disk was changed";
  }
}

// An image with its dirty bit set that is refused on its header: the refusal is the one
// line (the warning is for images that are imported).
TEST(Misuse, RefusedDirtyImageIsOneLine) {
  TempDir dir;
  const std::string img = dir / "dirty.qcow2";
  ASSERT_EQ(Sh("qemu-img create -q -f qcow2 " + Quote(img) + " 8M && printf '\\001' | dd of=" +
               Quote(img) + " bs=1 seek=79 conv=notrunc status=none && truncate -s 1M " +
               Quote(dir / "small") + " && truncate -s 8M " + Quote(dir / "big"))
                .status,
            0);
  auto r = Sh(Q() + " stream_decode " + Quote(dir / "small") + " < " + Quote(img));
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_EQ(Lines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("the target holds only"), std::string::npos) << r.output;
  r = Sh(Q() + " stream_decode " + Quote(dir / "big") + " < " + Quote(img));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("warning: the image's dirty bit is set"), std::string::npos) << r.output;
}

// A file name holding a newline or an escape sequence keeps the error one line, the
// characters written out.
TEST(Misuse, ControlCharactersInANameKeepTheErrorOneLine) {
  TempDir dir;
  const std::string name = dir / "a\nb\x1b[2J";
  const auto r = Sh(Q() + " info " + Quote(name));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_EQ(Lines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("a\\nb\\x1b[2J"), std::string::npos) << r.output;
}

TEST(Misuse, UnknownCommandIsNamed) {
  const auto r = Sh(Q() + " bogus --source x");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_EQ(r.output, "qcowfs: error: unknown command 'bogus' (see qcowfs --help)\n");
}

}  // namespace
