// Activation kernels per ISA (see activation.h for the math).
#include <omp.h>

#include <type_traits>

#include "ops/activation.h"
#include "ops/parallel.h"
#include "runtime/denormals.h"
// GCC 12 reports -Wmaybe-uninitialized inside avx512fintrin.h (its `__Y = __Y` idiom for undefined
// registers, GCC bug 105593) wherever Vec<Avx512> is inlined; silenced for those header lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "math/gelu.h"
#include "runtime/isa_target.h"
#pragma GCC diagnostic pop

namespace seqblocks {
namespace {

// Constants of the exp helper per precision: ln 2 split in a high part (few mantissa bits, so
// n * hi is exact) and a low part; the argument below which exp(x) is under the smallest normal
// number; the Taylor degree for |r| <= ln2 / 2 (remainder below 0.1 ulp).
template <class T>
struct ExpConst;
template <>
struct ExpConst<float> {
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f, min_arg = -87.0f;
  static constexpr int degree = 7;
};
template <>
struct ExpConst<double> {
  static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  static constexpr double min_arg = -708.0;
  static constexpr int degree = 13;
};

// e^x for x <= 0 (NaN propagates): x = n ln2 + r, e^x = 2^n e^r, e^r by Horner on the Taylor
// series; results below the smallest normal number are 0 (as with FTZ).
template <class Isa, class T>
typename Vec<Isa, T>::reg exp_nonpositive(typename Vec<Isa, T>::reg x) {
  using V = Vec<Isa, T>;
  using C = ExpConst<T>;
  const auto underflow = V::lt(x, V::set1(C::min_arg));
  const auto xc = V::max(V::set1(C::min_arg), x);  // NaN stays NaN (max returns its second operand)
  const auto n = V::round_nearest(V::mul(xc, V::set1(T(1.4426950408889634))));
  auto r = V::fnmadd(n, V::set1(C::ln2_hi), xc);
  r = V::fnmadd(n, V::set1(C::ln2_lo), r);
  T coef = T(1);
  for (int k = 2; k <= C::degree; ++k) coef /= T(k);  // 1 / degree!
  auto p = V::set1(coef);
  for (int k = C::degree - 1; k >= 1; --k) {
    coef *= T(k + 1);  // 1 / k!
    p = V::fmadd(p, r, V::set1(coef));
  }
  p = V::fmadd(p, r, V::set1(T(1)));
  // NaN lanes get n = 0 (pow2i needs an integral n) and their NaN back at the end.
  const auto nan = V::isnan(x);
  const auto safe_n = V::select(nan, V::zero(), n);
  const auto result = V::mul(p, V::pow2i(safe_n));
  return V::select(underflow, V::zero(), V::select(nan, x, result));
}

template <class Isa, class T, class Op>
void map_elements(int64_t n, int nthreads, Op op) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  const int nt = threads_for(n, nthreads);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed flush;
    int64_t lo, hi;
    thread_slice(n, omp_get_num_threads(), omp_get_thread_num(), 64, &lo, &hi);
    int64_t i = lo;
    for (; i + W <= hi; i += W) op.full(i);
    if (i < hi) op.tail(i, static_cast<int>(hi - i));
  }
}

// A unary map dst[i] = f(a[i], b[i], c[i]) with full and tail vectors; F(ra, rb, rc) -> reg.
template <class Isa, class T, class F>
struct Map3 {
  using V = Vec<Isa, T>;
  const T* a;
  const T* b;
  const T* c;
  T* dst;
  F f;
  void full(int64_t i) const {
    V::store(dst + i, f(V::load(a + i), V::load(b + i), c ? V::load(c + i) : V::zero()));
  }
  void tail(int64_t i, int t) const {
    V::store_tail(dst + i, f(V::load_tail(a + i, t), V::load_tail(b + i, t), c ? V::load_tail(c + i, t) : V::zero()),
                  t);
  }
};

template <class Isa, class T, class F>
void run_map(const T* a, const T* b, const T* c, T* dst, int64_t n, int nthreads, F f) {
  map_elements<Isa, T>(n, nthreads, Map3<Isa, T, F>{a, b, c, dst, f});
}

template <class Isa, class T>
void relu_forward(const T* x, T* y, int64_t n, int nthreads) {
  using V = Vec<Isa, T>;
  using R = typename V::reg;
  run_map<Isa, T>(x, x, nullptr, y, n, nthreads, [](R xv, R, R) { return V::max(V::zero(), xv); });
}

// dx = dy f'(saved) over n elements: `map(a, b, c, dst, n, f)` applies the per-vector f -- on
// all threads (activation_backward) or on the calling thread (backward_tile).
template <class Isa, class T, class Map>
void backward_with(ActivationGrad kind, const T* dy, const T* saved, const T* aux, T* dx, int64_t n, Map map) {
  using V = Vec<Isa, T>;
  using R = typename V::reg;
  switch (kind) {
    case ActivationGrad::relu:
      map(dy, saved, nullptr, dx, n, [](R g, R y, R) { return V::select(V::le(y, V::zero()), V::zero(), g); });
      break;
    case ActivationGrad::tanh:
      map(dy, saved, nullptr, dx, n, [](R g, R y, R) { return V::mul(g, V::fnmadd(y, y, V::set1(T(1)))); });
      break;
    case ActivationGrad::sigmoid:
      map(dy, saved, nullptr, dx, n, [](R g, R y, R) { return V::mul(g, V::fnmadd(y, y, y)); });
      break;
    case ActivationGrad::gelu_erf:
      if constexpr (std::is_same_v<T, float>) {  // aux unused (see math::gelu_erf_grad)
        map(dy, saved, nullptr, dx, n, [](R g, R x, R) { return V::mul(g, math::gelu_erf_grad<Isa>(x)); });
        break;
      }
      // double: Phi(x) = gelu(x) / x from aux = gelu(x) (libm, see math::gelu_erf_f64); past
      // |x| = 40, where Phi is 0 or 1 and x phi(x) below 1e-340, the limits 0 and 1 (inf / inf
      // and inf * 0 would give NaN at +-inf).
      map(dy, saved, aux, dx, n, [](R g, R x, R gelu) {
        const R inv_sqrt_2pi = V::set1(T(0.3989422804014327));
        const auto small = V::lt(V::abs(x), V::set1(T(9.5367431640625e-07)));  // 2^-20
        const R big_phi = V::select(small, V::fmadd(x, inv_sqrt_2pi, V::set1(T(0.5))), V::div(gelu, x));
        const R half_x2 = V::mul(V::mul(x, x), V::set1(T(-0.5)));
        const R small_phi = V::mul(exp_nonpositive<Isa, T>(half_x2), inv_sqrt_2pi);
        const R limit = V::select(V::gt(x, V::zero()), V::set1(T(1)), V::zero());
        const R grad = V::select(V::gt(V::abs(x), V::set1(T(40))), limit, V::fmadd(x, small_phi, big_phi));
        return V::mul(g, grad);
      });
      break;
    case ActivationGrad::gelu_tanh:
      map(dy, saved, nullptr, dx, n, [](R g, R x_in, R) {
        const R k = V::set1(T(0.7978845608028654)), c = V::set1(T(0.044715)), one = V::set1(T(1));
        const R half = V::set1(T(0.5)), two = V::set1(T(2));
        const R x = V::max(V::set1(T(-20)), V::min(V::set1(T(20)), x_in));  // NaN propagates
        const R x2 = V::mul(x, x);
        const R u = V::mul(k, V::fmadd(V::mul(c, x2), x, x));
        const R e = exp_nonpositive<Isa, T>(V::mul(V::set1(T(-2)), V::abs(u)));
        const R q = V::div(two, V::add(one, e));  // 2 / (1 + e)
        const R qe = V::mul(q, e);                // 2e / (1 + e)
        const auto pos = V::ge(u, V::zero());
        const R one_plus_t = V::select(pos, q, qe);
        const R one_minus_t = V::select(pos, qe, q);
        const R poly = V::fmadd(V::mul(V::set1(T(3)), c), x2, one);  // 1 + 3 c x^2
        const R inner = V::fmadd(V::mul(V::mul(half, k), V::mul(x, one_minus_t)), poly, half);
        return V::mul(g, V::mul(one_plus_t, inner));
      });
      break;
  }
}

template <class Isa, class T>
void activation_backward(ActivationGrad kind, const T* dy, const T* saved, const T* aux, T* dx, int64_t n,
                         int nthreads) {
  backward_with<Isa, T>(kind, dy, saved, aux, dx, n,
                        [nthreads](const T* a, const T* b, const T* c, T* dst, int64_t m, auto f) {
                          run_map<Isa, T>(a, b, c, dst, m, nthreads, f);
                        });
}

// GemmPost over the GEMM producing dy (rows x cols at c, row stride ldc): dy -> dy f'(saved) in
// place, saved at the same offset from its start as c from C's (ActivationTile). Calling
// thread only, element for element the arithmetic of activation_backward.
template <class Isa, class T>
void backward_tile(T* c, int64_t ldc, int64_t rows, int64_t cols, const void* ctx) {
  const auto& t = *static_cast<const ActivationTile<T>*>(ctx);
  for (int64_t r = 0; r < rows; ++r) {
    T* row = c + r * ldc;
    const T* saved = t.saved + (row - t.c0);
    backward_with<Isa, T>(t.kind, row, saved, nullptr, row, cols,
                          [](const T* a, const T* b, const T* cc, T* dst, int64_t m, auto f) {
                            const Map3<Isa, T, decltype(f)> op{a, b, cc, dst, f};
                            constexpr int W = Vec<Isa, T>::width;
                            int64_t i = 0;
                            for (; i + W <= m; i += W) op.full(i);
                            if (i < m) op.tail(i, static_cast<int>(m - i));
                          });
  }
}

}  // namespace

template <>
const ActivationKernels& activation_kernels<TargetIsa>() {
  static const ActivationKernels table{
      &relu_forward<TargetIsa, float>,
      &relu_forward<TargetIsa, double>,
      &activation_backward<TargetIsa, float>,
      &activation_backward<TargetIsa, double>,
      &backward_tile<TargetIsa, float>,
      &backward_tile<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
