// Thread-count control for the coarse OpenMP regions of the kernels.
#pragma once

namespace seqblocks {

// The thread count kernels use: set_num_threads() if called, else OpenMP's default (which
// honours OMP_NUM_THREADS), at most OMP_THREAD_LIMIT, and 1 inside a parallel region that
// cannot nest another. In a child process created by fork() after OpenMP threads were
// started, this is 1: GNU libgomp's thread pool does not survive fork(), and entering a
// parallel region there would hang.
int num_threads();
// n >= 1, else std::invalid_argument.
void set_num_threads(int n);
bool in_forked_child();
// True when SEQBLOCKS_TEST_SHORT_TEAM is set (read once): regions that depend on getting all
// the threads they ask for then behave as if OpenMP had started fewer, so tests can reach the
// fallback (ops/parallel.h TeamCheck, gemm_pair) deterministically.
bool short_team_forced_for_tests();

// One step of a spin-wait: the pause hint (on x86) that lets the sibling hyperthread run and
// saves power while a thread polls a flag another thread will set (StepBarrier, PairShare).
inline void cpu_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace seqblocks
