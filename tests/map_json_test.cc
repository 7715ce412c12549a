// The qemu-img map JSON reader that --allocation-from uses.
#include <gtest/gtest.h>

#include "qcow/format/errors.h"
#include "qcow/sources/allocation_map.h"

namespace {

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

TEST(MapJson, TakesDataThatIsNotZero) {
  // As qemu-img 7.2 prints it, plus a newer version's "compressed" field.
  const char* text =
      "[{ \"start\": 0, \"length\": 65536, \"depth\": 1, \"present\": true, \"zero\": true, "
      "\"data\": false},\n"
      "{ \"start\": 65536, \"length\": 458752, \"depth\": 2, \"present\": true, \"zero\": false, "
      "\"data\": true, \"offset\": 393216},\n"
      "{ \"start\": 524288, \"length\": 131072, \"depth\": 1, \"present\": true, \"zero\": false, "
      "\"data\": true, \"compressed\": true},\n"
      "{ \"start\": 655360, \"length\": 4096, \"depth\": 0, \"present\": true, \"zero\": true, "
      "\"data\": true, \"offset\": 397312},\n"
      "{ \"start\": 659456, \"length\": 1437696, \"depth\": 2, \"present\": false, \"zero\": "
      "true, \"data\": false}]\n";
  const qcow::DataRanges r = qcow::ParseQemuImgMap(text, "map");
  EXPECT_EQ(r.size, 2097152u);
  EXPECT_EQ(r.ranges, (Ranges{{65536, 589824}}));
}

TEST(MapJson, EmptyImage) {
  const auto r = qcow::ParseQemuImgMap(
      "[{ \"start\": 0, \"length\": 0, \"depth\": 0, \"present\": false, \"zero\": false, "
      "\"data\": false}]\n",
      "map");
  EXPECT_EQ(r.size, 0u);
  EXPECT_TRUE(r.ranges.empty());
}

TEST(MapJson, RefusesWhatIsNotAMap) {
  for (const char* bad : {
           "",
           "{}",
           "[{ \"start\": 0, \"length\": 512, \"zero\": false}]",                    // no data
           "[{ \"start\": 512, \"length\": 512, \"zero\": false, \"data\": true}]",  // a gap
           "[{ \"start\": 0, \"length\": 512, \"zero\": false, \"data\": true}",     // unterminated
           "[{ \"start\": 0, \"length\": 512, \"zero\": false, \"data\": tru}]",
           "[{ \"start\": 0, \"length\": 18446744073709551615, \"zero\": false, \"data\": true},"
           "{ \"start\": 18446744073709551615, \"length\": 2, \"zero\": false, \"data\": true}]",
           "[] x",
       }) {
    EXPECT_THROW(qcow::ParseQemuImgMap(bad, "map"), qcow::FormatError) << bad;
  }
}

}  // namespace
