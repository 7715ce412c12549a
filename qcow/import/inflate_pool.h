// The decoder's decompression stage: compressed clusters are independent, so they are
// decompressed on worker threads while the decoder goes on routing bytes, and handed back
// in the order they were submitted, so that the decoder applies them exactly as it would
// one at a time. Pure code: no file descriptors.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace qcow {

// An allocator whose resize leaves new bytes as they are: job buffers are filled right
// after (a cluster's worth of memset per cluster adds up to the image's size).
template <class T>
struct UninitializedAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <class U>
  UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using JobBytes = std::vector<uint8_t, UninitializedAllocator<uint8_t>>;

// One compressed cluster to decompress: `in` holds its bytes (a span, maybe cut short),
// `out` receives the cluster. `used` is what DecompressCluster returns.
struct InflateJob {
  uint64_t start = 0, end = 0;  // the span in the image
  uint64_t avail_end = 0;       // the span's bytes that were read into `in` end here
  JobBytes in;
  JobBytes out;
  std::optional<uint64_t> used;
  uint64_t bytes() const { return in.capacity() + out.capacity(); }
};

class InflatePool {
 public:
  // threads <= 1 decompresses on the caller's thread, in Submit. Otherwise `threads`
  // workers are started with the first job.
  InflatePool(unsigned threads, uint8_t compression_type);
  ~InflatePool();
  InflatePool(const InflatePool&) = delete;
  InflatePool& operator=(const InflatePool&) = delete;

  // Returns a job to fill: one handed back by Recycle (its buffers keep their capacity),
  // or a new one.
  std::unique_ptr<InflateJob> NewJob();
  // Takes back a job that Next returned, to be reused (a few are kept).
  void Recycle(std::unique_ptr<InflateJob> job);
  void Submit(std::unique_ptr<InflateJob> job);
  // Returns the oldest job once it is decompressed: when it is done already, or always
  // with wait (the caller's thread decompresses queued jobs meanwhile). Returns null when
  // nothing is in flight, or when the oldest is not done and !wait.
  std::unique_ptr<InflateJob> Next(bool wait);
  size_t in_flight() const { return jobs_.size(); }
  // Bytes the jobs in flight hold.
  uint64_t bytes() const { return bytes_; }
  // Bytes the jobs kept for reuse hold.
  uint64_t spare_bytes() const { return spare_bytes_; }
  unsigned threads() const { return threads_; }

  // Returns the CPUs this process may run on (its affinity mask), at least 1.
  static unsigned AvailableCpus();

 private:
  struct Slot {
    std::unique_ptr<InflateJob> job;
    enum { kQueued, kRunning, kDone } state = kQueued;
  };
  void Decompress(InflateJob& job) const;
  void Work();
  // Runs the first queued job, lock held on entry and exit; false when none is queued.
  bool RunOne(std::unique_lock<std::mutex>& lock);

  const unsigned threads_;
  const uint8_t compression_type_;  // the image header's
  std::mutex mutex_;
  std::condition_variable work_, done_;
  // Jobs in submission order; workers never remove them, only Next does.
  std::deque<std::shared_ptr<Slot>> jobs_;
  uint64_t bytes_ = 0;
  std::vector<std::unique_ptr<InflateJob>> spare_;  // for NewJob
  uint64_t spare_bytes_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace qcow
