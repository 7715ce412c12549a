#include "qcow/import/import_job.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <sstream>
#include <system_error>

namespace qcow {
namespace {

// How long a new writer waits for the release of an earlier writer that has closed its
// file: the kernel sends RELEASE after close() returns, so it is normally milliseconds.
constexpr auto kReleaseWait = std::chrono::seconds(5);

}  // namespace

ImportJob::ImportJob(RawTarget& target, ImportOptions options)
    : target_(target), options_(std::move(options)) {}

ImportJob::~ImportJob() = default;

int ImportJob::Begin(uint64_t* handle) {
  std::unique_lock lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + kReleaseWait;
  while (open_) {
    if (state_ == State::kReceiving) return EBUSY;
    if (released_.wait_until(lock, deadline) == std::cv_status::timeout && open_) return EBUSY;
  }
  DecoderOptions d;
  d.target_size = target_.size();
  d.spool = options_.spool;
  d.delta = options_.delta;
  d.keep_unallocated = options_.keep_unallocated;
  d.threads = options_.threads;
  d.min_move = options_.min_move;
  d.warn = [this](const std::string& w) {
    warning_ = w;
    if (options_.log) options_.log("import warning: " + w);
  };
  d.on_header = [this](const ImageInfo& info) { virtual_size_ = info.virtual_size; };
  decoder_ = std::make_unique<StreamDecoder>(target_, std::move(d));
  state_ = State::kReceiving;
  *handle = ++handle_;
  open_ = true;
  has_data_ = false;
  result_ = 0;
  image_at_fault_ = false;
  error_.clear();
  warning_.clear();
  received_ = written_ = virtual_size_ = image_size_ = input_size_ = expected_ = 0;
  return 0;
}

int ImportJob::Fail(int err, const std::string& message) {
  state_ = State::kFailed;
  result_ = err;
  error_ = message;
  decoder_.reset();  // frees tables and the spool now
  if (options_.log) options_.log("import failed: " + message);
  return err;
}

// Runs fn on the decoder, turning exceptions into a kept failure.
int ImportJob::Guard(const std::function<void()>& fn) {
  if (state_ == State::kFailed) return result_;
  if (state_ != State::kReceiving) return EIO;
  try {
    fn();
    written_ = decoder_->guest_bytes_written();
    received_ = decoder_->received_bytes();
    expected_ = decoder_->expected_size();
    return 0;
  } catch (const TooLargeError& e) {
    image_at_fault_ = true;
    return Fail(EFBIG, e.what());
  } catch (const FormatError& e) {
    image_at_fault_ = true;
    return Fail(EIO, e.what());
  } catch (const std::bad_alloc&) {
    return Fail(ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    return Fail(EIO, e.what());
  }
}

int ImportJob::Write(uint64_t handle, uint64_t offset, std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  if (!Current(handle)) return EBADF;
  if (state_ == State::kDone) {
    // Bytes after a successful end: the writer went on after close()/fsync() said done.
    return Fail(EIO, "image bytes arrived after the import had ended");
  }
  has_data_ = true;
  image_size_ = std::max(image_size_, offset + bytes.size());
  return Guard([&] { decoder_->Feed(offset, bytes); });
}

int ImportJob::WriteFrom(uint64_t handle, uint64_t offset, int fd, uint64_t max, int64_t* moved,
                         const std::string& from) {
  std::lock_guard lock(mu_);
  *moved = StreamDecoder::kNotMoved;
  if (!Current(handle)) return EBADF;
  // Anything but a running import: Write says what is wrong.
  if (state_ != State::kReceiving) return 0;
  const int rc = Guard([&] { *moved = decoder_->FeedFrom(offset, fd, max, from); });
  if (*moved > 0) {
    has_data_ = true;
    image_size_ = std::max(image_size_, offset + static_cast<uint64_t>(*moved));
  }
  return rc;
}

uint64_t ImportJob::ReadLength(uint64_t handle, uint64_t offset, uint64_t max) {
  std::lock_guard lock(mu_);
  if (!Current(handle) || state_ != State::kReceiving || !decoder_) return max;
  return decoder_->ReadLength(offset, max);
}

int ImportJob::Truncate(uint64_t handle, uint64_t size) {
  std::lock_guard lock(mu_);
  if (!Current(handle)) return EBADF;
  if (state_ == State::kDone)
    return Fail(EIO, "the image's size changed after the import had ended");
  if (state_ != State::kReceiving) return result_;
  if (size > 0) has_data_ = true;
  image_size_ = size;
  return Guard([&] { decoder_->SetSize(size); });
}

int ImportJob::Extend(uint64_t handle, uint64_t size) {
  {
    std::lock_guard lock(mu_);
    if (!Current(handle)) return EBADF;
    if (size <= image_size_) return 0;
  }
  return Truncate(handle, size);
}

void ImportJob::SetInputSize(uint64_t size) {
  std::lock_guard lock(mu_);
  input_size_ = size;
}

int ImportJob::FinishLocked() {
  if (state_ == State::kDone) return 0;
  if (state_ == State::kIdle) return EIO;
  const int rc = Guard([&] {
    decoder_->Finish();
    target_.Sync();
  });
  if (rc == 0) {
    state_ = State::kDone;
    decoder_.reset();
  }
  return rc;
}

int ImportJob::Flush(uint64_t handle) {
  std::lock_guard lock(mu_);
  if (!Current(handle)) return EBADF;
  // Nothing written yet: a shell closing its spare descriptor after dup2 (more may come),
  // or an empty image. Either way this close does not report success; Release decides.
  if (state_ == State::kReceiving && !has_data_) return EIO;
  return FinishLocked();
}

int ImportJob::Finish(uint64_t handle) {
  std::lock_guard lock(mu_);
  if (!Current(handle)) return EBADF;
  if (state_ == State::kReceiving && !has_data_) {
    image_at_fault_ = true;
    return Fail(EIO, "the image is empty: no bytes of it were written");
  }
  return FinishLocked();
}

void ImportJob::Release(uint64_t handle) {
  {
    std::lock_guard lock(mu_);
    if (!Current(handle)) return;
    if (state_ == State::kReceiving) {
      if (!has_data_) {
        image_at_fault_ = true;
        Fail(EIO,
             "the writer closed import.qcow2 without writing anything: an empty file is "
             "not a qcow2 image");
      } else {
        FinishLocked();
      }
    }
    open_ = false;
  }
  released_.notify_all();
}

bool ImportJob::Complete(uint64_t handle, Until until) {
  std::lock_guard lock(mu_);
  if (!Current(handle)) return true;
  if (state_ != State::kReceiving) return true;
  bool complete = false;
  Guard(
      [&] { complete = until == Until::kDisk ? decoder_->DiskComplete() : decoder_->Complete(); });
  return complete || state_ != State::kReceiving;
}

bool ImportJob::Abort(const std::string& why) {
  std::lock_guard lock(mu_);
  if (state_ != State::kReceiving) return false;
  Fail(EIO, why);
  return true;
}

ImportJob::State ImportJob::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

std::string ImportJob::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

bool ImportJob::image_at_fault() const {
  std::lock_guard lock(mu_);
  return image_at_fault_;
}

void ImportJob::Progress(uint64_t* done, uint64_t* total) const {
  std::lock_guard lock(mu_);
  *done = received_;
  // Without the input's size, the image's size is known once its tables are: until then
  // the total is 0 (unknown).
  *total = input_size_ ? input_size_ : expected_ ? std::max(expected_, received_) : 0;
}

uint64_t ImportJob::image_size() const {
  std::lock_guard lock(mu_);
  return image_size_;
}

std::string ImportJob::StatusText() const {
  std::lock_guard lock(mu_);
  static const char* kNames[] = {"idle", "receiving", "done", "failed"};
  std::ostringstream s;
  s << "state: " << kNames[static_cast<int>(state_)] << "\n"
    << "mode: " << (options_.delta ? "delta" : "full") << "\n"
    << "bytes-received: " << received_ << "\n"
    << "bytes-written: " << written_ << "\n"
    << "virtual-size: " << virtual_size_ << "\n"
    << "error: " << error_ << "\n";
  if (!warning_.empty()) s << "warning: " << warning_ << "\n";
  return s.str();
}

}  // namespace qcow
