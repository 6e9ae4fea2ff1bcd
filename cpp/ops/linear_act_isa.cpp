// Linear + activation per ISA (see linear_act.h): the GEMM with an activation epilogue.
#include <cstring>

#include "ops/linear_act.h"
// GCC 12 reports -Wmaybe-uninitialized inside avx512fintrin.h (GCC bug 105593); silenced for
// those header lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "gemm/gemm.h"
#include "math/gelu.h"
#include "runtime/isa_target.h"
#pragma GCC diagnostic pop

namespace seqblocks {
namespace {

template <class T>
struct ActEpilogue {
  LinearAct act;
  const T* c0;  // y's first element: a tile at c has z at pre + (c - c0)
  T* pre;       // or null
};

// act(v) for one vector; float64 GELU (erf) goes element by element (cpp/math has no vector form).
template <class Isa, class T>
typename Vec<Isa, T>::reg activate(LinearAct act, typename Vec<Isa, T>::reg v) {
  using V = Vec<Isa, T>;
  if (act == LinearAct::relu) return V::max(V::zero(), v);  // NaN propagates (max returns v)
  if (act == LinearAct::gelu_tanh) return math::gelu_tanh<Isa, T>(v);
  if constexpr (std::is_same_v<T, float>) {
    return math::gelu_erf<Isa>(v);
  } else {
    alignas(64) T lanes[V::width];
    V::store(lanes, v);
    for (int i = 0; i < V::width; ++i) lanes[i] = math::gelu_erf_f64(lanes[i]);
    return V::load(lanes);
  }
}

// GemmPost: rows x cols of y at c (row stride ldc), holding z, -> act(z) in place (z copied to
// pre first when asked).
template <class Isa, class T>
void activate_tile(T* c, int64_t ldc, int64_t rows, int64_t cols, const void* ctx) {
  using V = Vec<Isa, T>;
  constexpr int64_t W = V::width;
  const auto& e = *static_cast<const ActEpilogue<T>*>(ctx);
  for (int64_t r = 0; r < rows; ++r) {
    T* row = c + r * ldc;
    if (e.pre) std::memcpy(e.pre + (row - e.c0), row, sizeof(T) * static_cast<size_t>(cols));
    int64_t j = 0;
    for (; j + W <= cols; j += W) V::store(row + j, activate<Isa, T>(e.act, V::load(row + j)));
    if (j < cols) {
      const int t = static_cast<int>(cols - j);
      V::store_tail(row + j, activate<Isa, T>(e.act, V::load_tail(row + j, t)), t);
    }
  }
}

template <class Isa, class T>
void linear_act_forward(LinearAct act, const T* x, const T* w, const T* b, T* y, T* pre, int64_t rows, int64_t in,
                        int64_t out, int nthreads) {
  const ActEpilogue<T> e{act, y, pre};
  const GemmPost<T> post{&activate_tile<Isa, T>, &e};
  GemmProblem<T> p;
  p.m = rows, p.n = out, p.k = in;
  p.a = x, p.lda = in;
  p.b = w, p.ldb = in, p.trans_b = true;
  p.c = y, p.ldc = out;
  p.bias = b;
  p.post = &post;
  p.nthreads = nthreads;
  gemm<Isa, T>(p);
}

}  // namespace

template <>
const LinearActKernels& linear_act_kernels<TargetIsa>() {
  static const LinearActKernels table{
      &linear_act_forward<TargetIsa, float>,
      &linear_act_forward<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
