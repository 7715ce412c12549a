// xapi's HTTP handlers played for real, driven by curl. A small HTTP server in the test does
// what xapi does: it reads the request head, writes "200 OK" and "Connection: close" itself
// (for a PUT before any of the body is read), runs qcowfs with the socket as a descriptor
// (vhd-tool's command lines) or as standard input (XCP-ng's qcow2 importer), reads the tool's
// stdout three bytes at a time for progress until end of file, waits for the exit status and
// only then closes the connection. Results are judged by qemu-img.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "image_recipes.h"
#include "mount_fixture.h"
#include "qcow/format/byte_order.h"
#include "test_util.h"
#include "xapi_server.h"

namespace {

using namespace qcowfs_test;

std::string Joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : " ") + s;
  return out;
}

// Everything about a run that a failure report needs.
std::string Describe(const ToolRun& r) {
  std::ostringstream o;
  o << "\ncommand: " << r.command << "\n";
  if (r.timed_out) o << "KILLED: still running after " << kToolLimit.count() << " s\n";
  if (WIFEXITED(r.wait_status)) {
    o << "exit status " << WEXITSTATUS(r.wait_status);
  } else if (WIFSIGNALED(r.wait_status)) {
    o << "killed by signal " << WTERMSIG(r.wait_status) << " ("
      << strsignal(WTERMSIG(r.wait_status)) << ")";
  }
  o << " after " << r.seconds << " s; client had closed its side: " << r.client_gone_at_exit
    << "\nprogress: [" << Joined(r.progress) << "]";
  if (!r.progress_tail.empty()) o << " then stray '" << r.progress_tail << "'";
  o << "\nstderr: '" << r.log << "'";
  return o.str();
}

bool ExitedWith(const ToolRun& r, int code) {
  return !r.timed_out && WIFEXITED(r.wait_status) && WEXITSTATUS(r.wait_status) == code;
}

bool FailedCleanly(const ToolRun& r) {
  return !r.timed_out && WIFEXITED(r.wait_status) && WEXITSTATUS(r.wait_status) != 0;
}

// One line on stderr, starting with "qcowfs: error:" (xapi passes it up to the user).
void ExpectOneErrorLine(const ToolRun& r, const std::string& needle = "") {
  EXPECT_EQ(std::count(r.log.begin(), r.log.end(), '\n'), 1) << Describe(r);
  EXPECT_EQ(r.log.rfind("qcowfs: error: ", 0), 0u) << Describe(r);
  EXPECT_NE(r.log.find(needle), std::string::npos) << "no '" << needle << "'" << Describe(r);
}

// xapi's view of progress: three digits per read, never going back; on success the last
// value is 100, on failure 100 never shows. `required`: at least one value; `several`: some
// value between the start and the end, that is other than 000, 099 and 100.
void ExpectProgress(const ToolRun& r, bool success, bool required, bool several) {
  EXPECT_TRUE(r.progress_tail.empty()) << "bytes that are no 3-digit value" << Describe(r);
  if (required) {
    ASSERT_FALSE(r.progress.empty()) << Describe(r);
  }
  int last = -1;
  for (const auto& v : r.progress) {
    const bool digits =
        std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
    ASSERT_TRUE(digits) << "'" << v << "' is not three digits" << Describe(r);
    const int percent = std::stoi(v);
    EXPECT_LE(percent, 100) << Describe(r);
    EXPECT_GE(percent, last) << "progress went back" << Describe(r);
    last = percent;
  }
  if (success && !r.progress.empty()) {
    EXPECT_EQ(r.progress.back(), "100") << Describe(r);
  }
  if (!success) {
    EXPECT_LT(last, 100) << "a failed run showed 100" << Describe(r);
  }
  if (several) {
    const bool between = std::any_of(r.progress.begin(), r.progress.end(), [](const auto& v) {
      return v != "000" && v != "099" && v != "100";
    });
    EXPECT_TRUE(between) << "nothing between 000/099 and 100 for several MiB" << Describe(r);
  }
}

// The command lines as xapi builds them, laid out like the man page's.
// clang-format off

// xapi's export_raw_vdi: vhd-tool's line with qcow2 for vhd.
ToolSpec ExportSpec(const std::string& src, const std::string& log) {
  return {.args = {"stream", "--source-protocol", "none", "--source-format", "raw", "--source", src,
           "--destination-protocol", "none", "--destination-format", "qcow2",
           "--destination-fd", "{fd}",
           "--tar-filename-prefix", "", "--progress", "--machine", "--direct",
           "--path", "/dev/mapper:."},
          .log = log};
}

// xapi's import_raw_vdi through vhd-tool's line: --destination-size is the Content-Length.
ToolSpec ServeSpec(const std::string& target, const std::string& log, bool prezeroed) {
  ToolSpec spec{.args = {"serve", "--source-format", "qcow2", "--source-protocol", "none",
                 "--source-fd", "{fd}",
                 "--tar-filename-prefix", "", "--destination", "file://" + target,
                 "--destination-format", "raw", "--progress", "--machine", "--direct",
                 "--destination-size", "{length}"},
                .log = log};
  if (prezeroed) spec.args.push_back("--prezeroed");
  return spec;
}

// clang-format on

// XCP-ng's qcow2 importer: the socket on stdin, no size.
ToolSpec StreamDecodeSpec(const std::string& target, const std::string& log) {
  return {.args = {"stream_decode", target}, .socket_on_stdin = true, .log = log};
}

// Images large enough that serve reads them in several pieces (it reads up to 4 MiB at a
// time), so progress has values between 0 and 99 to show.
const std::vector<ImageRecipe>& LargeImages() {
  static const std::vector<ImageRecipe> images = {
      {"large_convert",
       "truncate -s 64M raw && head -c 20M /dev/urandom | "
       "dd of=raw bs=1M seek=3 conv=notrunc status=none && "
       "qemu-img convert -f raw -O qcow2 raw img.qcow2"},
      // base64 text compresses to about 3/4: every cluster is stored compressed.
      {"large_convert_compressed",
       "truncate -s 64M raw && head -c 15M /dev/urandom | base64 -w0 | head -c 20M | "
       "dd of=raw bs=1M seek=30 conv=notrunc status=none && "
       "qemu-img convert -c -f raw -O qcow2 raw img.qcow2"},
      // Valid images that go on past their active tree: an internal snapshot's data and
      // the snapshot table, a persistent bitmap's data and directory. The tool must read
      // them too, or the client still sending them is reset.
      {"large_snapshots",
       "qemu-img create -q -f qcow2 img.qcow2 1G && "
       "qemu-io -f qcow2 -c 'write -P 1 0 1M' img.qcow2 >/dev/null && "
       "qemu-img snapshot -c s0 img.qcow2 && "
       "qemu-io -f qcow2 -c 'write -P 3 700M 24M' img.qcow2 >/dev/null && "
       "qemu-img snapshot -c s1 img.qcow2 && qemu-img snapshot -a s0 img.qcow2"},
      {"large_bitmap",
       "qemu-img create -q -f qcow2 img.qcow2 256M && "
       "qemu-io -f qcow2 -c 'write -P 1 0 8M' img.qcow2 >/dev/null && "
       "qemu-img bitmap --add img.qcow2 b0 && "
       "qemu-io -f qcow2 -c 'write -P 2 100M 16M' img.qcow2 >/dev/null"},
      // A damaged image whose refcounts count a cluster far past its end (a leak, which
      // qemu-img check reports and qemu-img convert reads past): the bytes up to there
      // never come, and the client never closes. Once the disk is whole, a pause in the
      // input must end the import, not hang it.
      {"refcount_past_end",
       "truncate -s 64M raw && head -c 12M /dev/urandom | "
       "dd of=raw bs=1M seek=5 conv=notrunc status=none && "
       "qemu-img convert -f raw -O qcow2 raw img.qcow2",
       [](const std::string& image) {
         auto bytes = ReadFile(image);
         const uint64_t table = qcow::LoadBe64(&bytes[48]);
         const uint64_t block = qcow::LoadBe64(&bytes[table]);
         const uint64_t past_end = bytes.size() / (64 << 10) + 1000;
         std::vector<uint8_t> one(2);
         qcow::StoreBe16(one.data(), 1);
         WriteAt(image, block + 2 * past_end, one);
       }},
  };
  return images;
}

// Returns the recipe of that name from ValidImages() or LargeImages(), or null.
const ImageRecipe* Recipe(const std::string& name) {
  for (const auto* list : {&ValidImages(), &LargeImages()}) {
    for (const auto& r : *list) {
      if (name == r.name) return &r;
    }
  }
  return nullptr;
}

uint64_t FileSize(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

std::string PutWithCurl(const XapiServer& server, const std::string& image) {
  const auto r = Sh(kCurl + "-T " + Quote(image) + " -H 'Expect:' " +
                    Quote(server.Url("/import_raw_vdi?vdi=test&format=qcow2")));
  return r.status == 0 ? "" : "curl: exit " + std::to_string(r.status) + ": " + r.output;
}

class XapiHttp : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ok()); }
  // A sparse 64 MiB disk with `chunks` pieces of random data of `each` bytes spread over it.
  std::string MakeSource(int chunks, uint64_t each) {
    const std::string src = dir_ / "src";
    for (int i = 0; i < chunks; ++i) {
      const uint64_t at = (static_cast<uint64_t>(i) * ((64 << 20) - each) / chunks) + 4097 * i;
      WriteAt(src, at, RandomBytes(each, i + 1));
    }
    EXPECT_EQ(truncate(src.c_str(), 64 << 20), 0);
    return src;
  }
  TempDir dir_;
  XapiServer server_;
};

TEST_F(XapiHttp, GetExportsTheSameBytesAsStream) {
  const std::string src = MakeSource(8, 1 << 20), out = dir_ / "out.qcow2";
  auto handled = server_.HandleOne(ExportSpec(src, dir_ / "export.log"));
  const auto curl = Sh(kCurl + "-o " + Quote(out) + " " +
                       Quote(server_.Url("/export_raw_vdi?vdi=t&format=qcow2")));
  const ToolRun run = handled.get();
  ASSERT_EQ(run.error, "");
  EXPECT_EQ(run.request.method, "GET");
  EXPECT_TRUE(ExitedWith(run, 0)) << Describe(run);
  EXPECT_EQ(run.log, "");
  EXPECT_EQ(curl.status, 0) << curl.output;

  const auto ref = Sh(QcowfsBinary() + " stream --source " + Quote(src) + " --destination " +
                      Quote(dir_ / "ref.qcow2"));
  ASSERT_EQ(ref.status, 0) << ref.output;
  EXPECT_TRUE(ReadFile(out) == ReadFile(dir_ / "ref.qcow2"))
      << "downloaded " << FileSize(out) << " bytes, stream wrote " << FileSize(dir_ / "ref.qcow2");
  const auto cmp = Sh("qemu-img compare -f raw -F qcow2 " + Quote(src) + " " + Quote(out));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
  const auto check = Sh("qemu-img check " + Quote(out));
  EXPECT_EQ(check.status, 0) << check.output;
  ExpectProgress(run, true, true, true);
}

TEST_F(XapiHttp, GetWhoseClientGoesAwayEarlyExitsOneNotBySigpipe) {
  // 48 MiB of data: far more than the socket buffers hold, so the tool is still writing.
  const std::string src = MakeSource(6, 8 << 20);
  const std::string url = server_.Url("/export_raw_vdi?vdi=t&format=qcow2");
  {
    SCOPED_TRACE("a client that reads 1000 bytes and closes");
    auto handled = server_.HandleOne(ExportSpec(src, dir_ / "raw.log"));
    const auto got = RawClient(server_.port(),
                               "GET /export_raw_vdi?vdi=t&format=qcow2 HTTP/1.1\r\n"
                               "Host: 127.0.0.1\r\n\r\n",
                               {}, false, 1000);
    const ToolRun run = handled.get();
    ASSERT_EQ(run.error, "");
    EXPECT_EQ(got.size(), 1000u);
    EXPECT_TRUE(ExitedWith(run, 1)) << Describe(run);
    ExpectOneErrorLine(run);
    ExpectProgress(run, false, false, false);
  }
  {
    SCOPED_TRACE("curl | head -c 1000");
    auto handled = server_.HandleOne(ExportSpec(src, dir_ / "curl.log"));
    Sh(kCurl + Quote(url) + " | head -c 1000 > /dev/null");
    const ToolRun run = handled.get();
    ASSERT_EQ(run.error, "");
    EXPECT_TRUE(ExitedWith(run, 1)) << Describe(run);
    ExpectOneErrorLine(run);
    ExpectProgress(run, false, false, false);
  }
}

TEST_F(XapiHttp, PutWithPrezeroedIntoAFreshTarget) {
  const std::string image = BuildImage(dir_, *Recipe("plain_convert"));
  const std::string target = dir_ / "target";
  ASSERT_EQ(Sh("truncate -s " + std::to_string(VirtualSize(image)) + " " + Quote(target)).status,
            0);
  auto handled = server_.HandleOne(ServeSpec(target, dir_ / "serve.log", true));
  const std::string curl = PutWithCurl(server_, image);
  const ToolRun run = handled.get();
  ASSERT_EQ(run.error, "");
  EXPECT_TRUE(ExitedWith(run, 0)) << Describe(run);
  EXPECT_FALSE(run.client_gone_at_exit) << Describe(run);
  EXPECT_EQ(curl, "");
  const auto cmp = Sh("qemu-img compare -f qcow2 -F raw " + Quote(image) + " " + Quote(target));
  EXPECT_EQ(cmp.status, 0) << cmp.output;
  ExpectProgress(run, true, true, true);
}

TEST_F(XapiHttp, TruncatedPutThroughServeFailsWithOneLine) {
  const std::string image = BuildImage(dir_, *Recipe("plain_convert"));
  const std::string cut = dir_ / "cut.qcow2";
  const auto bytes = ReadFile(image);
  WriteAt(cut, 0, std::vector<uint8_t>(bytes.begin(), bytes.begin() + bytes.size() / 2));
  const std::string target = dir_ / "target";
  MakePatternTarget(target, VirtualSize(image));
  auto handled = server_.HandleOne(ServeSpec(target, dir_ / "serve.log", false));
  PutWithCurl(server_, cut);  // curl's own result does not matter here
  const ToolRun run = handled.get();
  ASSERT_EQ(run.error, "");
  EXPECT_EQ(run.request.content_length, bytes.size() / 2);
  EXPECT_TRUE(FailedCleanly(run)) << Describe(run);
  ExpectOneErrorLine(run, "truncated");
  ExpectProgress(run, false, false, false);
}

TEST_F(XapiHttp, TruncatedPutThroughStreamDecodeFailsWhenTheClientCloses) {
  const std::string image = BuildImage(dir_, *Recipe("plain_convert"));
  auto bytes = ReadFile(image);
  bytes.resize(bytes.size() / 2);
  const std::string target = dir_ / "target";
  MakePatternTarget(target, VirtualSize(image));
  auto handled = server_.HandleOne(StreamDecodeSpec(target, dir_ / "decode.log"));
  const std::string head =
      "PUT /import_raw_vdi?vdi=t&format=qcow2 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
      "Content-Length: " +
      std::to_string(bytes.size()) + "\r\n\r\n";
  const auto response = RawClient(server_.port(), head, bytes, true, 1 << 20);
  const ToolRun run = handled.get();
  ASSERT_EQ(run.error, "");
  EXPECT_EQ(response, kResponseHead);
  EXPECT_TRUE(run.client_gone_at_exit) << Describe(run);
  EXPECT_TRUE(FailedCleanly(run)) << Describe(run);
  ExpectOneErrorLine(run);
  ExpectProgress(run, false, false, false);
}

// xapi's round trip of a VDI whose size is not whole sectors: its export (virtual size
// rounded up to 512) PUT back onto a VDI of its own size through stream_decode, the client
// keeping its side open. The import finishes and the VDI reads as the source; with data in
// the rounded-up tail it fails with one line, the VDI keeping its size.
TEST_F(XapiHttp, PutOfAnOddSizedVdisExportOntoItsOwnSize) {
  const uint64_t size = (32 << 20) + 1000;
  const std::string src = dir_ / "src", img = dir_ / "img.qcow2", target = dir_ / "target";
  WriteAt(src, 77777, RandomBytes(2 << 20, 1));
  WriteAt(src, size - 3000, RandomBytes(3000, 2));
  ASSERT_EQ(FileSize(src), size);
  auto made =
      Sh(QcowfsBinary() + " stream --source " + Quote(src) + " --destination " + Quote(img));
  ASSERT_EQ(made.status, 0) << made.output;
  ASSERT_EQ(VirtualSize(img), (32u << 20) + 1024);
  auto put = [&](const std::string& image) {
    Sh("rm -f " + Quote(target) + " && truncate -s " + std::to_string(size) + " " + Quote(target));
    auto handled = server_.HandleOne(StreamDecodeSpec(target, dir_ / "decode.log"));
    const std::string curl = PutWithCurl(server_, image);
    return std::make_pair(handled.get(), curl);
  };
  {
    const auto [run, curl] = put(img);
    ASSERT_EQ(run.error, "");
    EXPECT_TRUE(ExitedWith(run, 0)) << Describe(run);
    EXPECT_FALSE(run.client_gone_at_exit) << Describe(run);
    EXPECT_EQ(curl, "") << Describe(run);
    EXPECT_EQ(Sh("cmp " + Quote(src) + " " + Quote(target)).status, 0);
  }
  const std::string odd = dir_ / "odd.qcow2";
  ASSERT_EQ(Sh("cp " + Quote(img) + " " + Quote(odd) + " && qemu-io -f qcow2 -c 'write -P 9 " +
               std::to_string(size + 10) + " 1' " + Quote(odd) + " > /dev/null")
                .status,
            0);
  {
    const auto [run, curl] = put(odd);
    ASSERT_EQ(run.error, "");
    EXPECT_TRUE(ExitedWith(run, 3)) << Describe(run);
    ExpectOneErrorLine(run, "past the end of the target (" + std::to_string(size) + " bytes)");
    EXPECT_EQ(FileSize(target), size);
  }
}

// Imports of valid images with curl -T: the tool must finish while curl still waits for
// the end of the response, i.e. without end of file on the socket.
class XapiHttpImport : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    const ImageRecipe* recipe = Recipe(GetParam());
    ASSERT_NE(recipe, nullptr) << GetParam();
    image_ = BuildImage(dir_, *recipe);
    ASSERT_FALSE(HasFailure());
    MakePatternTarget(target_, VirtualSize(image_));
  }
  // PUTs the image with curl while the server runs spec; returns the server's run.
  ToolRun Put(const ToolSpec& spec) {
    auto handled = server_.HandleOne(spec);
    curl_ = PutWithCurl(server_, image_);
    return handled.get();
  }
  void ExpectImported(const ToolRun& run) {
    ASSERT_EQ(run.error, "");
    EXPECT_EQ(run.request.method, "PUT");
    EXPECT_EQ(run.request.content_length, FileSize(image_));
    EXPECT_TRUE(ExitedWith(run, 0)) << Describe(run);
    EXPECT_FALSE(run.client_gone_at_exit)
        << "curl closed its side before the tool exited, so nothing proved the tool stops "
           "without end of file"
        << Describe(run);
    EXPECT_EQ(curl_, "") << Describe(run);
    const auto cmp = Sh("qemu-img compare -f qcow2 -F raw " + Quote(image_) + " " + Quote(target_));
    EXPECT_EQ(cmp.status, 0) << cmp.output << Describe(run);
  }
  TempDir dir_;
  XapiServer server_;
  std::string image_, target_ = dir_ / "target", curl_;
};

class XapiHttpServe : public XapiHttpImport {};
class XapiHttpStreamDecode : public XapiHttpImport {};

TEST_P(XapiHttpServe, PutReadsExactlyContentLengthAndFinishes) {
  const ToolRun run = Put(ServeSpec(target_, dir_ / "serve.log", false));
  ExpectImported(run);
  EXPECT_EQ(run.log, "");
  // Past 12 MiB serve needs at least four reads of at most 4 MiB: progress must show them.
  ExpectProgress(run, true, true, FileSize(image_) > (12u << 20));
}

// stream_decode imports as XCP-ng's importer does: what the image allocates is written, the
// rest of the target is left as it is (a new VDI reads as zeros; a diff export applies onto
// a copy of its base). Onto a target that reads as zeros that is the image; onto one that
// holds a pattern, the pattern stays where the image allocates nothing.
TEST_P(XapiHttpStreamDecode, PutOnStdinFinishesWithoutEndOfFile) {
  ASSERT_EQ(Sh("rm " + Quote(target_) + " && truncate -s " + std::to_string(VirtualSize(image_)) +
               " " + Quote(target_))
                .status,
            0);
  const ToolRun run = Put(StreamDecodeSpec(target_, dir_ / "decode.log"));
  ExpectImported(run);
  ExpectProgress(run, true, false, false);
}

TEST_P(XapiHttpStreamDecode, PutOntoAnOldDiskLeavesWhatTheImageDoesNotAllocate) {
  const ToolRun run = Put(StreamDecodeSpec(target_, dir_ / "decode.log"));
  ASSERT_EQ(run.error, "");
  EXPECT_TRUE(ExitedWith(run, 0)) << Describe(run);
  EXPECT_EQ(curl_, "") << Describe(run);
  ExpectAppliedOntoPattern(dir_, image_, target_);
}

INSTANTIATE_TEST_SUITE_P(Images, XapiHttpServe,
                         ::testing::Values("plain_convert", "compressed_zlib", "large_convert",
                                           "large_convert_compressed"));
INSTANTIATE_TEST_SUITE_P(Images, XapiHttpStreamDecode,
                         ::testing::Values("plain_convert", "compressed_zlib", "large_convert",
                                           "large_convert_compressed", "compressed_span_past_end",
                                           "resized", "large_snapshots", "large_bitmap",
                                           "refcount_past_end"));

}  // namespace
