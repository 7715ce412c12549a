#include "qcow/import/inflate_pool.h"

#include <sched.h>

#include <algorithm>

#include "qcow/format/decompress.h"

namespace qcow {

InflatePool::InflatePool(unsigned threads, uint8_t compression_type)
    : threads_(threads), compression_type_(compression_type) {}

InflatePool::~InflatePool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  work_.notify_all();
  for (auto& t : workers_) t.join();
}

unsigned InflatePool::AvailableCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<unsigned>(n);
  }
  const unsigned n = std::thread::hardware_concurrency();
  return n ? n : 1;
}

void InflatePool::Decompress(InflateJob& job) const {
  job.used = DecompressCluster(compression_type_, job.in, job.out);
}

std::unique_ptr<InflateJob> InflatePool::NewJob() {
  if (spare_.empty()) return std::make_unique<InflateJob>();
  std::unique_ptr<InflateJob> job = std::move(spare_.back());
  spare_.pop_back();
  spare_bytes_ -= job->bytes();
  job->used.reset();
  return job;
}

void InflatePool::Recycle(std::unique_ptr<InflateJob> job) {
  // As many as can be in flight at once, give or take: the decoder's bound is 4 per thread.
  if (spare_.size() >= 4 * uint64_t{std::max(threads_, 1u)} + 1) return;
  spare_bytes_ += job->bytes();
  spare_.push_back(std::move(job));
}

void InflatePool::Submit(std::unique_ptr<InflateJob> job) {
  auto slot = std::make_shared<Slot>();
  bytes_ += job->bytes();
  if (threads_ <= 1) {
    Decompress(*job);
    slot->state = Slot::kDone;
  }
  slot->job = std::move(job);
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(slot));
    if (threads_ > 1 && workers_.empty()) {
      for (unsigned i = 0; i < threads_; ++i) workers_.emplace_back([this] { Work(); });
    }
  }
  if (threads_ > 1) work_.notify_one();
}

bool InflatePool::RunOne(std::unique_lock<std::mutex>& lock) {
  for (auto& s : jobs_) {
    if (s->state != Slot::kQueued) continue;
    std::shared_ptr<Slot> slot = s;
    slot->state = Slot::kRunning;
    lock.unlock();
    Decompress(*slot->job);
    lock.lock();
    slot->state = Slot::kDone;
    done_.notify_all();
    return true;
  }
  return false;
}

void InflatePool::Work() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    if (!RunOne(lock)) work_.wait(lock);
  }
}

std::unique_ptr<InflateJob> InflatePool::Next(bool wait) {
  std::unique_lock lock(mutex_);
  if (jobs_.empty()) return nullptr;
  while (jobs_.front()->state != Slot::kDone) {
    if (!wait) return nullptr;
    // Rather than sleep, decompress what no worker has taken yet.
    if (!RunOne(lock)) done_.wait(lock);
  }
  std::unique_ptr<InflateJob> job = std::move(jobs_.front()->job);
  jobs_.pop_front();
  bytes_ -= job->bytes();
  return job;
}

}  // namespace qcow
