// One import at a time into a target: a decoder, its result and a status report, tied to
// the handle of the writer that started it. Safe to call from several threads (the FUSE
// adapter's); the CLI's serve uses it too.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "qcow/import/spool.h"
#include "qcow/import/stream_decoder.h"
#include "qcow/import/target.h"

namespace qcow {

struct ImportOptions {
  Spool::Limits spool;
  std::function<void(const std::string&)> log;  // one line per warning or failure
  bool delta = false;                           // see DecoderOptions::delta
  bool keep_unallocated = false;                // see DecoderOptions::keep_unallocated
  unsigned threads = 0;                         // see DecoderOptions::threads
  uint64_t min_move = 64u << 10;                // see DecoderOptions::min_move
};

class ImportJob {
 public:
  enum class State { kIdle, kReceiving, kDone, kFailed };

  // The target must outlive the job.
  ImportJob(RawTarget& target, ImportOptions options);
  ~ImportJob();

  // Starts a new import for a new writer and sets *handle to it. Returns EBUSY while the
  // handle of an earlier writer is open: at once if its import is still receiving, after
  // waiting a few seconds for its release (which the kernel sends after close()) if it
  // ended.
  int Begin(uint64_t* handle);
  // Takes image bytes at offset. Returns 0, or the errno of the failure (which is kept);
  // EBADF for a handle that is not the current writer's.
  int Write(uint64_t handle, uint64_t offset, std::span<const uint8_t> bytes);
  // Moves image bytes at offset straight from fd (`from` names it) into the target where the
  // decoder can (see StreamDecoder::FeedFrom) and sets *moved to its result: bytes moved, 0 at the
  // end of input, -1 when a non-blocking fd has nothing now, StreamDecoder::kNotMoved when the
  // caller must read them and call Write. Returns 0 or the errno of the failure, as Write.
  int WriteFrom(uint64_t handle, uint64_t offset, int fd, uint64_t max, int64_t* moved,
                const std::string& from);
  // Returns how many bytes at offset to read and Write before calling WriteFrom again (see
  // StreamDecoder::ReadLength); max when there is no import running.
  uint64_t ReadLength(uint64_t handle, uint64_t offset, uint64_t max);
  // Records the image file's size (truncate).
  int Truncate(uint64_t handle, uint64_t size);
  // Extends the image file to at least `size` bytes (fallocate, as preallocating writers
  // do); never shrinks it.
  int Extend(uint64_t handle, uint64_t size);
  // Records how many bytes the input holds (--destination-size, a file's size), for
  // progress.
  void SetInputSize(uint64_t size);
  // The writer closed a descriptor (or called fsync). Returns EIO without ending the import
  // when nothing has been written yet (a shell's spare descriptor, or an empty image);
  // otherwise ends the import like Finish().
  int Flush(uint64_t handle);
  // Ends the import: completes decoding, fsyncs the target. Returns 0 only for a complete,
  // decoded, written and synced image; EFBIG when the image is larger than the target; EIO
  // otherwise. Later calls return the same result.
  int Finish(uint64_t handle);
  // The writer's last descriptor is gone: ends its import if needed (an empty one fails);
  // a new Begin() is then allowed.
  void Release(uint64_t handle);
  // Returns whether the current import's image is complete (the serving side may stop
  // reading), or with kDisk whether all that the disk's bytes depend on has arrived (see
  // StreamDecoder). A decoding failure found meanwhile fails the import and returns true.
  enum class Until { kImageEnd, kDisk };
  bool Complete(uint64_t handle, Until until = Until::kImageEnd);
  // Fails an import that is still receiving, with `why`; returns whether there was one.
  bool Abort(const std::string& why);

  State state() const;
  // Returns the status report: one "key: value" line each for state, mode (full or delta),
  // bytes-received, bytes-written, virtual-size, and error (empty unless failed).
  std::string StatusText() const;
  // Returns the failure's message (empty unless failed) and whether the image itself was
  // at fault (bad or too large) rather than I/O.
  std::string error() const;
  bool image_at_fault() const;
  // Sets *done and *total: image bytes received, and the input's size when known, else
  // the size the image's structures show so far.
  void Progress(uint64_t* done, uint64_t* total) const;
  // Returns the size of the image file as the writer sees it.
  uint64_t image_size() const;

 private:
  int Fail(int err, const std::string& message);
  int Guard(const std::function<void()>& fn);
  int FinishLocked();
  bool Current(uint64_t handle) const { return open_ && handle == handle_; }

  RawTarget& target_;
  ImportOptions options_;
  mutable std::mutex mu_;
  std::condition_variable released_;
  std::unique_ptr<StreamDecoder> decoder_;
  State state_ = State::kIdle;
  uint64_t handle_ = 0;  // the current writer's
  bool open_ = false;    // its handle is not released yet
  bool has_data_ = false;
  int result_ = 0;
  bool image_at_fault_ = false;
  std::string error_;
  std::string warning_;
  uint64_t received_ = 0, written_ = 0, virtual_size_ = 0, image_size_ = 0;
  uint64_t input_size_ = 0, expected_ = 0;
};

}  // namespace qcow
