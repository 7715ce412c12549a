// The streaming qcow2 decoder: (offset, bytes) chunks of an image in, in any order, guest
// writes and zero ranges out. Pure code: no file descriptors but the spool's temp file.
//
// Any valid layout is accepted. Bytes are routed to whoever needs them: the header, the L1
// table, the L2 tables the L1 names, the data and compressed clusters the L2 tables name.
// Bytes nobody has claimed yet wait in a bounded spool and are dropped once the whole
// active tree is known; refcount structures are recognised and dropped at once. For
// metadata-first images the spool stays empty and memory does not grow with the image.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qcow/errors.h"
#include "qcow/image_header.h"
#include "qcow/range_set.h"
#include "qcow/spool.h"

namespace qcow {

// Where decoded guest data goes. Offsets are always inside [0, virtual size).
class ImageSink {
 public:
  virtual ~ImageSink() = default;
  // Writes n guest bytes at guest_offset.
  virtual void Write(uint64_t guest_offset, const uint8_t* data, uint64_t n) = 0;
  // Makes [guest_offset, guest_offset + n) read as zeros.
  virtual void Zero(uint64_t guest_offset, uint64_t n) = 0;
};

// The image's virtual size is larger than the target (callers map this to EFBIG).
class TooLargeError : public FormatError {
 public:
  using FormatError::FormatError;
};

struct DecoderOptions {
  uint64_t target_size = UINT64_MAX;  // bytes the target can hold
  Spool::Limits spool;
  std::function<void(const std::string&)> warn;  // non-fatal findings (dirty bit)
  // Called once the header is validated, before anything is written (e.g. to size or
  // check the target). May throw to refuse the image.
  std::function<void(const ImageInfo&)> on_header;
};

class StreamDecoder {
 public:
  StreamDecoder(ImageSink& sink, DecoderOptions options);
  ~StreamDecoder();

  // Takes image bytes at offset. Throws FormatError/TooLargeError for bad images,
  // SpoolFullError, std::system_error from the sink.
  void Feed(uint64_t offset, std::span<const uint8_t> bytes);
  // Records that the image file was truncated or extended to `size` bytes: bytes below
  // it that never arrive read as zeros (writers such as cp skip holes and truncate).
  void SetSize(uint64_t size);
  // Ends the image: completes what is pending and throws if anything the image refers to
  // is missing. After Finish, every guest byte of [0, virtual size) has been written or
  // zeroed through the sink.
  void Finish();

  // Returns the validated header, or null before it arrived.
  const ImageInfo* info() const { return info_ ? &*info_ : nullptr; }
  uint64_t guest_bytes_written() const { return guest_written_; }
  // Returns the guest data bytes known to be still on their way (mapped by tables already
  // read, not arrived yet): with guest_bytes_written(), a measure of progress.
  uint64_t pending_data_bytes() const {
    return pending_run_bytes_ + compressed_.size() * (info_ ? info_->cluster_size : 0);
  }
  uint64_t peak_spooled_bytes() const { return spool_.peak_bytes(); }

 private:
  enum class TableKind { kL1, kL2, kRefcountTable };
  struct Table {
    TableKind kind;
    uint64_t length;
    uint64_t l1_index;           // kL2 only
    std::vector<uint8_t> bytes;  // allocated when the first byte arrives
    RangeSet got;
  };
  struct Run {  // host [start, start + length) holds guest [guest, guest + length)
    uint64_t length;
    uint64_t guest;
  };
  struct Compressed {
    uint64_t end;
    uint64_t guest;
    std::vector<uint8_t> bytes;
    RangeSet got;
  };

  void Dispatch(uint64_t offset, std::span<const uint8_t> bytes);
  void TryParseHeader();
  void ParseHeader(std::span<const uint8_t> head);
  void AddTable(TableKind kind, uint64_t start, uint64_t length, uint64_t l1_index);
  void FeedTable(uint64_t key, uint64_t offset, std::span<const uint8_t> bytes);
  void CompleteTable(uint64_t key);
  void ParseL1(const Table& t);
  void ParseL2(const Table& t);
  void ParseRefcountTable(const Table& t);
  void AddRun(uint64_t host, uint64_t guest, uint64_t length);
  void WriteRun(uint64_t key, uint64_t offset, std::span<const uint8_t> bytes);
  void AddCompressed(uint64_t start, uint64_t end, uint64_t guest);
  void FeedCompressed(std::multimap<uint64_t, Compressed>::iterator it, uint64_t offset,
                      std::span<const uint8_t> bytes);
  void CompleteCompressed(std::multimap<uint64_t, Compressed>::iterator it, uint64_t data_end);
  void WriteGuest(uint64_t guest, const uint8_t* data, uint64_t n);
  void ZeroGuest(uint64_t guest, uint64_t n);
  void FlushZeros();
  void CheckTreeComplete();
  uint64_t ImageSize() const { return std::max(file_end_, set_size_.value_or(0)); }

  ImageSink& sink_;
  DecoderOptions options_;
  Spool spool_;
  std::optional<ImageInfo> info_;
  std::map<uint64_t, Table> tables_;                // by host offset; never overlapping
  std::map<uint64_t, Run> runs_;                    // by host offset; never overlapping
  std::multimap<uint64_t, Compressed> compressed_;  // spans may share sectors
  uint64_t max_compressed_span_ = 0;
  RangeSet ignored_;                  // refcount structures: not needed to read the disk
  uint64_t pending_tree_tables_ = 0;  // L1 and L2 tables not parsed yet
  uint64_t consumers_added_ = 0;      // grows whenever bytes gain somewhere to go
  bool l1_parsed_ = false;
  bool tree_complete_ = false;
  bool finished_ = false;
  uint64_t guest_written_ = 0;
  uint64_t pending_run_bytes_ = 0;  // sum of runs_ lengths
  uint64_t file_end_ = 0;
  std::optional<uint64_t> set_size_;
  uint64_t zero_start_ = 0, zero_length_ = 0;  // coalesced zero range not yet emitted
};

}  // namespace qcow
