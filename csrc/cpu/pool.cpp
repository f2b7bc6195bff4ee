// parallel_chunks: the thread pool of the training step's kernels (see common.h).
//
// Why not OpenMP here: libgomp fixes how idle workers wait when it loads, and neither choice
// suits a training step (3 parallel kernels every ~1 ms, with Python in between).  IMDB
// epoch of the origin model, 2 threads, seconds (benchmarks/README.md):
//
//                          idle machine   another process holding a core
//   OpenMP, passive wait   0.35-0.38      0.46-0.51
//   OpenMP, active wait    0.30-0.31      0.88-1.04   (a spinning worker robs the caller)
//   this pool              0.30           0.45-0.48
//
// A worker spins up to SPIN for the next job, then sleeps.  A worker that finds it was
// switched out for another thread while spinning (a gap in its clock, and an involuntary
// context switch in getrusage: the hypervisor's jitter does not count) sleeps through the
// next waits instead, for exponentially longer while that keeps happening.  Chunks are
// claimed from an atomic counter and the caller works too, so a late worker (asleep,
// descheduled) delays a job by at most the chunk it holds.  Which thread runs a chunk never
// changes a result.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sys/resource.h>

#include "common.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FS_PAUSE() _mm_pause()
#else
#define FS_PAUSE() ((void)0)
#endif

namespace fastscale {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto SPIN = std::chrono::microseconds(200);   // spin before sleeping
constexpr auto PREEMPTED = std::chrono::microseconds(50);  // a gap this long: descheduled
constexpr int MIN_BACKOFF = 8, MAX_BACKOFF = 4096;      // waits without spinning after that

class Pool {
 public:
  // Runs fn(c) for c in [0, n) on the caller and up to nt - 1 workers; false when the pool
  // is busy with another caller's job (the caller then runs the chunks itself).
  bool run(i64 n, int nt, const ChunkFn& fn, void* ctx) {
    std::unique_lock<std::mutex> busy(job_mu_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    ensure_workers(nt - 1);
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    want_ = nt - 1;
    next_.store(0, std::memory_order_relaxed);
    const std::uint64_t gen = state_.load(std::memory_order_relaxed) / 2 + 1;
    state_.store(2 * gen + 1);  // open: workers may join (seq_cst, paired with active_)
    if (sleepers_.load() > 0) {
      { std::lock_guard<std::mutex> lk(sleep_mu_); }
      sleep_cv_.notify_all();
    }
    work();
    state_.store(2 * gen);  // closed: a worker that has not joined yet will not
    // Wait for the workers inside the job to finish their chunks; yield so that one which
    // was descheduled mid-chunk gets the core back.
    for (int i = 0; active_.load() != 0; ++i) {
      if (i < 4096) FS_PAUSE();
      else std::this_thread::yield();
    }
    return true;
  }

  // After fork() the child has none of the parent's threads: start afresh, on first use.
  // The thread objects are leaked, not detached or joined: their threads do not exist here.
  void forget_threads() {
    new std::vector<std::thread>(std::move(threads_));
    threads_.clear();
    new (&job_mu_) std::mutex();
    new (&sleep_mu_) std::mutex();
    new (&sleep_cv_) std::condition_variable();
    sleepers_.store(0);
    active_.store(0);
    state_.store(state_.load() & ~std::uint64_t(1));
  }

 private:
  void work() {
    for (i64 c; (c = next_.fetch_add(1, std::memory_order_relaxed)) < n_;) fn_(ctx_, c);
  }

  void ensure_workers(int k) {
    while (static_cast<int>(threads_.size()) < k) {
      const int index = static_cast<int>(threads_.size());
      threads_.emplace_back([this, index] { worker(index); });
    }
  }

  // Spins until the job state differs from `seen`, for at most SPIN; false if it did not.
  // A gap in the loop means the thread was off its core; if the scheduler switched it out
  // for another thread (an involuntary switch, not the hypervisor's time), spinning robs
  // that thread: the worker then sleeps through the next `penalty` waits, doubling while
  // that keeps happening, halving back after each wait that a spin served.
  bool spin_for(std::uint64_t seen, int& backoff, int& penalty) {
    if (backoff > 0) {
      --backoff;
      return false;
    }
    const auto t0 = Clock::now();
    auto last = t0;
    for (;;) {
      for (int i = 0; i < 16; ++i) {
        if (state_.load(std::memory_order_acquire) != seen) {
          penalty = std::max(MIN_BACKOFF, penalty / 2);
          return true;
        }
        FS_PAUSE();
      }
      const auto t = Clock::now();
      if (t - last > PREEMPTED && preempted()) {
        backoff = penalty;
        penalty = std::min(2 * penalty, MAX_BACKOFF);
        return false;
      }
      if (t - t0 > SPIN) return false;
      last = t;
    }
  }

  // True when this thread was switched out involuntarily since the last call.
  static bool preempted() {
    thread_local long seen = 0;
    rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0) return true;
    const bool more = ru.ru_nivcsw > seen;
    seen = ru.ru_nivcsw;
    return more;
  }

  void worker(int index) {
    std::uint64_t seen = state_.load();
    int backoff = 0, penalty = MIN_BACKOFF;
    for (;;) {
      if (!spin_for(seen, backoff, penalty)) {
        std::unique_lock<std::mutex> lk(sleep_mu_);
        sleepers_.fetch_add(1);
        sleep_cv_.wait(lk, [&] { return state_.load() != seen; });
        sleepers_.fetch_sub(1);
      }
      seen = state_.load();
      if (!(seen & 1)) continue;  // a job that closed already
      // Joined (active_) and the job still open: the caller does not touch the job's fields
      // until active_ is back to 0 (seq_cst on both sides).
      active_.fetch_add(1);
      if (state_.load() == seen && index < want_) work();
      active_.fetch_sub(1);
    }
  }

  std::mutex job_mu_;  // one job at a time
  std::vector<std::thread> threads_;
  ChunkFn fn_ = nullptr;
  void* ctx_ = nullptr;
  i64 n_ = 0;
  int want_ = 0;
  std::atomic<i64> next_{0};
  std::atomic<std::uint64_t> state_{0};  // 2 * job generation + (1 while the job is open)
  std::atomic<int> active_{0};           // workers inside the current job
  std::atomic<int> sleepers_{0};
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
};

Pool& pool() {
  static Pool* p = [] {
    // Never destroyed, its workers never stopped: they sleep in a condition variable when
    // idle, and a destructor at exit would race the static destruction order.
    auto* q = new Pool();
    pthread_atfork(nullptr, nullptr, [] { pool().forget_threads(); });
    return q;
  }();
  return *p;
}

}  // namespace

void parallel_chunks_raw(i64 n, int nt, ChunkFn fn, void* ctx) {
  if (n <= 0) return;
  if (nt > n) nt = static_cast<int>(n);
  if (nt > 1 && pool().run(n, nt, fn, ctx)) return;
  for (i64 c = 0; c < n; ++c) fn(ctx, c);
}

}  // namespace fastscale
