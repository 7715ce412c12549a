// Faults and misuse on the import side, through real mounts: writers that die, come back to
// back, overlap, rewrite or shrink what they wrote, an empty image, a full spool directory
// and a full target, SIGTERM while an image arrives. Success must only ever mean the right
// bytes; everything else fails with the reason in import.status.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>

#include "image_recipes.h"
#include "mount_fixture.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

std::string Status(const Mount& m) {
  auto b = ReadFile(m / "import.status");
  return std::string(b.begin(), b.end());
}

// Waits (the kernel sends RELEASE after close() returns) until import.status shows `state`.
std::string WaitForState(const Mount& m, const std::string& state) {
  std::string s;
  for (int i = 0; i < 100; ++i) {
    s = Status(m);
    if (s.find("state: " + state) != std::string::npos) break;
    usleep(50'000);
  }
  return s;
}

std::string Compare(const std::string& img, const std::string& target) {
  auto r = Sh("qemu-img compare -f qcow2 -F raw " + Quote(img) + " " + Quote(target));
  return r.status == 0 ? "" : r.output + " (exit " + std::to_string(r.status) + ")";
}

// A 16 MiB disk full of random data as a qcow2 image (about 16 MiB of file).
std::string DenseImage(const TempDir& dir, const std::string& name, int seed) {
  WriteAt(dir / (name + ".raw"), 0, RandomBytes(16 << 20, seed));
  auto r = Sh("qemu-img convert -f raw -O qcow2 " + Quote(dir / (name + ".raw")) + " " +
              Quote(dir / name));
  EXPECT_EQ(r.status, 0) << r.output;
  return dir / name;
}

// Runs a writer that opens `path`, sets its size with `presize`, writes the first 2 MiB of
// `bytes` and is killed; returns whether it got as far as being killed.
bool KilledAfterPresizing(const std::string& path, const std::vector<uint8_t>& bytes,
                          const std::function<bool(int)>& presize) {
  const pid_t child = fork();
  if (child == 0) {
    const int fd = open(path.c_str(), O_WRONLY);
    if (fd < 0 || !presize(fd)) _exit(1);
    if (write(fd, bytes.data(), 2 << 20) != 2 << 20) _exit(1);
    raise(SIGKILL);
  }
  int st = 0;
  return waitpid(child, &st, 0) == child && WIFSIGNALED(st);
}

TEST(FaultImport, WriterKilledAfterSettingTheSizeFails) {
  TempDir dir;
  const std::string img = DenseImage(dir, "img", 1);
  const auto bytes = ReadFile(img);
  MakePatternTarget(dir / "target", 16 << 20);
  Mount m(dir / "mnt", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  // A preallocating downloader: the size first, then the bytes; killed after 2 MiB.
  ASSERT_TRUE(KilledAfterPresizing(m / "import.qcow2", bytes, [&](int fd) {
    return ftruncate(fd, static_cast<off_t>(bytes.size())) == 0;
  }));
  const std::string status = WaitForState(m, "failed");
  EXPECT_NE(status.find("state: failed"), std::string::npos) << status;
  EXPECT_NE(status.find("the image is truncated"), std::string::npos) << status;
  EXPECT_NE(status.find("never written"), std::string::npos) << status;
}

// posix_fallocate reserves the whole file first (aria2c, rsync --preallocate). Without
// fallocate support glibc would write a zero byte into every block, which the image's real
// bytes then contradict: the mount takes fallocate as setting the size.
TEST(FaultImport, PreallocatingWritersSucceedAndFailAsTruncatedWhenKilled) {
  TempDir dir;
  const std::string img = DenseImage(dir, "img", 4);
  const auto bytes = ReadFile(img);
  MakePatternTarget(dir / "target", 16 << 20);
  Mount m(dir / "mnt", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  {
    const int fd = open((m / "import.qcow2").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0) << strerror(errno);
    ASSERT_EQ(posix_fallocate(fd, 0, static_cast<off_t>(bytes.size())), 0);
    // Extending inside the size already set, and with KEEP_SIZE, changes nothing.
    ASSERT_EQ(fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4096), 0) << strerror(errno);
    ASSERT_EQ(posix_fallocate(fd, 0, 4096), 0);
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    EXPECT_EQ(static_cast<size_t>(st.st_size), bytes.size());
    // Punching holes is not something an image writer does.
    EXPECT_NE(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), 0);
    for (size_t off = 0; off < bytes.size(); off += 1 << 20) {
      const size_t n = std::min<size_t>(1 << 20, bytes.size() - off);
      ASSERT_EQ(pwrite(fd, bytes.data() + off, n, static_cast<off_t>(off)),
                static_cast<ssize_t>(n));
    }
    ASSERT_EQ(close(fd), 0) << strerror(errno) << Status(m);
  }
  EXPECT_NE(WaitForState(m, "done").find("state: done"), std::string::npos) << Status(m);
  EXPECT_EQ(Compare(img, dir / "target"), "");

  ASSERT_TRUE(KilledAfterPresizing(m / "import.qcow2", bytes, [&](int fd) {
    return posix_fallocate(fd, 0, static_cast<off_t>(bytes.size())) == 0;
  }));
  const std::string status = WaitForState(m, "failed");
  EXPECT_NE(status.find("the image is truncated"), std::string::npos) << status;
}

TEST(FaultImport, BackToBackWritersEachSucceed) {
  TempDir dir;
  const std::string a = DenseImage(dir, "a", 2), b = DenseImage(dir, "b", 3);
  MakePatternTarget(dir / "target", 16 << 20);
  Mount m(dir / "mnt", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  // The previous writer's RELEASE may still be on its way when the next one opens: it must
  // neither end the next import nor refuse it.
  for (int i = 0; i < 8; ++i) {
    const std::string img = i % 2 ? b : a;
    auto w = Sh("cat " + Quote(img) + " > " + Quote(m / "import.qcow2"));
    ASSERT_EQ(w.status, 0) << "round " << i << ": " << w.output << Status(m);
    ASSERT_NE(Status(m).find("state: done"), std::string::npos) << "round " << i << Status(m);
  }
  EXPECT_TRUE(m.Unmount());
  EXPECT_EQ(Compare(b, dir / "target"), "");
}

TEST(FaultImport, OverlappingWritersGetEbusyUntilTheFirstHandleIsReleased) {
  TempDir dir;
  const std::string img = DenseImage(dir, "img", 4);
  const auto bytes = ReadFile(img);
  MakePatternTarget(dir / "target", 16 << 20);
  Mount m(dir / "mnt", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  const std::string file = m / "import.qcow2";

  // A writer at work: a second one is refused at once.
  int first = open(file.c_str(), O_WRONLY);
  ASSERT_GE(first, 0);
  ASSERT_EQ(write(first, bytes.data(), 4096), 4096);
  errno = 0;
  EXPECT_EQ(open(file.c_str(), O_WRONLY), -1);
  EXPECT_EQ(errno, EBUSY);
  // Its image ends short: its close fails, and then the next writer may start.
  errno = 0;
  EXPECT_EQ(close(first), -1);
  EXPECT_EQ(errno, EIO);

  // A writer whose import failed and who keeps writing: its writes fail, and nobody else
  // gets in while its descriptor is open.
  int failed = open(file.c_str(), O_WRONLY);
  ASSERT_GE(failed, 0) << strerror(errno);
  std::vector<uint8_t> junk(65536, 0x5a);
  EXPECT_EQ(write(failed, junk.data(), junk.size()), -1);
  EXPECT_EQ(write(failed, bytes.data(), 65536), -1);
  const auto t0 = std::chrono::steady_clock::now();
  errno = 0;
  EXPECT_EQ(open(file.c_str(), O_WRONLY), -1);
  EXPECT_EQ(errno, EBUSY);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1))
      << "an ended import's writer still holds the file: the opener waits for its release";
  EXPECT_EQ(close(failed), -1);

  // Now a good writer: its import is its own.
  int good = open(file.c_str(), O_WRONLY);
  ASSERT_GE(good, 0) << strerror(errno);
  for (size_t off = 0; off < bytes.size(); off += 1 << 20) {
    const size_t n = std::min<size_t>(1 << 20, bytes.size() - off);
    ASSERT_EQ(pwrite(good, bytes.data() + off, n, static_cast<off_t>(off)),
              static_cast<ssize_t>(n));
  }
  EXPECT_EQ(close(good), 0) << Status(m);
  EXPECT_NE(Status(m).find("state: done"), std::string::npos) << Status(m);
  EXPECT_TRUE(m.Unmount());
  EXPECT_EQ(Compare(img, dir / "target"), "");
}

TEST(FaultImport, EmptyRewrittenAndShrunkImagesFail) {
  TempDir dir;
  const std::string img = DenseImage(dir, "img", 5);
  const auto bytes = ReadFile(img);
  MakePatternTarget(dir / "target", 16 << 20);
  Mount m(dir / "mnt", "--import " + Quote(dir / "target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  const std::string file = m / "import.qcow2";
  auto write_all = [&](int fd) {
    for (size_t off = 0; off < bytes.size(); off += 1 << 20) {
      const size_t n = std::min<size_t>(1 << 20, bytes.size() - off);
      if (pwrite(fd, bytes.data() + off, n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
        return false;
      }
    }
    return true;
  };

  // Empty: open and close.
  int fd = open(file.c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  errno = 0;
  EXPECT_EQ(close(fd), -1);
  EXPECT_EQ(errno, EIO);
  std::string status = WaitForState(m, "failed");
  EXPECT_NE(status.find("without writing anything"), std::string::npos) << status;

  // The same bytes again are fine (here: guest data, read back from the target to compare).
  const off_t in_data = static_cast<off_t>(bytes.size()) - 100000;
  fd = open(file.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(write_all(fd));
  EXPECT_EQ(pwrite(fd, bytes.data() + in_data, 4096, in_data), 4096);
  EXPECT_EQ(close(fd), 0) << Status(m);

  // Different bytes where data was decoded already: the write fails, and so does close.
  fd = open(file.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(write_all(fd));
  std::vector<uint8_t> other(4096, 0xee);
  EXPECT_EQ(pwrite(fd, other.data(), other.size(), in_data), -1);
  EXPECT_EQ(close(fd), -1);
  status = Status(m);
  EXPECT_NE(status.find("state: failed"), std::string::npos) << status;
  EXPECT_NE(status.find("written twice with different content"), std::string::npos) << status;
  // Tables are not held once the whole tree is known: bytes written again there cannot be
  // compared, and fail the import as well.
  fd = open(file.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(write_all(fd));
  EXPECT_EQ(pwrite(fd, bytes.data() + 300000, 4096, 300000), -1);
  EXPECT_EQ(close(fd), -1);
  status = Status(m);
  EXPECT_NE(status.find("written again after qcowfs had decoded them"), std::string::npos)
      << status;

  // A truncate that takes back written bytes.
  fd = open(file.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(write_all(fd));
  EXPECT_NE(ftruncate(fd, static_cast<off_t>(bytes.size() / 2)), 0);
  EXPECT_EQ(close(fd), -1);
  status = Status(m);
  EXPECT_NE(status.find("was truncated to"), std::string::npos) << status;
}

// A tmpfs of `size` at path, unmounted on destruction.
class SmallFs {
 public:
  SmallFs(const std::string& path, const std::string& size) : path_(path) {
    Sh("mkdir -p " + Quote(path));
    ok_ = Sh("mount -t tmpfs -o size=" + size + " qcowfs-test " + Quote(path)).status == 0;
  }
  ~SmallFs() {
    if (ok_) Sh("umount -l " + Quote(path_));
  }
  bool ok() const { return ok_; }

 private:
  std::string path_;
  bool ok_ = false;
};

TEST(FaultImport, FullSpoolDirectoryAndFullTargetFailClearly) {
  TempDir dir;
  // Data before its tables, written back to front: it must spool, and the spool is tiny.
  const auto& images = ValidImages();
  auto sparse = std::find_if(images.begin(), images.end(), [](const ImageRecipe& r) {
    return std::string(r.name) == "compressed_sparse";
  });
  ASSERT_NE(sparse, images.end());
  const std::string img = BuildImage(dir, *sparse);
  const auto bytes = ReadFile(img);
  SmallFs spool(dir / "spool", "64k");
  ASSERT_TRUE(spool.ok());
  MakePatternTarget(dir / "target", VirtualSize(img));
  {
    Mount m(dir / "mnt", "--import " + Quote(dir / "target") + " --spool-dir " +
                             Quote(dir / "spool") + " --spool-memory 16K");
    ASSERT_TRUE(m.ok()) << m.result().output;
    int fd = open((m / "import.qcow2").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    bool write_failed = false;
    for (uint64_t end = bytes.size(); end > 0 && !write_failed;) {
      const uint64_t lo = end > 4096 ? end - 4096 : 0;
      write_failed = pwrite(fd, bytes.data() + lo, end - lo, static_cast<off_t>(lo)) < 0;
      end = lo;
    }
    EXPECT_TRUE(write_failed) << "a 64 KiB spool directory held " << bytes.size() << " bytes?";
    EXPECT_EQ(close(fd), -1);
    const std::string status = Status(m);
    EXPECT_NE(status.find("spool file"), std::string::npos) << status;
    EXPECT_NE(status.find("No space left on device"), std::string::npos) << status;
  }

  // A target on a file system with room for a quarter of the data.
  SmallFs small(dir / "small", "4m");
  ASSERT_TRUE(small.ok());
  const std::string dense = DenseImage(dir, "dense", 6);
  ASSERT_EQ(Sh("truncate -s 16M " + Quote(dir / "small/target")).status, 0);
  Mount m(dir / "mnt2", "--import " + Quote(dir / "small/target"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  auto w = Sh("cat " + Quote(dense) + " > " + Quote(m / "import.qcow2"));
  EXPECT_NE(w.status, 0) << "the import of 16 MiB into 4 MiB of space succeeded";
  const std::string status = Status(m);
  EXPECT_NE(status.find("state: failed"), std::string::npos) << status;
  EXPECT_NE(status.find("writing target"), std::string::npos) << status;
  EXPECT_NE(status.find("No space left on device"), std::string::npos) << status;
}

TEST(FaultImport, SigtermDuringAnImportFailsItAndSaysSo) {
  TempDir dir;
  const std::string img = DenseImage(dir, "img", 7);
  const auto bytes = ReadFile(img);
  MakePatternTarget(dir / "target", 16 << 20);
  const std::string mnt = dir / "mnt";
  Sh("mkdir -p " + Quote(mnt));
  // In the foreground, so that its log (stderr) and exit status can be read.
  Sh("(timeout 120 " + QcowfsBinary() + " mount -f --import " + Quote(dir / "target") + " " +
     Quote(mnt) + " > " + Quote(dir / "log") + " 2>&1; echo $? > " + Quote(dir / "rc") +
     ") > /dev/null 2>&1 &");
  struct Cleanup {
    std::string mnt;
    pid_t writer = -1;
    ~Cleanup() {
      if (writer > 0) {
        kill(writer, SIGKILL);
        waitpid(writer, nullptr, 0);
      }
      if (IsMounted(mnt)) Sh("umount -l " + Quote(mnt));
    }
  } cleanup{mnt};
  for (int i = 0; i < 200 && !IsMounted(mnt); ++i) usleep(50'000);
  ASSERT_TRUE(IsMounted(mnt));
  // A writer half way through its image, holding the file open.
  cleanup.writer = fork();
  if (cleanup.writer == 0) {
    const int fd = open((mnt + "/import.qcow2").c_str(), O_WRONLY);
    if (fd < 0 || write(fd, bytes.data(), 4 << 20) != 4 << 20) _exit(1);
    pause();
    _exit(0);
  }
  bool receiving = false;
  for (int i = 0; i < 100 && !receiving; ++i) {
    auto s = ReadFile(mnt + "/import.status");
    receiving =
        std::string(s.begin(), s.end()).find("bytes-received: 4194304") != std::string::npos;
    if (!receiving) usleep(50'000);
  }
  ASSERT_TRUE(receiving);
  const int daemon = DaemonPid(mnt);
  ASSERT_GT(daemon, 0);
  ASSERT_EQ(kill(daemon, SIGTERM), 0);
  std::string rc;
  for (int i = 0; i < 200 && rc.empty(); ++i) {
    std::ifstream in(dir / "rc");
    std::getline(in, rc);
    if (rc.empty()) usleep(50'000);
  }
  EXPECT_EQ(rc, "1") << "the daemon stopped mid-import and said it succeeded";
  const auto log = ReadFile(dir / "log");
  const std::string text(log.begin(), log.end());
  EXPECT_NE(text.find("import failed: the mount was stopped"), std::string::npos) << text;
  EXPECT_FALSE(IsMounted(mnt));
}

}  // namespace
