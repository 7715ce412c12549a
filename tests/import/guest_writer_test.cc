// The decoder's write stage on its own, against a sink that records every call.
#include "qcow/import/guest_writer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

struct Call {
  char op;  // 'w' write, 'z' zero
  uint64_t offset, length;
  bool operator==(const Call&) const = default;
};

class RecordingSink : public qcow::ImageSink {
 public:
  explicit RecordingSink(uint64_t size) : disk(size, 0xee) {}
  void Write(uint64_t off, const uint8_t* data, uint64_t n) override {
    calls.push_back({'w', off, n});
    std::copy(data, data + n, disk.begin() + off);
  }
  void Zero(uint64_t off, uint64_t n) override {
    calls.push_back({'z', off, n});
    std::fill(disk.begin() + off, disk.begin() + off + n, 0);
  }
  void Read(uint64_t off, uint8_t* out, uint64_t n) override {
    std::copy(disk.begin() + off, disk.begin() + off + n, out);
  }
  std::vector<Call> calls;
  std::vector<uint8_t> disk;
};

TEST(GuestWriter, ZeroRangesThatTouchBecomeOneCallAtTheNextBreak) {
  RecordingSink sink(1000);
  qcow::GuestWriter w(sink, 1000, 1000, false);
  w.Zero(0, 100);
  w.Zero(100, 50);
  w.Unallocated(150, 50);  // zeroed, and joined
  EXPECT_TRUE(sink.calls.empty());
  w.Zero(300, 10);  // a gap: the first range goes out
  EXPECT_EQ(sink.calls, (std::vector<Call>{{'z', 0, 200}}));
  const std::vector<uint8_t> data(20, 7);
  w.Write(500, data.data(), data.size());  // writes do not wait for held zeros
  w.Flush();
  EXPECT_EQ(sink.calls, (std::vector<Call>{{'z', 0, 200}, {'w', 500, 20}, {'z', 300, 10}}));
  w.Flush();  // nothing held: nothing more
  EXPECT_EQ(sink.calls.size(), 3u);
  EXPECT_EQ(w.bytes_written(), 20u);
}

TEST(GuestWriter, UnallocatedRangesAreLeftWhenAsked) {
  RecordingSink sink(100);
  qcow::GuestWriter w(sink, 100, 100, /*keep_unallocated=*/true);
  w.Unallocated(0, 50);
  w.Zero(50, 50);  // zero clusters are zeroed all the same
  w.Flush();
  EXPECT_EQ(sink.calls, (std::vector<Call>{{'z', 50, 50}}));
  EXPECT_EQ(sink.disk[0], 0xee);
}

TEST(GuestWriter, NothingPassesTheVirtualSize) {
  RecordingSink sink(100);
  qcow::GuestWriter w(sink, 100, 100, false);
  const std::vector<uint8_t> data(64, 9);
  w.Write(64, data.data(), data.size());   // the last cluster, partly past the disk
  w.Write(128, data.data(), data.size());  // wholly past it
  w.Zero(90, 64);
  w.Zero(200, 5);
  w.Flush();
  EXPECT_EQ(sink.calls, (std::vector<Call>{{'w', 64, 36}, {'z', 90, 10}}));
}

TEST(GuestWriter, PastAnOddTargetsEndOnlyZerosMayGo) {
  // A 1000-byte target takes an image of 1024 bytes (its size rounded up to the sector)
  // whose last 24 bytes are zeros; a byte that is not zero there is refused by offset.
  RecordingSink sink(1000);
  qcow::GuestWriter w(sink, 1024, 1000, false);
  std::vector<uint8_t> tail(64, 5);
  std::fill(tail.begin() + 40, tail.end(), 0);
  w.Write(960, tail.data(), tail.size());
  EXPECT_EQ(sink.calls, (std::vector<Call>{{'w', 960, 40}}));
  w.Write(1000, tail.data() + 40, 24);  // zeros only past the end: dropped
  EXPECT_EQ(sink.calls.size(), 1u);
  tail[50] = 1;
  try {
    w.Write(960, tail.data(), tail.size());
    FAIL() << "a non-zero byte past the target's end was taken";
  } catch (const qcow::TooLargeError& e) {
    EXPECT_NE(std::string(e.what()).find("guest byte 1010, past the end of the target (1000"),
              std::string::npos)
        << e.what();
  }
  w.Zero(990, 34);
  w.Flush();
  EXPECT_EQ(sink.calls.back(), (Call{'z', 990, 10}));
}

TEST(GuestWriter, ReadBackGivesZerosPastTheTargetsEnd) {
  RecordingSink sink(1000);
  qcow::GuestWriter w(sink, 1024, 1000, false);
  const std::vector<uint8_t> data(16, 3);
  w.Write(984, data.data(), data.size());
  std::vector<uint8_t> out(40, 0xaa);
  w.Read(984, out.data(), out.size());
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + 16, data.begin()));
  EXPECT_TRUE(std::all_of(out.begin() + 16, out.end(), [](uint8_t b) { return b == 0; }));
}

}  // namespace
