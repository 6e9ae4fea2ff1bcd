// Cross-entropy kernels (fused log-softmax + NLL), forward and backward side by side (formulas
// in cross_entropy.h). Compiled once per ISA.
#include "ops/cross_entropy.h"

#include <omp.h>

#include <cmath>
#include <cstring>

#include "ops/softmax.h"  // rowops: exp, row max, tail masks, prefetch, range split
#include "runtime/denormals.h"
#include "runtime/isa_target.h"

namespace seqblocks {
namespace {

using rowops::exp_approx;
using rowops::prefetch_lines;
using rowops::tail_mask;

// Sums over one row of the exp pass: s = sum exp(x - m), and
//   Mode 0 (indices, no smoothing): nothing else
//   Mode 1 (indices, smoothing):    u = sum w_c (x_c - m)
//   Mode 2 (probabilities):         u = sum w_c q'_c (x_c - m),  a = sum w_c q'_c
template <class Isa, class T, int Mode, bool HasW>
void exp_pass(const T* x, const T* q, const T* w, int64_t C, T m, T keep, T spread, const T* next_x,
              const T* next_q, T* s_out, T* u_out, T* a_out) {
  using V = Vec<Isa, T>;
  using reg = typename V::reg;
  constexpr int W = V::width;
  const reg vm = V::set1(m);
  const reg vkeep = V::set1(keep), vspread = V::set1(spread);
  reg s = V::zero(), u = V::zero(), a = V::zero();
  auto step = [&](reg xv, reg wv, reg qv, bool masked, int rem) {
    const reg d = V::sub(xv, vm);
    reg e = exp_approx<Isa, T>(d);
    reg dd = d;
    if (masked) {
      const auto mk = tail_mask<Isa, T>(rem);
      e = V::select(mk, e, V::zero());
      dd = V::select(mk, d, V::zero());
    }
    s = V::add(s, e);
    if constexpr (Mode == 1) u = HasW ? V::fmadd(wv, dd, u) : V::add(u, dd);
    if constexpr (Mode == 2) {
      reg wq = V::fmadd(qv, vkeep, vspread);  // q'; masked lanes would hold eps / C, so zero them
      if (masked) wq = V::select(tail_mask<Isa, T>(rem), wq, V::zero());
      if constexpr (HasW) wq = V::mul(wq, wv);
      a = V::add(a, wq);
      u = V::fmadd(wq, dd, u);
    }
  };
  int64_t j = 0;
  for (; j + W <= C; j += W) {
    if (next_x) {
      prefetch_lines(next_x + j, W);
      if constexpr (Mode == 2) prefetch_lines(next_q + j, W);
    }
    step(V::load(x + j), HasW ? V::load(w + j) : V::zero(), Mode == 2 ? V::load(q + j) : V::zero(), false, 0);
  }
  if (j < C) {
    const int rem = static_cast<int>(C - j);
    step(V::load_tail(x + j, rem), HasW ? V::load_tail(w + j, rem) : V::zero(),
         Mode == 2 ? V::load_tail(q + j, rem) : V::zero(), true, rem);
  }
  *s_out = V::hsum(s);
  *u_out = V::hsum(u);
  *a_out = V::hsum(a);
}

template <class Isa, class T, int Mode, bool HasW>
void forward_rows(const CrossEntropyForwardArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t C = a.C;
  const double eps = a.smoothing;
  double wsum = static_cast<double>(C);
  if (HasW) {
    wsum = 0.0;
    for (int64_t c = 0; c < C; ++c) wsum += static_cast<double>(a.w[c]);
  }
  const T keep = static_cast<T>(1.0 - eps), spread = static_cast<T>(eps / static_cast<double>(C));
  for (int64_t r = begin; r < end; ++r) {
    const T* x = a.x + r * C;
    int64_t t = -1;
    if constexpr (Mode != 2) {
      t = a.target[r];
      if (t == a.ignore_index) {
        a.row_loss[r] = 0.0;
        if (a.row_max) a.row_max[r] = a.row_logsum[r] = T(0);
        continue;
      }
    }
    const T m = rowops::row_max<Isa, T>(x, C);
    const bool more = r + 1 < end;
    T s, u, qa;
    exp_pass<Isa, T, Mode, HasW>(x, Mode == 2 ? a.q + r * C : nullptr, a.w, C, m, keep, spread,
                                 more ? x + C : nullptr, (Mode == 2 && more) ? a.q + (r + 1) * C : nullptr, &s, &u,
                                 &qa);
    const T logs_t = std::log(s);
    const double logs = static_cast<double>(logs_t);
    double loss;
    if constexpr (Mode == 2) {
      loss = static_cast<double>(qa) * logs - static_cast<double>(u);
      if (a.row_qw) a.row_qw[r] = qa;
    } else {
      const double wt = HasW ? static_cast<double>(a.w[t]) : 1.0;
      const double dt = static_cast<double>(x[t]) - static_cast<double>(m);
      loss = (1.0 - eps) * wt * (logs - dt);
      if constexpr (Mode == 1) loss += eps / static_cast<double>(C) * (wsum * logs - static_cast<double>(u));
    }
    a.row_loss[r] = loss;
    if (a.row_max) {
      a.row_max[r] = m;
      a.row_logsum[r] = logs_t;
    }
  }
}

template <class Isa, class T>
void cross_entropy_forward(const CrossEntropyForwardArgs<T>& a) {
  if (a.rows <= 0 || a.C <= 0) return;
  const int nt = rowops::threads_for(a.rows * a.C, a.rows, a.nthreads);
  const int mode = a.q ? 2 : (a.smoothing > 0.0 ? 1 : 0);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    int64_t begin, end;
    rowops::split_range(a.rows, omp_get_num_threads(), omp_get_thread_num(), &begin, &end);
    if (a.w) {
      if (mode == 0) forward_rows<Isa, T, 0, true>(a, begin, end);
      else if (mode == 1) forward_rows<Isa, T, 1, true>(a, begin, end);
      else forward_rows<Isa, T, 2, true>(a, begin, end);
    } else {
      if (mode == 0) forward_rows<Isa, T, 0, false>(a, begin, end);
      else if (mode == 1) forward_rows<Isa, T, 1, false>(a, begin, end);
      else forward_rows<Isa, T, 2, false>(a, begin, end);
    }
  }
}

// One pass per row: p = exp((x - m) - log s), then (dx streamed out for large outputs)
//   indices:       dx = cp * p - cw * w  (cw * 1 without weights), dx_t -= scale (1 - eps) w_t
//   probabilities: dx = cp * p - scale * w * q'
template <class Isa, class T, bool Probs, bool HasW>
void backward_rows(const CrossEntropyBackwardArgs<T>& a, int64_t begin, int64_t end) {
  using V = Vec<Isa, T>;
  using reg = typename V::reg;
  constexpr int W = V::width;
  const int64_t C = a.C;
  const double eps = a.smoothing;
  double wsum = static_cast<double>(C);
  if (HasW) {
    wsum = 0.0;
    for (int64_t c = 0; c < C; ++c) wsum += static_cast<double>(a.w[c]);
  }
  const T keep = static_cast<T>(1.0 - eps), spread = static_cast<T>(eps / static_cast<double>(C));
  const bool streaming = rowops::stream_worthwhile(a.rows * C, sizeof(T));
  for (int64_t r = begin; r < end; ++r) {
    const T* x = a.x + r * C;
    T* dx = a.dx + r * C;
    const double scale = a.grad_scale * (a.grad_rows ? static_cast<double>(a.grad_rows[r]) : 1.0);
    int64_t t = -1;
    double wt = 0.0;
    if constexpr (!Probs) {
      t = a.target[r];
      if (t == a.ignore_index) {
        std::memset(dx, 0, static_cast<size_t>(C) * sizeof(T));
        continue;
      }
      wt = HasW ? static_cast<double>(a.w[t]) : 1.0;
    }
    const double coef = Probs ? static_cast<double>(a.row_qw[r]) : (1.0 - eps) * wt + eps / C * wsum;
    const reg cp = V::set1(static_cast<T>(scale * coef));
    const reg cw = V::set1(static_cast<T>(Probs ? scale : scale * eps / C));
    const reg vm = V::set1(a.row_max[r]), vl = V::set1(a.row_logsum[r]);
    const reg vkeep = V::set1(keep), vspread = V::set1(spread);
    const T* q = Probs ? a.q + r * C : nullptr;
    const bool more = r + 1 < end;
    auto value = [&](int64_t at, int lanes) {
      const bool full = lanes == W;
      if (full && more) {
        prefetch_lines(x + C + at, W);
        if constexpr (Probs) prefetch_lines(q + C + at, W);
      }
      const reg xv = full ? V::load(x + at) : V::load_tail(x + at, lanes);
      const reg p = exp_approx<Isa, T>(V::sub(V::sub(xv, vm), vl));
      reg sub = V::set1(T(1));
      if constexpr (HasW) sub = full ? V::load(a.w + at) : V::load_tail(a.w + at, lanes);
      if constexpr (Probs) {
        const reg qv = full ? V::load(q + at) : V::load_tail(q + at, lanes);
        sub = V::mul(sub, V::fmadd(qv, vkeep, vspread));
      }
      return V::fnmadd(cw, sub, V::mul(cp, p));
    };
    rowops::write_row<Isa, T>(dx, C, streaming, value);
    if constexpr (!Probs) {
      // The target's entry, recomputed in scalar (dx may just have been streamed out).
      const double p_t = std::exp((static_cast<double>(x[t]) - static_cast<double>(a.row_max[r])) -
                                  static_cast<double>(a.row_logsum[r]));
      dx[t] = static_cast<T>(scale * (p_t * coef - eps / C * wt - (1.0 - eps) * wt));
    }
  }
}

template <class Isa, class T>
void cross_entropy_backward(const CrossEntropyBackwardArgs<T>& a) {
  if (a.rows <= 0 || a.C <= 0) return;
  const int nt = rowops::threads_for(a.rows * a.C, a.rows, a.nthreads);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    int64_t begin, end;
    rowops::split_range(a.rows, omp_get_num_threads(), omp_get_thread_num(), &begin, &end);
    if (a.q) {
      if (a.w) backward_rows<Isa, T, true, true>(a, begin, end);
      else backward_rows<Isa, T, true, false>(a, begin, end);
    } else {
      if (a.w) backward_rows<Isa, T, false, true>(a, begin, end);
      else backward_rows<Isa, T, false, false>(a, begin, end);
    }
    rowops::stream_fence();  // dx may have been written with streaming stores
  }
}

}  // namespace

template <>
const CrossEntropyKernels& cross_entropy_kernels<TargetIsa>() {
  static const CrossEntropyKernels table = {
      &cross_entropy_forward<TargetIsa, float>,
      &cross_entropy_forward<TargetIsa, double>,
      &cross_entropy_backward<TargetIsa, float>,
      &cross_entropy_backward<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
