// FMA throughput probe, per ISA (see peak_probe.h).
#include <omp.h>

#include <chrono>
#include <vector>

#include "runtime/peak_probe.h"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "runtime/isa_target.h"
#pragma GCC diagnostic pop

namespace seqblocks {
namespace {

constexpr int kChains = 12;
constexpr long kRoundsPerCheck = 1 << 16;  // FMA rounds (kChains each) between clock reads

// Runs rounds of kChains independent FMAs until `seconds` have passed; returns FMAs per second.
template <class Isa>
double fma_rate(double seconds, float* sink) {
  using V = Vec<Isa, float>;
  using reg = typename V::reg;
  reg acc[kChains];
#pragma GCC unroll 12
  for (int i = 0; i < kChains; ++i) acc[i] = V::set1(0.001f * static_cast<float>(i));
  // acc -> acc * b + c converges to c / (1 - b) = 0.01: no overflow, no denormals.
  const reg b = V::set1(0.9999f), c = V::set1(1e-6f);
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  long rounds = 0;
  double elapsed = 0;
  do {
    for (long r = 0; r < kRoundsPerCheck; ++r) {
#pragma GCC unroll 12
      for (int i = 0; i < kChains; ++i) acc[i] = V::fmadd(acc[i], b, c);
    }
    rounds += kRoundsPerCheck;
    elapsed = std::chrono::duration<double>(clock::now() - start).count();
  } while (elapsed < seconds);
  alignas(64) float lanes[64];
  float s = 0;
  for (int i = 0; i < kChains; ++i) {
    V::store(lanes, acc[i]);
    for (int j = 0; j < V::width; ++j) s += lanes[j];
  }
  *sink = s;  // the chains' results are used
  return static_cast<double>(rounds) * kChains * V::width / elapsed;
}

template <class Isa>
double fma_gflops(int nthreads, double seconds) {
  std::vector<double> rate(static_cast<size_t>(nthreads), 0.0);
  std::vector<float> sink(static_cast<size_t>(nthreads), 0.0f);
#pragma omp parallel num_threads(nthreads)
  {
    const int t = omp_get_thread_num();
    rate[static_cast<size_t>(t)] = fma_rate<Isa>(seconds, &sink[static_cast<size_t>(t)]);
  }
  double total = 0;
  for (double r : rate) total += r;
  return 2.0 * total / 1e9;
}

}  // namespace

template <>
const PeakProbeKernels& peak_probe_kernels<TargetIsa>() {
  static const PeakProbeKernels table{&fma_gflops<TargetIsa>};
  return table;
}

}  // namespace seqblocks
