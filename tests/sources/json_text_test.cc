// The streaming JSON reader and the parsers over it: the same answer however the text is
// cut into reads, and a bounded read (and refusal) of junk and of writers that never stop.
#include "qcow/sources/json_text.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>

#include "qcow/format/errors.h"
#include "qcow/sources/allocation_map.h"

namespace {

using qcow::JsonText;

// A map as qemu-img 7.2 prints it, with white space, escapes and unknown members.
const std::string kMap =
    "[{ \"start\": 0, \"length\": 65536, \"depth\": 1, \"present\": true, \"zero\": true, "
    "\"data\": false},\n"
    "{ \"start\": 65536, \"length\": 458752, \"depth\": 2, \"present\": true, \"zero\": false, "
    "\"data\": true, \"offset\": 393216, \"x\\\"y\": [1.5e-3, -2, null, {\"a\": \"b\"}]},\n"
    "{ \"start\": 524288, \"length\": 1572864, \"depth\": 1, \"present\": false, \"zero\": true, "
    "\"data\": false}]\n";
const std::string kInfo =
    R"({"children": [{"name": "file", "info": {"children": [], "virtual-size": 197120}}],
  "virtual-size": 2097152, "filename": "t\\q.qcow2", "cluster-size": 65536,
  "format": "qcow2", "snapshots": [{"id": "1", "date-sec": -1, "ratio": 1.2345678901234567e-300}]})";
const std::string kHeader =
    R"({"virtual_size": 2097152, "cluster_bits": 16, "data_clusters": [3, [0, 1], 31, 2],
  "comment": {"k": [true, false, null]}})";

// Returns a Pull giving text in reads of at most `step` bytes, the first one `first` bytes.
JsonText::Pull Cut(const std::string& text, size_t first, size_t step) {
  return [&text, first, step, at = size_t{0}](char* buf, size_t n) mutable {
    n = std::min({n, text.size() - at, at == 0 ? first : step});
    std::memcpy(buf, text.data() + at, n);
    at += n;
    return n;
  };
}

TEST(JsonText, EveryCutGivesTheSameAnswer) {
  const qcow::DataRanges map = qcow::ParseQemuImgMap(kMap, "map");
  ASSERT_EQ(map.size, 2097152u);
  ASSERT_EQ(map.ranges.size(), 1u);
  const qcow::ImageSummary info = qcow::ParseQemuImgInfo(kInfo, "info");
  ASSERT_EQ(info.virtual_size, 2097152u);
  ASSERT_EQ(info.format, "qcow2");
  const qcow::ClusterHeader header = qcow::ParseClusterHeader(kHeader, "h");
  ASSERT_EQ(header.data.ranges.size(), 2u);
  for (size_t step : {size_t{1}, size_t{7}, JsonText::kChunk}) {
    for (size_t first = 1; first <= kInfo.size(); ++first) {
      SCOPED_TRACE("reads of " + std::to_string(step) + " after one of " + std::to_string(first));
      if (first <= kMap.size()) {
        const qcow::DataRanges m = qcow::ParseQemuImgMap(Cut(kMap, first, step), "map", 2097152);
        ASSERT_EQ(m.size, map.size);
        ASSERT_EQ(m.ranges, map.ranges);
      }
      const qcow::ImageSummary i = qcow::ParseQemuImgInfo(Cut(kInfo, first, step), "info");
      ASSERT_EQ(i.virtual_size, info.virtual_size);
      ASSERT_EQ(i.cluster_bits, info.cluster_bits);
      ASSERT_EQ(i.format, info.format);
      if (first <= kHeader.size()) {
        const qcow::ClusterHeader h =
            qcow::ParseClusterHeader(Cut(kHeader, first, step), "h", 2097152);
        ASSERT_EQ(h.data.ranges, header.data.ranges);
      }
    }
  }
}

// Returns the message of the FormatError fn throws ("" when it throws none).
std::string Refusal(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const qcow::FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(JsonText, RefusesWhatGoesPastItsLimitsWithTheByte) {
  struct Case {
    std::string text, says;
  };
  const std::vector<Case> cases = {
      {"{\"" + std::string(5000, 'k') + "\": 1}", "a string longer than 4096 bytes at byte 4098"},
      {"{\"format\": \"" + std::string(70000, 's') + "\"}",
       "a string longer than 65536 bytes at byte 65548"},
      {"{\"virtual-size\": 123456789012345678901}", "a number longer than 20 digits at byte 37"},
      {"{\"x\": 1.00000000000000000000000000000001}", "a number longer than 32 bytes at byte 38"},
      {"{\"x\": " + std::string(100, '[') + "}", "values nested more than 16 deep at byte 21"},
      {"{" + std::string(5000, ' ') + "}", "more than 4096 bytes of white space at byte 4097"},
      {"{\"x\": \"a\nb\"}", "a control character (the byte 0x0a) in a string at byte 8"},
      {"{\"x\": tru}", "expected 'true', found '}' at byte 9"},
      {"\x7f"
       "ELF",
       "expected '{', found the byte 0x7f at byte 0"},
  };
  for (const Case& c : cases) {
    const std::string says = Refusal([&] { qcow::ParseQemuImgInfo(c.text, "fd:5"); });
    EXPECT_EQ(says, "fd:5: not qemu-img info JSON: " + c.says) << c.text.substr(0, 60);
  }
}

// A writer that never stops: `head`, then `body` again and again. Counts what was pulled.
struct Endless {
  std::string head, body;
  uint64_t pulled = 0;
  JsonText::Pull Pull() {
    return [this](char* buf, size_t n) {
      for (size_t i = 0; i < n; ++i, ++pulled) {
        buf[i] = pulled < head.size() ? head[pulled] : body[(pulled - head.size()) % body.size()];
      }
      return n;
    };
  }
};

TEST(JsonText, EndlessWritersAreRefusedWithinABound) {
  const uint64_t disk = 1 << 20;
  struct Case {
    const char* what;
    Endless text;
    std::function<void(const JsonText::Pull&)> parse;
    std::string says;
    uint64_t most;  // bytes it may pull
  };
  auto map = [&](const JsonText::Pull& p) { qcow::ParseQemuImgMap(p, "fd:5", disk); };
  auto header = [&](const JsonText::Pull& p) { qcow::ParseClusterHeader(p, "fd:5", disk); };
  auto info = [&](const JsonText::Pull& p) { qcow::ParseQemuImgInfo(p, "fd:5"); };
  std::vector<Case> cases = {
      {"white space", {"", " "}, map, "more than 4096 bytes of white space", 2 * JsonText::kChunk},
      {"a string",
       {"[{\"start\": \"", "x"},
       map,
       "an entry longer than 65536 bytes",
       3 * JsonText::kChunk},
      {"a key", {"{\"", "k"}, header, "a string longer than 4096 bytes", 2 * JsonText::kChunk},
      {"entries of length 0",
       {"[", "{\"start\": 0, \"length\": 0, \"zero\": true, \"data\": false},"},
       map,
       "an entry after an entry of length 0",
       2 * JsonText::kChunk},
      // 2048 entries of 512 bytes reach the disk's end; the next one is refused.
      {"entries",
       {"[", ""},
       map,
       "an entry after the end of the disk's 1048576 bytes",
       2048 * 80 + 2 * JsonText::kChunk},
      {"a member",
       {"{\"x\": [", "1, "},
       header,
       "a member longer than 65536 bytes",
       3 * JsonText::kChunk},
      {"clusters",
       {"{\"virtual_size\": 1048576, \"cluster_bits\": 16, \"data_clusters\": [", "0, "},
       header,
       "more entries in data_clusters than the disk's 16 clusters",
       2 * JsonText::kChunk},
      {"info",
       {"{\"x\": [", "[1], "},
       info,
       "longer than 16777216 bytes",
       qcow::kMaxInfoJson + 2 * JsonText::kChunk},
  };
  // Valid-looking entries, ascending and contiguous, alternately data and zeros.
  std::string& entries = cases[4].text.body;
  for (uint64_t start = 0; start < 3 * disk; start += 512) {
    entries += "{\"start\": " + std::to_string(start) +
               ", \"length\": 512, \"zero\": " + (start % 1024 ? "false" : "true") +
               ", \"data\": true},\n";
  }
  for (Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string says = Refusal([&] { c.parse(c.text.Pull()); });
    EXPECT_NE(says.find(c.says), std::string::npos) << says;
    EXPECT_LE(c.text.pulled, c.most);
  }
}

// What cannot start the JSON is refused at the first read, before anything more is pulled.
TEST(JsonText, JunkIsRefusedAtTheFirstRead) {
  Endless zeros{"", std::string(1, '\0')};
  EXPECT_EQ(Refusal([&] { qcow::ParseQemuImgMap(zeros.Pull(), "fd:5", 1 << 30); }),
            "fd:5: not qemu-img map JSON: expected '[', found the byte 0x00 at byte 0");
  EXPECT_EQ(zeros.pulled, JsonText::kChunk);
  Endless text{"", "junk"};
  EXPECT_EQ(Refusal([&] { qcow::ParseClusterHeader(text.Pull(), "fd:5", 1 << 30); }),
            "fd:5: not the JSON {virtual_size, cluster_bits, data_clusters}: expected '{', found "
            "'j' at byte 0");
  EXPECT_EQ(text.pulled, JsonText::kChunk);
}

// A map that reaches the disk's end is read up to its ']' and no further; one that goes past
// it ends with the entry that does, so that the caller names the size it describes.
TEST(JsonText, MapEndsAtTheDisksEnd) {
  const std::string map =
      "[{\"start\": 0, \"length\": 4096, \"zero\": false, \"data\": true},\n"
      "{\"start\": 4096, \"length\": 8192, \"zero\": true, \"data\": false}]\n";
  EXPECT_EQ(qcow::ParseQemuImgMap(qcow::PullFromText(map), "m", 12288).size, 12288u);
  EXPECT_EQ(qcow::ParseQemuImgMap(qcow::PullFromText(map), "m", 12000).size, 12288u);
  EXPECT_EQ(qcow::ParseQemuImgMap(qcow::PullFromText(map), "m", 5000).size, 12288u);
  const std::string longer = map.substr(0, map.size() - 2) +
                             ",\n{\"start\": 12288, \"length\": 512, \"zero\": true, \"data\": "
                             "false}]\n";
  EXPECT_NE(Refusal([&] {
              qcow::ParseQemuImgMap(qcow::PullFromText(longer), "m", 5000);
            }).find("an entry after the end of the disk's 5120 bytes"),
            std::string::npos);
  // An odd-sized disk's map ends at the disk's size or at the sector after it.
  EXPECT_EQ(qcow::ParseQemuImgMap(qcow::PullFromText(longer), "m", 12289).size, 12800u);
  // A read_headers size that does not describe the disk is refused as soon as it is read.
  EXPECT_EQ(Refusal([&] {
              qcow::ParseClusterHeader(
                  qcow::PullFromText(R"({"virtual_size": 131072, "data_clusters": [)"), "h", 65536);
            }),
            "h describes a disk of 131072 bytes, but the disk is 65536 bytes");
}

// Data ranges never outnumber sectors: ranges that start in the sector where the one
// before ends are merged, as the allocation is used in whole clusters.
TEST(JsonText, RangesAreMergedWithinASector) {
  std::string map = "[";
  for (uint64_t start = 0; start < 4096; start += 100) {
    map += std::string(start ? "," : "") + "{\"start\": " + std::to_string(start) +
           ", \"length\": 100, \"zero\": false, \"data\": " + (start % 200 ? "true" : "false") +
           "}";
  }
  map += "]";
  const qcow::DataRanges r = qcow::ParseQemuImgMap(map, "m");
  EXPECT_EQ(r.size, 4100u);
  EXPECT_LE(r.ranges.size(), 4100u / 512 + 1);
  for (uint64_t start = 100; start < 4000; start += 200) {
    EXPECT_TRUE(std::any_of(r.ranges.begin(), r.ranges.end(), [&](const auto& x) {
      return x.first <= start && start + 100 <= x.first + x.second;
    })) << start;
  }
}

}  // namespace
