// Cases of one valid image cut short at several points.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "crafted_cases.h"
#include "crafted_image.h"
#include "test_util.h"

namespace qcowfs_test::crafted {

namespace {

// 11. One valid image cut at several points. Where it lies in the file: the L2 table, the
// first data cluster, the last compressed span (its stream and the end of its sectors).
struct Cuts {
  uint64_t l2, data, last_data, stream, stream_end, span_end;
};

Case Truncated(const std::string& name, bool data_last,
               const std::function<uint64_t(const Cuts&)>& cut, Want want) {
  return {name,
          [=] {
            CraftedImage im(Opt(k4K, 1 << 20));
            Cuts at{};
            at.l2 = im.AddL2Table(0);
            at.data = im.AddDataCluster(1);
            im.MapData(0, at.data);
            std::vector<uint8_t> stream = Deflated(kC, 3);
            if (stream.size() % 512 == 0) stream = Deflated(kC, 4);
            auto compressed = [&] {
              const CompressedSpan z = im.PackCompressed(stream);
              im.MapCompressed(2 * kC, z);
              at.stream = z.offset;
              at.stream_end = z.offset + stream.size();
              at.span_end = z.end();
            };
            if (data_last) compressed();
            at.last_data = im.AddDataCluster(2);
            im.MapData(kC, at.last_data);
            if (!data_last) compressed();
            std::vector<uint8_t> bytes = im.Build();
            bytes.resize(cut(at));
            return Built{bytes, 1 << 20};
          },
          Check::kAny,
          Convert::kAny,
          want,
          0,
          0,
          /*truncated=*/true};
}

}  // namespace

std::vector<Case> TruncationCases() {
  return {
      Truncated(
          "truncated_to_nothing", false, [](const Cuts&) { return 0; }, Want::kRefuse),
      Truncated(
          "truncated_inside_the_header", false, [](const Cuts&) { return 50; }, Want::kRefuse),
      Truncated(
          "truncated_inside_the_header_cluster", false, [](const Cuts&) { return 2000; },
          Want::kRefuse),
      Truncated(
          "truncated_inside_the_l2_table", false, [](const Cuts& c) { return c.l2 + 1000; },
          Want::kRefuse),
      Truncated(
          "truncated_inside_a_data_cluster", false, [](const Cuts& c) { return c.data + 1000; },
          Want::kRefuse),
      Truncated(
          "truncated_inside_the_last_data_cluster", true,
          [](const Cuts& c) { return c.last_data + kC / 2; }, Want::kRefuse),
      Truncated(
          "truncated_inside_the_last_compressed_stream", false,
          [](const Cuts& c) { return (c.stream + c.stream_end) / 2; }, Want::kRefuse),
      Truncated(
          "truncated_inside_the_last_compressed_padding", false,
          [](const Cuts& c) { return c.stream_end + (c.span_end - c.stream_end) / 2; },
          Want::kImport),
      Truncated(
          "truncated_right_after_the_last_compressed_stream", false,
          [](const Cuts& c) { return c.stream_end; }, Want::kImport),
      Truncated(
          "truncated_at_the_end_of_the_last_compressed_span", false,
          [](const Cuts& c) { return c.span_end; }, Want::kImport),
  };
}

}  // namespace qcowfs_test::crafted
