// The decompression stage on its own: jobs come back in the order they went in, whatever
// order the workers finish them in, each decoded exactly as InflateCluster/ZstdCluster
// decode it on the caller's thread.
#include "qcow/import/inflate_pool.h"

#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <memory>
#include <random>
#include <vector>

#include "qcow/format/decompress.h"
#include "qcow/format/format.h"

namespace {

constexpr uint64_t kCluster = 64 << 10;

std::vector<uint8_t> Cluster(std::mt19937& rng, unsigned kind) {
  std::vector<uint8_t> c(kCluster);
  for (auto& b : c) b = kind == 0 ? rng() : kind == 1 ? 'a' + rng() % 4 : 0;
  return c;
}

// Raw deflate with a 4 KiB window, as QEMU writes a compressed cluster.
std::vector<uint8_t> Deflate(const std::vector<uint8_t>& in) {
  z_stream s{};
  EXPECT_EQ(deflateInit2(&s, 6, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(deflateBound(&s, in.size()));
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = in.size();
  s.next_out = out.data();
  s.avail_out = out.size();
  EXPECT_EQ(deflate(&s, Z_FINISH), Z_STREAM_END);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

bool Same(const qcow::JobBytes& a, const std::vector<uint8_t>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

std::unique_ptr<qcow::InflateJob> Job(uint64_t start, std::vector<uint8_t> in) {
  auto job = std::make_unique<qcow::InflateJob>();
  job->start = start;
  job->end = start + in.size();
  job->avail_end = job->end;
  job->in.assign(in.begin(), in.end());
  job->out.resize(kCluster);
  return job;
}

TEST(InflatePool, ResultsComeBackInTheOrderTheyWentIn) {
  // Jobs of very different cost (random data, text, zeros, damaged), so that workers finish
  // them out of order.
  std::mt19937 rng(7);
  std::vector<std::vector<uint8_t>> want, packed;
  for (uint64_t i = 0; i < 120; ++i) {
    want.push_back(Cluster(rng, i % 3));
    packed.push_back(Deflate(want.back()));
    if (i % 7 == 3) packed.back().resize(packed.back().size() / 2);  // cut: does not decode
  }
  for (unsigned threads : {1u, 2u, 5u}) {
    qcow::InflatePool pool(threads, qcow::kCompressionDeflate);
    for (uint64_t i = 0; i < packed.size(); ++i) pool.Submit(Job(i, packed[i]));
    EXPECT_EQ(pool.in_flight(), packed.size());
    for (uint64_t i = 0; i < packed.size(); ++i) {
      std::unique_ptr<qcow::InflateJob> job = pool.Next(/*wait=*/true);
      ASSERT_TRUE(job) << threads << " threads, job " << i;
      EXPECT_EQ(job->start, i) << threads << " threads";
      if (i % 7 == 3) {
        EXPECT_FALSE(job->used) << threads << " threads, job " << i;
      } else {
        ASSERT_TRUE(job->used) << threads << " threads, job " << i;
        EXPECT_EQ(*job->used, job->in.size());
        EXPECT_TRUE(Same(job->out, want[i])) << threads << " threads, job " << i;
      }
    }
    EXPECT_FALSE(pool.Next(true));
    EXPECT_EQ(pool.bytes(), 0u);
  }
}

TEST(InflatePool, DecodesExactlyAsTheCallersThreadDoes) {
  // Streams that run past the cluster and spans with a neighbour's bytes after them: the
  // pool gives what InflateCluster gives, bytes used included.
  std::mt19937 rng(11);
  qcow::InflatePool pool(3, qcow::kCompressionDeflate);
  std::vector<std::vector<uint8_t>> inputs;
  for (uint64_t i = 0; i < 60; ++i) {
    std::vector<uint8_t> data = Cluster(rng, 1);
    if (i % 2) data.resize(kCluster + 4096, 'x');  // decodes to more than a cluster
    std::vector<uint8_t> packed = Deflate(data);
    packed.resize(packed.size() + rng() % 512, static_cast<uint8_t>(rng()));
    inputs.push_back(packed);
    pool.Submit(Job(i, packed));
  }
  for (uint64_t i = 0; i < 60; ++i) {
    std::unique_ptr<qcow::InflateJob> job = pool.Next(true);
    std::vector<uint8_t> out(kCluster);
    const std::optional<uint64_t> used = qcow::InflateCluster(inputs[i], out);
    EXPECT_EQ(job->used, used) << "job " << i;
    EXPECT_TRUE(Same(job->out, out)) << "job " << i;
  }
}

TEST(InflatePool, ZstdFramesAreDecodedAsZstdCluster) {
  std::mt19937 rng(3);
  qcow::InflatePool pool(2, qcow::kCompressionZstd);
  std::vector<std::vector<uint8_t>> want;
  for (uint64_t i = 0; i < 40; ++i) {
    want.push_back(Cluster(rng, i % 3));
    std::vector<uint8_t> packed(ZSTD_compressBound(kCluster));
    packed.resize(ZSTD_compress(packed.data(), packed.size(), want.back().data(), kCluster, 3));
    pool.Submit(Job(i, std::move(packed)));
  }
  for (uint64_t i = 0; i < 40; ++i) {
    std::unique_ptr<qcow::InflateJob> job = pool.Next(true);
    ASSERT_TRUE(job->used) << "job " << i;
    EXPECT_TRUE(Same(job->out, want[i])) << "job " << i;
  }
}

TEST(InflatePool, OneThreadDecodesInSubmitAndNextNeverWaits) {
  std::mt19937 rng(5);
  qcow::InflatePool pool(1, qcow::kCompressionDeflate);
  const std::vector<uint8_t> data = Cluster(rng, 1);
  auto job = Job(0, Deflate(data));
  const uint64_t bytes = job->bytes();
  pool.Submit(std::move(job));
  EXPECT_EQ(pool.bytes(), bytes);
  std::unique_ptr<qcow::InflateJob> done = pool.Next(/*wait=*/false);
  ASSERT_TRUE(done);
  EXPECT_TRUE(Same(done->out, data));
  EXPECT_EQ(pool.bytes(), 0u);
  EXPECT_FALSE(pool.Next(false));
}

TEST(InflatePool, RecycledJobsDecodeLikeNewOnesAndAreCounted) {
  // A recycled job keeps its buffers (no allocation, no zeroing per cluster); what it held
  // before must never show through, whatever sizes come next.
  std::mt19937 rng(13);
  qcow::InflatePool pool(2, qcow::kCompressionDeflate);
  for (int round = 0; round < 30; ++round) {
    const std::vector<uint8_t> data = Cluster(rng, round % 3);
    const std::vector<uint8_t> packed = Deflate(data);
    std::unique_ptr<qcow::InflateJob> job = pool.NewJob();
    EXPECT_FALSE(job->used) << "round " << round;
    job->start = round;
    job->in.assign(packed.begin(), packed.end());
    job->out.resize(kCluster);
    pool.Submit(std::move(job));
    job = pool.Next(true);
    ASSERT_TRUE(job->used) << "round " << round;
    EXPECT_EQ(*job->used, packed.size());
    EXPECT_TRUE(Same(job->out, data)) << "round " << round;
    pool.Recycle(std::move(job));
    EXPECT_GT(pool.spare_bytes(), 0u);
    EXPECT_EQ(pool.bytes(), 0u);
  }
  // At most a few are kept: 4 per thread and one.
  std::vector<std::unique_ptr<qcow::InflateJob>> many;
  for (int i = 0; i < 20; ++i) many.push_back(pool.NewJob());
  EXPECT_EQ(pool.spare_bytes(), 0u);
  for (auto& j : many) {
    j->in.resize(1000);
    j->out.resize(kCluster);
    pool.Recycle(std::move(j));
  }
  // Nine kept (one of them held a larger span before: buffers keep their capacity).
  EXPECT_GE(pool.spare_bytes(), 9u * (1000 + kCluster));
  EXPECT_LT(pool.spare_bytes(), 8u * (1000 + kCluster) + 2 * (2 * kCluster));
}

TEST(InflatePool, StopsWithJobsStillInFlight) {
  // An import refused halfway destroys its decoder with jobs queued: nothing hangs or leaks
  // (the sanitized run checks the latter).
  std::mt19937 rng(9);
  const std::vector<uint8_t> packed = Deflate(Cluster(rng, 0));
  for (int round = 0; round < 10; ++round) {
    qcow::InflatePool pool(4, qcow::kCompressionDeflate);
    for (uint64_t i = 0; i < 24; ++i) pool.Submit(Job(i, packed));
    if (round % 2) pool.Next(true);
  }
}

TEST(InflatePool, AvailableCpusFollowsTheAffinityMask) {
  cpu_set_t saved;
  ASSERT_EQ(sched_getaffinity(0, sizeof saved, &saved), 0);
  EXPECT_EQ(qcow::InflatePool::AvailableCpus(), static_cast<unsigned>(CPU_COUNT(&saved)));
  cpu_set_t one;
  CPU_ZERO(&one);
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(i, &saved)) {
      CPU_SET(i, &one);
      break;
    }
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  EXPECT_EQ(qcow::InflatePool::AvailableCpus(), 1u);
  ASSERT_EQ(sched_setaffinity(0, sizeof saved, &saved), 0);
}

}  // namespace
