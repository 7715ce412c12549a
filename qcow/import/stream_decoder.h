// The streaming qcow2 decoder: (offset, bytes) chunks of an image in, in any order, guest
// writes and zero ranges out. Pure code: no file descriptors but the spool's temp file.
//
// One invariant, kept by construction: the decoder succeeds only when every byte that the
// active tree references (header, L1, each L2, each data cluster and compressed span) has
// arrived and has been delivered to every consumer that references it. Bytes are routed
// as they come: data clusters go straight to the guest offsets that map them; everything
// else waits in a bounded spool until nothing can need it any more (the whole tree is
// known). A host range that several consumers share is served to each: a data cluster
// already written for one guest offset is read back from the target for the next, a table
// named twice is parsed once per name. What arrived is tracked as ranges; a range that
// never arrived is missing, not a hole, unless the writer skipped it the way sparse copies
// do (see WriteHistory). Every byte the decoder holds, bookkeeping included, counts
// against the spool's limits.
//
// The stages, each in its own file with its own tests:
//   claims    table_claims.h   what each L1/L2 table says of the disk, entry by entry
//   hold      spool.h          bytes that arrive before anything knows what they are
//   route     this class       bytes to the runs that map them, spans to complete, the
//                              bookkeeping of what arrived and what is still owed;
//                              compressed_spans.h: the compressed clusters waiting
//   complete  inflate_pool.h   compressed clusters decompressed on every core, handed back
//                              in the order they went in
//   write     guest_writer.h   guest ranges to the sink: data, coalesced zeros, ranges left
//                              unallocated, nothing past the target
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "qcow/format/errors.h"
#include "qcow/format/image_header.h"
#include "qcow/import/compressed_spans.h"
#include "qcow/import/guest_writer.h"
#include "qcow/import/inflate_pool.h"
#include "qcow/import/range_set.h"
#include "qcow/import/recent_bytes.h"
#include "qcow/import/run_index.h"
#include "qcow/import/spool.h"
#include "qcow/import/write_history.h"

namespace qcow {

struct DecoderOptions {
  // Bytes the target can hold. A target that is not whole sectors (a regular file) takes
  // an image of its size rounded up to the sector, as qemu-img and qcowfs export it, when
  // the image holds only zeros past the target's end.
  uint64_t target_size = UINT64_MAX;
  Spool::Limits spool;
  std::function<void(const std::string&)> warn;  // non-fatal findings (dirty bit)
  // Called once the header is validated, before anything is written (e.g. to size or
  // check the target). May throw to refuse the image.
  std::function<void(const ImageInfo&)> on_header;
  // Delta import: an image with a backing file is applied onto a target that holds the
  // backing file's disk already: ranges it leaves unallocated are not touched (its zero
  // clusters are zeroed). Without it such an image is refused; an image without a backing
  // file is imported whole either way.
  bool delta = false;
  // xapi's importer: every range the image leaves unallocated is left as the target has it,
  // with or without a backing file (its zero clusters are zeroed). Its targets are new disks
  // that read as zeros, or a copy of the base a diff export (qcow2-to-stdout --diff, which
  // names no backing file) was made against.
  bool keep_unallocated = false;
  // When set, reads image bytes back from the image itself (a file being checked) instead
  // of from the sink.
  std::function<void(uint64_t offset, uint8_t* out, uint64_t n)> reread;
  // Threads that decompress compressed clusters: 0 for one per CPU this process may use;
  // 1 decompresses on the caller's thread.
  unsigned threads = 0;
  // FeedFrom moves runs of at least this many bytes; shorter ones cost more in system calls
  // than their copy does, and are read and fed instead.
  uint64_t min_move = 64u << 10;
};

class StreamDecoder {
 public:
  StreamDecoder(ImageSink& sink, DecoderOptions options);
  ~StreamDecoder();
  StreamDecoder(const StreamDecoder&) = delete;
  StreamDecoder& operator=(const StreamDecoder&) = delete;

  // Takes image bytes at offset. Bytes that arrived before must be the same again. Throws
  // FormatError/TooLargeError for bad images, SpoolFullError, std::system_error from the
  // sink or the spool.
  void Feed(uint64_t offset, std::span<const uint8_t> bytes);
  // Moves image bytes at offset straight from fd (at its position; `from` names it) to the guest
  // range that maps them, through the sink's WriteFrom, when the decoder knows them to be data of
  // that one range, which nothing else in the image refers to, and at least kMinMove of them follow
  // (options.min_move; at most max). Returns the bytes moved, 0 at the end of input, -1 when a
  // non-blocking fd has nothing now; kNotMoved when the bytes are not known so or the sink
  // cannot take them that way, having read nothing from fd: the caller reads them and calls
  // Feed. Throws as Feed does.
  static constexpr int64_t kNotMoved = -2;
  // Returns how many bytes at offset (1 to max) a caller of FeedFrom should read and Feed
  // before it asks FeedFrom again: up to the next data run it may move; all of max when
  // the whole tree is known and there is none; else a probe (a table that has not arrived
  // may map what follows), kProbeRead after a move, doubling with each probe read after it
  // (a compressed image has nothing to move: its reads soon take max).
  static constexpr uint64_t kProbeRead = 64u << 10;
  uint64_t ReadLength(uint64_t offset, uint64_t max);
  int64_t FeedFrom(uint64_t offset, int fd, uint64_t max, const std::string& from);
  // Records that the image file's size was set (truncate). Throws FormatError when that
  // would take back bytes that arrived.
  void SetSize(uint64_t size);
  // Returns whether the image is complete: everything the tree references, and everything
  // up to the highest offset any structure names (tables, data, refcount structures), has
  // arrived. Serving callers can stop reading then, without waiting for the end of input.
  // May decode compressed clusters whose data ends before the bytes that have not arrived.
  bool Complete();
  // Returns whether everything the disk's bytes depend on has arrived (the tree, its data,
  // the bitmap directory QEMU checks): only parts no reader of the disk uses may be
  // missing, such as snapshots or clusters only the refcounts count.
  bool DiskComplete();
  // Ends the image: completes what is pending and throws FormatError naming the first
  // missing part if anything the image refers to never arrived. After Finish, every guest
  // byte of [0, virtual size) has been written or zeroed through the sink (or left, where
  // the options keep unallocated ranges), except a tail past the end of a target that is
  // not whole sectors, which must read as zeros in the image.
  void Finish();

  // Returns the validated header, or null before it arrived.
  const ImageInfo* info() const { return info_ ? &*info_ : nullptr; }
  uint64_t guest_bytes_written() const { return writer_ ? writer_->bytes_written() : 0; }
  // Returns the number of distinct image bytes received.
  uint64_t received_bytes() const { return received_.bytes(); }
  // Returns the highest end of any structure known so far, a lower bound for the size of
  // the image file, once the whole tree is known (0 before: until then any later table
  // may name more, and a progress figure against it would run ahead).
  uint64_t expected_size() const;
  uint64_t peak_spooled_bytes() const { return spool_.peak_bytes(); }
  // Returns the memory held now and at most (spool, tables, bookkeeping).
  uint64_t memory_bytes() const { return spool_.memory_bytes(); }
  uint64_t peak_memory_bytes() const { return spool_.peak_memory_bytes(); }

 private:
  struct L2Table {
    std::vector<uint64_t> l1_indices;  // the L1 entries that name it
    bool parsed = false;
  };
  using CompressedKey = CompressedSpans::Key;

  // Routing (stream_decoder.cc).
  void Take(uint64_t offset, std::span<const uint8_t> bytes);
  void CheckRewrite(uint64_t offset, std::span<const uint8_t> bytes);
  // Returns how many bytes from a (at most max) FeedFrom may move, setting *guest.
  uint64_t MovableRun(uint64_t a, uint64_t max, uint64_t* guest) const;
  bool TryReadHeld(uint64_t a, uint64_t b, uint8_t* out) const;
  std::vector<uint8_t> ReadHeld(uint64_t a, uint64_t b, const std::string& who) const;
  bool Referenced(uint64_t a, uint64_t b) const;
  void Drop(uint64_t a, uint64_t b, bool decoded = false);
  void CompleteWaiting(uint64_t a, uint64_t b);
  void CheckTreeComplete();
  void UpdateMemory();

  // Structures (decoder_tables.cc).
  void TryParseHeader();
  void ParseHeader(std::span<const uint8_t> head);
  void CompleteL1();
  void AddL2(uint64_t offset, uint64_t l1_index);
  void CompleteL2(std::map<uint64_t, L2Table>::iterator it);
  void ParseL1(std::span<const uint8_t> bytes);
  void ParseL2(std::span<const uint8_t> bytes, uint64_t l1_index,
               std::vector<CompressedKey>* spans);
  void CompleteSpans(const std::vector<CompressedKey>& spans);
  void ParseRefcountTable();
  void ScanRefcounts(uint64_t a, std::span<const uint8_t> bytes);
  void AddRun(uint64_t host, uint64_t guest, uint64_t length);
  void AddCompressed(uint64_t start, uint64_t end, uint64_t guest);
  bool CompressedReady(const CompressedKey& key, uint64_t* avail_end) const;
  bool CompleteCompressed(const CompressedKey& key, uint64_t avail_end, uint64_t pad_end,
                          bool must);
  // Applies a decompressed cluster: writes it to its guests, records what later tables may
  // share, lets its bytes go. Returns false (only when !must) when it did not decompress.
  bool ApplyCompressed(const CompressedKey& key, uint64_t avail_end, uint64_t pad_end, bool must,
                       std::optional<uint64_t> used, std::span<const uint8_t> out);
  std::string CompressedName(const CompressedKey& key) const;
  // Completes a compressed cluster whose bytes up to avail_end arrived: hands it to the
  // decompression stage, whose results Drain applies in the order they were submitted.
  void SubmitCompressed(const CompressedKey& key, uint64_t avail_end);
  // Applies the decompressed clusters that are done: all of them with `all` (before
  // anything that reads what applying changes), else those done already, and waits for
  // the oldest while more than the stage's bound are in flight.
  void Drain(bool all);
  void ShareDecodedCompressed(uint64_t start, uint64_t end, uint64_t guest);
  void PendingOverlaps(uint64_t a, uint64_t b,
                       const std::function<void(uint64_t, uint64_t)>& fn) const;

  // The end of the image (decoder_finish.cc).
  void FillHoles(uint64_t file_end);
  std::vector<std::pair<uint64_t, uint64_t>> MissingNeeded(uint64_t limit);
  [[noreturn]] void Missing(uint64_t a, uint64_t b, const std::string& what, uint64_t file_end,
                            bool holes);

  ImageSink& sink_;
  DecoderOptions options_;
  Spool spool_;
  WriteHistory history_;
  std::optional<ImageInfo> info_;
  RangeSet received_;  // host bytes that arrived
  RangeSet released_;  // referenced bytes that were decoded and dropped
  uint64_t l1_offset_ = 0, l1_length_ = 0;
  std::map<uint64_t, L2Table> l2_tables_;  // by host offset; each one cluster long
  uint64_t l2_names_ = 0;                  // L1 entries naming them
  uint64_t pending_tables_ = 0;            // L1 and L2 tables not parsed yet
  bool l1_parsed_ = false;
  bool tree_complete_ = false;
  RunIndex runs_;                         // data clusters: host -> guest
  uint64_t pending_run_bytes_ = 0;        // run bytes (per guest) that have not arrived
  CompressedSpans compressed_;            // waiting for their bytes
  std::unique_ptr<InflatePool> inflate_;  // started with the first compressed cluster
  uint64_t compressed_end_ = 0;           // highest end of compressed data decoded
  uint64_t compressed_max_end_ = 0;       // highest end of any compressed span named
  // Compressed data decoded and dropped lately, kept a while for structures that share it.
  RecentBytes recent_;
  // For compressed descriptors named again after their data was decoded and pushed out of
  // recent_: by compressed start, a guest offset its cluster went to (a whole one when
  // there is), the span's end and how many bytes its stream used (0: not known). Built from
  // the retained L2 tables when first needed, then kept up to date.
  struct DecodedSpan {
    uint64_t guest, end, used;
  };
  std::unique_ptr<std::unordered_map<uint64_t, DecodedSpan>> decoded_spans_;
  void NoteSpan(uint64_t start, uint64_t guest, uint64_t end, uint64_t used);
  // The decoded cluster of compressed data that went to the disk's last, partial cluster
  // (the target holds only part of it), by its compressed start.
  uint64_t last_cluster_start_ = UINT64_MAX;
  std::vector<uint8_t> last_cluster_;
  uint64_t refcount_table_offset_ = 0, refcount_table_length_ = 0;
  bool refcount_table_parsed_ = false;
  // The refcount blocks the refcount table names, (host offset, block index) by offset.
  // Their bytes are scanned as they arrive for the last cluster in use: a valid image
  // extends that far (snapshots, bitmaps), so a stream is complete only past it.
  std::vector<std::pair<uint64_t, uint64_t>> refcount_blocks_;
  uint64_t structure_end_ = 0;  // highest end of header, tables, data, refcount structures
  bool finished_ = false;
  uint64_t probe_ = kProbeRead;  // ReadLength's next probe
  // The write stage, made when the header is known: every guest write, zero range,
  // unallocated range and read-back goes through it.
  std::optional<GuestWriter> writer_;
};

}  // namespace qcow
