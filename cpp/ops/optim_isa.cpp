// Optimizer step kernels per ISA (see optim.h). Each element is independent: threads take
// contiguous slices and results do not depend on the thread count.
#include <omp.h>

#include <cmath>

#include "ops/optim.h"
#include "ops/parallel.h"
#include "runtime/denormals.h"
// GCC 12 reports -Wmaybe-uninitialized inside avx512fintrin.h (its `__Y = __Y` idiom for undefined
// registers, GCC bug 105593) wherever Vec<Avx512> is inlined; silenced for those header lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "runtime/isa_target.h"
#pragma GCC diagnostic pop

namespace seqblocks {
namespace {

// Runs body(i, t) over [0, n) in parallel: t == W for full vectors, t < W for the tail of a slice.
template <class Isa, class T, class Body>
void for_vectors(int64_t n, int nthreads, const Body& body) {
  constexpr int W = Vec<Isa, T>::width;
  const int nt = threads_for(n, nthreads);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed flush;
    int64_t lo, hi;
    thread_slice(n, omp_get_num_threads(), omp_get_thread_num(), 64, &lo, &hi);
    int64_t i = lo;
    for (; i + W <= hi; i += W) body(i, W);
    if (i < hi) body(i, static_cast<int>(hi - i));
  }
}

template <class Isa, class T>
struct Io {
  using V = Vec<Isa, T>;
  static typename V::reg load(const T* p, int t) { return t == V::width ? V::load(p) : V::load_tail(p, t); }
  static void store(T* p, typename V::reg v, int t) {
    if (t == V::width) V::store(p, v);
    else V::store_tail(p, v, t);
  }
};

template <class Isa, class T>
void sgd_step(T* p, const T* grad, T* buf, int64_t n, const SgdHyper& h, int nthreads) {
  using V = Vec<Isa, T>;
  using R = typename V::reg;
  using IO = Io<Isa, T>;
  const T lr = static_cast<T>(h.lr), mom = static_cast<T>(h.momentum);
  const T keep = static_cast<T>(1.0 - h.dampening), wd = static_cast<T>(h.weight_decay);
  const bool use_wd = h.weight_decay != 0.0, use_mom = h.momentum != 0.0;
  for_vectors<Isa, T>(n, nthreads, [&](int64_t i, int t) {
    R g = IO::load(grad + i, t);
    R pv = IO::load(p + i, t);
    if (h.maximize) g = V::neg(g);
    if (use_wd) g = V::fmadd(pv, V::set1(wd), g);
    if (use_mom) {
      R b;
      if (h.first_step) {
        b = g;
      } else {
        b = V::fmadd(g, V::set1(keep), V::mul(IO::load(buf + i, t), V::set1(mom)));
      }
      IO::store(buf + i, b, t);
      g = h.nesterov ? V::fmadd(b, V::set1(mom), g) : b;
    }
    IO::store(p + i, V::fmadd(g, V::set1(-lr), pv), t);
  });
}

template <class Isa, class T>
void adam_step(T* p, const T* grad, T* m, T* v, T* vmax, int64_t n, const AdamHyper& h, int nthreads) {
  using V = Vec<Isa, T>;
  using R = typename V::reg;
  using IO = Io<Isa, T>;
  const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(h.beta2, static_cast<double>(h.step)));
  const T neg_step_size = static_cast<T>(-(h.lr / bc1));
  const T decay = static_cast<T>(1.0 - h.lr * h.weight_decay), wd = static_cast<T>(h.weight_decay);
  const T w1 = static_cast<T>(1.0 - h.beta1), one_minus_w1 = static_cast<T>(h.beta1);
  const bool small_weight = (1.0 - h.beta1) < 0.5;  // PyTorch's lerp picks its formula by |weight| < 0.5
  const T b2 = static_cast<T>(h.beta2), c2 = static_cast<T>(1.0 - h.beta2);
  const T bc2s = static_cast<T>(bc2_sqrt), eps = static_cast<T>(h.eps);
  const bool use_wd = h.weight_decay != 0.0;
  for_vectors<Isa, T>(n, nthreads, [&](int64_t i, int t) {
    R g = IO::load(grad + i, t);
    R pv = IO::load(p + i, t);
    if (h.maximize) g = V::neg(g);
    if (use_wd) {
      if (h.decoupled_weight_decay) pv = V::mul(pv, V::set1(decay));
      else g = V::fmadd(pv, V::set1(wd), g);
    }
    R mv = IO::load(m + i, t);
    const R diff = V::sub(g, mv);
    // lerp(m, g, w) = m + w (g - m) for w < 0.5, else g - (g - m) (1 - w)
    mv = small_weight ? V::fmadd(V::set1(w1), diff, mv) : V::fnmadd(diff, V::set1(one_minus_w1), g);
    IO::store(m + i, mv, t);
    R vv = V::fmadd(V::mul(g, g), V::set1(c2), V::mul(IO::load(v + i, t), V::set1(b2)));
    IO::store(v + i, vv, t);
    if (h.amsgrad) {
      vv = V::max(IO::load(vmax + i, t), vv);
      IO::store(vmax + i, vv, t);
    }
    const R denom = V::add(V::div(V::sqrt(vv), V::set1(bc2s)), V::set1(eps));
    IO::store(p + i, V::fmadd(V::div(mv, denom), V::set1(neg_step_size), pv), t);
  });
}

}  // namespace

template <>
const OptimKernels& optim_kernels<TargetIsa>() {
  static const OptimKernels table{
      &sgd_step<TargetIsa, float>,
      &sgd_step<TargetIsa, double>,
      &adam_step<TargetIsa, float>,
      &adam_step<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
