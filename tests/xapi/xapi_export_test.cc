// xapi's qcow2 export (GET /export_raw_vdi?format=qcow2[&base=...]) as xapi runs it: the
// qcow_to_stdout tool, here qcowfs under the name qcow2-to-stdout, with the VDI's device
// (a loop device standing in for tapdisk's) as its argument, the HTTP socket as its stdout,
// and the JSON of `qemu-img map` and `qemu-img info` of the VDI's qcow2 file on pipes whose
// descriptor numbers are on its command line. The images are judged by qemu-img; a diff is
// imported by PUT onto a copy of its base through stream_decode (xapi's qcow2 import) and
// must then read as the VDI.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "chain_recipes.h"
#include "image_recipes.h"
#include "mount_fixture.h"
#include "test_util.h"
#include "xapi_server.h"

namespace {

using namespace qcowfs_test;
using Runs = std::vector<std::pair<uint64_t, uint64_t>>;

// What xapi writes into the arguments where it has no descriptor to pass (it names the
// pipes by UUIDs and replaces only those it passes).
const std::string kUnreplaced = "5b2a3c4e-1f0d-4d7e-9a51-3e2f0c6b7d18";

std::string QemuImg(const std::string& what, const std::string& image) {
  return "qemu-img " + what + " " + Quote(image) + " --output=json";
}

// A qcow2 SR in miniature: a read-only parent shared by a snapshot VDI (no writes of its own)
// and the live VDI, which changed some clusters, zeroed one, added two and rewrote one with
// the bytes it held. Each VDI's device is a loop device over its guest bytes.
class XapiExport : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    const std::string script =
        "cd " + Quote(dir_.path()) +
        " && qemu-img create -q -f qcow2 parent.qcow2 64M"
        " && qemu-io -f qcow2 -c 'write -P 1 0 4M' -c 'write -P 2 20M 1M'"
        "    -c 'write -P 5 30M 64k' -c 'write -P 0 50M 64k' parent.qcow2 >/dev/null"
        " && qemu-img create -q -f qcow2 -b parent.qcow2 -F qcow2 snap.qcow2"
        " && qemu-img create -q -f qcow2 -b parent.qcow2 -F qcow2 live.qcow2"
        " && qemu-io -f qcow2 -c 'write -P 3 1M 64k' -c 'write -z 20M 64k'"
        "    -c 'write -P 4 40M 128k' -c 'write -P 5 30M 64k' live.qcow2 >/dev/null"
        " && qemu-img convert -O raw snap.qcow2 snap.raw"
        " && qemu-img convert -O raw live.qcow2 live.raw"
        " && ln -s " +
        Quote(QcowfsBinary()) + " qcow2-to-stdout";
    const auto r = Sh(script);
    ASSERT_EQ(r.status, 0) << r.output;
    live_dev_ = std::make_unique<LoopDevice>(dir_ / "live.raw");
    snap_dev_ = std::make_unique<LoopDevice>(dir_ / "snap.raw");
    ASSERT_FALSE(live_dev_->device().empty()) << live_dev_->output();
    ASSERT_FALSE(snap_dev_->device().empty()) << snap_dev_->output();
  }

  // xapi's Qcow_tool_wrapper.send: [device] @ --diff base @ the base's JSON pipes @ the
  // VDI's JSON pipes, each pair only when that VDI has a qcow2 file ("" for none). Without
  // the VDI's pipes xapi passes none, so the base's placeholders stay as they are.
  ToolSpec ExportSpec(const std::string& qcow, const std::string& base_dev = "",
                      const std::string& base_qcow = "") {
    ToolSpec spec{.args = {live_dev_->device()}, .log = dir_ / "export.log"};
    spec.program = dir_ / "qcow2-to-stdout";
    spec.socket_on_stdout = true;
    if (!base_dev.empty()) spec.args.insert(spec.args.end(), {"--diff", base_dev});
    const bool passed = !qcow.empty();
    if (!base_qcow.empty()) {
      spec.args.insert(spec.args.end(),
                       {"--json-header-diff-map", passed ? "{pipe2}" : kUnreplaced,
                        "--json-header-diff-info", passed ? "{pipe3}" : kUnreplaced});
    }
    if (passed) {
      spec.args.insert(spec.args.end(),
                       {"--json-header-map", "{pipe0}", "--json-header-info", "{pipe1}"});
      spec.pipes = {QemuImg("map", qcow), QemuImg("info", qcow)};
      if (!base_qcow.empty()) {
        spec.pipes.push_back(QemuImg("map", base_qcow));
        spec.pipes.push_back(QemuImg("info", base_qcow));
      }
    }
    return spec;
  }

  // GETs the export with curl into `out` while the server runs spec; expects success.
  ToolRun Get(const ToolSpec& spec, const std::string& out) {
    auto handled = server_.HandleOne(spec);
    const auto curl = Sh(kCurl + "-o " + Quote(out) + " " +
                         Quote(server_.Url("/export_raw_vdi?vdi=live&format=qcow2")));
    ToolRun run = handled.get();
    EXPECT_EQ(run.error, "");
    EXPECT_EQ(curl.status, 0) << curl.output;
    EXPECT_TRUE(!run.timed_out && WIFEXITED(run.wait_status) && WEXITSTATUS(run.wait_status) == 0)
        << run.command << "\nstatus " << run.wait_status << "\nstderr: " << run.log;
    const auto check = Sh("qemu-img check " + Quote(out));
    EXPECT_EQ(check.status, 0) << check.output;
    const auto info = Sh("qemu-img info " + Quote(out));
    EXPECT_EQ(info.output.find("backing file"), std::string::npos) << info.output;
    return run;
  }

  // Expects the image to read as the live VDI.
  void ExpectFullImage(const std::string& out) {
    const auto cmp = Sh("qemu-img compare -F qcow2 " + Quote(dir_ / "live.raw") + " " + Quote(out));
    EXPECT_EQ(cmp.status, 0) << cmp.output;
  }

  // Expects the image to hold exactly the clusters where live and snap differ, and to make
  // a copy of the snapshot's disk read as the live one when PUT through stream_decode.
  void ExpectDiff(const std::string& out) {
    EXPECT_EQ(MappedClusters(out, 16, false), (Runs{{16, 1}, {320, 1}, {640, 2}}))
        << "the diff holds the rewritten cluster at 1M, the one zeroed at 20M and the two new "
           "ones at 40M; not the one rewritten with the bytes it held (30M)";
    const std::string target = dir_ / "restored.raw";
    ASSERT_EQ(Sh("cp " + Quote(dir_ / "snap.raw") + " " + Quote(target)).status, 0);
    auto handled = server_.HandleOne(
        {.args = {"stream_decode", target}, .socket_on_stdin = true, .log = dir_ / "import.log"});
    const auto curl = Sh(kCurl + "-T " + Quote(out) + " -H 'Expect:' " +
                         Quote(server_.Url("/import_raw_vdi?vdi=copy&format=qcow2")));
    const ToolRun run = handled.get();
    EXPECT_EQ(curl.status, 0) << curl.output;
    EXPECT_TRUE(!run.timed_out && WIFEXITED(run.wait_status) && WEXITSTATUS(run.wait_status) == 0)
        << run.command << "\nstderr: " << run.log;
    const auto cmp = Sh("cmp " + Quote(dir_ / "live.raw") + " " + Quote(target));
    EXPECT_EQ(cmp.status, 0) << "the diff applied onto the snapshot is not the VDI: " << cmp.output;
  }

  std::string Q() const { return Quote(dir_ / "qcow2-to-stdout"); }

  TempDir dir_;
  XapiServer server_;
  std::unique_ptr<LoopDevice> live_dev_, snap_dev_;
};

TEST_F(XapiExport, FullExportHoldsWhatQemuImgMapSaysHoldsData) {
  const std::string out = dir_ / "out.qcow2";
  const ToolRun run = Get(ExportSpec(dir_ / "live.qcow2"), out);
  EXPECT_EQ(run.log, "") << run.command;
  ExpectFullImage(out);
  // The allocation is the map's: the cluster written with zeros at 50M is data there (a
  // scan of the disk would have left it out), the one zeroed at 20M is not.
  const Runs held = MappedClusters(out, 16, false);
  EXPECT_EQ(held, MappedClusters(dir_ / "live.qcow2", 16, true));
  EXPECT_EQ(held, (Runs{{0, 64}, {321, 15}, {480, 1}, {640, 2}, {800, 1}}));
}

TEST_F(XapiExport, FullExportWithoutQcowFileScansForZeros) {
  // A VDI without a qcow2 file (VHD-backed): xapi passes the device alone.
  const std::string out = dir_ / "out.qcow2";
  const ToolRun run = Get(ExportSpec(""), out);
  EXPECT_EQ(run.log, "") << run.command;
  ExpectFullImage(out);
  EXPECT_EQ(MappedClusters(out, 16, false), (Runs{{0, 64}, {321, 15}, {480, 1}, {640, 2}}));
}

// Descriptor options whose value is empty (a placeholder emptied rather than replaced) are
// ignored with one warning line each; the disk is read instead, so the image is whole.
TEST_F(XapiExport, EmptyDescriptorIsIgnoredWithAWarning) {
  ToolSpec spec = ExportSpec("");
  spec.args.insert(spec.args.end(), {"--json-header-map", "", "--json-header-info", ""});
  const std::string out = dir_ / "out.qcow2";
  const ToolRun run = Get(spec, out);
  EXPECT_EQ(run.log,
            "qcow2-to-stdout: warning: ignoring --json-header-map '': not a descriptor number "
            "(the disk is read instead)\n"
            "qcow2-to-stdout: warning: ignoring --json-header-info '': not a descriptor number "
            "(the disk is read instead)\n")
      << run.command;
  ExpectFullImage(out);
  EXPECT_EQ(MappedClusters(out, 16, false), (Runs{{0, 64}, {321, 15}, {480, 1}, {640, 2}}));
}

TEST_F(XapiExport, DiffWithBothMapsHoldsOnlyWhatChanged) {
  const std::string out = dir_ / "diff.qcow2";
  const ToolRun run =
      Get(ExportSpec(dir_ / "live.qcow2", snap_dev_->device(), dir_ / "snap.qcow2"), out);
  EXPECT_EQ(run.log, "") << run.command;
  ExpectDiff(out);
}

TEST_F(XapiExport, DiffWithoutMapsComparesTheDisks) {
  {
    SCOPED_TRACE("neither VDI has a qcow2 file");
    const std::string out = dir_ / "diff1.qcow2";
    const ToolRun run = Get(ExportSpec("", snap_dev_->device()), out);
    EXPECT_EQ(run.log, "") << run.command;
    ExpectDiff(out);
  }
  {
    SCOPED_TRACE("only the VDI has one");
    const std::string out = dir_ / "diff2.qcow2";
    const ToolRun run = Get(ExportSpec(dir_ / "live.qcow2", snap_dev_->device()), out);
    EXPECT_EQ(run.log, "") << run.command;
    ExpectDiff(out);
  }
  {
    SCOPED_TRACE("only the base has one: xapi leaves its placeholders in the arguments");
    const std::string out = dir_ / "diff3.qcow2";
    const ToolRun run = Get(ExportSpec("", snap_dev_->device(), dir_ / "snap.qcow2"), out);
    EXPECT_NE(
        run.log.find("qcow2-to-stdout: warning: ignoring --json-header-diff-map '" + kUnreplaced),
        std::string::npos)
        << run.log;
    ExpectDiff(out);
  }
}

// The older command lines: qcow-stream-tool's read_headers JSON on stdin (--json-header)
// and on a descriptor for the base (--json-header-diff); clusters as indices or as
// [first, last] pairs. They describe the same allocation as the maps, so the images are the
// same bytes.
TEST_F(XapiExport, OlderJsonHeadersGiveTheSameImages) {
  const std::string live = Quote(dir_ / "live.qcow2"), snap = Quote(dir_ / "snap.qcow2");
  const std::string dev = Quote(live_dev_->device()), base = Quote(snap_dev_->device());
  const std::string qcowfs = Quote(QcowfsBinary());
  auto run =
      Sh("bash -c " +
         Quote(Q() + " " + dev + " --json-header-map 5 --json-header-info 6 5< <(" +
               QemuImg("map", dir_ / "live.qcow2") + ") 6< <(" +
               QemuImg("info", dir_ / "live.qcow2") + ") > " + Quote(dir_ / "by_map.qcow2")));
  ASSERT_EQ(run.status, 0) << run.output;
  run = Sh(qcowfs + " read_headers " + live + " | " + Q() + " " + dev + " --json-header > " +
           Quote(dir_ / "by_indices.qcow2"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_TRUE(ReadFile(dir_ / "by_indices.qcow2") == ReadFile(dir_ / "by_map.qcow2"));
  // The same clusters as [first, last] pairs, out of order.
  const std::string pairs = R"({"virtual_size": 67108864, "cluster_bits": 16, "data_clusters": )"
                            R"([[800, 800], [640, 641], [0, 63], [480, 480], [321, 335]]})";
  run = Sh("echo " + Quote(pairs) + " | " + Q() + " " + dev + " --json-header > " +
           Quote(dir_ / "by_pairs.qcow2"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_TRUE(ReadFile(dir_ / "by_pairs.qcow2") == ReadFile(dir_ / "by_map.qcow2"));

  run = Sh("bash -c " +
           Quote(qcowfs + " read_headers " + live + " | " + Q() + " " + dev + " --diff " + base +
                 " --json-header --json-header-diff 7 7< <(" + qcowfs + " read_headers " + snap +
                 ") > " + Quote(dir_ / "diff_old.qcow2")));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_EQ(run.output, "");
  ExpectDiff(dir_ / "diff_old.qcow2");
  // The subcommand spelling is the same tool.
  run = Sh(qcowfs + " read_headers " + live + " | " + qcowfs + " qcow2-to-stdout " + dev +
           " --json-header > " + Quote(dir_ / "by_subcommand.qcow2"));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_TRUE(ReadFile(dir_ / "by_subcommand.qcow2") == ReadFile(dir_ / "by_map.qcow2"));
}

// A disk whose size is not whole sectors: JSON may give its size as it is or rounded up to
// the sector (as qemu-img does for the qcow2 file); both describe it.
TEST_F(XapiExport, JsonOfADiskOfAnOddSize) {
  const std::string odd = dir_ / "odd.raw";
  const uint64_t size = (32 << 20) + 1000;
  WriteAt(odd, 0, RandomBytes(size, 4));
  for (const uint64_t described : {size, uint64_t{(32 << 20) + 1024}}) {
    SCOPED_TRACE(described);
    const std::string out = dir_ / "odd.qcow2";
    const std::string header = R"({"virtual_size": )" + std::to_string(described) +
                               R"(, "cluster_bits": 16, "data_clusters": [[0, 512]]})";
    const auto run = Sh("echo " + Quote(header) + " | " + Q() + " " + Quote(odd) +
                        " --json-header > " + Quote(out));
    ASSERT_EQ(run.status, 0) << run.output;
    EXPECT_EQ(run.output, "");
    const auto cmp = Sh("qemu-img compare -F qcow2 " + Quote(odd) + " " + Quote(out));
    EXPECT_EQ(cmp.status, 0) << cmp.output;
  }
  const auto run = Sh("echo '{\"virtual_size\": " + std::to_string(size + 1) +
                      ", \"cluster_bits\": 16, \"data_clusters\": []}' | " + Q() + " " +
                      Quote(odd) + " --json-header > /dev/null");
  EXPECT_EQ(run.status, 3) << run.output;
  EXPECT_NE(run.output.find("describes a disk of " + std::to_string(size + 1)), std::string::npos)
      << run.output;
}

// Command lines and inputs that cannot give a right image: one line on stderr, a non-zero
// exit, no image.
TEST_F(XapiExport, BadInputIsOneLineAndNoImage) {
  const std::string dev = Quote(live_dev_->device()), base = Quote(snap_dev_->device());
  const std::string other = dir_ / "other.qcow2";
  ASSERT_EQ(Sh("qemu-img create -q -f qcow2 " + Quote(other) + " 128M").status, 0);
  struct Case {
    std::string why, args;
    int status;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"the JSON of another disk",
       "--json-header-map 5 --json-header-info 6 5< <(" + QemuImg("map", other) + ") 6< <(" +
           QemuImg("info", other) + ")",
       3, "134217728"},
      {"the map alone of another disk", "--json-header-map 5 5< <(" + QemuImg("map", other) + ")",
       3, "134217728"},
      {"a map that is not JSON", "--json-header-map 5 5< <(echo '[{\"start\": 0,')", 3,
       "not qemu-img map JSON"},
      {"info that is not JSON", "--json-header-info 5 5< <(echo nope)", 3,
       "not qemu-img info JSON"},
      {"a cluster past the end",
       "--json-header < <(echo '{\"virtual_size\": 67108864, \"cluster_bits\": 16, "
       "\"data_clusters\": [1024]}')",
       3, "past the end"},
      {"a header without clusters",
       "--json-header < <(echo '{\"virtual_size\": 67108864, \"cluster_bits\": 16}')", 3,
       "data_clusters"},
      {"a descriptor that is not open", "--json-header-map 250", 2,
       "--json-header-map 250: descriptor 250 was not passed"},
      {"an external data file", "-d", 2, "external data file"},
      {"8-bit refcounts", "-r 8", 2, "16-bit"},
      {"a cluster size that is no power of two", "-c 3000", 2, "power of two"},
      {"a negative cluster size", "-c -5", 2, "-c -5"},
      {"a cluster size past 64 bits", "-c 99999999999999999999999", 2,
       "-c 99999999999999999999999"},
      {"the base's JSON without --diff", "--json-header-diff-map 5 5</dev/null", 2, "--diff"},
      {"a base that does not exist", "--diff " + Quote(dir_ / "missing"), 1, "missing"},
      {"both JSON forms", "--json-header --json-header-map 5 5</dev/null < /dev/null", 2,
       "not both"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.why);
    const std::string out = dir_ / "bad.qcow2";
    const auto run = Sh("bash -c " + Quote(Q() + " " + dev + " " + c.args + " > " + Quote(out)));
    EXPECT_EQ(run.status, c.status) << run.output;
    EXPECT_EQ(std::count(run.output.begin(), run.output.end(), '\n'), 1) << run.output;
    EXPECT_EQ(run.output.rfind("qcow2-to-stdout: error: ", 0), 0u) << run.output;
    EXPECT_NE(run.output.find(c.needle), std::string::npos) << run.output;
    EXPECT_TRUE(ReadFile(out).empty()) << "an image was written";
  }
  // A terminal on stdout is refused, as the tool xapi ships refuses it.
  if (Sh("command -v script").status == 0) {
    const auto run = Sh("script -qec " + Quote(Q() + " " + dev) + " /dev/null");
    EXPECT_EQ(run.status, 2) << run.output;
    EXPECT_NE(run.output.find("terminal"), std::string::npos) << run.output;
  }
}

// A client that goes away mid-image: the tool exits 1 with one line, not by SIGPIPE.
TEST_F(XapiExport, ClientGoingAwayIsOneLineExitOne) {
  // Enough data that the socket buffers cannot take the whole image.
  ASSERT_EQ(Sh("head -c 48M /dev/urandom | dd of=" + Quote(live_dev_->device()) +
               " bs=1M conv=notrunc,fsync status=none")
                .status,
            0);
  auto handled = server_.HandleOne(ExportSpec(""));
  Sh(kCurl + Quote(server_.Url("/export_raw_vdi?vdi=live&format=qcow2")) +
     " | head -c 1000 > /dev/null");
  const ToolRun run = handled.get();
  ASSERT_EQ(run.error, "");
  EXPECT_TRUE(!run.timed_out && WIFEXITED(run.wait_status) && WEXITSTATUS(run.wait_status) == 1)
      << run.command << "\nstatus " << run.wait_status << "\nstderr: " << run.log;
  EXPECT_EQ(std::count(run.log.begin(), run.log.end(), '\n'), 1) << run.log;
  EXPECT_EQ(run.log.rfind("qcow2-to-stdout: error: ", 0), 0u) << run.log;
}

}  // namespace
