// JSON metadata from others through the qcowfs binary (--allocation-from FILE and fd:N,
// qcow2-to-stdout's descriptors and stdin): junk is refused at its first bytes with one line,
// a writer that never stops is refused within a bound, and the process's peak memory stays
// under 64 MiB whatever comes in.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

using namespace qcowfs_test;

// For a sanitized binary AddressSanitizer's shadow memory and redzones come on top (reading
// junk whole would still take a GiB); its quarantine of freed memory, 256 MiB by default, is
// cut to 16 MiB for the measured commands (see RunMeasured), or it alone would fill the bound.
const long kMaxRssKib = QcowfsBinarySanitized() ? 256 << 10 : 64 << 10;

struct Measured {
  int status = -1;
  std::string output;
  long max_rss_kib = 0;  // the largest peak RSS of the shell and what it waited for
};

// Runs `command` with bash in a process group of its own, killed whole after 60 s (a reader
// that never stops fails, and leaves nothing running), and measures its peak memory with
// wait4.
Measured RunMeasured(const TempDir& dir, const std::string& command) {
  const std::string out = dir / "output";
  const char* asan = ::getenv("ASAN_OPTIONS");
  const std::string asan_options =
      (asan && *asan ? std::string(asan) + ":" : std::string()) + "quarantine_size_mb=16";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    if (QcowfsBinarySanitized()) ::setenv("ASAN_OPTIONS", asan_options.c_str(), 1);
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl("/bin/bash", "bash", "-c", command.c_str(), nullptr);
    ::_exit(127);
  }
  Measured m;
  int status = 0;
  rusage ru{};
  pid_t done = 0;
  for (int i = 0; i < 6000 && done == 0; ++i) {
    done = ::wait4(pid, &status, WNOHANG, &ru);
    if (done == 0) ::usleep(10'000);
  }
  if (done == 0) {
    ::kill(-pid, SIGKILL);
    done = ::wait4(pid, &status, 0, &ru);
  }
  if (done != pid) return m;
  m.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  m.max_rss_kib = ru.ru_maxrss;
  const std::vector<uint8_t> bytes = ReadFile(out);
  m.output.assign(bytes.begin(), bytes.end());
  return m;
}

std::string Qcowfs() { return Quote(QcowfsBinary()); }

void WriteText(const std::string& path, const std::string& text) {
  WriteAt(path, 0, std::vector<uint8_t>(text.begin(), text.end()));
}

// Writers that never stop.
const char* kEndlessSpace = "yes ' ' | tr -d '\\n'";
const char* kEndlessString = "printf '[{\"start\": \"'; yes | tr -d '\\n'";
// Entries of 512 bytes from 0 upwards, alternately data and zeros.
const char* kEndlessEntries =
    "awk 'BEGIN { printf \"[\"; for (o = 0; ; o += 512) printf \"{ \\\"start\\\": %d, "
    "\\\"length\\\": 512, \\\"depth\\\": 0, \\\"present\\\": true, \\\"zero\\\": false, "
    "\\\"data\\\": %s},\\n\", o, (o / 512) % 2 ? \"true\" : \"false\" }'";

class MetadataBounds : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(Sh("truncate -s 8M " + Quote(dir_ / "disk.raw") + " && truncate -s 768M " +
                 Quote(dir_ / "junk"))
                  .status,
              0);
  }
  // Expects a refusal: exit 3, one line naming `says`, peak memory under 64 MiB.
  void ExpectRefused(const std::string& command, const std::string& says) {
    SCOPED_TRACE(command);
    const Measured m = RunMeasured(dir_, command);
    EXPECT_EQ(m.status, 3) << m.output;
    EXPECT_EQ(std::count(m.output.begin(), m.output.end(), '\n'), 1) << m.output;
    EXPECT_NE(m.output.find(says), std::string::npos) << m.output;
    EXPECT_LT(m.max_rss_kib, kMaxRssKib);
    std::printf("  peak RSS %ld KiB: %s", m.max_rss_kib, m.output.c_str());
  }
  std::string Stream(const std::string& allocation) const {
    return Qcowfs() + " stream --source " + Quote(dir_ / "disk.raw") +
           " --destination null: --allocation-from " + allocation;
  }
  std::string ToStdout(const std::string& args) const {
    return Qcowfs() + " qcow2-to-stdout " + Quote(dir_ / "disk.raw") + " " + args + " >/dev/null";
  }
  TempDir dir_;
};

TEST_F(MetadataBounds, AllocationFromJunkIsRefusedAtOnce) {
  ExpectRefused(Stream(Quote(dir_ / "junk")),
                "junk is neither a qcow2 image, nor a VHD, nor the JSON of qemu-img map");
  ExpectRefused(Stream("fd:3 3< <(head -c 768M /dev/zero)"),
                "fd:3: not qemu-img map JSON: expected '[', found the byte 0x00 at byte 0");
  ExpectRefused(Stream("fd:3 3< <(head -c 768M /dev/urandom | base64)"),
                "fd:3: not qemu-img map JSON: expected '['");
}

TEST_F(MetadataBounds, AllocationFromAnEndlessWriterEnds) {
  ExpectRefused(Stream(std::string("fd:3 3< <(") + kEndlessSpace + ")"),
                "more than 4096 bytes of white space at byte 4096");
  ExpectRefused(Stream(std::string("fd:3 3< <(") + kEndlessString + ")"),
                "an entry longer than 65536 bytes");
  // 16384 entries reach the disk's 8 MiB; the next one is refused.
  ExpectRefused(Stream(std::string("fd:3 3< <(") + kEndlessEntries + ")"),
                "an entry after the end of the disk's 8388608 bytes");
}

TEST_F(MetadataBounds, Qcow2ToStdoutDescriptorsAreBounded) {
  const std::string junk = Quote(dir_ / "junk");
  ExpectRefused(ToStdout("--json-header-map 5 5<" + junk),
                "--json-header-map 5: not qemu-img map JSON: expected '[', found the byte 0x00 "
                "at byte 0");
  ExpectRefused(ToStdout("--json-header-info 5 5<" + junk),
                "--json-header-info 5: not qemu-img info JSON: expected '{'");
  ExpectRefused(ToStdout("--json-header <" + junk),
                "--json-header (stdin): not the JSON {virtual_size, cluster_bits, data_clusters}");
  ExpectRefused(ToStdout("--diff " + Quote(dir_ / "disk.raw") + " --json-header-diff 7 7<" + junk),
                "--json-header-diff: not the JSON");
  ExpectRefused(ToStdout(std::string("--json-header-map 5 5< <(") + kEndlessEntries + ")"),
                "an entry after the end of the disk's 8388608 bytes");
  ExpectRefused(ToStdout(std::string("--json-header-info 5 5< <(") + kEndlessSpace + ")"),
                "more than 4096 bytes of white space");
  ExpectRefused(ToStdout("--json-header-info 5 5< <(printf '{\"x\": ['; yes '[1],' | tr -d '\\n')"),
                "longer than 16777216 bytes");
  ExpectRefused(ToStdout("--json-header < <(printf '{\"virtual_size\": 8388608, \"cluster_bits\": "
                         "16, \"data_clusters\": ['; yes '0,' | tr -d '\\n')"),
                "more entries in data_clusters than the disk's 128 clusters");
  ExpectRefused(ToStdout("--diff " + Quote(dir_ / "disk.raw") +
                         " --json-header-diff 7 7< <(printf '{\"data_clusters\": ['; yes '[0, "
                         "1],' | tr -d '\\n')"),
                "more entries in data_clusters than the disk's 16384 clusters");
}

// A valid allocation as fragmented as the disk allows (every other 512-byte cluster of a
// 1 GiB disk: 1M runs, 8 MB of read_headers JSON, 120 MB of qemu-img map JSON) is exported
// in bounded memory: its granularity coarsens.
TEST_F(MetadataBounds, AFragmentedAllocationTakesBoundedMemory) {
  const std::string big = Quote(dir_ / "big.raw");
  ASSERT_EQ(Sh("truncate -s 1G " + big + " && printf data | dd of=" + big +
               " bs=1 seek=1048576 conv=notrunc status=none")
                .status,
            0);
  WriteText(dir_ / "clusters.sh", R"(awk 'BEGIN {
  printf "{\"virtual_size\": 1073741824, \"cluster_bits\": 9, \"data_clusters\": [0"
  for (i = 2; i < 2097152; i += 2) printf ",%d", i
  printf "]}" }')");
  WriteText(dir_ / "entries.sh", R"(awk 'BEGIN { printf "["
  for (o = 0; o < 1073741824; o += 512)
    printf "%s{\"start\": %d, \"length\": 512, \"zero\": false, \"data\": %s}", o ? "," : "", o, (o / 512) % 2 ? "false" : "true"
  printf "]" }')");
  const std::string sh = "bash " + Quote(dir_.path()) + "/";
  // (Written nowhere: what the coarsened allocation exports is checked in
  // map_json_test.cc; here, what it costs.)
  for (const std::string& command :
       {Qcowfs() + " qcow2-to-stdout " + big + " --json-header < <(" + sh +
            "clusters.sh) > /dev/null",
        Qcowfs() + " stream --source " + big + " --allocation-from fd:3 3< <(" + sh +
            "entries.sh) --destination null:"}) {
    SCOPED_TRACE(command);
    const Measured m = RunMeasured(dir_, command);
    EXPECT_EQ(m.status, 0) << m.output;
    EXPECT_LT(m.max_rss_kib, kMaxRssKib) << m.output;
    std::printf("  peak RSS %ld KiB\n", m.max_rss_kib);
  }
}

}  // namespace
