// Descriptors a caller made non-blocking before handing them over (their open file
// description is the caller's, so qcowfs must not change their flags): an image read from
// one, an image and progress written to one, with a writer or reader that is slower than
// qcowfs. Each must be waited on (EAGAIN), not end the command.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "stop_trials.h"
#include "test_util.h"

using namespace qcowfs_test;

namespace {

// A pipe whose end `nonblocking_end` (0 read, 1 write) has O_NONBLOCK; closed on destruction.
struct NonBlockingPipe {
  int fds[2] = {-1, -1};
  explicit NonBlockingPipe(int nonblocking_end, int size = 0) {
    if (pipe2(fds, O_CLOEXEC) != 0) return;
    if (size) fcntl(fds[1], F_SETPIPE_SZ, size);
    fcntl(fds[nonblocking_end], F_SETFL, fcntl(fds[nonblocking_end], F_GETFL) | O_NONBLOCK);
  }
  ~NonBlockingPipe() { CloseWriteEnd(), close(fds[0]); }
  void CloseWriteEnd() {
    if (fds[1] >= 0) close(fds[1]);
    fds[1] = -1;
  }
};

// Reads fd to its end, sleeping a millisecond after each read so that the writer finds the
// pipe full, and returns the bytes.
std::string ReadSlowly(int fd) {
  std::string out;
  char buf[1 << 16];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    poll(&p, 1, 10'000);
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EAGAIN)) return out;
    if (n > 0) out.append(buf, static_cast<size_t>(n));
    usleep(1000);
  }
}

class Descriptors : public testing::Test {
 protected:
  void SetUp() override {
    WriteAt(dir_ / "src", 0, RandomBytes(2 << 20, 7));
    ASSERT_EQ(Sh("qemu-img convert -f raw -O qcow2 " + Quote(dir_ / "src") + " " +
                 Quote(dir_ / "img.qcow2"))
                  .status,
              0);
    WriteAt(dir_ / "target", (2 << 20) - 1, {0});
  }
  TempDir dir_;
};

TEST_F(Descriptors, ServeWaitsOnANonBlockingStdin) {
  NonBlockingPipe in(0);
  StopRun run;
  run.args = {"serve", "--destination", dir_ / "target"};
  run.in = in.fds[0];
  run.limit = 60;
  StopOutcome o;
  std::thread t([&] { o = RunAndStop(run); });
  // A sender slower than serve: serve finds the pipe empty again and again.
  const auto image = ReadFile(dir_ / "img.qcow2");
  for (size_t off = 0; off < image.size(); off += 16384) {
    // Not forever: a serve that gave up reads nothing more.
    pollfd p{in.fds[1], POLLOUT, 0};
    if (poll(&p, 1, 5000) != 1) break;
    const size_t n = std::min<size_t>(16384, image.size() - off);
    if (write(in.fds[1], image.data() + off, n) != static_cast<ssize_t>(n)) break;
    usleep(1000);
  }
  in.CloseWriteEnd();
  t.join();
  EXPECT_TRUE(o.ended && WIFEXITED(o.wait_status) && WEXITSTATUS(o.wait_status) == 0)
      << o.Describe();
  EXPECT_EQ(o.err, "");
  EXPECT_TRUE(fcntl(in.fds[0], F_GETFL) & O_NONBLOCK) << "the caller's flags were changed";
  EXPECT_EQ(Sh("qemu-img compare -f qcow2 -F raw " + Quote(dir_ / "img.qcow2") + " " +
               Quote(dir_ / "target"))
                .status,
            0);
}

TEST_F(Descriptors, StreamAndQcow2ToStdoutWaitOnANonBlockingStdout) {
  for (const bool qcow2_to_stdout : {false, true}) {
    SCOPED_TRACE(qcow2_to_stdout ? "qcow2-to-stdout" : "stream");
    NonBlockingPipe out(1);
    StopRun run;
    if (qcow2_to_stdout) {
      run.argv0 = "qcow2-to-stdout";
      run.args = {dir_ / "src"};
    } else {  // sendfile from the raw file
      run.args = {"stream", "--source", dir_ / "src", "--destination", "-"};
    }
    run.out = out.fds[1];
    run.limit = 60;
    StopOutcome o;
    std::thread t([&] { o = RunAndStop(run); });
    std::string bytes;
    std::thread reader([&] { bytes = ReadSlowly(out.fds[0]); });
    t.join();
    out.CloseWriteEnd();
    reader.join();
    EXPECT_TRUE(o.ended && WIFEXITED(o.wait_status) && WEXITSTATUS(o.wait_status) == 0)
        << o.Describe();
    EXPECT_EQ(o.err, "");
    WriteAt(dir_ / "out", 0, std::vector<uint8_t>(bytes.begin(), bytes.end()));
    EXPECT_EQ(
        Sh("qemu-img compare -f raw -F qcow2 " + Quote(dir_ / "src") + " " + Quote(dir_ / "out"))
            .status,
        0);
    Sh("rm -f " + Quote(dir_ / "out"));
  }
}

TEST_F(Descriptors, ProgressWaitsOnANonBlockingDescriptor) {
  // Full from the start: every report must wait for the reader.
  NonBlockingPipe progress(1, 4096);
  const std::string filler(4096, 'x');
  ASSERT_EQ(write(progress.fds[1], filler.data(), filler.size()), 4096);
  StopRun run;
  run.args = {"serve",         "--source",      dir_ / "img.qcow2",
              "--destination", dir_ / "target", "--progress",
              "--machine",     "--progress-fd", "3"};
  run.extra_fd = progress.fds[1];
  run.limit = 60;
  StopOutcome o;
  std::thread t([&] { o = RunAndStop(run); });
  usleep(100'000);
  std::string got;
  std::thread reader([&] { got = ReadSlowly(progress.fds[0]); });
  t.join();
  progress.CloseWriteEnd();
  reader.join();
  EXPECT_TRUE(o.ended && WIFEXITED(o.wait_status) && WEXITSTATUS(o.wait_status) == 0)
      << o.Describe();
  ASSERT_GE(got.size(), filler.size() + 3);
  const std::string reports = got.substr(filler.size());
  EXPECT_EQ(reports.size() % 3, 0u) << reports;
  EXPECT_EQ(reports.substr(reports.size() - 3), "100") << reports;
}

// qemu-img map JSON on a non-blocking descriptor (xapi hands pipes over), sent slowly.
TEST_F(Descriptors, AllocationJsonIsWaitedOnANonBlockingDescriptor) {
  const auto map = Sh("qemu-img map --output=json -f raw " + Quote(dir_ / "src"));
  ASSERT_EQ(map.status, 0) << map.output;
  NonBlockingPipe json(0);
  StopRun run;
  run.args = {"stream", "--source",      dir_ / "src",      "--allocation-from",
              "fd:3",   "--destination", dir_ / "out.qcow2"};
  run.extra_fd = json.fds[0];
  run.limit = 60;
  StopOutcome o;
  std::thread t([&] { o = RunAndStop(run); });
  for (size_t off = 0; off < map.output.size(); off += 7) {
    const std::string piece = map.output.substr(off, 7);
    if (write(json.fds[1], piece.data(), piece.size()) != static_cast<ssize_t>(piece.size())) {
      break;
    }
    usleep(2000);
  }
  json.CloseWriteEnd();
  t.join();
  EXPECT_TRUE(o.ended && WIFEXITED(o.wait_status) && WEXITSTATUS(o.wait_status) == 0)
      << o.Describe();
  EXPECT_EQ(o.err, "");
  EXPECT_EQ(Sh("qemu-img compare -f raw -F qcow2 " + Quote(dir_ / "src") + " " +
               Quote(dir_ / "out.qcow2"))
                .status,
            0);
}

// A peer that keeps sending once the image is complete (a flood, or a byte now and then)
// does not keep the finished import, and its target's lock, waiting: stream_decode reads a
// bounded amount for a bounded time, then exits 0 with the target whole.
TEST_F(Descriptors, AFinishedImportDoesNotWaitForAPeerThatKeepsSending) {
  for (const char* tail : {"cat /dev/zero", "while :; do printf x; sleep 0.2; done"}) {
    SCOPED_TRACE(tail);
    WriteAt(dir_ / "target", (2 << 20) - 1, {0});
    const auto r = Sh("bash -c " +
                      Quote("( cat " + Quote(dir_ / "img.qcow2") + "; " + tail +
                            " ) | timeout -s KILL 20 " + Quote(QcowfsBinary()) + " stream_decode " +
                            Quote(dir_ / "target") + "; echo rc=${PIPESTATUS[1]}"));
    EXPECT_NE(r.output.find("rc=0"), std::string::npos) << r.output;
    EXPECT_EQ(Sh("qemu-img compare -q -f qcow2 -F raw " + Quote(dir_ / "img.qcow2") + " " +
                 Quote(dir_ / "target"))
                  .status,
              0);
  }
}

// A peer that stalls mid-image (its side stays open, nothing more comes) does not hold the
// import and its target's lock forever: past --idle-timeout it fails with one line naming
// the stall and how far the image got.
TEST_F(Descriptors, APeerThatStallsMidImageFailsAfterTheIdleTimeout) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  const auto image = ReadFile(dir_ / "img.qcow2");
  ASSERT_GT(image.size(), 60000u);
  ASSERT_EQ(write(fds[1], image.data(), 60000), 60000);
  StopRun run;
  run.args = {"stream_decode", "--idle-timeout", "1", dir_ / "target"};
  run.in = fds[0];
  run.limit = 20;
  const StopOutcome o = RunAndStop(run);
  close(fds[0]);
  close(fds[1]);
  ASSERT_TRUE(o.ended) << o.Describe();
  ASSERT_TRUE(WIFEXITED(o.wait_status)) << o.Describe();
  EXPECT_EQ(WEXITSTATUS(o.wait_status), 1) << o.Describe();
  EXPECT_GE(o.seconds, 0.9) << o.Describe();
  EXPECT_LT(o.seconds, 15.0) << o.Describe();
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  EXPECT_NE(o.err.find("no byte of the image came"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("for 1 seconds (--idle-timeout) after 60000 bytes"), std::string::npos)
      << o.err;
}

}  // namespace
