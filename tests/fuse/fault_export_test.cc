// Faults on the export side: a source with an unreadable range (served by the faulty_fs
// test tool), a source that shrinks while exported. Every reader must get an error, never
// a short, "successful" image.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "mount_fixture.h"
#include "test_util.h"

namespace {

using namespace qcowfs_test;

std::string Q() { return QcowfsBinary(); }

off_t SizeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_size;
}

// cat, cp and dd of the mounted image: each must fail with EIO and the image must keep its
// size (a short reply would make the kernel shrink it and the readers succeed).
void ExpectEveryReaderFails(const TempDir& dir, const std::string& img) {
  const off_t size = SizeOf(img);
  for (const char* reader : {"cat IMG > OUT", "cp IMG OUT", "dd if=IMG of=OUT bs=1M"}) {
    std::string cmd = reader;
    cmd.replace(cmd.find("IMG"), 3, Quote(img));
    cmd.replace(cmd.find("OUT"), 3, Quote(dir / "out"));
    const auto r = Sh("timeout 60 " + cmd);
    EXPECT_NE(r.status, 0) << reader << " succeeded on an image with an unreadable range";
    EXPECT_NE(r.output.find("Input/output error"), std::string::npos) << reader << ": " << r.output;
    EXPECT_EQ(SizeOf(img), size) << "the image shrank after " << reader;
  }
}

TEST(FaultExport, UnreadableSourceRangeIsAnErrorForEveryReader) {
  TempDir dir;
  WriteAt(dir / "back", 0, RandomBytes(8 << 20, 7));
  // One unreadable page in the middle of the data.
  FaultyFile faulty(dir / "back", dir / "faulty", 3 << 20, (3 << 20) + 4096);
  ASSERT_TRUE(faulty.ok());
  for (const std::string& mode : std::initializer_list<std::string>{"", " --direct"}) {
    SCOPED_TRACE("mount options:" + mode);
    Mount m(dir / ("mnt" + std::to_string(mode.size())), "--export " + Quote(faulty.path()) + mode);
    ASSERT_TRUE(m.ok()) << m.result().output;
    ExpectEveryReaderFails(dir, m / "disk.qcow2");
    // What lies before the bad range still reads.
    auto head = Sh("dd if=" + Quote(m / "disk.qcow2") + " of=/dev/null bs=64k count=8");
    EXPECT_EQ(head.status, 0) << head.output;
  }
  // stream: one line naming the source and the failure, exit 1.
  auto r = Sh(Q() + " stream --source " + Quote(faulty.path()) + " --destination " +
              Quote(dir / "streamed"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("reading " + faulty.path()), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Input/output error"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

// xapi's export tool over a device with an unreadable page: whether it scans the disk, reads
// the clusters a JSON header names, or compares against a base that fails, it exits 1 with
// one line naming the failure.
TEST(FaultExport, UnreadableDeviceFailsQcow2ToStdout) {
  TempDir dir;
  WriteAt(dir / "back", 0, RandomBytes(8 << 20, 7));
  FaultyFile faulty(dir / "back", dir / "faulty", 3 << 20, (3 << 20) + 4096);
  ASSERT_TRUE(faulty.ok());
  ASSERT_EQ(Sh("ln -s " + Quote(Q()) + " " + Quote(dir / "qcow2-to-stdout")).status, 0);
  const std::string dev = Quote(faulty.path()), good = Quote(dir / "back");
  const std::string header =
      R"('{"virtual_size": 8388608, "cluster_bits": 16, "data_clusters": [[40, 50]]}')";
  for (const std::string& args : {dev, dev + " --json-header < <(echo " + header + ")",
                                  good + " --diff " + dev, dev + " --diff " + good}) {
    SCOPED_TRACE(args);
    const auto r = Sh("bash -c " + Quote("timeout 60 " + Quote(dir / "qcow2-to-stdout") + " " +
                                         args + " > " + Quote(dir / "out")));
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_EQ(r.output.rfind("qcow2-to-stdout: error: ", 0), 0u) << r.output;
    EXPECT_NE(r.output.find("Input/output error"), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
}

// A VHD whose block data cannot be read: its metadata reads, so it mounts, but every reader
// of the exported range fails, and stream names the file and the failure.
TEST(FaultExport, UnreadableVhdBlockIsAnErrorForEveryReader) {
  TempDir dir;
  WriteAt(dir / "src.raw", 0, RandomBytes(8 << 20, 9));
  const auto made = Sh("qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on " +
                       Quote(dir / "src.raw") + " " + Quote(dir / "back"));
  ASSERT_EQ(made.status, 0) << made.output;
  // qemu-img's layout: footer copy, header, BAT (512 bytes), then block 0's bitmap at 2048
  // and its data at 2560. One page inside that data is unreadable.
  FaultyFile faulty(dir / "back", dir / "faulty", 2560 + (1 << 20), 2560 + (1 << 20) + 4096);
  ASSERT_TRUE(faulty.ok());
  {
    // (faulty_fs names its file "disk", which says nothing of its format.)
    Mount m(dir / "mnt", "--export " + Quote(faulty.path()) + " --source-format vhd");
    ASSERT_TRUE(m.ok()) << m.result().output;
    ExpectEveryReaderFails(dir, m / "disk.qcow2");
  }
  auto r = Sh(Q() + " stream --source-format vhd --source " + Quote(faulty.path()) +
              " --destination " + Quote(dir / "streamed"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("reading " + faulty.path()), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Input/output error"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

TEST(FaultExport, SourceThatShrinksWhileExportedIsAnError) {
  TempDir dir;
  WriteAt(dir / "src", 0, RandomBytes(8 << 20, 8));
  Mount m(dir / "mnt", "--export " + Quote(dir / "src"));
  ASSERT_TRUE(m.ok()) << m.result().output;
  ASSERT_EQ(truncate((dir / "src").c_str(), 4 << 20), 0);
  ExpectEveryReaderFails(dir, m / "disk.qcow2");

  // stream: the source shrinks after the image was planned, while the reader is slow.
  WriteAt(dir / "src2", 0, RandomBytes(8 << 20, 9));
  auto r = Sh("cd " + Quote(dir.path()) + " && mkfifo pipe || exit 1\n(" + Q() +
              " stream --source src2 --destination pipe 2> err; echo $? > rc) &\n"
              "exec 3< pipe\nhead -c 1000 <&3 > /dev/null\ntruncate -s 4M src2\n"
              "cat <&3 > /dev/null\nwait\ncat rc err");
  EXPECT_EQ(r.output.substr(0, 2), "1\n") << r.output;
  EXPECT_NE(r.output.find("shrank while exported"), std::string::npos) << r.output;
}

}  // namespace
