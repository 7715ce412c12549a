#include "qcow/import_job.h"

#include <cerrno>
#include <sstream>
#include <system_error>

namespace qcow {

ImportJob::ImportJob(RawTarget& target, ImportOptions options)
    : target_(target), options_(std::move(options)) {}

ImportJob::~ImportJob() = default;

int ImportJob::Begin() {
  std::lock_guard lock(mu_);
  if (open_ && state_ == State::kReceiving) return EBUSY;
  DecoderOptions d;
  d.target_size = target_.size();
  d.spool = options_.spool;
  d.warn = [this](const std::string& w) {
    warning_ = w;
    if (options_.log) options_.log("import warning: " + w);
  };
  d.on_header = [this](const ImageInfo& info) { virtual_size_ = info.virtual_size; };
  decoder_ = std::make_unique<StreamDecoder>(target_, std::move(d));
  state_ = State::kReceiving;
  open_ = true;
  result_ = 0;
  image_at_fault_ = false;
  pending_ = 0;
  error_.clear();
  warning_.clear();
  received_ = written_ = virtual_size_ = image_size_ = 0;
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
  if (state_ == State::kFailed || state_ == State::kDone)
    return state_ == State::kDone ? EIO : result_;
  if (state_ != State::kReceiving) return EIO;
  try {
    fn();
    written_ = decoder_->guest_bytes_written();
    pending_ = decoder_->pending_data_bytes();
    return 0;
  } catch (const TooLargeError& e) {
    image_at_fault_ = true;
    return Fail(EFBIG, e.what());
  } catch (const FormatError& e) {
    image_at_fault_ = true;
    return Fail(EIO, e.what());
  } catch (const std::exception& e) {
    return Fail(EIO, e.what());
  }
}

int ImportJob::Write(uint64_t offset, std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  image_size_ = std::max(image_size_, offset + bytes.size());
  if (state_ == State::kReceiving) received_ += bytes.size();
  return Guard([&] { decoder_->Feed(offset, bytes); });
}

int ImportJob::Truncate(uint64_t size) {
  std::lock_guard lock(mu_);
  if (state_ != State::kReceiving) return 0;
  image_size_ = size;
  return Guard([&] { decoder_->SetSize(size); });
}

int ImportJob::Finish() {
  std::lock_guard lock(mu_);
  if (state_ == State::kDone) return 0;
  if (state_ == State::kIdle) return 0;
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

void ImportJob::End() {
  Finish();
  std::lock_guard lock(mu_);
  open_ = false;
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
  *done = written_;
  *total = written_ + pending_;
}

bool ImportJob::HasData() const {
  std::lock_guard lock(mu_);
  return received_ > 0 || image_size_ > 0;
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
    << "bytes-received: " << received_ << "\n"
    << "bytes-written: " << written_ << "\n"
    << "virtual-size: " << virtual_size_ << "\n"
    << "error: " << error_ << "\n";
  if (!warning_.empty()) s << "warning: " << warning_ << "\n";
  return s.str();
}

}  // namespace qcow
