// One writer per disk across processes: two imports into one target (serve, stream_decode,
// a mount's import.qcow2, on a file and on a loop device), an import onto a disk being
// exported and the other way round, a killed writer, and qemu-io/qemu-img on the same disks.
// The second user is refused at once with one line; the first finishes as if alone.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "mount_fixture.h"
#include "qcow/import/target.h"
#include "qcow/io/disk_lock.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

std::string Q() { return QcowfsBinary(); }

constexpr uint64_t kDiskSize = 4 << 20;

// A command (exec'd by sh, so that Kill() reaches it) whose stdin is a pipe the test writes
// to: an import held open until the test sends the rest of its image. Its output goes to a
// file read by Finish().
class Fed {
 public:
  Fed(const TempDir& dir, const std::string& command) : out_(dir / "fed.out") {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      const int out = open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fds[0], 0), dup2(out, 1), dup2(out, 2);
      const std::string line = "exec " + command;
      execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[0]);
    in_ = fds[1];
  }
  ~Fed() {
    if (pid_ > 0) Kill();
    if (in_ >= 0) close(in_);
  }
  // Writes bytes [from, to) of `bytes`; returns whether all were taken.
  bool Send(const std::vector<uint8_t>& bytes, size_t from, size_t to) {
    while (from < to) {
      const ssize_t n = write(in_, bytes.data() + from, to - from);
      if (n <= 0) return false;
      from += static_cast<size_t>(n);
    }
    return true;
  }
  // Closes the pipe, waits for the command and returns its status and output.
  CommandResult Finish() {
    close(in_);
    in_ = -1;
    int st = 0;
    waitpid(pid_, &st, 0);
    pid_ = -1;
    std::ifstream f(out_);
    std::stringstream text;
    text << f.rdbuf();
    return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), text.str()};
  }
  void Kill() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  std::string out_;
  int in_ = -1;
  pid_t pid_ = -1;
};

// Waits until some process holds a lock on the file at path (/proc/locks names it by
// device and inode); returns whether one appeared within 10 s.
bool WaitForLock(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return false;
  char id[64];
  std::snprintf(id, sizeof id, " %02x:%02x:%llu ", major(st.st_dev), minor(st.st_dev),
                static_cast<unsigned long long>(st.st_ino));
  for (int i = 0; i < 1000; ++i) {
    std::ifstream locks("/proc/locks");
    std::stringstream text;
    text << locks.rdbuf();
    if (Has(text.str(), id)) return true;
    usleep(10'000);
  }
  return false;
}

// Expects a refusal: exit 1 at once (well inside the timeout the command runs under), one
// line naming `disk`.
void ExpectRefused(const CommandResult& r, const std::string& disk, const std::string& how) {
  EXPECT_EQ(r.status, 1) << how << ": " << r.output;
  EXPECT_EQ(Lines(r.output), 1) << how << ": " << r.output;
  EXPECT_TRUE(Has(r.output, "error: ") && Has(r.output, disk)) << how << ": " << r.output;
  EXPECT_TRUE(Has(r.output, "locked by another process") || Has(r.output, "is in use"))
      << how << ": " << r.output;
}

// Two images of one 4 MiB disk with different data in different places, what qemu-img
// convert reads from the first, and a zeroed target (a file, or a loop device over one).
class Disks : public ::testing::Test {
 protected:
  // The images are made once for the suite.
  static void SetUpTestSuite() {
    images_ = new TempDir;
    auto r = Sh("cd " + Quote(images_->path()) + " && qemu-img create -q -f qcow2 a.qcow2 4M && " +
                "qemu-io -c 'write -P 0xa1 64k 1M' -c 'write -P 0xa2 3M 128k' a.qcow2 && " +
                "qemu-img create -q -f qcow2 b.qcow2 4M && " +
                "qemu-io -c 'write -P 0xb1 0 4M' b.qcow2 && " +
                "qemu-img convert -O raw a.qcow2 expected.raw");
    ASSERT_EQ(r.status, 0) << r.output;
  }
  static void TearDownTestSuite() {
    delete images_;
    images_ = nullptr;
  }
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);  // a refused writer closes its end of our pipe
    ASSERT_EQ(Sh("cp " + Quote(*images_ / "a.qcow2") + " " + Quote(*images_ / "b.qcow2") + " " +
                 Quote(*images_ / "expected.raw") + " " + Quote(dir_.path()) +
                 " && truncate -s 4M " + Quote(dir_ / "target"))
                  .status,
              0);
    a_ = ReadFile(dir_ / "a.qcow2");
  }
  // Returns the target: the file, or a loop device over it.
  std::string Target(bool device) {
    if (!device) return dir_ / "target";
    loop_ = std::make_unique<LoopDevice>(dir_ / "target");
    EXPECT_FALSE(loop_->device().empty()) << loop_->output();
    return loop_->device();
  }
  void ExpectTargetIsA(const std::string& target) {
    auto r = Sh("cmp " + Quote(target) + " " + Quote(dir_ / "expected.raw"));
    EXPECT_EQ(r.status, 0) << "the target is not what qemu-img convert reads from the first "
                              "image: "
                           << r.output;
  }
  static TempDir* images_;
  TempDir dir_;
  std::vector<uint8_t> a_;
  std::unique_ptr<LoopDevice> loop_;
};

TempDir* Disks::images_ = nullptr;

enum class Writer { kServe, kStreamDecode, kMount };

const char* Name(Writer w) {
  return w == Writer::kServe ? "Serve" : w == Writer::kStreamDecode ? "StreamDecode" : "Mount";
}

// Returns the command that imports its stdin into target with serve or stream_decode.
std::string ImportCommand(Writer w, const std::string& target) {
  if (w == Writer::kServe) return QcowfsBinary() + " serve --destination " + Quote(target);
  return QcowfsBinary() + " stream_decode " + Quote(target);
}

// Returns whether the process is gone (a zombie holds no descriptors either).
bool Gone(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return true;
  const size_t at = line.rfind(") ");
  return at == std::string::npos || line[at + 2] == 'Z' || line[at + 2] == 'X';
}

class TwoWriters : public Disks,
                   public ::testing::WithParamInterface<std::tuple<Writer, Writer, bool>> {};

TEST_P(TwoWriters, TheSecondIsRefusedAndTheFirstFinishes) {
  const auto [first, second, device] = GetParam();
  const std::string target = Target(device);
  std::unique_ptr<Mount> mount;
  std::unique_ptr<Fed> writer;
  if (first == Writer::kMount) {
    mount = std::make_unique<Mount>(dir_ / "mnt1", "--import " + Quote(target));
    ASSERT_TRUE(mount->ok()) << mount->result().output;
    writer = std::make_unique<Fed>(dir_, "cat > " + Quote(*mount / "import.qcow2"));
  } else {
    writer = std::make_unique<Fed>(dir_, ImportCommand(first, target));
    ASSERT_TRUE(WaitForLock(target)) << "the first writer took no lock";
  }
  ASSERT_TRUE(writer->Send(a_, 0, 65536));

  const std::string b = Quote(dir_ / "b.qcow2");
  if (second == Writer::kMount) {
    Mount again(dir_ / "mnt2", "--import " + Quote(target));
    EXPECT_FALSE(again.ok());
    ExpectRefused(again.result(), target, "a second mount");
  } else {
    ExpectRefused(Sh("timeout 20 " + ImportCommand(second, target) + " < " + b), target,
                  Name(second));
  }

  ASSERT_TRUE(writer->Send(a_, 65536, a_.size()));
  const CommandResult r = writer->Finish();
  EXPECT_EQ(r.status, 0) << r.output;
  if (mount) {
    EXPECT_TRUE(mount->Unmount());
  }
  ExpectTargetIsA(target);
}

INSTANTIATE_TEST_SUITE_P(
    Pairs, TwoWriters,
    ::testing::Combine(::testing::Values(Writer::kServe, Writer::kStreamDecode, Writer::kMount),
                       ::testing::Values(Writer::kServe, Writer::kStreamDecode, Writer::kMount),
                       ::testing::Bool()),
    [](const auto& info) {
      return std::string(Name(std::get<0>(info.param))) + "Then" + Name(std::get<1>(info.param)) +
             (std::get<2>(info.param) ? "OnALoopDevice" : "OnAFile");
    });

// Another node of the same block device: the lock (per node) does not see it, O_EXCL does.
TEST_F(Disks, AWriterThroughAnotherNodeOfTheDeviceIsRefused) {
  const std::string device = Target(true);
  struct stat st;
  ASSERT_EQ(stat(device.c_str(), &st), 0);
  const std::string node = dir_ / "node";
  ASSERT_EQ(mknod(node.c_str(), S_IFBLK | 0600, st.st_rdev), 0) << strerror(errno);
  Fed writer(dir_, ImportCommand(Writer::kServe, device));
  ASSERT_TRUE(WaitForLock(device));
  const CommandResult r = Sh("timeout 20 " + Q() + " serve --destination " + Quote(node) + " < " +
                             Quote(dir_ / "b.qcow2"));
  ExpectRefused(r, node, "serve through another node");
  EXPECT_TRUE(Has(r.output, "is in use: mounted, or opened exclusively by another process"))
      << r.output;
  ASSERT_TRUE(writer.Send(a_, 0, a_.size()));
  EXPECT_EQ(writer.Finish().status, 0);
  ExpectTargetIsA(device);
}

// A loop device and the file it reads are one disk for the locks, in both orders: the lock
// of each covers the other (a serve into the device while a mount imported the file was a
// second writer that exited 0).
TEST_F(Disks, ALoopDeviceAndItsFileAreOneDisk) {
  const std::string file = Target(false), device = Target(true);
  const std::string b = Quote(dir_ / "b.qcow2");
  for (bool file_first : {true, false}) {
    const std::string first = file_first ? file : device, other = file_first ? device : file;
    Fed writer(dir_, ImportCommand(Writer::kServe, first));
    ASSERT_TRUE(WaitForLock(first));
    ASSERT_TRUE(writer.Send(a_, 0, 65536));
    ExpectRefused(Sh("timeout 20 " + Q() + " serve --destination " + Quote(other) + " < " + b),
                  other, "serve into " + other + " while " + first + " is imported");
    ExpectRefused(
        Sh("timeout 20 " + Q() + " stream --source " + Quote(other) + " --destination null:"),
        other, "stream from " + other + " while " + first + " is imported");
    ASSERT_TRUE(writer.Send(a_, 65536, a_.size()));
    EXPECT_EQ(writer.Finish().status, 0);
    ExpectTargetIsA(file);
  }
  {
    Mount import(dir_ / "mnt", "--import " + Quote(file));
    ASSERT_TRUE(import.ok()) << import.result().output;
    ExpectRefused(Sh("timeout 20 " + Q() + " stream_decode " + Quote(device) + " < " + b), device,
                  "stream_decode into the device while a mount imports the file");
  }
  Mount exported(dir_ / "mnt", "--export " + Quote(device));
  ASSERT_TRUE(exported.ok()) << exported.result().output;
  ExpectRefused(Sh("timeout 20 " + Q() + " serve --destination " + Quote(file) + " < " + b), file,
                "serve into the file while a mount exports the device");
  EXPECT_TRUE(exported.Unmount());
  ExpectTargetIsA(file);
}

// A loop device whose file was deleted is a disk of its own: a new file at that path (sysfs
// names it "PATH (deleted)", and a file there now is not the one the device reads) does not
// stand for it.
TEST_F(Disks, ALoopDeviceOverADeletedFileIsItself) {
  const std::string device = Target(true), file = dir_ / "target";
  ASSERT_EQ(Sh("rm " + Quote(file) + " && cp " + Quote(dir_ / "b.qcow2") + " " +
               Quote(file + " (deleted)") + " && grep -qx " + Quote(file + " (deleted)") +
               " /sys/block/" + device.substr(5) + "/loop/backing_file")
                .status,
            0);
  Fed writer(dir_, ImportCommand(Writer::kServe, file + " (deleted)"));
  ASSERT_TRUE(WaitForLock(file + " (deleted)"));
  auto r = Sh("timeout 20 " + Q() + " serve --destination " + Quote(device) + " < " +
              Quote(dir_ / "a.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
  writer.Kill();
  ExpectTargetIsA(device);
}

// What stream and qcow2-to-stdout write to (a path, --destination-fd, stdout) is a disk they
// write: a file another process exports or imports is refused at once with one line and
// keeps its bytes (stream truncated it and exited 0). The lock is taken on an open file of
// qcowfs's own: the caller's descriptor carries none once qcowfs has exited.
TEST_F(Disks, StreamAndQcow2ToStdoutAreWritersOfTheirDestination) {
  const std::string target = Target(false), raw = Quote(dir_ / "expected.raw");
  const std::string t = Quote(target);
  auto expect_writers_refused = [&](const std::string& source, const std::string& while_) {
    const std::vector<uint8_t> before = ReadFile(target);
    const std::string stream = "timeout 20 " + Q() + " stream --source " + source;
    ExpectRefused(Sh(stream + " --destination " + t), target, "stream " + while_);
    ExpectRefused(Sh(stream + " --destination-fd 7 7<>" + t), target, "--destination-fd " + while_);
    ExpectRefused(Sh(stream + " --destination - 1<>" + t), target, "stream to stdout " + while_);
    ExpectRefused(Sh("timeout 20 " + Q() + " qcow2-to-stdout " + raw + " 1<>" + t), target,
                  "qcow2-to-stdout " + while_);
    EXPECT_TRUE(ReadFile(target) == before) << while_;
  };
  ASSERT_EQ(Sh("cp " + raw + " " + t).status, 0);
  {
    Mount m(dir_ / "mnt", "--export " + t);
    ASSERT_TRUE(m.ok()) << m.result().output;
    expect_writers_refused(Quote(m / "disk.qcow2"), "while a mount exports it");
  }
  {
    Fed writer(dir_, ImportCommand(Writer::kServe, target));
    ASSERT_TRUE(WaitForLock(target));
    ASSERT_TRUE(writer.Send(a_, 0, 65536));
    expect_writers_refused(raw, "while serve imports it");
    ASSERT_TRUE(writer.Send(a_, 65536, a_.size()));
    EXPECT_EQ(writer.Finish().status, 0);
    ExpectTargetIsA(target);
  }
  // The caller still holds its descriptor open when the next writer comes.
  const std::string serve = Q() + " serve --destination " + t + " < " + Quote(dir_ / "a.qcow2");
  auto r = Sh("{ " + Q() + " stream --source " + raw + " --destination-fd 7 && " + serve +
              "; } 7<>" + t);
  EXPECT_EQ(r.status, 0) << r.output;
  r = Sh("{ " + Q() + " qcow2-to-stdout " + raw + " && " + serve + " >/dev/null; } 1<>" + t);
  EXPECT_EQ(r.status, 0) << r.output;
  ExpectTargetIsA(target);
  // Without /proc the caller's file cannot be reopened: a warning, and the image is written.
  r = Sh("unshare -m sh -c 'umount -l /proc && exec " + Q() + " stream --source " + raw +
         " --destination-fd 7' 7<>" + Quote(dir_ / "out.qcow2") + " && qemu-img compare " + raw +
         " " + Quote(dir_ / "out.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "warning: fd:7 cannot be locked") && Has(r.output, "/proc"))
      << r.output;
  // A mount's import.qcow2 admits one writer (EBUSY): the caller's is it, and all is quiet.
  Mount m(dir_ / "mnt", "--import " + t);
  ASSERT_TRUE(m.ok()) << m.result().output;
  r = Sh(Q() + " stream --source " + Quote(dir_ / "a.qcow2") + " --destination - > " +
         Quote(m / "import.qcow2") + " && grep -x 'state: done' " + Quote(m / "import.status"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(Has(r.output, "warning")) << r.output;
  EXPECT_TRUE(m.Unmount());
  ExpectTargetIsA(target);
}

// A writer killed with SIGKILL leaves no lock behind: the next one gets in.
TEST_F(Disks, AKilledWritersLockIsGone) {
  const std::string target = Target(false);
  {
    Fed writer(dir_, ImportCommand(Writer::kStreamDecode, target));
    ASSERT_TRUE(WaitForLock(target));
    ASSERT_TRUE(writer.Send(a_, 0, 65536));
    writer.Kill();
  }
  auto r = Sh("timeout 20 " + Q() + " serve --destination " + Quote(target) + " < " +
              Quote(dir_ / "a.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
  // The mount's daemon (which holds the lock it inherited from `qcowfs mount`) killed too.
  Mount m(dir_ / "mnt", "--import " + Quote(target));
  ASSERT_TRUE(m.ok()) << m.result().output;
  const int daemon = DaemonPid(dir_ / "mnt");
  ASSERT_GT(daemon, 0);
  ExpectRefused(
      Sh("timeout 20 " + Q() + " stream_decode " + Quote(target) + " < " + Quote(dir_ / "b.qcow2")),
      target, "stream_decode while the daemon lives");
  kill(daemon, SIGKILL);
  for (int i = 0; i < 500 && !Gone(daemon); ++i) usleep(10'000);
  r = Sh("timeout 20 " + Q() + " stream_decode " + Quote(target) + " < " + Quote(dir_ / "a.qcow2"));
  EXPECT_EQ(r.status, 0) << r.output;
  ExpectTargetIsA(target);
}

// Export and import of one disk exclude each other, both ways; exports do not.
TEST_F(Disks, AnImportOntoADiskBeingExportedIsRefused) {
  for (bool device : {false, true}) {
    const std::string disk = Target(device);
    ASSERT_EQ(Sh("cp " + Quote(dir_ / "expected.raw") + " " + Quote(disk)).status, 0);
    Mount m(dir_ / "mnt", "--export " + Quote(disk));
    ASSERT_TRUE(m.ok()) << m.result().output;
    const std::string b = Quote(dir_ / "b.qcow2");
    ExpectRefused(Sh("timeout 20 " + Q() + " serve --destination " + Quote(disk) + " < " + b), disk,
                  "serve");
    ExpectRefused(Sh("timeout 20 " + Q() + " stream_decode " + Quote(disk) + " < " + b), disk,
                  "stream_decode");
    Mount import(dir_ / "mnt2", "--import " + Quote(disk));
    ExpectRefused(import.result(), disk, "mount --import");
    // Other exports at the same time read as the first one does.
    auto r = Sh("timeout 20 " + Q() + " stream --source " + Quote(disk) + " --destination " +
                Quote(dir_ / "streamed") + " && cmp " + Quote(dir_ / "streamed") + " " +
                Quote(m / "disk.qcow2") + " && timeout 20 " + Q() + " qcow2-to-stdout " +
                Quote(disk) + " > /dev/null");
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_TRUE(m.Unmount());
    ExpectTargetIsA(disk);
  }
}

TEST_F(Disks, AnExportOfADiskBeingImportedIsRefused) {
  const std::string target = Target(false);
  // A qcow2 image whose backing file is the target: its export reads the target too.
  ASSERT_EQ(
      Sh("qemu-img create -q -f qcow2 -b " + Quote(target) + " -F raw " + Quote(dir_ / "top.qcow2"))
          .status,
      0);
  Fed writer(dir_, ImportCommand(Writer::kServe, target));
  ASSERT_TRUE(WaitForLock(target));
  ASSERT_TRUE(writer.Send(a_, 0, 65536));
  for (const std::string& source : {target, dir_ / "top.qcow2"}) {
    ExpectRefused(
        Sh("timeout 20 " + Q() + " stream --source " + Quote(source) + " --destination null:"),
        target, "stream --source " + source);
    Mount m(dir_ / "mnt", "--export " + Quote(source));
    ExpectRefused(m.result(), target, "mount --export " + source);
  }
  ExpectRefused(Sh("timeout 20 " + Q() + " qcow2-to-stdout " + Quote(target) + " > /dev/null"),
                target, "qcow2-to-stdout");
  ASSERT_TRUE(writer.Send(a_, 65536, a_.size()));
  EXPECT_EQ(writer.Finish().status, 0);
  ExpectTargetIsA(target);
}

// QEMU's own locks and ours see each other: a qemu-io holding a disk read-write keeps
// imports and exports out, and qemu-io cannot write a disk qcowfs imports or exports, while
// qemu-img still reads what qcowfs exports.
TEST_F(Disks, QemuAndQcowfsSeeEachOthersLocks) {
  const std::string target = Target(false);
  {
    Fed qemu(dir_, "qemu-io -f raw " + Quote(target));  // commands from our pipe
    ASSERT_TRUE(WaitForLock(target));
    ExpectRefused(Sh("timeout 20 " + Q() + " serve --destination " + Quote(target) + " < " +
                     Quote(dir_ / "a.qcow2")),
                  target, "serve while qemu-io writes");
    ExpectRefused(
        Sh("timeout 20 " + Q() + " stream --source " + Quote(target) + " --destination null:"),
        target, "stream while qemu-io writes");
    EXPECT_EQ(qemu.Finish().status, 0);
  }
  {
    Fed writer(dir_, ImportCommand(Writer::kStreamDecode, target));
    ASSERT_TRUE(WaitForLock(target));
    auto r = Sh("qemu-io -f raw -c 'write -P 0x55 0 64k' " + Quote(target));
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_TRUE(Has(r.output, "lock")) << r.output;
    ASSERT_TRUE(writer.Send(a_, 0, a_.size()));
    EXPECT_EQ(writer.Finish().status, 0);
    ExpectTargetIsA(target);
  }
  const std::string image = dir_ / "a.qcow2";
  Mount m(dir_ / "mnt", "--export " + Quote(image));
  ASSERT_TRUE(m.ok()) << m.result().output;
  auto r = Sh("qemu-io -c 'write -P 0x55 0 64k' " + Quote(image));
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_TRUE(Has(r.output, "Failed to get \"write\" lock")) << r.output;
  r = Sh("qemu-img compare " + Quote(image) + " " + Quote(m / "disk.qcow2"));
  EXPECT_EQ(r.status, 0) << "qemu-img cannot read an exported image: " << r.output;
  EXPECT_TRUE(ReadFile(image) == a_);
}

// RawTarget owns its descriptor: a constructor that throws after open() leaves none behind.
TEST_F(Disks, ARefusedTargetLeavesNoDescriptorOpen) {
  const std::string target = Target(false);
  auto open_fds = [] { return Sh("ls /proc/" + std::to_string(getpid()) + "/fd | wc -l").output; };
  const std::string before = open_fds();
  {
    Fed writer(dir_, ImportCommand(Writer::kServe, target));
    ASSERT_TRUE(WaitForLock(target));
    EXPECT_THROW(qcow::RawTarget(target, {}), qcow::DiskInUse);
    writer.Kill();
  }
  qcow::TargetOptions vetoed;
  vetoed.vet = [](const struct stat&) { throw qcow::UsageError("no"); };
  EXPECT_THROW(qcow::RawTarget(target, vetoed), qcow::UsageError);
  EXPECT_EQ(open_fds(), before);
}

}  // namespace
