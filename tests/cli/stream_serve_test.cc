// stream, serve, stream_decode, info, check and map: the data paths without FUSE, judged
// against the mounted disk.qcow2 (cmp) and by qemu-img.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <regex>

#include "image_recipes.h"
#include "mount_fixture.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

std::string Q() { return QcowfsBinary(); }

class StreamServe : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteAt(dir_ / "src", 77777, RandomBytes(2 << 20, 1));
    WriteAt(dir_ / "src", 20 << 20, RandomBytes(300'000, 2));
    ASSERT_EQ(truncate((dir_ / "src").c_str(), (32 << 20) + 1000), 0);
    mount_ = std::make_unique<Mount>(dir_ / "mnt", "--export " + Quote(dir_ / "src"));
    ASSERT_TRUE(mount_->ok()) << mount_->result().output;
    expected_ = ReadFile(*mount_ / "disk.qcow2");
  }
  void ExpectIdentical(const std::string& file, const std::string& how) {
    EXPECT_TRUE(ReadFile(file) == expected_) << how << " differs from the mounted disk.qcow2";
  }
  // Accepts one connection on a listening socket and returns everything read from it.
  static std::vector<uint8_t> DrainOne(int listener) {
    int c = accept(listener, nullptr, nullptr);
    std::vector<uint8_t> out;
    uint8_t buf[65536];
    ssize_t n;
    while (c >= 0 && (n = read(c, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
    if (c >= 0) close(c);
    return out;
  }
  TempDir dir_;
  std::unique_ptr<Mount> mount_;
  std::vector<uint8_t> expected_;
};

TEST_F(StreamServe, StreamToStdoutPipeFdFileAndNullIsByteIdentical) {
  const std::string src = Quote(dir_ / "src");
  ASSERT_EQ(Sh(Q() + " stream --source " + src + " --destination - > " + Quote(dir_ / "o1")).status,
            0);
  ExpectIdentical(dir_ / "o1", "stdout");
  ASSERT_EQ(
      Sh(Q() + " stream --source " + src + " --destination stdout: | cat > " + Quote(dir_ / "o2"))
          .status,
      0);
  ExpectIdentical(dir_ / "o2", "pipe");
  ASSERT_EQ(
      Sh(Q() + " stream --source " + src + " --destination-fd 7 7> " + Quote(dir_ / "o3")).status,
      0);
  ExpectIdentical(dir_ / "o3", "--destination-fd");
  ASSERT_EQ(
      Sh(Q() + " stream --source " + src + " --destination fd://8 8> " + Quote(dir_ / "o4")).status,
      0);
  ExpectIdentical(dir_ / "o4", "fd://");
  ASSERT_EQ(
      Sh(Q() + " stream --source " + src + " --destination file://" + dir_.path() + "/o5").status,
      0);
  ExpectIdentical(dir_ / "o5", "file://");
  ASSERT_EQ(Sh(Q() + " stream --source " + src + " --destination " + Quote(dir_ / "o6")).status, 0);
  ExpectIdentical(dir_ / "o6", "plain path");
  EXPECT_EQ(Sh(Q() + " stream --source " + src + " --destination null:").status, 0);
}

TEST_F(StreamServe, PipesAreWidenedToAMebibyte) {
  // A 64 KiB pipe costs a context switch per 64 KiB: stream widens the pipe it writes and
  // serve the pipe it reads. The reader asks the pipe's size once the first byte arrived,
  // when the writer has widened it; the import must still succeed.
  const std::string src = Quote(dir_ / "src");
  const std::string ask =
      "python3 -c 'import fcntl, sys; sys.stdin.buffer.read(1); "
      "print(fcntl.fcntl(0, 1032)); sys.stdin.buffer.read()'";
  CommandResult r = Sh(Q() + " stream --source " + src + " --destination - | " + ask);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "1048576\n");
  // The writer asks once everything it wrote went in, when serve has read and so widened.
  const std::string target = dir_ / "target";
  WriteAt(target, 0, std::vector<uint8_t>(1, 0));
  ASSERT_EQ(truncate(target.c_str(), (32 << 20) + 1000), 0);
  const std::string write =
      "python3 -c 'import fcntl, sys; sys.stdout.buffer.write(open(sys.argv[1], \"rb\").read()); "
      "sys.stdout.flush(); print(fcntl.fcntl(1, 1032), file=sys.stderr)' " +
      Quote(*mount_ / "disk.qcow2");
  r = Sh(write + " 2>" + Quote(dir_ / "size") + " | " + Q() + " serve --source - --destination " +
         Quote(target));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(ReadFile(target) == ReadFile(dir_ / "src"));
  const std::vector<uint8_t> size = ReadFile(dir_ / "size");
  EXPECT_EQ(std::string(size.begin(), size.end()), "1048576\n");
}

TEST_F(StreamServe, DecompressThreadsFollowTheOptionAndTheAffinityMask) {
  // A compressed image sent in two halves with a pause between: while serve waits for the
  // second, its threads are counted. --decompress-threads 3 runs three workers more than
  // --decompress-threads 1 (which decompresses on the reading thread); the default on one
  // CPU (taskset) is the same as 1. Every import must still be the image's disk.
  std::string text;
  for (int i = 0; text.size() < (8u << 20); ++i) text += "line " + std::to_string(i * 7919) + "\n";
  text.resize(8u << 20);
  WriteAt(dir_ / "text.raw", 0, std::vector<uint8_t>(text.begin(), text.end()));
  const std::string image = dir_ / "text.qcow2";
  ASSERT_EQ(
      Sh("qemu-img convert -c -f raw -O qcow2 " + Quote(dir_ / "text.raw") + " " + Quote(image))
          .status,
      0);
  const std::string target = dir_ / "target";
  auto threads = [&](const std::string& prefix, const std::string& option) {
    const std::string how = prefix + Q() + " serve " + option;
    WriteAt(target, 0, std::vector<uint8_t>(1, 1));
    EXPECT_EQ(truncate(target.c_str(), 8 << 20), 0);
    const CommandResult r =
        Sh("img=" + Quote(image) +
           "; half=$(($(stat -c %s \"$img\") / 2)); "
           "{ head -c $half \"$img\"; sleep 1.2; tail -c +$((half + 1)) \"$img\"; } | " +
           how + " --source - --destination " + Quote(target) +
           " & pid=$!; sleep 0.6; ls /proc/$pid/task | wc -l; wait $pid");
    EXPECT_EQ(r.status, 0) << how << ": " << r.output;
    EXPECT_TRUE(ReadFile(target) == ReadFile(dir_ / "text.raw")) << how;
    return std::stoi(r.output);
  };
  const int one = threads("", "--decompress-threads 1");
  EXPECT_EQ(threads("", "--decompress-threads 3"), one + 3);
  EXPECT_EQ(threads("taskset -c 0 ", ""), one);
}

TEST_F(StreamServe, StreamToTcpAndUnixSocketsIsByteIdentical) {
  int tcp = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(tcp, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(tcp, 1), 0);
  socklen_t len = sizeof a;
  getsockname(tcp, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string port = std::to_string(ntohs(a.sin_port));
  for (const std::string scheme : {"tcp:", "tcp://"}) {
    auto got = std::async(std::launch::async, DrainOne, tcp);
    auto r = Sh("timeout 60 " + Q() + " stream --source " + Quote(dir_ / "src") +
                " --destination " + scheme + "127.0.0.1:" + port);
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_TRUE(got.get() == expected_) << scheme;
  }
  close(tcp);

  const std::string path = dir_ / "sock";
  int ux = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un u{};
  u.sun_family = AF_UNIX;
  std::snprintf(u.sun_path, sizeof u.sun_path, "%s", path.c_str());
  ASSERT_EQ(bind(ux, reinterpret_cast<sockaddr*>(&u), sizeof u), 0);
  ASSERT_EQ(listen(ux, 1), 0);
  for (const std::string scheme : {"unix:", "unix://"}) {
    auto got = std::async(std::launch::async, DrainOne, ux);
    auto r = Sh("timeout 60 " + Q() + " stream --source " + Quote(dir_ / "src") +
                " --destination " + scheme + path);
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_TRUE(got.get() == expected_) << scheme;
  }
  close(ux);
}

TEST_F(StreamServe, EarlyClosingPeerGivesOneLineAndNonZeroExit) {
  auto r =
      Sh("bash -c " + Quote("set -o pipefail; timeout 60 " + Q() + " stream --source " +
                            Quote(dir_ / "src") + " --destination - | head -c 1000 > /dev/null"));
  EXPECT_EQ(r.status, 1) << "not a clean failure (141 would be a SIGPIPE death): " << r.output;
  EXPECT_NE(r.output.find("qcowfs: error: the destination closed early"), std::string::npos)
      << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

// Reads a machine progress stream the way xapi does: three bytes at a time.
void ExpectMachineProgress(const std::string& text) {
  ASSERT_FALSE(text.empty());
  ASSERT_EQ(text.size() % 3, 0u) << "'" << text << "'";
  int last = -1;
  for (size_t i = 0; i < text.size(); i += 3) {
    const std::string chunk = text.substr(i, 3);
    ASSERT_TRUE(std::regex_match(chunk, std::regex("[0-9]{3}"))) << "'" << text << "'";
    const int v = std::stoi(chunk);
    EXPECT_GE(v, last) << "'" << text << "'";
    last = v;
  }
  EXPECT_EQ(last, 100) << "'" << text << "'";
}

TEST_F(StreamServe, ServeFromEachKindOfSourceMatchesTheImage) {
  const std::string img = *mount_ / "disk.qcow2";
  const uint64_t size = VirtualSize(img);
  auto fresh = [&](const std::string& t) { MakePatternTarget(dir_ / t, size); };
  auto judge = [&](const std::string& t, const CommandResult& r, const std::string& how) {
    EXPECT_EQ(r.status, 0) << how << ": " << r.output;
    auto cmp = Sh("qemu-img compare -f qcow2 -F raw " + Quote(img) + " " + Quote(dir_ / t));
    EXPECT_EQ(cmp.status, 0) << how << ": " << cmp.output;
  };
  fresh("t1");
  judge("t1",
        Sh(Q() + " serve --source - --destination " + Quote(dir_ / "t1") + " < " + Quote(img)),
        "stdin");
  fresh("t2");
  judge(
      "t2",
      Sh(Q() + " serve --source-fd 5 --destination file://" + dir_.path() + "/t2 5< " + Quote(img)),
      "--source-fd");
  fresh("t3");
  judge("t3", Sh(Q() + " serve --source " + Quote(img) + " --destination " + Quote(dir_ / "t3")),
        "file");
  // stream_decode leaves what the image does not allocate: a target that reads as zeros, as
  // a new VDI does (xapi_http_test covers one that does not).
  ASSERT_EQ(Sh("truncate -s " + std::to_string(size) + " " + Quote(dir_ / "t4")).status, 0);
  judge("t4", Sh("cat " + Quote(img) + " | " + Q() + " stream_decode " + Quote(dir_ / "t4")),
        "stream_decode");
  // Listeners: serve accepts one connection; the image is sent by a second qcowfs.
  fresh("t5");
  judge("t5",
        Sh("(timeout 60 " + Q() + " serve --source tcp:127.0.0.1:39517 --destination " +
           Quote(dir_ / "t5") + ") & for i in $(seq 100); do " + Q() + " stream --source " +
           Quote(dir_ / "src") +
           " --destination tcp:127.0.0.1:39517 2>/dev/null && break; "
           "sleep 0.1; done; wait $!"),
        "tcp listener");
  fresh("t6");
  judge("t6",
        Sh("(timeout 60 " + Q() + " serve --source unix://" + dir_.path() + "/s6 --destination " +
           Quote(dir_ / "t6") + ") & for i in $(seq 100); do " + Q() + " stream --source " +
           Quote(dir_ / "src") + " --destination unix:" + dir_.path() +
           "/s6 2>/dev/null && break; sleep 0.1; done; wait $!"),
        "unix listener");
}

// The source is 32 MiB + 1000 bytes; its image, like qemu-img's of it, rounds the virtual
// size up to a sector. Imported back onto a disk of the source's own size (xapi's round trip
// of such a VDI) it fits: the 24 bytes past the disk's end are zeros. Data there is refused
// (exit 3 or EFBIG) and nothing is written past the disk's end.
TEST_F(StreamServe, ImportsOntoATargetOfTheSourcesOddSize) {
  const std::string img = *mount_ / "disk.qcow2";
  const uint64_t size = (32 << 20) + 1000;
  ASSERT_EQ(VirtualSize(img), (32 << 20) + 1024);
  auto run = [&](const std::string& image, const std::string& t) -> CommandResult {
    MakePatternTarget(dir_ / t, size);
    if (t == "serve") {
      return Sh(Q() + " serve --source " + Quote(image) + " --destination " + Quote(dir_ / t));
    }
    if (t == "stream_decode") {  // leaves what the image does not allocate: a new VDI's zeros
      Sh("rm " + Quote(dir_ / t) + " && truncate -s " + std::to_string(size) + " " +
         Quote(dir_ / t));
      return Sh(Q() + " stream_decode " + Quote(dir_ / t) + " < " + Quote(image));
    }
    Mount m(dir_ / "mnt2", "--import " + Quote(dir_ / t));
    if (!m.ok()) return {1, m.result().output};
    auto w = Sh("cat " + Quote(image) + " > " + Quote(m / "import.qcow2"));
    w.output += Sh("cat " + Quote(m / "import.status")).output;
    EXPECT_TRUE(m.Unmount());
    return w;
  };
  for (const std::string t : {"serve", "stream_decode", "mount"}) {
    SCOPED_TRACE(t);
    const auto r = run(img, t);
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(Sh("cmp " + Quote(dir_ / "src") + " " + Quote(dir_ / t)).status, 0);
  }
  // The same image with a byte written past the disk's end.
  const std::string odd = dir_ / "odd.qcow2";
  ASSERT_EQ(Sh("cp " + Quote(img) + " " + Quote(odd) + " && qemu-io -f qcow2 -c 'write -P 7 " +
               std::to_string(size + 23) + " 1' " + Quote(odd) + " > /dev/null")
                .status,
            0);
  for (const std::string t : {"serve", "stream_decode", "mount"}) {
    SCOPED_TRACE(t);
    const auto r = run(odd, t);
    if (t == "mount") {
      EXPECT_NE(r.status, 0) << r.output;
      EXPECT_NE(r.output.find("File too large"), std::string::npos) << r.output;
      EXPECT_NE(r.output.find("state: failed"), std::string::npos) << r.output;
    } else {
      EXPECT_EQ(r.status, 3) << r.output;
      EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    }
    EXPECT_NE(r.output.find("past the end of the target (" + std::to_string(size) + " bytes)"),
              std::string::npos)
        << r.output;
    EXPECT_EQ(std::filesystem::file_size(dir_ / t), size) << "written past the end of the disk";
  }
  // A writer killed half way through the image: the import fails, the disk keeps its size.
  {
    MakePatternTarget(dir_ / "killed", size);
    Mount m(dir_ / "mnt3", "--import " + Quote(dir_ / "killed"));
    ASSERT_TRUE(m.ok()) << m.result().output;
    // The shell holds the file open and is killed: the kernel closes it.
    Sh("sh -c " + Quote("exec 3> " + Quote(m / "import.qcow2") + "; head -c " +
                        std::to_string(std::filesystem::file_size(img) / 2) + " " + Quote(img) +
                        " >&3; kill -9 $$"));
    std::string status;
    for (int i = 0; i < 100; ++i) {
      status = Sh("cat " + Quote(m / "import.status")).output;
      if (status.find("state: failed") != std::string::npos) break;
      usleep(100'000);
    }
    EXPECT_NE(status.find("state: failed"), std::string::npos) << status;
    EXPECT_TRUE(m.Unmount());
    EXPECT_EQ(std::filesystem::file_size(dir_ / "killed"), size);
  }
  // One byte less than the image's data is refused on its header.
  MakePatternTarget(dir_ / "short", size - 513);
  const auto r =
      Sh(Q() + " serve --source " + Quote(img) + " --destination " + Quote(dir_ / "short"));
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("the target holds only"), std::string::npos) << r.output;
}

TEST_F(StreamServe, ServeRefusesTruncatedAndBadStreams) {
  const std::string img = *mount_ / "disk.qcow2";
  MakePatternTarget(dir_ / "t", VirtualSize(img));
  auto r = Sh("head -c 500000 " + Quote(img) + " | " + Q() + " serve --destination " +
              Quote(dir_ / "t"));
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("truncated"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  r = Sh(Q() + " serve --destination " + Quote(dir_ / "t") + " < /dev/null");
  EXPECT_EQ(r.status, 3) << r.output;
  MakePatternTarget(dir_ / "small", 1 << 20);
  r = Sh(Q() + " serve --source " + Quote(img) + " --destination " + Quote(dir_ / "small"));
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("the target holds only"), std::string::npos) << r.output;
}

// Returns a command line that runs `serve` (a command line without its source) reading
// `image` from a socket: the sender's end of a socket pair, shut down once all is sent.
std::string ServeFromSocket(const std::string& serve, const std::string& image) {
  return "python3 -c " +
         Quote(
             "import socket, subprocess, sys\n"
             "a, b = socket.socketpair()\n"
             "p = subprocess.Popen(sys.argv[2:] + ['--source-fd', str(b.fileno())],"
             " pass_fds=[b.fileno()])\n"
             "b.close()\n"
             "try:\n"
             "    a.sendall(open(sys.argv[1], 'rb').read())\n"
             "    a.shutdown(socket.SHUT_WR)\n"
             "except OSError:\n"
             "    pass\n"  // serve stopped reading: its status says why
             "sys.exit(p.wait())") +
         " " + Quote(image) + " " + serve;
}

// Data runs go from the input into the target in the kernel: copy_file_range from a file,
// splice through a pipe from a socket (strace shows the calls and what they moved into the
// target). A pipe is read: splicing from one measured slower (qcow/io/move_bytes.cc).
TEST_F(StreamServe, ServeMovesDataStraightIntoTheTarget) {
  // A file on the target's file system: copy_file_range serves it.
  ASSERT_EQ(Sh("cp " + Quote(*mount_ / "disk.qcow2") + " " + Quote(dir_ / "img")).status, 0);
  const std::string img = Quote(dir_ / "img"), trace = Quote(dir_ / "trace");
  const std::string strace = "strace -f -qq -e trace=copy_file_range,splice -o " + trace + " ";
  for (const std::string input : {"file", "socket"}) {
    const std::string target = dir_ / ("t_" + input);
    MakePatternTarget(target, (32 << 20) + 1000);
    const std::string serve = Q() + " serve --destination " + Quote(target);
    auto r = input == "file" ? Sh(strace + serve + " --source " + img)
                             : Sh(ServeFromSocket(strace + serve, dir_ / "img"));
    ASSERT_EQ(r.status, 0) << input << ": " << r.output;
    EXPECT_TRUE(ReadFile(target) == ReadFile(dir_ / "src")) << input;
    const auto calls = ReadFile(dir_ / "trace");
    const std::string text(calls.begin(), calls.end());
    uint64_t moved = 0;
    // Into the target: at an offset.
    const std::regex call(input == "file"
                              ? "copy_file_range\\(.*\\) = ([0-9]+)"
                              : "splice\\([0-9]+, NULL, [0-9]+, \\[[0-9]+\\], .*\\) = ([0-9]+)");
    for (std::sregex_iterator it(text.begin(), text.end(), call), end; it != end; ++it) {
      moved += std::stoull((*it)[1]);
    }
    EXPECT_GE(moved, 2u << 20) << input << ": " << text;
  }
}

// A move that fails, reading the image or writing the target, fails the import with one
// line naming the side that failed; nothing reports success.
TEST_F(StreamServe, AFailedMoveFailsTheImportWithItsReason) {
  const std::string img = dir_ / "img.qcow2";
  ASSERT_EQ(Sh("cp " + Quote(*mount_ / "disk.qcow2") + " " + Quote(img)).status, 0);
  auto map = Sh("qemu-img map --output=json " + Quote(img));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(map.output, m, std::regex("\"offset\": ([0-9]+)"))) << map.output;
  const uint64_t data = std::stoull(m[1]);
  {
    FaultyFile faulty(img, dir_ / "unreadable", data + (1 << 20), data + (1 << 20) + 4096);
    ASSERT_TRUE(faulty.ok());
    MakePatternTarget(dir_ / "t", (32 << 20) + 1000);
    auto r =
        Sh(Q() + " serve --source " + Quote(faulty.path()) + " --destination " + Quote(dir_ / "t"));
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find("reading the image from " + faulty.path() + ": Input/output error"),
              std::string::npos)
        << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  MakePatternTarget(dir_ / "backing", (32 << 20) + 1000);
  FaultyFile faulty(dir_ / "backing", dir_ / "unwritable", 1 << 20, (1 << 20) + 4096);
  ASSERT_TRUE(faulty.ok());
  for (const std::string how : {"file", "socket", "pipe"}) {
    const std::string serve = Q() + " serve --destination " + Quote(faulty.path());
    auto r = how == "file"     ? Sh(serve + " --source " + Quote(img))
             : how == "socket" ? Sh(ServeFromSocket(serve, img))
                               : Sh("cat " + Quote(img) + " | " + serve);
    EXPECT_EQ(r.status, 1) << how << ": " << r.output;
    EXPECT_NE(r.output.find("writing target " + faulty.path()), std::string::npos)
        << how << ": " << r.output;
    EXPECT_NE(r.output.find("Input/output error"), std::string::npos) << how << ": " << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << how << ": " << r.output;
  }
}

TEST_F(StreamServe, MachineProgressReadsLikeXapiExpects) {
  auto r = Sh(Q() + " stream --source " + Quote(dir_ / "src") +
              " --destination-fd 9 --progress --machine 9> " + Quote(dir_ / "o") + " 2>/dev/null");
  ASSERT_EQ(r.status, 0);
  ExpectMachineProgress(r.output);
  ExpectIdentical(dir_ / "o", "stream with progress");
  MakePatternTarget(dir_ / "t", VirtualSize(*mount_ / "disk.qcow2"));
  r = Sh(Q() + " serve --progress --machine --destination " + Quote(dir_ / "t") + " < " +
         Quote(*mount_ / "disk.qcow2") + " 2>/dev/null");
  ASSERT_EQ(r.status, 0);
  ExpectMachineProgress(r.output);
  // With the image on stdout, machine progress needs its own descriptor.
  r = Sh(Q() + " stream --source " + Quote(dir_ / "src") +
         " --destination - --progress --machine > /dev/null");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--progress-fd"), std::string::npos) << r.output;
}

TEST_F(StreamServe, ProgressBarOnATerminalOnly) {
  // script(1) gives the command a terminal; the bar then shows percent, bytes, rate, time.
  auto tty = Sh(
      "script -qfec " +
      Quote(Q() + " stream --source " + Quote(dir_ / "src") + " --destination null: --progress") +
      " /dev/null");
  ASSERT_EQ(tty.status, 0) << tty.output;
  EXPECT_NE(tty.output.find("100% "), std::string::npos) << tty.output;
  EXPECT_NE(tty.output.find("done"), std::string::npos) << tty.output;
  EXPECT_NE(tty.output.find("[####"), std::string::npos) << tty.output;
  // Without a terminal nothing is drawn.
  auto pipe = Sh(Q() + " stream --source " + Quote(dir_ / "src") +
                 " --destination null: --progress 2>&1 | cat");
  EXPECT_EQ(pipe.output, "");
}

TEST_F(StreamServe, XapiCommandLinesRunEndToEnd) {
  // The disk as a loop block device, exported the way xapi drives vhd-tool.
  // (losetup ignores the source's last partial sector.)
  LoopDevice loop(dir_ / "src");
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  const std::string dev = loop.device();
  auto out = Sh(Q() + " stream --source-protocol none --source-format raw --source " + dev +
                " --destination-protocol none --destination-format qcow2 --destination-fd 6 "
                "--tar-filename-prefix '' --progress --machine --direct --path /dev/mapper:. "
                "6> " +
                Quote(dir_ / "export.qcow2"));
  EXPECT_EQ(out.status, 0) << out.output;
  ExpectMachineProgress(out.output);
  auto cmp = Sh("qemu-img compare -f raw -F qcow2 " + dev + " " + Quote(dir_ / "export.qcow2"));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
  EXPECT_EQ(Sh("qemu-img check " + Quote(dir_ / "export.qcow2")).status, 0);
  // And imported back into a zeroed file the way xapi drives vhd-tool serve.
  const uint64_t size = VirtualSize(dir_ / "export.qcow2");
  ASSERT_EQ(Sh("truncate -s 0 " + Quote(dir_ / "vdi")).status, 0);
  ASSERT_EQ(Sh("truncate -s " + std::to_string(size) + " " + Quote(dir_ / "vdi")).status, 0);
  auto in = Sh(Q() +
               " serve --source-format qcow2 --source-protocol none --source-fd 4 "
               "--tar-filename-prefix '' --destination file://" +
               dir_.path() +
               "/vdi --destination-format raw --progress --machine --direct --destination-size " +
               std::to_string(ReadFile(dir_ / "export.qcow2").size()) + " --prezeroed 4< " +
               Quote(dir_ / "export.qcow2"));
  EXPECT_EQ(in.status, 0) << in.output;
  ExpectMachineProgress(in.output);
  EXPECT_EQ(Sh("cmp -n " + std::to_string(32 << 20) + " " + Quote(dir_ / "src") + " " +
               Quote(dir_ / "vdi"))
                .status,
            0);
  // A file shorter than the --destination-size announced is a failure, as a socket is.
  for (const std::string how : {"--source-fd 4 4<", "--source"}) {
    auto r = Sh(Q() + " serve --destination " + Quote(dir_ / "vdi") + " --destination-size " +
                std::to_string(ReadFile(dir_ / "export.qcow2").size() + 65536) + " " + how + " " +
                Quote(dir_ / "export.qcow2"));
    EXPECT_EQ(r.status, 1) << how << ": " << r.output;
    EXPECT_NE(r.output.find("bytes that --destination-size announced"), std::string::npos)
        << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  // What cannot be honoured is refused with a clear line.
  for (const std::string bad :
       {"--destination-format vhd", "--destination-protocol nbd", "--source-format vmdk"}) {
    auto r = Sh(Q() + " stream --source " + Quote(dir_ / "src") + " --destination null: " + bad);
    EXPECT_EQ(r.status, 2) << bad << ": " << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  // A delta's base that is not there is named.
  auto r = Sh(Q() + " stream --source " + Quote(dir_ / "src") +
              " --destination null: --relative-to /dev/sm/parent");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("/dev/sm/parent: No such file"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  r = Sh(Q() + " serve --destination " + Quote(dir_ / "vdi") + " --relative-to /dev/sm/parent");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("serve imports whole images"), std::string::npos) << r.output;
}

TEST_F(StreamServe, InfoCheckAndMapAgreeWithQemuImg) {
  const std::string img = *mount_ / "disk.qcow2";
  auto info = Sh(Q() + " info --json " + Quote(img));
  ASSERT_EQ(info.status, 0) << info.output;
  auto qinfo = Sh("qemu-img info --output=json " + Quote(img));
  auto number = [](const std::string& json, const std::string& key) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(json, m, std::regex("\"" + key + "\": ([0-9]+)"))) << key;
    return m.size() > 1 ? std::stoull(m[1]) : 0ull;
  };
  EXPECT_EQ(number(info.output, "virtual-size"), number(qinfo.output, "virtual-size"));
  EXPECT_EQ(number(info.output, "cluster-size"), number(qinfo.output, "cluster-size"));
  EXPECT_NE(info.output.find("\"importable\": true"), std::string::npos) << info.output;
  auto parsed = Sh(Q() + " info --json " + Quote(img) + " | python3 -m json.tool");
  EXPECT_EQ(parsed.status, 0) << "info --json is not JSON: " << parsed.output;
  auto parsed_map = Sh(Q() + " map --json " + Quote(dir_ / "src") + " | python3 -m json.tool");
  EXPECT_EQ(parsed_map.status, 0) << "map --json is not JSON: " << parsed_map.output;
  EXPECT_EQ(Sh(Q() + " check " + Quote(img)).status, 0);
  ASSERT_EQ(Sh("head -c 400000 " + Quote(img) + " > " + Quote(dir_ / "cut.qcow2")).status, 0);
  auto bad = Sh(Q() + " check " + Quote(dir_ / "cut.qcow2"));
  EXPECT_EQ(bad.status, 3) << bad.output;
  auto bad_info = Sh(Q() + " info --json " + Quote(dir_ / "cut.qcow2"));
  EXPECT_NE(bad_info.output.find("\"importable\": false"), std::string::npos) << bad_info.output;
  auto map = Sh(Q() + " map --json " + Quote(dir_ / "src"));
  auto qmap = Sh("qemu-img map --output=json " + Quote(img));
  EXPECT_EQ(map.output, qmap.output);
}

// info reads cluster 0 and the tables, never the data (qemu-img info's speed on a huge
// sparse image); check decodes everything. Proven with the data made unreadable.
TEST(Inspect, InfoReadsOnlyTheHeaderAndTables) {
  TempDir dir;
  ASSERT_EQ(Sh("cd " + Quote(dir.path()) +
               " && qemu-img create -q -f qcow2 img 256G && "
               "qemu-io -c 'write -P 7 0 1M' -c 'write -P 8 100M 64k' img > /dev/null")
                .status,
            0);
  // The image: header, refcount table and block, L1, an L2 table, then the data.
  auto map = Sh("qemu-img map --output=json " + Quote(dir / "img"));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(map.output, m, std::regex("\"offset\": ([0-9]+)"))) << map.output;
  const uint64_t data = std::stoull(m[1]);
  FaultyFile faulty(dir / "img", dir / "faulty", data, 1ull << 40);
  ASSERT_TRUE(faulty.ok());
  // (faulty_fs names its file "disk", which says nothing of its format.)
  auto info = Sh(Q() + " info --json --source-format qcow2 " + Quote(faulty.path()));
  EXPECT_EQ(info.status, 0) << info.output;
  EXPECT_NE(info.output.find("\"allocated-bytes\": " + std::to_string((1 << 20) + 65536)),
            std::string::npos)
      << info.output;
  EXPECT_NE(info.output.find("\"problems\": []"), std::string::npos) << info.output;
  auto check = Sh(Q() + " check " + Quote(faulty.path()));
  EXPECT_EQ(check.status, 1) << check.output;
  EXPECT_NE(check.output.find("Input/output error"), std::string::npos) << check.output;
}

}  // namespace
