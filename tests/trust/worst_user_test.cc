// The worst users of the trust boundary, each against the binary: a writer of import.qcow2
// that forks or dups its descriptor, an HTTP-like peer on a TCP socket that never closes
// (or goes silent, or sends more than the image), a source that fails a read under an
// export or an import, and another local user at serve's unix socket. Nothing mixes two
// writers' bytes, nothing reports a failed import done, nothing waits forever, and no
// reader gets bytes other than the disk's.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "mount_fixture.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;
using Clock = std::chrono::steady_clock;

std::string Q() { return QcowfsBinary(); }

// A command run by sh in the background, its output in a file; killed if still running
// when destroyed.
class Background {
 public:
  Background(const TempDir& dir, const std::string& command) : out_(dir / "background.out") {
    pid_ = fork();
    if (pid_ == 0) {
      const int out = open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int null = open("/dev/null", O_RDONLY);
      dup2(null, 0), dup2(out, 1), dup2(out, 2);
      execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Background() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // Waits up to `seconds` for the exit; returns its status and output (status -1: still
  // running, then killed).
  CommandResult Wait(double seconds) {
    int st = 0, status = -1;
    for (const auto end = Clock::now() + std::chrono::duration<double>(seconds);;) {
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        pid_ = -1;
        break;
      }
      if (Clock::now() > end) break;
      usleep(5000);
    }
    std::ifstream f(out_);
    std::stringstream text;
    text << f.rdbuf();
    return {status, text.str()};
  }

 private:
  std::string out_;
  pid_t pid_ = -1;
};

// Returns a TCP port on 127.0.0.1 that nobody listens on now.
int FreePort() {
  const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  close(s);
  return ntohs(a.sin_port);
}

// Connects to 127.0.0.1:port, retrying for 10 s while nobody listens yet; -1 on failure.
int ConnectWhenListening(int port) {
  for (int i = 0; i < 1000; ++i) {
    const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return s;
    close(s);
    usleep(10'000);
  }
  return -1;
}

// Sends bytes on s until all are sent or the peer is gone; returns how many went.
size_t SendAll(int s, const uint8_t* p, size_t n) {
  size_t sent = 0;
  while (sent < n) {
    const ssize_t k = send(s, p + sent, n - sent, MSG_NOSIGNAL);
    if (k <= 0) break;
    sent += static_cast<size_t>(k);
  }
  return sent;
}

class WorstUser : public ::testing::Test {
 protected:
  // One 8 MiB image with data in two places, what qemu-img convert reads from it, and a
  // second image of the same disk with other data everywhere; made once for the suite.
  static void SetUpTestSuite() {
    images_ = new TempDir;
    const auto r = Sh("cd " + Quote(images_->path()) +
                      " && qemu-img create -q -f qcow2 a.qcow2 8M && "
                      "qemu-io -c 'write -P 0xa1 64k 3M' -c 'write -P 0xa2 6M 128k' a.qcow2 && "
                      "qemu-img create -q -f qcow2 b.qcow2 8M && "
                      "qemu-io -c 'write -P 0xb1 0 8M' b.qcow2 && "
                      "qemu-img convert -O raw a.qcow2 expected.raw");
    ASSERT_EQ(r.status, 0) << r.output;
  }
  static void TearDownTestSuite() {
    delete images_;
    images_ = nullptr;
  }
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);
    a_ = ReadFile(*images_ / "a.qcow2");
    b_ = ReadFile(*images_ / "b.qcow2");
    FreshTarget();
  }
  void FreshTarget() {
    ASSERT_EQ(Sh("rm -f " + Quote(target_) + " && truncate -s 8M " + Quote(target_)).status, 0);
  }
  // Whether the target holds exactly what qemu-img convert reads from a.qcow2.
  bool TargetIsA() {
    return Sh("cmp " + Quote(target_) + " " + Quote(*images_ / "expected.raw")).status == 0;
  }
  static std::string Status(const Mount& m) {
    const auto bytes = ReadFile(m / "import.status");
    return std::string(bytes.begin(), bytes.end());
  }
  static TempDir* images_;
  TempDir dir_;
  std::string target_ = dir_ / "target";
  std::vector<uint8_t> a_, b_;
};

TempDir* WorstUser::images_ = nullptr;

// A writer of import.qcow2 that forks: the parent's close() ends its import (done: the
// image was complete); the child, still holding the descriptor, then writes another image's
// bytes: they are refused and never reach the target. A writer that dups its descriptor and
// closes the copy half way ends its import there (truncated): the rest of its writes and its
// close() fail, and nothing is ever reported done.
TEST_F(WorstUser, AForkedOrDupedWriterOfImportQcow2NeverMixesImages) {
  Mount m(dir_ / "mnt", "--import " + Quote(target_));
  ASSERT_TRUE(m.ok()) << m.result().output;
  const std::string file = m / "import.qcow2";

  int fd = open(file.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, a_.data(), a_.size()), static_cast<ssize_t>(a_.size()));
  int to_child[2];
  ASSERT_EQ(pipe(to_child), 0);
  const pid_t child = fork();
  if (child == 0) {
    char go;
    if (read(to_child[0], &go, 1) != 1) _exit(10);
    // b's first cluster over a's: different bytes at offsets a's import already decoded.
    const bool wrote = pwrite(fd, b_.data(), 65536, 0) == 65536;
    const bool closed = close(fd) == 0;
    _exit((wrote ? 1 : 0) | (closed ? 2 : 0));
  }
  EXPECT_EQ(close(fd), 0) << "the complete image's writer was not told done: " << Status(m);
  EXPECT_TRUE(Has(Status(m), "state: done")) << Status(m);
  ASSERT_EQ(write(to_child[1], "g", 1), 1);
  int st = 0;
  ASSERT_EQ(waitpid(child, &st, 0), child);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0) << "the child's late write (1) or close (2) succeeded";
  close(to_child[0]);
  close(to_child[1]);
  EXPECT_FALSE(Has(Status(m), "state: done")) << Status(m);
  EXPECT_TRUE(Has(Status(m), "after the import had ended")) << Status(m);
  EXPECT_TRUE(TargetIsA()) << "a late writer's bytes reached the target";

  // A dup closed half way.
  fd = open(file.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << strerror(errno);
  const size_t half = a_.size() / 2;
  ASSERT_EQ(write(fd, a_.data(), half), static_cast<ssize_t>(half));
  const int copy = dup(fd);
  errno = 0;
  EXPECT_EQ(close(copy), -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_EQ(write(fd, a_.data() + half, a_.size() - half), -1);
  EXPECT_EQ(close(fd), -1);
  EXPECT_TRUE(Has(Status(m), "state: failed")) << Status(m);
  EXPECT_TRUE(Has(Status(m), "truncated")) << Status(m);
  EXPECT_TRUE(m.Unmount());
}

// An HTTP client that sends the whole image and keeps its side open (the reply is what it
// waits for): serve, reading from a TCP listener, must finish by itself, with or without
// junk after the image, while the client still holds the connection.
TEST_F(WorstUser, ServeOverTcpFinishesWhileTheClientKeepsItsSideOpen) {
  for (const size_t junk : {size_t{0}, size_t{5} << 20}) {
    SCOPED_TRACE(std::to_string(junk) + " bytes after the image");
    FreshTarget();
    const int port = FreePort();
    Background serve(dir_, Q() + " serve --source tcp:127.0.0.1:" + std::to_string(port) +
                               " --destination " + Quote(target_));
    const int s = ConnectWhenListening(port);
    ASSERT_GE(s, 0);
    std::vector<uint8_t> bytes = a_;
    bytes.resize(a_.size() + junk, 0x99);
    // On a thread: serve may stop reading before the junk is all sent.
    std::thread sender([&] { SendAll(s, bytes.data(), bytes.size()); });
    const CommandResult r = serve.Wait(15);
    sender.join();
    EXPECT_EQ(r.status, 0) << "serve did not finish while its client kept the connection open: "
                           << r.output;
    EXPECT_EQ(r.output, "");
    EXPECT_TRUE(TargetIsA());
    close(s);
  }
}

// A client that sends half an image and goes silent, its side open: serve fails after
// --idle-timeout with one line, and the import is not reported done.
TEST_F(WorstUser, ServeOverTcpFailsAClientThatGoesSilent) {
  const int port = FreePort();
  Background serve(dir_, Q() + " serve --idle-timeout 1 --source tcp:127.0.0.1:" +
                             std::to_string(port) + " --destination " + Quote(target_));
  const int s = ConnectWhenListening(port);
  ASSERT_GE(s, 0);
  ASSERT_EQ(SendAll(s, a_.data(), a_.size() / 2), a_.size() / 2);
  const auto start = Clock::now();
  const CommandResult r = serve.Wait(15);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  close(s);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_EQ(Lines(r.output), 1) << r.output;
  EXPECT_TRUE(Has(r.output, "--idle-timeout")) << r.output;
  EXPECT_GE(seconds, 0.9);
}

// A source whose read fails in the middle of the image (an unreadable page of the file
// holding it): every import from it fails, never reports done, and says why in one line.
TEST_F(WorstUser, AnImportWhoseImageCannotBeReadFails) {
  // The unreadable page lies in a's data, past its tables.
  FaultyFile faulty(*images_ / "a.qcow2", dir_ / "faulty", 1 << 20, (1 << 20) + 4096);
  ASSERT_TRUE(faulty.ok());
  const std::string src = Quote(faulty.path()), t = Quote(target_);
  for (const std::string& command : {Q() + " serve --source " + src + " --destination " + t,
                                     Q() + " serve --source fd:3 --destination " + t + " 3< " + src,
                                     Q() + " serve --destination " + t + " < " + src,
                                     Q() + " stream_decode " + t + " < " + src}) {
    SCOPED_TRACE(command);
    FreshTarget();
    const auto r = Sh("timeout 30 " + command);
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_EQ(Lines(r.output), 1) << r.output;
    EXPECT_TRUE(Has(r.output, "qcowfs: error: ") && Has(r.output, "Input/output error"))
        << r.output;
  }
  // Through the mount: the copy fails, and so does the import.
  Mount m(dir_ / "mnt", "--import " + t);
  ASSERT_TRUE(m.ok()) << m.result().output;
  EXPECT_NE(Sh("cp " + src + " " + Quote(m / "import.qcow2")).status, 0);
  EXPECT_TRUE(Has(Status(m), "state: failed")) << Status(m);
  EXPECT_TRUE(m.Unmount());
}

// An export over a source with an unreadable page, served by one thread: after a reader
// got EIO there, every other range still reads as the disk (nothing stale is left in the
// thread's staging pipe); a qcow2 layer below a chain's top that fails is an EIO too.
TEST_F(WorstUser, AnExportAfterAFailedReadServesOnlyTheDisksBytes) {
  WriteAt(dir_ / "back", 0, RandomBytes(8 << 20, 11));
  const uint64_t bad = (3 << 20) + 8192;
  FaultyFile faulty(dir_ / "back", dir_ / "faulty", bad, bad + 4096);
  ASSERT_TRUE(faulty.ok());
  ASSERT_EQ(Sh(Q() + " stream --source-format raw --source " + Quote(dir_ / "back") +
               " --destination " + Quote(dir_ / "good.qcow2"))
                .status,
            0);
  const auto good = ReadFile(dir_ / "good.qcow2");
  {
    Mount m(dir_ / "mnt", "--threads 1 --export " + Quote(faulty.path()));
    ASSERT_TRUE(m.ok()) << m.result().output;
    // O_DIRECT: each read is one request of exactly its range, as the reader asked.
    const int fd = open((m / "disk.qcow2").c_str(), O_RDONLY | O_DIRECT);
    ASSERT_GE(fd, 0);
    const uint64_t data = good.size() - (8 << 20), bad_at = data + bad;
    void* aligned = nullptr;
    ASSERT_EQ(posix_memalign(&aligned, 4096, 1 << 20), 0);
    std::unique_ptr<uint8_t, decltype(&free)> buf(static_cast<uint8_t*>(aligned), &free);
    // The source's pages before the bad one in its page cache (another reader of the disk
    // read them), so that a failing request gets them into the staging pipe before it fails.
    const int src = open(faulty.path().c_str(), O_RDONLY);
    ASSERT_GE(src, 0);
    ASSERT_EQ(pread(src, buf.get(), 1 << 20, static_cast<off_t>(bad - (1 << 20))), 1 << 20);
    close(src);
    auto read = [&](uint64_t off, uint64_t n) {
      return pread(fd, buf.get(), n, static_cast<off_t>(off));
    };
    // Failed reads starting at several distances before the bad page, each followed by
    // reads of good ranges on the same (only) thread.
    for (const uint64_t before : {0, 4096, 65536, 1 << 19}) {
      SCOPED_TRACE("a read failed " + std::to_string(before) + " bytes before the bad page");
      EXPECT_EQ(read(bad_at - before, before + 65536), -1);
      EXPECT_EQ(errno, EIO);
      for (const uint64_t off : {bad_at + 4096, data, uint64_t{0}}) {
        ASSERT_EQ(read(off, 65536), 65536) << off;
        EXPECT_TRUE(std::equal(buf.get(), buf.get() + 65536, good.begin() + off))
            << "the bytes at " << off << " are not the disk's after a failed read";
      }
    }
    close(fd);
  }
  // A chain whose base (a qcow2 image, its format recorded by the top) fails a read.
  ASSERT_EQ(Sh("qemu-img convert -f raw -O qcow2 " + Quote(dir_ / "back") + " " +
               Quote(dir_ / "base.qcow2"))
                .status,
            0);
  FaultyFile layer(dir_ / "base.qcow2", dir_ / "faulty2", 4 << 20, (4 << 20) + 4096);
  ASSERT_TRUE(layer.ok());
  ASSERT_EQ(Sh("qemu-img create -q -f qcow2 -F qcow2 -b " + Quote(layer.path()) + " " +
               Quote(dir_ / "top.qcow2"))
                .status,
            0);
  Mount m(dir_ / "mnt2", "--export " + Quote(dir_ / "top.qcow2"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  const auto r = Sh("cat " + Quote(m / "disk.qcow2") + " > /dev/null");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(Has(r.output, "Input/output error")) << r.output;
  const auto s = Sh(Q() + " stream --source " + Quote(dir_ / "top.qcow2") + " --destination null:");
  EXPECT_EQ(s.status, 1) << s.output;
  EXPECT_EQ(Lines(s.output), 1) << s.output;
}

// stream and qcow2-to-stdout into a file, from a source that fails a read half way: the
// command fails, and the file holds no part of the image (the part written opened as a
// whole image, qemu-img reading the missing clusters as zeros); what the file held before
// the image began (>>) stays, and the error line (2>&1) goes where the image would have.
TEST_F(WorstUser, AFailedExportLeavesNoPartImageInAFile) {
  WriteAt(dir_ / "back", 0, RandomBytes(8 << 20, 12));
  FaultyFile faulty(dir_ / "back", dir_ / "faulty", 5 << 20, (5 << 20) + 4096);
  ASSERT_TRUE(faulty.ok());
  const std::string src = Quote(faulty.path()), out = dir_ / "out";
  for (const std::string& command :
       {Q() + " stream --source " + src + " --destination " + Quote(out),
        Q() + " stream --source " + src + " --destination - > " + Quote(out),
        Q() + " qcow2-to-stdout " + src + " > " + Quote(out)}) {
    SCOPED_TRACE(command);
    WriteAt(out, 0, {'o', 'l', 'd'});
    const auto r = Sh("timeout 30 " + command);
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_EQ(Lines(r.output), 1) << r.output;
    EXPECT_TRUE(ReadFile(out).empty()) << ReadFile(out).size() << " bytes of a part image left";
  }
  ASSERT_EQ(Sh("echo before > " + Quote(out)).status, 0);
  auto r = Sh("timeout 30 " + Q() + " qcow2-to-stdout " + src + " >> " + Quote(out));
  EXPECT_EQ(r.status, 1) << r.output;
  const auto kept = ReadFile(out);
  EXPECT_EQ(std::string(kept.begin(), kept.end()), "before\n");
  r = Sh("timeout 30 " + Q() + " stream --source " + src + " --destination - > " + Quote(out) +
         " 2>&1");
  EXPECT_EQ(r.status, 1);
  const auto line = ReadFile(out);
  EXPECT_EQ(std::string(line.begin(), line.end()).rfind("qcowfs: error: ", 0), 0u)
      << std::string(line.begin(), line.end());
}

// serve's unix socket is its owner's, whatever the umask: another local user who connects
// first would send the image that lands on the target.
TEST_F(WorstUser, ServesUnixSocketAdmitsOnlyItsOwner) {
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
  ASSERT_EQ(Sh("cp " + Quote(*images_ / "b.qcow2") + " " + Quote(dir_ / "b.qcow2") +
               " && chmod 644 " + Quote(dir_ / "b.qcow2"))
                .status,
            0);
  const std::string sock = dir_ / "sock";
  Background serve(dir_, "sh -c " + Quote("umask 000; exec " + Q() + " serve --source unix:" +
                                          sock + " --destination " + Quote(target_)));
  struct stat st {};
  for (int i = 0; i < 1000 && stat(sock.c_str(), &st) != 0; ++i) usleep(10'000);
  ASSERT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const auto other =
      Sh("setpriv --reuid=65534 --regid=65534 --clear-groups " + Q() + " stream --source " +
         Quote(dir_ / "b.qcow2") + " --source-format qcow2 --destination unix:" + sock);
  EXPECT_NE(other.status, 0) << "another user sent the image: " << other.output;
  EXPECT_TRUE(Has(other.output, "Permission denied")) << other.output;
  // Its owner gets in, and the import is the owner's image.
  const auto owner = Sh(Q() + " stream --source " + Quote(*images_ / "a.qcow2") +
                        " --source-format qcow2 --destination unix:" + sock);
  EXPECT_EQ(owner.status, 0) << owner.output;
  const CommandResult r = serve.Wait(15);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(TargetIsA());
}

// A stream destination in a sticky, world-writable directory (/tmp) that another user
// planted: their symlink (to a file of root's) or their own file. Root's stream followed the
// link and wrote the image over the file it names, or wrote into the file its owner may
// then change; both are refused with one line (exit 2) and nothing is written. Root's own
// link there, and a fresh name, still take the image.
TEST_F(WorstUser, AStreamDestinationAnotherUserPlantedIsRefused) {
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
  const std::string tmp = dir_ / "tmp", victim = dir_ / "victim", out = tmp + "/out.qcow2";
  ASSERT_EQ(mkdir(tmp.c_str(), 0777), 0);
  ASSERT_EQ(chmod(tmp.c_str(), 01777), 0);
  WriteAt(victim, 0, {'r', 'o', 'o', 't'});
  const std::string stream =
      Q() + " stream --source " + Quote(*images_ / "expected.raw") + " --destination " + Quote(out);
  const std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  for (const std::string& plant :
       {"ln -s " + Quote(victim) + " " + Quote(out), "touch " + Quote(out)}) {
    SCOPED_TRACE(plant);
    ASSERT_EQ(Sh(as_nobody + plant).status, 0);
    const auto r = Sh(stream);
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_EQ(Lines(r.output), 1) << r.output;
    EXPECT_TRUE(Has(r.output, "another user's")) << r.output;
    EXPECT_EQ(ReadFile(victim).size(), 4u) << "the image went over the link's target";
    struct stat st {};
    EXPECT_EQ(stat(out.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, plant[0] == 't' ? 0 : 4) << "the image went into the planted file";
    ASSERT_EQ(unlink(out.c_str()), 0);
  }
  ASSERT_EQ(symlink(victim.c_str(), out.c_str()), 0);
  EXPECT_EQ(Sh(stream).status, 0);
  EXPECT_GT(ReadFile(victim).size(), 4u) << "root's own link was not followed";
  ASSERT_EQ(unlink(out.c_str()), 0);
  EXPECT_EQ(Sh(stream).status, 0);
}

// The same for an import target (serve; mount --import opens its target the same way):
// another user's symlink there to a disk of root's, or a second name for root's disk (a hard
// link root made, or anyone where fs.protected_hardlinks is off), is refused with one line
// (exit 2) and the disk it names is untouched; a stream destination with a second name too.
// Root's own link, and root's file with one name, still take the image.
TEST_F(WorstUser, AnImportTargetAnotherUserPlantedIsRefused) {
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
  const std::string tmp = dir_ / "tmp", disk = dir_ / "rootdisk", name = tmp + "/t.raw";
  ASSERT_EQ(mkdir(tmp.c_str(), 0777), 0);
  ASSERT_EQ(chmod(tmp.c_str(), 01777), 0);
  ASSERT_EQ(Sh("truncate -s 8M " + Quote(disk)).status, 0);
  const std::string serve =
      Q() + " serve --source " + Quote(*images_ / "a.qcow2") + " --destination " + Quote(name);
  const std::string stream = Q() + " stream --source " + Quote(*images_ / "expected.raw") +
                             " --destination " + Quote(name);
  const std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  auto untouched = [&] {
    return Sh("cmp -s " + Quote(disk) + " /dev/zero").status == 1 &&
           Sh("cmp -s -n 8388608 " + Quote(disk) + " /dev/zero").status == 0;
  };
  for (const std::string& plant : {as_nobody + "ln -s " + Quote(disk) + " " + Quote(name),
                                   "ln " + Quote(disk) + " " + Quote(name)}) {
    SCOPED_TRACE(plant);
    ASSERT_EQ(Sh(plant).status, 0);
    for (const std::string& command : {serve, stream}) {
      if (command == stream && plant[0] != 'l') continue;  // the symlink: the stream test's
      const auto r = Sh(command);
      EXPECT_EQ(r.status, 2) << r.output;
      EXPECT_EQ(Lines(r.output), 1) << r.output;
      EXPECT_TRUE(Has(r.output, "another user's name")) << r.output;
      EXPECT_TRUE(untouched()) << "the image went into root's disk";
    }
    ASSERT_EQ(unlink(name.c_str()), 0);
  }
  ASSERT_EQ(symlink(disk.c_str(), name.c_str()), 0);
  auto r = Sh(serve);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(Sh("cmp " + Quote(disk) + " " + Quote(*images_ / "expected.raw")).status, 0);
  ASSERT_EQ(unlink(name.c_str()), 0);
  ASSERT_EQ(Sh("truncate -s 8M " + Quote(name)).status, 0);
  r = Sh(serve);
  EXPECT_EQ(r.status, 0) << r.output;
}

}  // namespace
