// A guest writes every byte of its raw disk. These tests play a guest that writes image
// metadata into its disk (a qcow2 header naming a host file or a neighbour's disk, a
// differencing VHD naming a neighbour's VHD, a fixed VHD footer in its last sector) and run
// every command that reads a disk on it, as a file named as an SR names a raw VDI, as a file
// whose name says nothing, and as a block device: no command opens another file (inotify
// watches them), no output holds a byte of one, and whatever is exported is the disk's raw
// bytes at the disk's own size.
#include <gtest/gtest.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <memory>

#include "mount_fixture.h"
#include "test_util.h"
#include "vhd_writer.h"

namespace {

using namespace qcowfs_test;

constexpr uint64_t kDiskSize = 4 << 20;

std::string Q() { return Quote(QcowfsBinary()); }

size_t Lines(const std::string& s) { return std::count(s.begin(), s.end(), '\n'); }

// Bytes no guest disk holds: the content of the files a guest must not reach.
std::vector<uint8_t> Marked(const std::string& marker, uint64_t size, uint64_t seed) {
  std::vector<uint8_t> bytes = RandomBytes(size, seed);
  for (uint64_t at = 0; at + marker.size() <= size; at += 4096) {
    std::copy(marker.begin(), marker.end(), bytes.begin() + at);
  }
  return bytes;
}

// What a host file a guest must not reach holds, and that file, written into dir.
const std::string kSecret = "HOST-SECRET-0600-MARKER";
void WriteHostSecret(const TempDir& dir, uint64_t size) {
  WriteAt(dir / "host-secret", 0, Marked(kSecret, size, 1));
}

// Runs shell commands in dir (images made by qemu-img name their files relative to it).
CommandResult ShIn(const TempDir& dir, const std::string& commands) {
  return Sh("cd " + Quote(dir.path()) + " && " + commands);
}

// Reports every open of the files it watches.
class OpenWatch {
 public:
  OpenWatch() : fd_(inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {}
  ~OpenWatch() { ::close(fd_); }
  void Add(const std::string& path) {
    ASSERT_GE(inotify_add_watch(fd_, path.c_str(), IN_OPEN | IN_ACCESS), 0) << path;
  }
  // Returns how many opens and reads happened since the last call.
  int Events() {
    alignas(inotify_event) char buf[4096];
    int n = 0;
    for (ssize_t got; (got = ::read(fd_, buf, sizeof buf)) > 0;) {
      for (char* p = buf; p < buf + got;
           p += sizeof(inotify_event) + reinterpret_cast<inotify_event*>(p)->len) {
        ++n;
      }
    }
    return n;
  }

 private:
  int fd_;
};

enum class Craft { kQcow2NamingHostFile, kQcow2NamingNeighbour, kVhdNamingNeighbour, kFixedFooter };

struct CraftCase {
  const char* name;
  Craft craft;
};

class GuestDisk : public ::testing::TestWithParam<CraftCase> {
 protected:
  void SetUp() override {
    // What the guest must not reach: a root-only host file, a neighbour's raw disk and a
    // neighbour's VHD, each full of a marker.
    WriteHostSecret(dir_, 64 << 10);
    ASSERT_EQ(::chmod((dir_ / "host-secret").c_str(), 0600), 0);
    WriteAt(dir_ / "neighbour.raw", 0, Marked(kNeighbour, kDiskSize, 2));
    VhdImage neighbour = VhdImage::Dynamic(kDiskSize);
    neighbour.Write(0, Marked(kNeighbour, 1 << 20, 3));
    neighbour.Save(dir_ / "neighbour.vhd");
    // The guest's disk: its own data, then what it writes to look like an image.
    std::vector<uint8_t> disk = RandomBytes(kDiskSize, 4);
    std::vector<uint8_t> meta;
    switch (GetParam().craft) {
      case Craft::kQcow2NamingHostFile:
      case Craft::kQcow2NamingNeighbour: {
        const std::string backing = GetParam().craft == Craft::kQcow2NamingHostFile
                                        ? dir_ / "host-secret"
                                        : std::string("neighbour.raw");
        const auto r = ShIn(
            dir_, "qemu-img create -q -f qcow2 -u -b " + Quote(backing) + " -F raw crafted 4M");
        ASSERT_EQ(r.status, 0) << r.output;
        meta = ReadFile(dir_ / "crafted");
        break;
      }
      case Craft::kVhdNamingNeighbour:
        meta = VhdImage::Differencing(neighbour, "neighbour.vhd").Serialize();
        break;
      case Craft::kFixedFooter: {
        std::vector<uint8_t> fixed = VhdImage::Fixed(1 << 20).Serialize();
        std::copy(fixed.end() - 512, fixed.end(), disk.end() - 512);
        break;
      }
    }
    ASSERT_LE(meta.size(), disk.size());
    std::copy(meta.begin(), meta.end(), disk.begin());
    WriteAt(dir_ / "guest.raw", 0, disk);
    WriteAt(dir_ / "guest", 0, disk);
    for (const char* f : {"host-secret", "neighbour.raw", "neighbour.vhd"}) watch_.Add(dir_ / f);
    watch_.Events();
  }

  // Expects no output of `what` to hold a byte of a file the guest must not reach, and no
  // such file to have been opened.
  void ExpectNothingReached(const std::string& what, const std::string& output,
                            const std::vector<std::string>& files = {}) {
    EXPECT_EQ(watch_.Events(), 0) << what << ": a file outside the guest's disk was opened";
    for (const std::string& marker : {kSecret, kNeighbour}) {
      EXPECT_EQ(output.find(marker), std::string::npos) << what;
      for (const std::string& f : files) {
        const std::vector<uint8_t> bytes = ReadFile(f);
        EXPECT_EQ(std::search(bytes.begin(), bytes.end(), marker.begin(), marker.end()),
                  bytes.end())
            << what << ": " << f << " holds bytes of another file";
      }
    }
  }

  // Expects `image` to be exactly the raw disk, at its size.
  void ExpectRawDisk(const std::string& what, const std::string& image) {
    const auto cmp =
        Sh("qemu-img compare -q -f raw -F qcow2 " + Quote(dir_ / "guest.raw") + " " + Quote(image));
    EXPECT_EQ(cmp.status, 0) << what << ": " << cmp.output;
    const auto info = Sh("qemu-img info --output=json -f qcow2 " + Quote(image));
    EXPECT_EQ(JsonValues(info.output, "virtual-size"),
              std::vector<std::string>{std::to_string(kDiskSize)})
        << what;
  }

  // Runs every command on `disk` (`raw`: it is read as a raw disk; else refused as
  // ambiguous, with one line).
  void RunEveryCommand(const std::string& disk, const std::string& options, bool raw) {
    const std::string out = dir_ / "out.qcow2";
    ::unlink(out.c_str());
    auto r =
        Sh(Q() + " stream" + options + " --source " + Quote(disk) + " --destination " + Quote(out));
    ExpectNothingReached("stream " + disk, r.output);
    if (raw) {
      EXPECT_EQ(r.status, 0) << r.output;
      ExpectRawDisk("stream " + disk, out);
      ExpectNothingReached("stream " + disk, "", {out});
    } else {
      EXPECT_EQ(r.status, 3) << r.output;
      EXPECT_EQ(Lines(r.output), 1u) << r.output;
      EXPECT_NE(r.output.find("its name does not say so"), std::string::npos) << r.output;
    }

    // xapi's export line reads the device raw, always.
    r = Sh(Q() + " qcow2-to-stdout " + Quote(disk) + " > " + Quote(out));
    EXPECT_EQ(r.status, 0) << r.output;
    ExpectRawDisk("qcow2-to-stdout " + disk, out);
    ExpectNothingReached("qcow2-to-stdout " + disk, r.output, {out});

    r = Sh(Q() + " map --json" + options + " " + Quote(disk));
    ExpectNothingReached("map " + disk, r.output);
    EXPECT_EQ(r.status, raw ? 0 : 3) << r.output;
    if (raw) {
      EXPECT_EQ(r.output.find("\"depth\": 1"), std::string::npos) << r.output;
      EXPECT_NE(r.output.find("\"start\": 0, \"length\": " + std::to_string(kDiskSize)),
                std::string::npos)
          << r.output;
    }

    for (const char* command : {"info", "info --json", "read_headers"}) {
      r = Sh(Q() + " " + command + " " + Quote(disk));
      ExpectNothingReached(std::string(command) + " " + disk, r.output);
      EXPECT_EQ(r.status, 3) << command << ": " << r.output;
      EXPECT_EQ(Lines(r.output), 1u) << command << ": " << r.output;
      // read_headers takes a block device as a qcow2 image on the caller's word (xapi's, for
      // a volume of an LVM SR), and may then say which backing file it refuses.
      const bool asserted = std::string(command) == "read_headers" && disk.rfind("/dev/", 0) == 0;
      for (const char* name : {"host-secret", "neighbour"}) {
        if (asserted) break;
        EXPECT_EQ(r.output.find(name), std::string::npos)
            << command << " names a file the guest wrote: " << r.output;
      }
    }

    Mount m(dir_ / "mnt", "--export " + Quote(disk) + options);
    ExpectNothingReached("mount " + disk, m.result().output);
    if (raw) {
      ASSERT_TRUE(m.ok()) << m.result().output;
      ExpectRawDisk("mount " + disk, m / "disk.qcow2");
      r = Sh("cp " + Quote(m / "disk.qcow2") + " " + Quote(out));
      ExpectNothingReached("mount " + disk, "", {out});
    } else {
      EXPECT_EQ(m.result().status, 3) << m.result().output;
      EXPECT_FALSE(IsMounted(dir_ / "mnt"));
    }
  }

  static inline const std::string kNeighbour = "NEIGHBOUR-VDI-MARKER";
  TempDir dir_;
  OpenWatch watch_;
};

// A file named as XCP-ng names a raw VDI (UUID.raw) is a raw disk, whatever it holds.
TEST_P(GuestDisk, FileNamedRawIsReadRaw) { RunEveryCommand(dir_ / "guest.raw", "", true); }

// A file whose name says nothing, holding what looks like an image, is refused unless the
// caller names its format; named raw, it is exported as it is.
TEST_P(GuestDisk, FileNamedNothingIsAmbiguous) {
  RunEveryCommand(dir_ / "guest", "", false);
  RunEveryCommand(dir_ / "guest", " --source-format raw", true);
}

// A block device (tapdisk's device, a raw LV) is never probed: raw, with a warning.
TEST_P(GuestDisk, BlockDeviceIsReadRaw) {
  LoopDevice loop(dir_ / "guest.raw");
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  RunEveryCommand(loop.device(), "", true);
  // Even read as an image by the caller's word, it reaches no file outside its directory.
  if (GetParam().craft == Craft::kQcow2NamingHostFile) {
    for (const std::string& command : {Q() + " read_headers " + Quote(loop.device()),
                                       Q() + " stream --source-format qcow2 --source " +
                                           Quote(loop.device()) + " --destination null:"}) {
      const auto r = Sh(command);
      ExpectNothingReached(command, r.output);
      EXPECT_EQ(r.status, 3) << r.output;
      EXPECT_NE(r.output.find("is not a block device in /dev or a --path directory"),
                std::string::npos)
          << r.output;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Crafted, GuestDisk,
    ::testing::Values(CraftCase{"qcow2_naming_a_host_file", Craft::kQcow2NamingHostFile},
                      CraftCase{"qcow2_naming_a_neighbour", Craft::kQcow2NamingNeighbour},
                      CraftCase{"vhd_naming_a_neighbour", Craft::kVhdNamingNeighbour},
                      CraftCase{"fixed_vhd_footer_at_the_end", Craft::kFixedFooter}),
    [](const auto& info) { return std::string(info.param.name); });

// An image of the SR (named .qcow2) over a guest's raw disk whose format it does not record:
// QEMU would probe the guest's header; qcowfs refuses, or reads raw what QEMU reads raw.
TEST(GuestBackingFile, UnrecordedFormatIsNotTakenFromTheGuestsBytes) {
  TempDir dir;
  WriteHostSecret(dir, 64 << 10);
  const auto made = ShIn(dir,
                         "qemu-img create -q -f qcow2 -u -b host-secret -F raw crafted 4M"
                         " && truncate -s 4M base && dd if=crafted of=base conv=notrunc status=none"
                         " && cp base base.raw"
                         " && qemu-img create -q -f qcow2 -u -b base -F raw top.qcow2 4M"
                         " && qemu-img create -q -f qcow2 -u -b base.raw -F raw top2.qcow2 4M");
  ASSERT_EQ(made.status, 0) << made.output;
  // Drop the recorded format, as older images have none: the backing format extension
  // becomes one of an unknown type.
  for (const char* top : {"top.qcow2", "top2.qcow2"}) {
    const std::vector<uint8_t> head = ReadFile(dir / top);
    const uint8_t ext[] = {0xe2, 0x79, 0x2a, 0xca};
    const auto at = std::search(head.begin(), head.end(), ext, ext + 4) - head.begin();
    ASSERT_LT(static_cast<size_t>(at), head.size());
    WriteAt(dir / top, at, {0x12, 0x34, 0x56, 0x78});
    ASSERT_EQ(Sh("qemu-img info " + Quote(dir / top) + " | grep -q 'backing file format'").status,
              1);
  }
  OpenWatch watch;
  watch.Add(dir / "host-secret");
  for (const char* top : {"top.qcow2", "top2.qcow2"}) {
    const auto r = Sh(Q() + " stream --source " + Quote(dir / top) + " --destination null:");
    EXPECT_EQ(watch.Events(), 0) << top;
    EXPECT_EQ(r.status, 3) << r.output;
    EXPECT_EQ(Lines(r.output), 1u) << r.output;
    EXPECT_NE(r.output.find("looks like a qcow2 image, but the image above records no backing "
                            "format"),
              std::string::npos)
        << r.output;
  }
}

// A backing file that is a device is refused before it is opened (opening a watchdog arms
// it); here a character device node, watched with inotify.
TEST(GuestBackingFile, ACharacterDeviceIsNotOpened) {
  TempDir dir;
  ASSERT_EQ(::mknod((dir / "cdev").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);  // /dev/null
  const auto made = ShIn(dir, "qemu-img create -q -f qcow2 -u -b cdev -F raw top.qcow2 1M");
  ASSERT_EQ(made.status, 0) << made.output;
  OpenWatch watch;
  watch.Add(dir / "cdev");
  const auto r = Sh(Q() + " stream --source " + Quote(dir / "top.qcow2") + " --destination null:");
  EXPECT_EQ(watch.Events(), 0) << "the device was opened";
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("is neither a regular file nor a block device"), std::string::npos)
      << r.output;
}

// check reads its image as every other command does: a character device or a FIFO is
// refused unopened (it opened them: a watchdog armed, a FIFO waited for a writer).
TEST(GuestBackingFile, CheckOpensNoDeviceOrFifo) {
  TempDir dir;
  ASSERT_EQ(::mknod((dir / "cdev").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);  // /dev/null
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  OpenWatch watch;
  for (const char* name : {"cdev", "fifo"}) {
    watch.Add(dir / name);
    const auto r = Sh("timeout 10 " + Q() + " check " + Quote(dir / name));
    EXPECT_EQ(watch.Events(), 0) << name << " was opened";
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_EQ(Lines(r.output), 1u) << r.output;
    EXPECT_NE(r.output.find("is neither a regular file nor a block device"), std::string::npos)
        << r.output;
  }
}

// sysfs names the file of a loop device whose file was deleted "PATH (deleted)"; whatever
// now lies at that path is not the device's file and is not opened (it was, to be checked
// after: a character device there was opened by every command that read the device).
TEST(GuestBackingFile, ALoopDevicesDeletedFileIsNotOpened) {
  TempDir dir;
  WriteAt(dir / "disk", 0, RandomBytes(1 << 20, 7));
  LoopDevice loop(dir / "disk");
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  const std::string stand_in = dir / "disk (deleted)";
  ASSERT_EQ(::unlink((dir / "disk").c_str()), 0);
  ASSERT_EQ(::mknod(stand_in.c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);  // /dev/null
  OpenWatch watch;
  watch.Add(stand_in);
  const auto r = Sh(Q() + " stream --source " + Quote(loop.device()) + " --destination null: && " +
                    Q() + " map " + Quote(loop.device()));
  EXPECT_EQ(watch.Events(), 0) << "the character device at " << stand_in << " was opened";
  EXPECT_EQ(r.status, 0) << r.output;
}

// A link named .qcow2 to a raw disk whose real path cannot be resolved (past PATH_MAX)
// says nothing of its format: the disk is not read as the image its guest wrote.
TEST(GuestBackingFile, ANameThatCannotBeResolvedSaysNothing) {
  TempDir dir;
  const auto made =
      ShIn(dir,
           "N=$(printf 'd%.0s' $(seq 250)) && R=$(python3 -c \"print('/'.join(['d'*250]*8))\")"
           " && mkdir -p deep/$R/$R/$N"
           " && qemu-img create -q -f qcow2 -u -b /etc/shadow -F raw h.qcow2 1M"
           " && ln -sfn $PWD/deep/$R s1 && ln -sfn $PWD/s1/$R s2 && ln -sfn $PWD/s2/$N s3"
           " && cp h.qcow2 s3/guest.raw && truncate -s 1M s3/guest.raw"
           " && ln -sf $PWD/s3/guest.raw vm.qcow2");
  ASSERT_EQ(made.status, 0) << made.output;
  OpenWatch watch;
  watch.Add("/etc/shadow");
  const auto r = Sh(Q() + " stream --source " + Quote(dir / "vm.qcow2") + " --destination " +
                    Quote(dir / "out.qcow2"));
  EXPECT_EQ(watch.Events(), 0) << "/etc/shadow was opened";
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("its name does not say so"), std::string::npos) << r.output;
  Sh("rm -rf " + Quote(dir / "deep"));
}

// --source-format speaks of the source, not of the --relative-to base: a guest's raw base
// (base.raw) whose first bytes are a qcow2 header naming a host file is compared as raw.
TEST(GuestBackingFile, TheBaseOfADeltaIsReadByItsOwnName) {
  TempDir dir;
  WriteHostSecret(dir, 64 << 10);
  const auto made = ShIn(dir,
                         "qemu-img create -q -f qcow2 -u -b $PWD/host-secret -F raw h.qcow2 1M"
                         " && cp h.qcow2 base.raw && truncate -s 1M base.raw"
                         " && qemu-img create -q -f qcow2 top.qcow2 1M"
                         " && qemu-io -c 'write -P 0x41 0 64k' top.qcow2 >/dev/null");
  ASSERT_EQ(made.status, 0) << made.output;
  OpenWatch watch;
  watch.Add(dir / "host-secret");
  const auto r =
      Sh(Q() + " stream --source-format qcow2 --source " + Quote(dir / "top.qcow2") +
         " --relative-to " + Quote(dir / "base.raw") + " --destination " + Quote(dir / "d.qcow2"));
  EXPECT_EQ(watch.Events(), 0) << "the base's backing file was opened";
  EXPECT_EQ(r.status, 0) << r.output;
  const auto info = Sh("qemu-img info --output=json " + Quote(dir / "d.qcow2"));
  EXPECT_EQ(JsonValues(info.output, "backing-filename-format"), std::vector<std::string>{"raw"})
      << info.output;
}

// An image on a block device (read as one by the caller's word) reaches only block devices
// beside it or in --path: not /dev/stdin (a link to /proc/self/fd/0), however the name
// gets there.
TEST(GuestBackingFile, AVolumeReachesOnlyVolumesBesideIt) {
  TempDir dir;
  WriteHostSecret(dir, 1 << 20);
  const auto made = ShIn(dir,
                         "qemu-img create -q -f qcow2 -u -b stdin -F raw h.qcow2 1M"
                         " && cp h.qcow2 guest.raw && truncate -s 1M guest.raw");
  ASSERT_EQ(made.status, 0) << made.output;
  LoopDevice loop(dir / "guest.raw");
  ASSERT_FALSE(loop.device().empty()) << loop.output();
  const auto r =
      Sh(Q() + " stream --source-format qcow2 --source " + Quote(loop.device()) +
         " --destination " + Quote(dir / "out.qcow2") + " < " + Quote(dir / "host-secret"));
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_NE(r.output.find("is not a block device in /dev or a --path directory"), std::string::npos)
      << r.output;
  EXPECT_NE(::access((dir / "out.qcow2").c_str(), F_OK), 0) << "an image was written";
}

}  // namespace
