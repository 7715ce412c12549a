// A typo must not destroy a file: a command never writes over a file it reads (stream's
// destination against its source, every layer, the allocation metadata and the base; a
// mount's import target against its export; serve's target against its image; the stdout of
// qcow2-to-stdout against its disks), whatever name reaches the file (a symlink, file://,
// a descriptor, another device node); a directory or a block device is no stream
// destination; and serve replaces only a socket. Each is refused with one line before
// anything is written, and every file keeps its bytes.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "mount_fixture.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

std::string Q() { return QcowfsBinary(); }

// Unmounts what a mount that should have been refused mounted.
struct NoMountLeft {
  std::string path;
  ~NoMountLeft() {
    if (IsMounted(path)) Sh("fusermount3 -u " + Quote(path));
  }
};

class Typos : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteAt(dir_ / "src.raw", 0, RandomBytes(2 << 20, 1));
    WriteAt(dir_ / "other.raw", 0, RandomBytes(2 << 20, 2));
    // img.qcow2 is an image of 1 MiB in a file of 4 MiB: decoded onto itself, its data
    // would land inside it.
    auto r = Sh("cd " + Quote(dir_.path()) +
                " && qemu-img create -q -f qcow2 base.qcow2 2M"
                " && qemu-io -c 'write -P 0x11 0 1M' base.qcow2"
                " && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2"
                " && qemu-io -c 'write -P 0x22 1M 64k' top.qcow2"
                " && qemu-img create -q -f qcow2 -b src.raw -F raw rtop.qcow2"
                " && qemu-img create -q -f qcow2 meta.qcow2 2M"
                " && qemu-io -c 'write 0 64k' meta.qcow2"
                " && qemu-img create -q -f qcow2 img.qcow2 1M"
                " && qemu-io -c 'write -P 0x33 0 1M' img.qcow2 && truncate -s 4M img.qcow2"
                " && ln -s src.raw src.link && ln -s img.qcow2 img.link && mkdir adir mnt");
    ASSERT_EQ(r.status, 0) << r.output;
  }
  // Runs `command` and expects it refused at once with exit `code` and one line saying
  // `says`, every file of the directory (and `device`) keeping its bytes.
  void ExpectRefusedIntact(const std::string& command, const std::string& says, int code = 2,
                           const std::string& device = "") {
    std::map<std::string, std::vector<uint8_t>> before;
    auto files = Sh("cd " + Quote(dir_.path()) + " && find . -maxdepth 1 -type f");
    std::string name;
    for (char c : files.output + (device.empty() ? "" : device + "\n")) {
      if (c != '\n') {
        name += c;
        continue;
      }
      before[name] = ReadFile(name[0] == '/' ? name : dir_ / name);
      name.clear();
    }
    auto r = Sh("cd " + Quote(dir_.path()) + " && timeout 20 " + command);
    EXPECT_EQ(r.status, code) << command << ": " << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << command << ": " << r.output;
    EXPECT_NE(r.output.find("error: "), std::string::npos) << command << ": " << r.output;
    EXPECT_NE(r.output.find(says), std::string::npos) << command << ": " << r.output;
    for (const auto& [file, bytes] : before) {
      EXPECT_TRUE(ReadFile(file[0] == '/' ? file : dir_ / file) == bytes)
          << command << " changed " << file;
    }
  }
  TempDir dir_;
};

TEST_F(Typos, StreamNeverWritesOverWhatItReads) {
  const std::string reads = "a file the export reads; refusing to write over it";
  const std::string src = Q() + " stream --source src.raw ";
  for (const std::string& to :
       std::vector<std::string>{"--destination src.raw", "--destination src.link",
                                "--destination file://" + dir_.path() + "/src.raw",
                                "--destination - 1<>src.raw", "--destination-fd 3 3<>src.raw"}) {
    ExpectRefusedIntact(src + to, reads);
  }
  for (const std::string& typo : std::vector<std::string>{
           "--source top.qcow2 --destination base.qcow2",  // a layer of the chain
           "--source src.raw --allocation-from meta.qcow2 --destination meta.qcow2",
           "--source-format hybrid --source src.raw:meta.qcow2 --destination meta.qcow2",
           "--source top.qcow2 --relative-to base.qcow2 --destination base.qcow2",
           "--source top.qcow2 --relative-to other.raw --destination other.raw",  // compared
           "--source rtop.qcow2 --destination src.link",  // a raw backing file
       }) {
    ExpectRefusedIntact(Q() + " stream " + typo, reads);
  }
  // An existing file that is not read is still emptied and rewritten.
  WriteAt(dir_ / "out.qcow2", 0, RandomBytes(8 << 20, 3));
  auto r = Sh("cd " + Quote(dir_.path()) + " && " + src + "--destination out.qcow2 && " + src +
              "--destination - | cmp - out.qcow2 && qemu-img compare -f raw src.raw out.qcow2");
  EXPECT_EQ(r.status, 0) << r.output;
}

TEST_F(Typos, StreamWritesNoDirectoryOrBlockDevice) {
  ExpectRefusedIntact(Q() + " stream --source src.raw --destination adir", "is a directory");
  LoopDevice loop(dir_ / "other.raw");
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  ExpectRefusedIntact(Q() + " stream --source src.raw --destination " + loop.device(),
                      "is a block device", 2, loop.device());
}

TEST_F(Typos, MountNeverImportsOntoWhatItExports) {
  for (const std::string& typo : std::vector<std::string>{"--export src.raw --import src.raw",
                                                          "--export src.raw --import src.link",
                                                          "--export rtop.qcow2 --import src.raw"}) {
    NoMountLeft guard{dir_ / "mnt"};
    ExpectRefusedIntact(Q() + " mount " + typo + " mnt", "a file the export reads");
  }
}

TEST_F(Typos, ServeNeverDecodesAFileOntoItself) {
  const std::string itself = "itself";
  for (const std::string& typo : std::vector<std::string>{
           "serve --source img.qcow2 --destination img.qcow2",
           "serve --source file://" + dir_.path() + "/img.qcow2 --destination img.link",
           "stream_decode img.qcow2 < img.qcow2",
           "serve --source-fd 3 --destination img.qcow2 3< img.link"}) {
    ExpectRefusedIntact(Q() + " " + typo, itself);
  }
  // Two nodes of one block device are one disk.
  LoopDevice loop(dir_ / "img.qcow2");
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  struct stat st;
  ASSERT_EQ(stat(loop.device().c_str(), &st), 0);
  ASSERT_EQ(mknod((dir_ / "node").c_str(), S_IFBLK | 0600, st.st_rdev), 0);
  ExpectRefusedIntact(Q() + " stream_decode node < " + loop.device(), itself, 2, loop.device());
}

// A loop device and the file it reads are one disk: a stream from the device truncated its
// own source, serve decoded an image onto itself, and a mount imported over its export.
TEST_F(Typos, ALoopDeviceIsTheFileItReads) {
  NoMountLeft guard{dir_ / "mnt"};
  LoopDevice src(dir_ / "src.raw"), img(dir_ / "img.qcow2");
  ASSERT_FALSE(src.device().empty() || img.device().empty()) << src.output() << img.output();
  const std::string reads = "a file the export reads", s = src.device(), i = img.device();
  ExpectRefusedIntact(Q() + " stream --source " + s + " --destination src.raw", reads, 2, s);
  ExpectRefusedIntact(Q() + " serve --source img.qcow2 --destination " + i, "itself", 2, i);
  ExpectRefusedIntact(Q() + " stream_decode " + i + " < img.qcow2", "itself", 2, i);
  ExpectRefusedIntact(Q() + " mount --export src.raw --import " + s + " mnt", reads, 2, s);
  ExpectRefusedIntact(Q() + " mount --export " + s + " --import src.raw mnt", reads, 2, s);
}

// A directory is no image source: a usage error (it was exit 1, "Is a directory").
TEST_F(Typos, ServeReadsNoDirectory) {
  const std::string directory = "the image source adir is a directory";
  ExpectRefusedIntact(Q() + " serve --source adir --destination other.raw", directory);
  ExpectRefusedIntact(Q() + " serve --source-fd 3 --destination other.raw 3<adir",
                      "is a directory");
  ExpectRefusedIntact(Q() + " stream_decode other.raw < adir",
                      "the image source stdin is a directory");
}

TEST_F(Typos, Qcow2ToStdoutNeverWritesOverItsDisks) {
  ExpectRefusedIntact(Q() + " qcow2-to-stdout src.raw 1<>src.raw", "stdout is src.raw");
  ExpectRefusedIntact(Q() + " qcow2-to-stdout src.raw --diff other.raw 1<>other.raw",
                      "stdout is other.raw");
}

// A descriptor number the caller did not pass names nothing qcowfs opened itself: a
// progress descriptor that would have landed on the target (or the image) wrote its digits
// into the disk and exited 0.
TEST_F(Typos, ADescriptorNotPassedIsRefused) {
  ASSERT_EQ(Sh("cd " + Quote(dir_.path()) + " && cp other.raw target.raw").status, 0);
  const std::string not_passed = "was not passed to qcowfs";
  // (The test runner may hold descriptors of its own: they are closed for the command.)
  const std::string closed = " 3>&- 4>&- 5>&-";
  for (int fd = 3; fd <= 5; ++fd) {
    const std::string n = std::to_string(fd);
    ExpectRefusedIntact(Q() + " serve --source img.qcow2 --destination target.raw --progress " +
                            "--machine --progress-fd " + n + closed,
                        not_passed);
    ExpectRefusedIntact(Q() + " stream --source src.raw --destination-fd " + n + closed,
                        not_passed);
    ExpectRefusedIntact(Q() + " serve --source-fd " + n + " --destination target.raw" + closed,
                        not_passed);
    ExpectRefusedIntact(Q() + " stream --source src.raw --allocation-from fd:" + n +
                            " --destination out.qcow2" + closed,
                        not_passed);
    ExpectRefusedIntact(Q() + " qcow2-to-stdout src.raw --json-header-map " + n +
                            " --json-header-info " + n + " > out.qcow2" + closed,
                        not_passed);
  }
  // Passed, the same numbers work.
  auto r = Sh("cd " + Quote(dir_.path()) + " && " + Q() +
              " serve --source img.qcow2 --destination target.raw --progress --machine "
              "--progress-fd 7 7>progress && cat progress");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.substr(r.output.size() - 3), "100") << r.output;
}

// JSON on a descriptor is a file the command reads: a stream destination, an import target
// or qcow2-to-stdout's stdout on it wrote the image over the JSON and exited 0.
TEST_F(Typos, MetadataOnADescriptorIsAFileRead) {
  NoMountLeft guard{dir_ / "mnt"};
  ASSERT_EQ(Sh("cd " + Quote(dir_.path()) +
               " && qemu-img map --output=json -f raw src.raw > m.json"
               " && qemu-img info --output=json -f raw src.raw > i.json"
               " && qemu-img map --output=json -f raw other.raw > o.json")
                .status,
            0);
  const std::string reads = "a file the export reads";
  ExpectRefusedIntact(
      Q() + " stream --source src.raw --allocation-from fd:5 --destination m.json 5<m.json", reads);
  ExpectRefusedIntact(
      Q() + " mount --export src.raw --allocation-from fd:5 --import m.json mnt 5<m.json", reads);
  const std::string to_stdout =
      Q() + " qcow2-to-stdout src.raw --json-header-map 5 --json-header-info 6 5<m.json 6<i.json";
  ExpectRefusedIntact(to_stdout + " 1<>m.json", "stdout is what --json-header-map 5 reads");
  ExpectRefusedIntact(to_stdout + " 1<>i.json", "stdout is what --json-header-info 6 reads");
  ExpectRefusedIntact(to_stdout + " --diff other.raw --json-header-diff-map 7 7<o.json 1<>o.json",
                      "stdout is what --json-header-diff-map 7 reads");
  // Another file takes the image.
  auto r = Sh("cd " + Quote(dir_.path()) + " && " + to_stdout +
              " > out.qcow2 && qemu-img compare -f raw src.raw out.qcow2");
  EXPECT_EQ(r.status, 0) << r.output;
}

// Machine progress on a descriptor open on a disk the command reads or writes wrote its
// digits into it ("000099100" into a stream's source, into serve's target and exit 0).
TEST_F(Typos, ProgressNeverGoesIntoADisk) {
  const std::string into = "refusing to write progress into a disk";
  const std::string progress = " --progress --machine";
  const std::string stream = Q() + " stream --source src.raw --destination out.qcow2" + progress;
  const std::string serve = Q() + " serve --source img.qcow2 --destination other.raw" + progress;
  ExpectRefusedIntact(stream + " 1<>src.raw", into);
  ExpectRefusedIntact(stream + " --progress-fd 5 5<>src.raw", into);
  ExpectRefusedIntact(Q() + " stream --source top.qcow2 --destination out.qcow2" + progress +
                          " 1<>base.qcow2",  // a layer
                      into);
  ExpectRefusedIntact(stream + " --progress-fd 5 5<>out.qcow2", into);  // the destination
  ExpectRefusedIntact(serve + " 1<>other.raw", into);
  ExpectRefusedIntact(serve + " --progress-fd 5 5<>img.qcow2", into);
  LoopDevice loop(dir_ / "other.raw");
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  ExpectRefusedIntact(Q() + " serve --source img.qcow2 --destination " + loop.device() + progress +
                          " --progress-fd 5 5<>other.raw",
                      into, 2, loop.device());
  // A log file that is no disk of the command still takes the digits.
  auto r = Sh("cd " + Quote(dir_.path()) + " && " + stream + " --progress-fd 5 5<>log && " + serve +
              " >log2 && cat log log2");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(r.output.size() >= 6 && r.output.substr(r.output.size() - 3) == "100" &&
              r.output.find("100") < r.output.size() - 3)
      << r.output;
}

// Machine progress on another descriptor of the pipe that carries the image (5>&1, or the
// FIFO the destination names) went into the image: exit 0 with digits among its bytes. It
// is refused like progress on stdout itself, before anything is written.
TEST_F(Typos, ProgressNeverGoesIntoTheImagesPipe) {
  const std::string stream = Q() + " stream --source src.raw --progress --machine";
  auto r = Sh("cd " + Quote(dir_.path()) + " && { timeout 20 " + stream +
              " --destination - --progress-fd 5 5>&1 2>err; echo $? >rc; } | cat >out && cat rc "
              "err && wc -c <out");
  EXPECT_EQ(r.output,
            "2\nqcowfs: error: --progress-fd 5 is the pipe of stdout, which carries "
            "the image; refusing to mix progress into the image\n0\n");
  r = Sh("cd " + Quote(dir_.path()) + " && mkfifo ff && { cat ff >out & } && timeout 20 " + stream +
         " --destination ff --progress-fd 5 5<>ff; echo \"rc $?\"; wait; wc -c <out");
  EXPECT_EQ(r.output,
            "qcowfs: error: --progress-fd 5 is the pipe of ff, which carries the "
            "image; refusing to mix progress into the image\nrc 2\n0\n");
  // /dev/null takes both.
  r = Sh("cd " + Quote(dir_.path()) + " && " + stream +
         " --destination /dev/null --progress-fd 5 5>/dev/null");
  EXPECT_EQ(r.status, 0) << r.output;
}

TEST_F(Typos, ServeReplacesOnlyASocket) {
  WriteAt(dir_ / "sock", 0, RandomBytes(4096, 4));
  ExpectRefusedIntact(Q() + " serve --source unix:sock --destination other.raw",
                      "exists and is not a socket");
  // A socket left by an earlier run is replaced as before.
  ASSERT_EQ(unlink((dir_ / "sock").c_str()), 0);
  const int s = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un u{};
  u.sun_family = AF_UNIX;
  std::snprintf(u.sun_path, sizeof u.sun_path, "%s", (dir_ / "sock").c_str());
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&u), sizeof u), 0);
  close(s);
  auto r = Sh("cd " + Quote(dir_.path()) + " && { (timeout 20 " + Q() +
              " serve --source unix:sock --destination other.raw) & for i in $(seq 100); do " +
              Q() + " stream --source src.raw --destination unix:sock 2>/dev/null && break; " +
              "sleep 0.05; done; wait $!; } && cmp src.raw other.raw");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(access((dir_ / "sock").c_str(), F_OK), 0) << "the socket was left behind";
}

// A socket another server listens on is that server's: a second serve on the same path
// unlinked it and took the image meant for the first. It is refused (exit 1, one line)
// without connecting to it, so the first still gets its image.
TEST_F(Typos, ServeTakesNoLiveSocket) {
  ASSERT_EQ(Sh("cd " + Quote(dir_.path()) + " && cp other.raw first.raw").status, 0);
  auto r = Sh("cd " + Quote(dir_.path()) + " && { (timeout 20 " + Q() +
              " serve --source unix:sock --destination first.raw) & for i in $(seq 100); do " +
              "test -S sock && break; sleep 0.02; done; timeout 20 " + Q() +
              " serve --source unix:sock --destination other.raw; echo \"second: $?\"; " + Q() +
              " stream --source src.raw --destination unix:sock; wait $!; } && cmp src.raw " +
              "first.raw");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("error: 'unix:sock': sock is a socket another process listens on"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("second: 1"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 2) << r.output;
  EXPECT_TRUE(ReadFile(dir_ / "other.raw") == RandomBytes(2 << 20, 2)) << "other.raw changed";
}

}  // namespace
