// Fused additive attention scores, forward and backward side by side (formulas in
// additive_attention.h). Compiled once per ISA; vectorized along the hidden size H.
#include "ops/additive_attention.h"

#include <omp.h>

#include <algorithm>

#include "math/tanh_sigmoid.h"
#include "ops/softmax.h"
#include "runtime/denormals.h"
#include "runtime/isa_target.h"
#include "simd/vec.h"

namespace seqblocks {
namespace {

// Threads worth waking: about 2 M tanh-evaluations' worth of work per thread.
static inline int additive_threads(int64_t work, int64_t units, int nthreads) {
  const int64_t by_work = std::max<int64_t>(1, work / (int64_t{1} << 21));
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({static_cast<int64_t>(nthreads), units, by_work})));
}

// scores: (B, Lq, S).
template <class Isa, class T>
void additive_forward(const T* qp, const T* kp, const T* w, T* scores, int64_t b, int64_t lq, int64_t s, int64_t h,
                      int nthreads) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  const int64_t rows = b * lq;
  if (rows <= 0 || s <= 0) return;
  const int nt = additive_threads(rows * s * h, rows, nthreads);
  const int rem = static_cast<int>(h % W);
  const int64_t full = h - rem;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    int64_t begin, end;
    rowops::split_range(rows, omp_get_num_threads(), omp_get_thread_num(), &begin, &end);
    for (int64_t r = begin; r < end; ++r) {
      const T* q = qp + r * h;
      const T* kb = kp + (r / lq) * s * h;
      T* out = scores + r * s;
      for (int64_t j = 0; j < s; ++j) {
        const T* k = kb + j * h;
        auto acc = V::zero();
        int64_t e = 0;
        for (; e < full; e += W) {
          acc = V::fmadd(V::load(w + e), math::tanh<Isa, T>(V::add(V::load(q + e), V::load(k + e))), acc);
        }
        if (rem) {  // w's zero lanes cancel the tail
          acc = V::fmadd(V::load_tail(w + e, rem),
                         math::tanh<Isa, T>(V::add(V::load_tail(q + e, rem), V::load_tail(k + e, rem))), acc);
        }
        out[j] = V::hsum(acc);
      }
    }
  }
}

// ds: (B, Lq, S); dqp (B, Lq, H), dkp (B, S, H), dw_partial (B, H) written (not accumulated).
template <class Isa, class T>
void additive_backward(const T* ds, const T* qp, const T* kp, const T* w, T* dqp, T* dkp, T* dw_partial, int64_t b,
                       int64_t lq, int64_t s, int64_t h, int nthreads) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  if (b <= 0) return;
  const int nt = additive_threads(b * lq * s * h, b, nthreads);
  const int rem = static_cast<int>(h % W);
  const int64_t full = h - rem;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    int64_t begin, end;
    rowops::split_range(b, omp_get_num_threads(), omp_get_thread_num(), &begin, &end);
    for (int64_t bb = begin; bb < end; ++bb) {
      T* dk = dkp + bb * s * h;
      T* dwp = dw_partial + bb * h;
      std::fill(dk, dk + s * h, T(0));
      std::fill(dwp, dwp + h, T(0));
      for (int64_t i = 0; i < lq; ++i) {
        const T* q = qp + (bb * lq + i) * h;
        T* dq = dqp + (bb * lq + i) * h;
        std::fill(dq, dq + h, T(0));
        const T* dsrow = ds + (bb * lq + i) * s;
        for (int64_t j = 0; j < s; ++j) {
          const auto g = V::set1(dsrow[j]);
          const T* k = kp + (bb * s + j) * h;
          T* dkj = dk + j * h;
          // t = tanh(q + k); gw = ds w (1 - t^2); dq += gw; dk_j += gw; dw += ds t
          auto step = [&](int64_t e, int lanes) {
            const bool tail = lanes < W;
            const auto t = math::tanh<Isa, T>(V::add(tail ? V::load_tail(q + e, lanes) : V::load(q + e),
                                                     tail ? V::load_tail(k + e, lanes) : V::load(k + e)));
            const auto wv = tail ? V::load_tail(w + e, lanes) : V::load(w + e);
            const auto gw = V::mul(V::mul(g, wv), V::fnmadd(t, t, V::set1(T(1))));
            const auto dqv = V::add(tail ? V::load_tail(dq + e, lanes) : V::load(dq + e), gw);
            const auto dkv = V::add(tail ? V::load_tail(dkj + e, lanes) : V::load(dkj + e), gw);
            const auto dwv = V::fmadd(g, t, tail ? V::load_tail(dwp + e, lanes) : V::load(dwp + e));
            if (tail) {
              V::store_tail(dq + e, dqv, lanes);
              V::store_tail(dkj + e, dkv, lanes);
              V::store_tail(dwp + e, dwv, lanes);
            } else {
              V::store(dq + e, dqv);
              V::store(dkj + e, dkv);
              V::store(dwp + e, dwv);
            }
          };
          int64_t e = 0;
          for (; e < full; e += W) step(e, W);
          if (rem) step(e, rem);
        }
      }
    }
  }
}

}  // namespace

template <>
const AdditiveScoreKernels& additive_score_kernels<TargetIsa>() {
  static const AdditiveScoreKernels table = {
      &additive_forward<TargetIsa, float>,
      &additive_forward<TargetIsa, double>,
      &additive_backward<TargetIsa, float>,
      &additive_backward<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
