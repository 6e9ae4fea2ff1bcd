#include "runtime/threads.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <omp.h>

namespace seqblocks {
namespace {

std::atomic<int> g_requested_threads{0};  // 0: not set, use OpenMP's default
std::atomic<bool> g_forked_child{false};

void mark_forked_child() { g_forked_child.store(true); }

struct ForkHandlerRegistration {
  ForkHandlerRegistration() { pthread_atfork(nullptr, nullptr, &mark_forked_child); }
};
const ForkHandlerRegistration g_fork_handler_registration;

}  // namespace

bool in_forked_child() { return g_forked_child.load(); }

bool short_team_forced_for_tests() {
  static const bool forced = std::getenv("SEQBLOCKS_TEST_SHORT_TEAM") != nullptr;
  return forced;
}

int num_threads() {
  if (in_forked_child()) return 1;
  const int requested = g_requested_threads.load();
  const int omp_default = omp_get_max_threads();
  int n = requested > 0 ? requested : std::max(omp_default, 1);
  // No region gets more than OMP_THREAD_LIMIT threads, and one opened inside an active region
  // past the allowed nesting runs on one. (Kernels also survive a smaller team than asked for;
  // this keeps them from having to.)
  const int limit = omp_get_thread_limit();
  if (limit > 0) n = std::min(n, limit);
  if (omp_get_active_level() >= omp_get_max_active_levels()) n = 1;
  return n;
}

void set_num_threads(int n) {
  if (n < 1) {
    throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
  }
  g_requested_threads.store(n);
}

}  // namespace seqblocks
