// SIGTERM, SIGINT and SIGHUP sent to `qcowfs mount` at random moments of its start-up and
// serving: as a daemon (to the command waiting for the daemon's ready report, then to the
// daemon itself) and in the foreground. Every run ends within a second with one line, leaves
// no mount and no process behind. Also a stream into a file system that runs out of room only
// when the data reaches the disk, which must fail.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>

#include "mount_fixture.h"
#include "stop_trials.h"

using namespace qcowfs_test;

namespace {

// Waits up to `seconds` until nothing is mounted at mnt and no qcowfs serves it.
bool GoneWithin(const std::string& mnt, double seconds) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    if (!IsMounted(mnt) && DaemonPid(mnt) < 0) return true;
    if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(seconds)) {
      return false;
    }
    usleep(2000);
  }
}

// Unmounts whatever a failed run left at the mount points, so that no test leaves a mount.
struct Unmounter {
  std::vector<std::string> mountpoints;
  ~Unmounter() {
    for (const auto& m : mountpoints) {
      if (IsMounted(m)) Sh("umount -l " + Quote(m));
    }
  }
};

std::vector<StopRun> MountRuns(const TempDir& dir, Unmounter& unmounter, bool foreground,
                               int count) {
  std::mt19937 rng{std::random_device{}()};
  std::vector<StopRun> runs;
  for (int i = 0; i < count; ++i) {
    // Names none of which contains another, for DaemonPid.
    const std::string mnt = dir / ("mnt" + std::to_string(i) + ".d");
    mkdir(mnt.c_str(), 0755);
    unmounter.mountpoints.push_back(mnt);
    StopRun run;
    run.args = {"mount"};
    if (foreground) run.args.push_back("-f");
    run.args.insert(run.args.end(), {"--export", dir / "src"});
    if (i % 2) {  // an import target too: an idle import must not change the stop
      const std::string target = dir / ("target" + std::to_string(i));
      WriteAt(target, (1 << 20) - 1, {0});
      run.args.insert(run.args.end(), {"--import", target});
    }
    run.args.push_back(mnt);
    std::tie(run.sig, run.delay) = RandomStop(rng, 0.08);
    runs.push_back(run);
  }
  return runs;
}

TEST(StopMount, DaemonStartUpAndServing) {
  TempDir dir;
  WriteAt(dir / "src", 0, RandomBytes(1 << 20, 3));
  Unmounter unmounter;
  const std::vector<StopRun> runs = MountRuns(dir, unmounter, false, 32);
  const auto outcomes = RunAllAndStop(runs, 4);
  int mounted_first = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    const std::string& mnt = runs[i].args.back();
    SCOPED_TRACE(testing::Message() << "run " << i << ", " << SignalName(runs[i].sig) << " after "
                                    << runs[i].delay << " s");
    const StopOutcome& o = outcomes[i];
    if (!ExpectStoppedCleanly(runs[i], o, "qcowfs: error: interrupted by ", true) && o.ended &&
        WIFEXITED(o.wait_status) && WEXITSTATUS(o.wait_status) == 0) {
      // Mounted before the signal came: the daemon serves; stop it the same way.
      ++mounted_first;
      EXPECT_TRUE(IsMounted(mnt));
      const int daemon = DaemonPid(mnt);
      EXPECT_GT(daemon, 0);
      if (daemon > 0) kill(daemon, runs[i].sig);
    }
    EXPECT_TRUE(GoneWithin(mnt, 1.0)) << "a mount or daemon is left at " << mnt;
  }
  std::cout << mounted_first << " of " << runs.size() << " runs mounted before the signal\n";

  // A daemon stopped while a reader holds the image open (a lazy unmount alone would wait
  // for the reader): the reader's next read fails, the daemon and its mount are gone.
  Mount m(dir / "busy", "--export " + Quote(dir / "src"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  const int fd = open((m / "disk.qcow2").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  char buf[65536];
  EXPECT_EQ(pread(fd, buf, sizeof buf, 0), static_cast<ssize_t>(sizeof buf));
  const int daemon = DaemonPid(m.path());
  ASSERT_GT(daemon, 0);
  ASSERT_EQ(kill(daemon, SIGTERM), 0);
  EXPECT_TRUE(GoneWithin(m.path(), 1.0));
  EXPECT_LT(pread(fd, buf, sizeof buf, 1 << 20), 0);
  close(fd);
}

TEST(StopMount, ForegroundStartUpAndServing) {
  TempDir dir;
  WriteAt(dir / "src", 0, RandomBytes(1 << 20, 4));
  Unmounter unmounter;
  const std::vector<StopRun> runs = MountRuns(dir, unmounter, true, 32);
  const auto outcomes = RunAllAndStop(runs, 4);
  for (size_t i = 0; i < runs.size(); ++i) {
    const std::string& mnt = runs[i].args.back();
    SCOPED_TRACE(testing::Message() << "run " << i << ", " << SignalName(runs[i].sig) << " after "
                                    << runs[i].delay << " s");
    const StopOutcome& o = outcomes[i];
    EXPECT_TRUE(o.started && o.ended && WIFEXITED(o.wait_status) && WEXITSTATUS(o.wait_status) == 1)
        << o.Describe();
    // Its log on stderr: "serving" once the mount answered, then one line about the stop.
    std::istringstream lines(o.err);
    std::vector<std::string> stop_lines;
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("qcowfs: serving ", 0) != 0) stop_lines.push_back(line);
    }
    ASSERT_EQ(stop_lines.size(), 1u) << o.Describe();
    EXPECT_NE(stop_lines[0].find(SignalName(runs[i].sig)), std::string::npos) << o.Describe();
    EXPECT_TRUE(GoneWithin(mnt, 0)) << "a mount or process is left at " << mnt;
  }
}

// A thin file system: ext4 on a loop device over a sparse file in a 4 MiB tmpfs. Writes are
// taken into the page cache; the room runs out only when they reach the disk (at fsync).
class ThinFs {
 public:
  explicit ThinFs(const TempDir& dir) : tmpfs_(dir / "tmpfs"), ext4_(dir / "ext4") {
    Sh("mkdir -p " + Quote(tmpfs_) + " " + Quote(ext4_));
    if (Sh("mount -t tmpfs -o size=4m qcowfs-test " + Quote(tmpfs_)).status != 0) return;
    if (Sh("truncate -s 64M " + Quote(tmpfs_ + "/disk") + " && mkfs.ext4 -q -F " +
           Quote(tmpfs_ + "/disk"))
            .status != 0) {
      return;
    }
    loop_ = std::make_unique<LoopDevice>(tmpfs_ + "/disk");
    ok_ = !loop_->device().empty() &&
          Sh("mount " + Quote(loop_->device()) + " " + Quote(ext4_)).status == 0;
  }
  ~ThinFs() {
    if (IsMounted(ext4_)) Sh("umount " + Quote(ext4_) + " || umount -l " + Quote(ext4_));
    loop_.reset();
    if (IsMounted(tmpfs_)) Sh("umount " + Quote(tmpfs_) + " || umount -l " + Quote(tmpfs_));
  }
  bool ok() const { return ok_; }
  const std::string& path() const { return ext4_; }

 private:
  std::string tmpfs_, ext4_;
  std::unique_ptr<LoopDevice> loop_;
  bool ok_ = false;
};

TEST(StopMount, StreamIntoAFileSystemThatFillsAtFsyncFails) {
  TempDir dir;
  WriteAt(dir / "src", 0, RandomBytes(8 << 20, 6));
  ThinFs fs(dir);
  ASSERT_TRUE(fs.ok());
  const std::string out = fs.path() + "/disk.qcow2";
  const auto r = Sh(QcowfsBinary() + " stream --source " + Quote(dir / "src") + " --destination " +
                    Quote(out));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find("flushing the image to " + out), std::string::npos) << r.output;
}

}  // namespace
