#include "runtime/threads.h"

#include <pthread.h>

#include <atomic>
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

int num_threads() {
  if (in_forked_child()) return 1;
  const int requested = g_requested_threads.load();
  if (requested > 0) return requested;
  const int omp_default = omp_get_max_threads();
  return omp_default > 0 ? omp_default : 1;
}

void set_num_threads(int n) {
  if (n < 1) {
    throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
  }
  g_requested_threads.store(n);
}

}  // namespace seqblocks
