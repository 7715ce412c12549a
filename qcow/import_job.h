// One import at a time into a target: a decoder, its result and a status report. Safe to
// call from several threads (the FUSE adapter's); the CLI's serve uses it too.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "qcow/spool.h"
#include "qcow/stream_decoder.h"
#include "qcow/target.h"

namespace qcow {

struct ImportOptions {
  Spool::Limits spool;
  std::function<void(const std::string&)> log;  // one line per warning or failure
};

class ImportJob {
 public:
  enum class State { kIdle, kReceiving, kDone, kFailed };

  // The target must outlive the job.
  ImportJob(RawTarget& target, ImportOptions options);
  ~ImportJob();

  // Starts a new import, forgetting the last one. Returns EBUSY if one is receiving.
  int Begin();
  // Takes image bytes at offset. Returns 0, or the errno of the failure (which is kept).
  int Write(uint64_t offset, std::span<const uint8_t> bytes);
  // Records the image file's size (truncate).
  int Truncate(uint64_t size);
  // Ends the import: completes decoding, fsyncs the target. Returns 0 only for a complete,
  // decoded, written and synced image; EFBIG when the image is larger than the target; EIO
  // otherwise. Later calls return the same result.
  int Finish();
  // Ends the writer's session: Finish() if needed; a new Begin() is then allowed.
  void End();

  State state() const;
  // Returns whether the current import has received any bytes (or a size).
  bool HasData() const;
  // Returns the status report: one "key: value" line each for state, bytes-received,
  // bytes-written, virtual-size, and error (empty unless failed).
  std::string StatusText() const;
  // Returns the failure's message (empty unless failed) and whether the image itself was
  // at fault (bad or too large) rather than I/O.
  std::string error() const;
  bool image_at_fault() const;
  // Sets *done and *total (guest data bytes written, and written plus still expected).
  void Progress(uint64_t* done, uint64_t* total) const;
  // Returns the size of the image file as the writer sees it.
  uint64_t image_size() const;

 private:
  int Fail(int err, const std::string& message);
  int Guard(const std::function<void()>& fn);

  RawTarget& target_;
  ImportOptions options_;
  mutable std::mutex mu_;
  std::unique_ptr<StreamDecoder> decoder_;
  State state_ = State::kIdle;
  bool open_ = false;  // a writer session is between Begin() and End()
  int result_ = 0;
  bool image_at_fault_ = false;
  uint64_t pending_ = 0;
  std::string error_;
  std::string warning_;
  uint64_t received_ = 0, written_ = 0, virtual_size_ = 0, image_size_ = 0;
};

}  // namespace qcow
