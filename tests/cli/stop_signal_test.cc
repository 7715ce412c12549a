// SIGTERM, SIGINT and SIGHUP sent to each command (no FUSE) at random moments of its start-up
// and run: every run ends within a second, by its own exit with a non-zero status and
// exactly one line on stderr naming the signal (or, for a command that may finish first,
// exit 0 and nothing on stderr). The commands are kept from finishing: input that never
// comes, output to a pipe nobody reads (or its owner made non-blocking).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <random>

#include "stop_trials.h"
#include "test_util.h"

using namespace qcowfs_test;

namespace {

// A pipe with room for one page, so that any image fills it; closed on destruction.
struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    if (pipe2(&r, O_CLOEXEC) == 0) fcntl(w, F_SETPIPE_SZ, 4096);
  }
  ~Pipe() {
    close(r);
    close(w);
  }
};

class StopSignal : public testing::Test {
 protected:
  // The disks every test reads, made once.
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    WriteAt(dir() / "src", 0, RandomBytes(2 << 20, 5));
    // 512-byte clusters: 4096 of them, so that read_headers prints more than a pipe holds.
    Sh("qemu-img convert -f raw -O qcow2 -o cluster_size=512 " + Quote(dir() / "src") + " " +
       Quote(dir() / "img.qcow2"));
    // A sparse disk of 128 extents, whose map does not fit in a pipe either.
    for (int i = 0; i < 128; ++i) {
      WriteAt(dir() / "sparse", uint64_t(i) << 17, RandomBytes(4096, i));
    }
  }
  static void TearDownTestSuite() { delete dir_; }
  void SetUp() override { ASSERT_EQ(ReadFile(dir() / "img.qcow2").empty(), false); }
  static const TempDir& dir() { return *dir_; }

  // Runs `runs`, keeping the pipes they use open meanwhile; returns how many were interrupted.
  int RunAll(std::vector<StopRun>& runs, const std::string& prefix, bool may_finish) {
    const auto outcomes = RunAllAndStop(runs, 6);
    int interrupted = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
      SCOPED_TRACE(testing::Message()
                   << runs[i].argv0 << " " << runs[i].args[0] << " run " << i << ", "
                   << SignalName(runs[i].sig) << " after " << runs[i].delay << " s");
      interrupted += ExpectStoppedCleanly(
          runs[i], outcomes[i],
          runs[i].argv0 == "qcowfs" ? prefix : "qcow2-to-stdout" + prefix.substr(6), may_finish);
    }
    return interrupted;
  }

  static TempDir* dir_;
  TempDir scratch_;  // targets, sockets
  std::mt19937 rng_{std::random_device{}()};
};

TempDir* StopSignal::dir_ = nullptr;

TEST_F(StopSignal, ServeAndStreamDecodeWaitingForInput) {
  const auto image = ReadFile(dir() / "img.qcow2");
  std::vector<Pipe> pipes(Runs(40)), progress(Runs(40));
  std::vector<StopRun> runs;
  for (size_t i = 0; i < pipes.size(); ++i) {
    // Half of them get the start of the image first, then nothing more.
    if (i % 2) {
      ASSERT_EQ(write(pipes[i].w, image.data(), 4096), 4096);
    }
    const std::string target = scratch_ / ("target" + std::to_string(i));
    WriteAt(target, (2 << 20) - 1, {0});
    StopRun run;
    switch (i % 4) {
      case 0:
        run.args = {"serve", "--destination", target};
        run.in = pipes[i].r;
        break;
      case 1:
        run.args = {"stream_decode", target, "--progress", "--machine", "--progress-fd", "3"};
        run.in = pipes[i].r;
        run.extra_fd = progress[i].w;
        break;
      case 2:
        run.args = {"serve", "--source", "fd:3", "--destination", target};
        run.extra_fd = pipes[i].r;
        break;
      default:  // waiting in accept(), together with the stop descriptor
        run.args = {"serve", "--source", "unix:" + scratch_ / ("socket" + std::to_string(i)),
                    "--destination", target};
        break;
    }
    std::tie(run.sig, run.delay) = RandomStop(rng_, 0.03);
    runs.push_back(run);
  }
  EXPECT_EQ(RunAll(runs, "qcowfs: error: interrupted by ", false), int(runs.size()));
}

TEST_F(StopSignal, StreamAndQcow2ToStdoutToAPipeNobodyReads) {
  std::vector<Pipe> pipes(Runs(24));
  std::vector<StopRun> runs;
  for (size_t i = 0; i < pipes.size(); ++i) {
    // A third of the pipes are non-blocking: the stop is seen in poll rather than ended by
    // the watcher while a write blocks.
    if (i % 3 == 2) fcntl(pipes[i].w, F_SETFL, fcntl(pipes[i].w, F_GETFL) | O_NONBLOCK);
    StopRun run;
    switch (i % 4) {
      case 0:
        run.args = {"stream", "--source", dir() / "src", "--destination", "-"};
        run.out = pipes[i].w;
        break;
      case 1:
        run.args = {"stream",           "--source", dir() / "img.qcow2",
                    "--destination-fd", "3",        "--progress"};
        run.extra_fd = pipes[i].w;
        break;
      case 2:
        run.argv0 = "qcow2-to-stdout";
        run.args = {dir() / "src"};
        run.out = pipes[i].w;
        break;
      default:
        run.args = {"qcow2-to-stdout", dir() / "src"};
        run.out = pipes[i].w;
        break;
    }
    std::tie(run.sig, run.delay) = RandomStop(rng_, 0.03);
    runs.push_back(run);
  }
  EXPECT_EQ(RunAll(runs, "qcowfs: error: interrupted by ", false), int(runs.size()));
}

TEST_F(StopSignal, InspectCommands) {
  std::vector<Pipe> pipes(Runs(40));
  std::vector<StopRun> runs;
  for (size_t i = 0; i < pipes.size(); ++i) {
    StopRun run;
    run.out = pipes[i].w;
    switch (i % 4) {
      case 0:  // output that does not fit: these never finish
        run.args = {"map", "--json", dir() / "sparse"};
        break;
      case 1:
        run.args = {"read_headers", dir() / "img.qcow2"};
        break;
      case 2:  // short runs, stopped anywhere in them or finished first
        run.args = {"info", dir() / "img.qcow2"};
        break;
      default:
        run.args = {"check", dir() / "img.qcow2"};
        break;
    }
    std::tie(run.sig, run.delay) = RandomStop(rng_, i % 4 < 2 ? 0.03 : 0.005);
    runs.push_back(run);
  }
  const auto outcomes = RunAllAndStop(runs, 6);
  int short_runs_interrupted = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    SCOPED_TRACE(testing::Message() << runs[i].args[0] << " run " << i << ", "
                                    << SignalName(runs[i].sig) << " after " << runs[i].delay);
    const bool interrupted =
        ExpectStoppedCleanly(runs[i], outcomes[i], "qcowfs: error: interrupted by ", i % 4 >= 2);
    if (i % 4 < 2) {
      EXPECT_TRUE(interrupted);
    }
    short_runs_interrupted += i % 4 >= 2 && interrupted;
  }
  // Most of the signals land while info and check run (they take several milliseconds).
  EXPECT_GT(short_runs_interrupted, 0);
}

// A stop signal the caller ignored stays ignored (SIGHUP under nohup, SIGINT for a script's
// background job); the others still stop the command.
TEST_F(StopSignal, AnIgnoredSignalStaysIgnored) {
  Pipe in;
  WriteAt(scratch_ / "target", (2 << 20) - 1, {0});
  StopRun run;
  run.args = {"serve", "--destination", scratch_ / "target"};
  run.in = in.r;
  run.ignored = {SIGHUP};
  run.sig = SIGHUP;
  run.limit = 0.3;
  const StopOutcome ignored = RunAndStop(run);
  EXPECT_TRUE(ignored.started && !ignored.ended) << ignored.Describe();
  run.sig = SIGTERM;
  run.limit = 1;
  ExpectStoppedCleanly(run, RunAndStop(run), "qcowfs: error: interrupted by SIGTERM", false);
}

}  // namespace
