// Work splitting for the coarse OpenMP regions of the op families in this directory: thread `tid`
// of `nt` gets a contiguous slice of [0, n), slice starts aligned to `align` elements, so the
// slice boundaries (and with them every per-element result) depend only on n, not on timing.
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <mutex>

#include "runtime/threads.h"

namespace seqblocks {

static inline void thread_slice(int64_t n, int nt, int tid, int64_t align, int64_t* lo, int64_t* hi) {
  const int64_t blocks = (n + align - 1) / align;
  const int64_t per = blocks / nt, extra = blocks % nt;
  const int64_t b0 = tid * per + std::min<int64_t>(tid, extra);
  const int64_t b1 = b0 + per + (tid < extra ? 1 : 0);
  *lo = std::min(n, b0 * align);
  *hi = std::min(n, b1 * align);
}

// Threads worth starting for `work` elements of streaming work (about 32K elements each), at most nt.
static inline int threads_for(int64_t work, int nt) {
  const int64_t useful = std::max<int64_t>(1, work / 32768);
  return static_cast<int>(std::min<int64_t>(nt, useful));
}

// Regions whose threads own slices cut beforehand for exactly nt threads, and meet at barriers,
// cannot hand a missing thread's slice to another. OpenMP may start fewer threads than asked
// for (OMP_DYNAMIC=true under load, a thread limit, a call from inside another parallel
// region); then every thread of the team skips the work (all alike, so no barrier is left
// waiting) and the caller runs the op again on one thread:
//
//   TeamCheck team;
//   #pragma omp parallel num_threads(nt) if (nt > 1)
//   if (!team.short_of(nt)) { ... }
//   if (team.was_short()) return op(args on one thread);
class TeamCheck {
 public:
  bool short_of(int nt) {
    if (omp_get_num_threads() >= nt && !(nt > 1 && short_team_forced_for_tests())) return false;
    short_.store(true, std::memory_order_relaxed);
    return true;
  }
  bool was_short() const { return short_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> short_{false};
};

// A barrier for the nt threads of one region that meet once or twice per time step of a
// recurrent layer (hundreds of times per call, a few microseconds apart): the last thread to
// arrive bumps a generation counter the others spin on. The release/acquire pair makes every
// write a thread made before arriving visible to every thread after it leaves. A waiter spins
// (with pause) for a few tens of microseconds, longer than a step's usual imbalance, then
// sleeps on a condition variable: on a loaded machine the thread it waits for may be
// descheduled, and spinning or yielding there only takes the CPU from it (measured, LSTM
// T=128 B=1 H=128 with three busy processes on the 2 cores: spinning then yielding 4.4-9.1 ms,
// `omp barrier` 3.1-4.1 ms, this 1.8-2.1 ms; unloaded 304, 299 and 330 us). With no work
// between barriers, 2 threads: ~175 ns per barrier against 220-325 ns for `omp barrier`.
class StepBarrier {
 public:
  explicit StepBarrier(int nt) : nt_(nt) {}
  void wait() {
    if (nt_ <= 1) return;
    const unsigned gen = gen_.load(std::memory_order_relaxed);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == nt_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      // seq_cst on gen_ and sleepers_ here and in the sleeping path: either this thread sees the
      // sleeper's count or the sleeper sees the new generation before it sleeps. Taking the
      // lock waits out a sleeper that is between its check and its sleep.
      gen_.store(gen + 1, std::memory_order_seq_cst);
      if (sleepers_.load(std::memory_order_seq_cst) > 0) {
        { std::lock_guard<std::mutex> lock(mutex_); }
        wake_.notify_all();
      }
      return;
    }
    for (int spins = 0; spins < kSpins; ++spins) {
      if (gen_.load(std::memory_order_acquire) != gen) return;
      cpu_pause();
    }
    std::unique_lock<std::mutex> lock(mutex_);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    wake_.wait(lock, [&] { return gen_.load(std::memory_order_seq_cst) != gen; });
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  static constexpr int kSpins = 2048;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<unsigned> gen_{0};
  std::atomic<int> sleepers_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  const int nt_;
};

}  // namespace seqblocks
