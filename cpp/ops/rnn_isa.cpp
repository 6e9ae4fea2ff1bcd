// Recurrent layer kernels per ISA (see rnn.h for the math, shapes and the work split).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>
#include <type_traits>
#include <vector>

#include "ops/parallel.h"
#include "ops/rnn.h"
#include "runtime/denormals.h"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "gemm/gemm.h"
#include "math/tanh_sigmoid.h"
#include "runtime/isa_target.h"
#pragma GCC diagnostic pop

namespace seqblocks {
namespace {

// c (m x n) = a (m x k, row stride lda) @ b (k x n, row stride ldb) (+ bias) for a few rows m:
// the GEMV-like shape of a recurrent step at batch 1..4, which the blocked GEMM serves poorly.
// Vectors run along n in blocks of NV, every row of a is broadcast, and the R rows share each
// load of b. A step's b (tens to hundreds of KiB) streams from L2 every step; with `reverse` the
// column blocks and k are walked backwards, so a time loop that alternates the direction starts
// each step on what the previous one left in L1 (measured, one thread's slice of an LSTM step
// at B=1 H=128, 128 KiB: 1.01 -> 0.79 us per product, with the slice contiguous). Each element
// of c is bias + the products in k order, ascending or descending, whatever the block sizes:
// the same bits for any split of n between threads.

// One block of NV vectors at column j; with kMasked its last vector has `last` lanes.
template <class Isa, class T, int R, int NV, bool kMasked>
void few_rows_block(int64_t j, int last, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                    int64_t ldc, const T* bias, bool reverse) {
  using V = Vec<Isa, T>;
  using Reg = typename V::reg;
  constexpr int64_t W = V::width;
  auto load = [&](const T* p, int v) {
    if constexpr (kMasked) {
      if (v == NV - 1) return V::load_tail(p, last);
    }
    return V::load(p);
  };
  Reg acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = bias ? load(bias + j + v * W, v) : V::zero();
  auto step = [&](int64_t kk) {
    const T* bk = b + kk * ldb + j;
    Reg bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load(bk + v * W, v);
    for (int r = 0; r < R; ++r) {
      const Reg av = V::set1(a[r * lda + kk]);
      for (int v = 0; v < NV; ++v) acc[r][v] = V::fmadd(av, bv[v], acc[r][v]);
    }
  };
  if (reverse) {
    for (int64_t kk = k - 1; kk >= 0; --kk) step(kk);
  } else {
    for (int64_t kk = 0; kk < k; ++kk) step(kk);
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) {
      if (kMasked && v == NV - 1) V::store_tail(c + r * ldc + j + v * W, acc[r][v], last);
      else V::store(c + r * ldc + j + v * W, acc[r][v]);
    }
  }
}

// The columns past the whole blocks of NV vectors (fewer than NV W of them), in blocks of NV / 2,
// NV / 4, ... vectors (enough independent FMA chains for the rest), the last one masked.
template <class Isa, class T, int R, int NV>
void few_rows_rest(int64_t j, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                   int64_t ldc, const T* bias, bool reverse) {
  if constexpr (NV > 1) {
    constexpr int64_t W = Vec<Isa, T>::width;
    constexpr int64_t span = NV / 2 * W;
    const bool half = n - j >= span;  // a whole block of NV / 2 vectors here
    if (half && !reverse) few_rows_block<Isa, T, R, NV / 2, false>(j, 0, k, a, lda, b, ldb, c, ldc, bias, false);
    few_rows_rest<Isa, T, R, NV / 2>(half ? j + span : j, n, k, a, lda, b, ldb, c, ldc, bias, reverse);
    if (half && reverse) few_rows_block<Isa, T, R, NV / 2, false>(j, 0, k, a, lda, b, ldb, c, ldc, bias, true);
  } else if (j < n) {
    few_rows_block<Isa, T, R, 1, true>(j, static_cast<int>(n - j), k, a, lda, b, ldb, c, ldc, bias, reverse);
  }
}

template <class Isa, class T, int R>
void few_rows_gemm(int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc,
                   const T* bias, bool reverse) {
  constexpr int64_t W = Vec<Isa, T>::width;
  // Vectors per block (R NV independent FMA chains). AVX-512 (32 zmm): 16 R-row chains, the other
  // registers for the NV loaded vectors of b (folded into the FMAs when R = 1) and the broadcast.
  // AVX2 (16 ymm), measured (LSTM module, 2 threads, ms): R = 1 NV 8 vs 16, B=1 H=128 inference
  // 0.42 vs 0.43; R = 2 NV 8 vs 4, B=2 H=256 1.42 vs 1.50; R = 4 NV 2 vs 4, B=4 H=256 2.12 vs
  // 2.65 (and training 6.3 vs 7.2).
  constexpr bool avx512 = std::is_same_v<Isa, Avx512>;
  constexpr int NV = R == 1 ? (avx512 ? 16 : 8) : R == 2 ? 8 : (avx512 ? 4 : 2);
  const int64_t whole = n / (NV * W) * (NV * W);
  if (!reverse) {
    for (int64_t j = 0; j < whole; j += NV * W)
      few_rows_block<Isa, T, R, NV, false>(j, 0, k, a, lda, b, ldb, c, ldc, bias, false);
  }
  few_rows_rest<Isa, T, R, NV>(whole, n, k, a, lda, b, ldb, c, ldc, bias, reverse);
  if (reverse) {
    for (int64_t j = whole - NV * W; j >= 0; j -= NV * W)
      few_rows_block<Isa, T, R, NV, false>(j, 0, k, a, lda, b, ldb, c, ldc, bias, true);
  }
}

// One GEMM on the calling thread only (inside our parallel region): few rows -> few_rows_gemm;
// else the dot path where the driver would take it, or the packed path with this thread's own
// buffers (sized beforehand). few_rows_reverse: the few-rows kernel walks k backwards (a time
// loop passes the step parity; see few_rows_gemm).
template <class Isa, class T>
void gemm_here(const GemmView<T>& v, T* abuf, T* bbuf, bool few_rows_reverse) {
  if (v.m <= 0 || v.n <= 0) return;
  const bool plain = !v.trans_a && !v.trans_b && v.beta == T(0) && v.alpha == T(1);
  constexpr int64_t MR = GemmTraits<Isa, T>::MR;
  // Rows past the last whole micro-panel would fill a mostly empty MR-row tile (32 = 14 + 14 + 4
  // on avx512): the blocked kernel takes the whole panels, few_rows_gemm the rest.
  // With B prepacked the blocked kernel balances the panels itself (32 rows = 11 + 11 + 10).
  const int64_t rest = v.m <= 4 ? v.m : (!v.b_packed && v.m > MR && v.m % MR <= 8 ? v.m % MR : 0);
  if (plain && rest > 0) {
    if (v.m > rest) {
      GemmView<T> head = v;
      head.m = v.m - rest;
      gemm_packed<Isa, T>(head, abuf, bbuf);
    }
    int64_t i = v.m - rest;
    for (; i + 4 <= v.m; i += 4)
      few_rows_gemm<Isa, T, 4>(v.n, v.k, v.a + i * v.lda, v.lda, v.b, v.ldb, v.c + i * v.ldc, v.ldc, v.bias,
                                  few_rows_reverse);
    for (; i + 2 <= v.m; i += 2)
      few_rows_gemm<Isa, T, 2>(v.n, v.k, v.a + i * v.lda, v.lda, v.b, v.ldb, v.c + i * v.ldc, v.ldc, v.bias,
                                  few_rows_reverse);
    if (i < v.m) {
      few_rows_gemm<Isa, T, 1>(v.n, v.k, v.a + i * v.lda, v.lda, v.b, v.ldb, v.c + i * v.ldc, v.ldc, v.bias,
                               few_rows_reverse);
    }
    return;
  }
  if (v.b_packed) return gemm_packed<Isa, T>(v, abuf, bbuf);  // B's layout is the packed one
  GemmProblem<T> p;
  p.m = v.m, p.n = v.n, p.k = v.k, p.trans_a = v.trans_a, p.trans_b = v.trans_b;
  switch (gemm_choose_path<Isa, T>(p)) {
    case GemmPath::empty_k:
      gemm_empty_k(v);
      break;
    case GemmPath::dot:
      dot_gemm<Isa, T>(v.m, v.n, v.k, v.a, v.lda, v.b, v.ldb, v.c, v.ldc, v.alpha, v.beta, v.bias);
      break;
    case GemmPath::packed:
      gemm_packed<Isa, T>(v, abuf, bbuf);
      break;
  }
}

// C = op(A) op(B) (+ bias) with the driver's own threading (outside our region).
template <class Isa, class T>
void gemm_full(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, bool ta, const T* b, int64_t ldb, bool tb,
               T* c, int64_t ldc, const T* bias, int nt) {
  GemmProblem<T> p;
  p.m = m, p.n = n, p.k = k, p.a = a, p.lda = lda, p.trans_a = ta, p.b = b, p.ldb = ldb, p.trans_b = tb;
  p.c = c, p.ldc = ldc, p.bias = bias, p.nthreads = nt;
  gemm<Isa, T>(p);
}

// A 64-byte aligned pointer into `buf` (which has 64 spare elements).
template <class T>
T* aligned64(std::vector<T>& buf) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<T*>((a + 63) & ~uintptr_t(63));
}

// A buffer left uninitialised (every element is written before it is read): a value-initialised
// std::vector would clear megabytes per call for nothing.
template <class T>
std::unique_ptr<T[]> uninit(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(n)]);
}

// The temporaries of one call, carved from a per-thread block reused across calls (the GEMM's
// workspace class, gemm/workspace.h): fresh allocations would be fresh pages every call -- the
// 8 MB input projection of an LSTM at T=64 B=32 H=256 alone is ~2000 page faults, about 10% of
// its forward. Sizes are reserved first, then the block is obtained once (on the calling thread,
// before any parallel region: std::bad_alloc stays catchable); every piece is 64-byte aligned.
// The block is separate from the GEMM's own (the same call runs GEMMs) and grows to the
// largest call a thread has made.
template <class T>
class Scratch {
 public:
  size_t reserve(int64_t n) {
    const size_t at = total_;
    total_ += GemmWorkspace<T>::round_up(static_cast<size_t>(std::max<int64_t>(n, 0)));
    return at;
  }
  void allocate(GemmWorkspace<T>& block) { base_ = block.get(std::max<size_t>(total_, 1)); }
  T* at(size_t offset) const { return base_ + offset; }

 private:
  size_t total_ = 0;
  T* base_ = nullptr;
};

template <class Isa, class T>
GemmWorkspace<T>& rnn_scratch_block() {
  static thread_local GemmWorkspace<T> block;
  return block;
}

// Per-thread copies of a step's B operand (the thread's slice of the recurrent weights) in the
// blocked kernel's panel layout, packed once before the time loop and read every step. Worth it
// above a few rows: the few-rows kernel reads B in place.
template <class Isa, class T>
struct StepWeights {
  static constexpr int64_t kMinRows = 5;
  int64_t per_thread = 0;  // elements
  size_t offset = 0;
  T* base = nullptr;
  StepWeights(int64_t rows, int64_t k, int64_t max_n, int nt, Scratch<T>& scratch) {
    if (rows < kMinRows) return;
    const size_t elems = static_cast<size_t>(PrepackedB<Isa, T>::elems(k, max_n));
    per_thread = static_cast<int64_t>(GemmWorkspace<T>::round_up(elems));
    offset = scratch.reserve(per_thread * nt);
  }
  void bind(const Scratch<T>& scratch) {
    if (per_thread > 0) base = scratch.at(offset);
  }
  // Thread p's buffer, packed from its op(B) (k x n: b[l * ldb + j], or b[j * ldb + l] when
  // trans), or null below kMinRows.
  const T* pack(int p, const T* b, int64_t ldb, int64_t k, int64_t n, bool trans = false) const {
    if (base == nullptr) return nullptr;
    T* dst = base + per_thread * p;
    PrepackedB<Isa, T>::pack(b, ldb, trans, k, n, dst);
    return dst;
  }
};

// dst (k, n) = src^T with its columns permuted: dst[kk * n + d] = src[src_of[d] * k + kk]
// (src row-major with rows of k), for the columns d in [d_begin, d_end) (d_begin a multiple of
// the vector width). In width x width tiles: register transposes where the tile's source rows are
// consecutive (within one gate block of one thread slice), scalar elsewhere.
template <class Isa, class T>
void permuted_transpose(const T* src, int64_t k, int64_t n, const int64_t* src_of, T* dst, int64_t d_begin,
                        int64_t d_end) {
  constexpr int64_t W = Vec<Isa, T>::width;
  for (int64_t d0 = d_begin; d0 < d_end; d0 += W) {
    const int64_t d1 = std::min(d_end, d0 + W);
    const bool consecutive = d1 - d0 == W && src_of[d1 - 1] == src_of[d0] + W - 1;
    int64_t k0 = 0;
    if (consecutive && TransposeBlock<Isa, T>::available) {
      for (; k0 + W <= k; k0 += W) {
        TransposeBlock<Isa, T>::run(src + src_of[d0] * k + k0, k, static_cast<int>(W), dst + k0 * n + d0, n);
      }
    }
    for (int64_t kb = k0; kb < k; kb += W) {
      for (int64_t kk = kb; kk < std::min(k, kb + W); ++kk) {
        for (int64_t d = d0; d < d1; ++d) dst[kk * n + d] = src[src_of[d] * k + kk];
      }
    }
  }
}

// Prefetches n elements from p into L2 (one request per cache line).
template <class T>
inline void prefetch_l2(const T* p, int64_t n) {
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t i = 0; i < n; i += kLine) __builtin_prefetch(p + i, 0, 2);
}

// The same arguments with one thread (see TeamCheck).
template <class Args>
Args on_one_thread(const Args& a) {
  Args one = a;
  one.nthreads = 1;
  return one;
}

static inline bool row_active(const int64_t* lengths, int64_t b, int64_t t) {
  return lengths == nullptr || t < lengths[b];
}

// Thread p of nt owns hidden units [lo, hi): slices in whole vectors; threads that would get no
// vector are not started.
template <class Isa, class T>
int rnn_threads(int64_t H, int64_t B, int64_t G, int nthreads) {
  constexpr int64_t W = Vec<Isa, T>::width;
  const int64_t blocks = (H + W - 1) / W;
  // One step must carry enough multiply-adds to pay for a barrier: below 2^16 (about 2 us on one
  // core) a second thread loses more at the barrier than it saves (measured with `omp barrier`,
  // OMP_WAIT_POLICY both ways, LSTM B=1 H=128: 2 threads won by ~15% with spinning, lost by ~30%
  // with passive waits; StepBarrier always spins first).
  const int64_t macs = B * G * H * H;
  int nt = static_cast<int>(std::min<int64_t>(nthreads, blocks));
  if (macs < 64 * 1024) nt = 1;
  return std::max(1, nt);
}

// How a time loop is shared between threads. A step's batch rows are independent of each
// other, so with enough rows each thread takes whole rows and all hidden units: it multiplies
// its rows of h by all of W_hh (its own packed copy, kept in its core's L2) and never waits for
// another thread -- no barrier per step, and h never crosses cores. With few rows (B = 1
// decoding) or a W_hh too large for one L2, threads take slices of the hidden units instead and
// meet at a barrier every step (each needs all of h). Every element is computed by the same
// operations either way (both run the packed kernel: at least kMinRows rows per thread), so the
// results are bit-identical to one thread's.
// Measured at 2 threads, I = H = 256, T = 64, rows vs units, ms: LSTM fwd B=32 7.58 vs 8.20,
// bwd 15.8 vs 16.3; GRU fwd 5.79 vs 6.38, bwd 12.3 vs 13.4; RNN fwd 1.92 vs 2.50, bwd 4.07 vs
// 4.43; B=10 (5 rows each) LSTM fwd 2.59 vs 2.75, RNN fwd 0.63 vs 0.89. At H = 512, B = 64 a
// 1 MiB W_hh (RNN) still gains (fwd 14.1 vs 15.4 ms); LSTM (4 MiB) and GRU (3 MiB) are even
// (LSTM fwd 61.9 vs 60.3, bwd 123.2 vs 125.4), so larger weights keep the units split.
struct RnnSplit {
  int nt = 1;
  bool by_rows = false;  // threads own batch rows (else hidden units)
  // Thread p's rows [r0, r1) and hidden units [j0, j1).
  std::vector<int64_t> r0, r1, j0, j1;
  int64_t max_rows = 0, max_units = 0;
};

constexpr int64_t kRowSplitMaxWeightBytes = 1536 * 1024;  // W_hh (G H x H), packed per thread

template <class Isa, class T>
RnnSplit rnn_split(int64_t H, int64_t B, int64_t G, int nthreads) {
  constexpr int64_t W = Vec<Isa, T>::width;
  RnnSplit s;
  s.nt = rnn_threads<Isa, T>(H, B, G, nthreads);
  const int64_t weight_bytes = G * H * H * static_cast<int64_t>(sizeof(T));
  s.by_rows = nthreads > 1 && B * G * H * H >= 64 * 1024 && B / nthreads >= StepWeights<Isa, T>::kMinRows &&
              weight_bytes <= kRowSplitMaxWeightBytes;
  if (s.by_rows) s.nt = nthreads;
  s.r0.resize(s.nt), s.r1.resize(s.nt), s.j0.resize(s.nt), s.j1.resize(s.nt);
  for (int p = 0; p < s.nt; ++p) {
    if (s.by_rows) {
      thread_slice(B, s.nt, p, 1, &s.r0[p], &s.r1[p]);
      s.j0[p] = 0, s.j1[p] = H;
    } else {
      s.r0[p] = 0, s.r1[p] = B;
      thread_slice(H, s.nt, p, W, &s.j0[p], &s.j1[p]);
    }
    s.max_rows = std::max(s.max_rows, s.r1[p] - s.r0[p]);
    s.max_units = std::max(s.max_units, s.j1[p] - s.j0[p]);
  }
  return s;
}

// Column sums of a (rows x n) row-major matrix into out (n): rows added in order per column, so
// the result does not depend on the thread count.
template <class Isa, class T>
void column_sums(const T* a, int64_t rows, int64_t n, T* out, int nthreads) {
  using V = Vec<Isa, T>;
  constexpr int64_t W = V::width;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, (rows * n) / 65536 + 1)));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed flush;
    int64_t lo, hi;
    thread_slice(n, omp_get_num_threads(), omp_get_thread_num(), W, &lo, &hi);
    for (int64_t j = lo; j < hi; j += W) {
      const int tail = static_cast<int>(std::min<int64_t>(W, hi - j));
      auto acc = V::zero();
      if (tail == W) {
        for (int64_t r = 0; r < rows; ++r) acc = V::add(acc, V::load(a + r * n + j));
        V::store(out + j, acc);
      } else {
        for (int64_t r = 0; r < rows; ++r) acc = V::add(acc, V::load_tail(a + r * n + j, tail));
        V::store_tail(out + j, acc, tail);
      }
    }
  }
}

// ------------------------------------------------------------------------------ fused gate kernels
// Per row b, units j = j0 + jj (jj < nj) in vectors of W with a masked tail. `xa` is the input
// projection at this thread's first unit, gate g at xa + g xs + jj; `ha` the row of this
// thread's recurrent product (G nj, gate blocks of nj). States, outputs and the workspace are
// indexed by the unit j.

template <class Isa, class T, bool kFull>
struct Lanes {
  using V = Vec<Isa, T>;
  using R = typename V::reg;
  int n;  // lanes in use (W when kFull)
  R ld(const T* p) const {
    if constexpr (kFull) return V::load(p);
    else return V::load_tail(p, n);
  }
  void st(T* p, R v) const {
    if constexpr (kFull) V::store(p, v);
    else V::store_tail(p, v, n);
  }
};

// body(L, jj) for jj = 0, W, 2 W, ... < nj: the full vectors with unmasked loads and stores (the
// lane count a constant), then at most one masked tail.
template <class Isa, class T, class Body>
inline void for_lanes(int64_t nj, Body&& body) {
  constexpr int64_t W = Vec<Isa, T>::width;
  int64_t jj = 0;
  for (; jj + W <= nj; jj += W) body(Lanes<Isa, T, true>{static_cast<int>(W)}, jj);
  if (jj < nj) body(Lanes<Isa, T, false>{static_cast<int>(nj - jj)}, jj);
}

// act(xa[g xs + jj] + ha[g nj + jj]) into ha[g nj + jj] for the gate blocks g in [g0, g1): the
// first pass of the gate kernels. Each element is a short independent chain (~25 instructions)
// that the out-of-order core can overlap with the next ones; one pass per unit (sigmoid -> c'
// -> tanh -> h', ~220 instructions for an LSTM) leaves fewer units in flight. Measured, LSTM
// forward T=64 B=32 I=H=256: 1 thread 14.82 -> 14.45 ms, 2 threads 7.46 -> 7.35 ms.
template <class Isa, class T, bool kTanh>
void activate_gates(const T* xa, int64_t xs, T* ha, int64_t nj, int64_t g0, int64_t g1) {
  using V = Vec<Isa, T>;
  for (int64_t g = g0; g < g1; ++g) {
    const T* x = xa + g * xs;
    T* a = ha + g * nj;
    for_lanes<Isa, T>(nj, [&](auto L, int64_t jj) {
      const auto pre = V::add(L.ld(x + jj), L.ld(a + jj));
      L.st(a + jj, kTanh ? math::tanh<Isa, T>(pre) : math::sigmoid<Isa, T>(pre));
    });
  }
}

// ha: this row of the recurrent product, overwritten with the gate activations.
template <class Isa, class T>
void lstm_gates_row(const T* xa, int64_t xs, T* ha, int64_t H, int64_t nj, int64_t j0, const T* hcur,
                    T* hnext, T* c, T* y, T* ws_g, T* ws_cprev, T* ws_tc, bool active) {
  using V = Vec<Isa, T>;
  if (active) {  // i, f = sigmoid; g = tanh; o = sigmoid
    activate_gates<Isa, T, false>(xa, xs, ha, nj, 0, 2);
    activate_gates<Isa, T, true>(xa, xs, ha, nj, 2, 3);
    activate_gates<Isa, T, false>(xa, xs, ha, nj, 3, 4);
  }
  for_lanes<Isa, T>(nj, [&](auto L, int64_t jj) {
    const int64_t j = j0 + jj;
    if (!active) {
      L.st(hnext + j, L.ld(hcur + j));
      L.st(y + j, V::zero());
      return;
    }
    const auto i = L.ld(ha + jj), f = L.ld(ha + nj + jj), g = L.ld(ha + 2 * nj + jj), o = L.ld(ha + 3 * nj + jj);
    const auto cp = L.ld(c + j);
    const auto cn = V::fmadd(f, cp, V::mul(i, g));
    const auto tc = math::tanh<Isa, T>(cn);
    const auto hn = V::mul(o, tc);
    L.st(c + j, cn);
    L.st(hnext + j, hn);
    L.st(y + j, hn);
    if (ws_g) {
      L.st(ws_g + j, i);
      L.st(ws_g + H + j, f);
      L.st(ws_g + 2 * H + j, g);
      L.st(ws_g + 3 * H + j, o);
      L.st(ws_cprev + j, cp);
      L.st(ws_tc + j, tc);
    }
  });
}

// ha: this row of the recurrent product; r and z overwrite its first two gate blocks.
template <class Isa, class T>
void gru_gates_row(const T* xa, int64_t xs, T* ha, int64_t H, int64_t nj, int64_t j0, const T* hcur,
                   T* hnext, T* y, T* ws_g, bool active) {
  using V = Vec<Isa, T>;
  if (active) activate_gates<Isa, T, false>(xa, xs, ha, nj, 0, 2);  // r, z = sigmoid
  for_lanes<Isa, T>(nj, [&](auto L, int64_t jj) {
    const int64_t j = j0 + jj;
    const auto hp = L.ld(hcur + j);
    if (!active) {
      L.st(hnext + j, hp);
      L.st(y + j, V::zero());
      return;
    }
    const auto r = L.ld(ha + jj);
    const auto z = L.ld(ha + nj + jj);
    const auto hn_part = L.ld(ha + 2 * nj + jj);
    const auto n = math::tanh<Isa, T>(V::fmadd(r, hn_part, L.ld(xa + 2 * xs + jj)));
    const auto hn = V::fmadd(z, V::sub(hp, n), n);  // (1 - z) n + z h
    L.st(hnext + j, hn);
    L.st(y + j, hn);
    if (ws_g) {
      L.st(ws_g + j, r);
      L.st(ws_g + H + j, z);
      L.st(ws_g + 2 * H + j, n);
      L.st(ws_g + 3 * H + j, hn_part);
    }
  });
}

template <class Isa, class T>
void rnn_gates_row(const T* xa, const T* ha, int64_t nj, int64_t j0, bool relu, const T* hcur, T* hnext, T* y,
                   bool active) {
  using V = Vec<Isa, T>;
  for_lanes<Isa, T>(nj, [&](auto L, int64_t jj) {
    const int64_t j = j0 + jj;
    if (!active) {
      L.st(hnext + j, L.ld(hcur + j));
      L.st(y + j, V::zero());
      return;
    }
    const auto a = V::add(L.ld(xa + jj), L.ld(ha + jj));
    const auto hn = relu ? V::max(V::zero(), a) : math::tanh<Isa, T>(a);
    L.st(hnext + j, hn);
    L.st(y + j, hn);
  });
}

// ----------------------------------------------------------------------------------- forward

template <class Isa, class T>
void lstm_proj_forward(const RnnForwardArgs<T>& A);
template <class Isa, class T>
void lstm_proj_backward(const RnnBackwardArgs<T>& A);

// When the forward runs its steps without the time loop (see rnn_forward): the loop's copies of
// W_hh (transposed per unit slice, or packed per thread) cost a pass over W_hh per call, repaid
// over many steps if the copies stay in L2. Measured, 2 threads, inference forward, us, loop vs
// direct: LSTM B=1 H=256 T=1 (the LSTMCell module) 73 vs 47, T=2 73 vs 50, T=8 128 vs 145;
// H=1024 (16 MiB, slices far past L2) T=2 2273 vs 869, T=16 7837 vs 5126; B=8 H=512 (4 MiB) T=2
// 888 vs 487, T=8 1655 vs 1378, T=16 2635 vs 2548; GRU B=2 H=512 (3 MiB) T=16 877 vs 924; RNN B=8
// H=512 T=16 628 vs 697; B=32 H=256 T=1 LSTM 264 vs 256, RNN 70 vs 83 (rows split, no barrier).
// The rule does not depend on the thread count, so neither do the results.
constexpr int64_t kRnnDirectMaxSteps = 2, kRnnDirectMaxRows = 9;
constexpr int64_t kRnnDirectLargeWeightBytes = 4 * 1024 * 1024, kRnnDirectLargeWeightMaxSteps = 16;

static inline bool rnn_steps_direct(int64_t steps, int64_t B, int64_t weight_bytes) {
  return (steps <= kRnnDirectMaxSteps && B <= kRnnDirectMaxRows) ||
         (weight_bytes >= kRnnDirectLargeWeightBytes && steps <= kRnnDirectLargeWeightMaxSteps);
}

template <class Isa, class T>
void rnn_forward(const RnnForwardArgs<T>& A) {
  if (A.w_hr) return lstm_proj_forward<Isa, T>(A);
  const int64_t T_ = A.steps, B = A.B, I = A.I, H = A.H, G = rnn_gates(A.cell);
  const int64_t GH = G * H;
  const bool lstm = A.cell == RnnCell::lstm, gru = A.cell == RnnCell::gru;
  const bool relu = A.cell == RnnCell::rnn_relu;
  const RnnSplit split = rnn_split<Isa, T>(H, B, G, A.nthreads);
  const int nt = split.nt;
  const int64_t max_nj = split.max_units, max_rows = split.max_rows;

  // Gate slots of the workspace (rnn.h): (T, B, S H), LSTM [i f g o], GRU [r z n a_h,n]; none for
  // the RNN or in inference.
  const int64_t S = rnn_workspace_per_unit(A.cell) - (lstm ? 2 : 0);
  T* ws_g = A.ws && S > 0 ? A.ws : nullptr;
  T* ws_cprev = A.ws && lstm ? A.ws + T_ * B * S * H : nullptr;
  T* ws_tc = A.ws && lstm ? ws_cprev + T_ * B * H : nullptr;
  // The input projection xa (T B rows of G gate blocks of H, rows xa_ld apart). In training it is
  // written into the gate slots, which hold the same blocks at the same offsets of each row: the
  // gate kernel reads a row's pre-activations from there and overwrites them with the
  // activations (each unit's, after reading them), so no separate (T, B, G H) array is written
  // and read back, and the stores hit lines the loads just brought in. The RNN's (G = 1) goes into
  // y the same way: its gate kernel turns each pre-activation into the output in place.
  const bool xa_in_ws = ws_g != nullptr, xa_in_y = G == 1;
  const int64_t xa_ld = xa_in_ws ? S * H : GH;

  // The temporaries (Scratch): xa (LSTM and GRU inference), wp (units split only), the per-thread
  // recurrent products ha, packing buffers, prepacked step weights, h (double-buffered) and c.
  const PackSizes<Isa, T> ps(max_rows, G * max_nj, H);
  Scratch<T> scratch;
  const bool direct = rnn_steps_direct(T_, B, GH * H * static_cast<int64_t>(sizeof(T)));  // no time loop
  const size_t at_xa = scratch.reserve(xa_in_ws || xa_in_y ? 0 : T_ * B * GH),
               at_wp = scratch.reserve(split.by_rows || direct ? 0 : GH * H),
               at_ha = scratch.reserve(nt * max_rows * G * max_nj), at_pack = scratch.reserve((ps.a + ps.b) * nt),
               at_h = scratch.reserve(2 * B * H), at_c = scratch.reserve(lstm ? B * H : 0);
  StepWeights<Isa, T> wsteps(direct ? 0 : max_rows, H, G * max_nj, nt, scratch);
  scratch.allocate(rnn_scratch_block<Isa, T>());
  wsteps.bind(scratch);
  T* xa = xa_in_ws ? ws_g : xa_in_y ? A.y : scratch.at(at_xa);
  T* wp = scratch.at(at_wp);
  T* ha = scratch.at(at_ha);
  T* packbuf = scratch.at(at_pack);
  T* hbuf = scratch.at(at_h);
  T* cstate = scratch.at(at_c);

  // Input projection of all steps: xa (T B, G H) = x W_ih^T + bias (GRU: b_ih only; b_hh stays
  // inside the recurrent product because of r * (W_hn h + b_hn)). (Computing it per step for
  // each thread's units instead, from a packed W_ih, measured slower at 1 thread -- W_ih and
  // W_hh together no longer fit in L2 -- and no faster at 2.)
  std::vector<T> bias_x(static_cast<size_t>(GH), T(0));
  std::vector<T> bias_h(static_cast<size_t>(GH), T(0));
  const bool any_bias = A.b_ih || A.b_hh;
  for (int64_t k = 0; k < GH; ++k) {
    const T bi = A.b_ih ? A.b_ih[k] : T(0), bh = A.b_hh ? A.b_hh[k] : T(0);
    if (gru) {
      bias_x[k] = bi;
      bias_h[k] = bh;
    } else {
      bias_x[k] = bi + bh;
    }
  }
  gemm_full<Isa, T>(T_ * B, GH, I, A.x, I, false, A.w_ih, I, true, xa, xa_ld, any_bias ? bias_x.data() : nullptr,
                    A.nthreads);

  // W_hh^T with its columns permuted so each slice's G gate blocks are contiguous, one (H, G nj)
  // block per thread slice [lo, lo + nj) at wp + H G lo: its column g nj + jj is row g H + lo + jj
  // of W_hh (src_of below, indexed by G lo + column). (The step GEMM then reads B = W_hh^T
  // row-major, the fast layout of the kernels.) With rows split, wp is not used.
  std::vector<T> bp(static_cast<size_t>(GH));
  std::vector<int64_t> src_of(static_cast<size_t>(GH));  // wp column -> W_hh row
  for (int p = 0; p < nt; ++p) {
    const int64_t lo = split.j0[p], nj = split.j1[p] - split.j0[p];
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t jj = 0; jj < nj; ++jj) {
        const int64_t dst = G * lo + g * nj + jj, src = g * H + lo + jj;
        src_of[dst] = src;
        bp[dst] = bias_h[src];
      }
    }
  }
  std::memcpy(hbuf, A.h0, sizeof(T) * B * H);
  if (lstm) std::memcpy(cstate, A.c0, sizeof(T) * B * H);
  const bool gh_bias = gru && A.b_hh;

  // The gate kernel for row b of step t, units [j0, j0 + nj): hr is the row's recurrent product
  // (G gate blocks of nj), overwritten; states hcur -> hnext.
  auto gates_row = [&](int64_t t, int64_t b, T* hr, int64_t j0, int64_t nj, const T* hcur, T* hnext) {
    const bool act = row_active(A.lengths, b, t);
    const int64_t row = t * B + b;
    const T* xr = xa + row * xa_ld + j0;
    T* yr = A.y + row * H;
    T* wsg = ws_g ? ws_g + row * S * H : nullptr;
    if (lstm) {
      lstm_gates_row<Isa, T>(xr, H, hr, H, nj, j0, hcur + b * H, hnext + b * H, cstate + b * H, yr, wsg,
                             ws_cprev ? ws_cprev + row * H : nullptr, ws_tc ? ws_tc + row * H : nullptr, act);
    } else if (gru) {
      gru_gates_row<Isa, T>(xr, H, hr, H, nj, j0, hcur + b * H, hnext + b * H, yr, wsg, act);
    } else {
      rnn_gates_row<Isa, T>(xr, hr, nj, j0, relu, hcur + b * H, hnext + b * H, yr, act);
    }
  };

  if (direct) {
    // A step or two (a cell, a decoding loop feeding one step at a time), or a few steps over a
    // W_hh far larger than L2: W_hh is read where it is, once per step, by the driver's GEMM (the
    // dot path for a few rows), instead of being transposed or packed for a time loop that would
    // not repay it. ha (B, G H) in W_hh's row order: each row's gate blocks are H apart.
    for (int64_t s = 0; s < T_; ++s) {
      const int64_t t = A.reverse ? T_ - 1 - s : s;
      const T* hcur = hbuf + (s & 1) * B * H;
      T* hnext = hbuf + ((s + 1) & 1) * B * H;
      gemm_full<Isa, T>(B, GH, H, hcur, H, false, A.w_hh, H, true, ha, GH, gh_bias ? bias_h.data() : nullptr,
                        A.nthreads);
      const int ntg = threads_for(B * GH, A.nthreads);
#pragma omp parallel for num_threads(ntg) if (ntg > 1) schedule(static)
      for (int64_t b = 0; b < B; ++b) {
        DenormalsFlushed flush;
        gates_row(t, b, ha + b * GH, 0, H, hcur, hnext);
      }
    }
    std::memcpy(A.h_n, hbuf + (T_ & 1) * B * H, sizeof(T) * B * H);
    if (lstm) std::memcpy(A.c_n, cstate, sizeof(T) * B * H);
    return;
  }

  TeamCheck team;
  StepBarrier step_barrier(nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  if (!team.short_of(nt)) {
    DenormalsFlushed flush;
    const int p = omp_get_thread_num();
    const int64_t j0 = split.j0[p], nj = split.j1[p] - split.j0[p];
    const int64_t r0 = split.r0[p], r1 = split.r1[p];
    T* hap = ha + static_cast<size_t>(p) * max_rows * G * max_nj;
    T* abuf = packbuf + (ps.a + ps.b) * p;
    T* bbuf = abuf + ps.a;
    // B of the step product, op(B) = this thread's columns of W_hh^T (H x G nj). Split by units,
    // each thread transposes its own columns of wp (the only ones it reads), so they are
    // written into its own core's cache just before its time loop reads them every step; split
    // by rows, each packs all of W_hh^T straight from W_hh.
    const T* wblk = A.w_hh;
    int64_t ldw = H;
    bool wtrans = true;
    if (!split.by_rows) {
      // This thread's block of wp: H rows of G nj, contiguous (rows GH apart would use only some
      // of L1's sets, and the few-rows kernel counts on L1 keeping the previous step's end).
      T* own = wp + H * G * j0;
      permuted_transpose<Isa, T>(A.w_hh, H, G * nj, src_of.data() + G * j0, own, 0, G * nj);
      wblk = own, ldw = G * nj, wtrans = false;
    }
    const T* wpacked = nj > 0 ? wsteps.pack(p, wblk, ldw, H, G * nj, wtrans) : nullptr;
    for (int64_t s = 0; s < T_; ++s) {
      const int64_t t = A.reverse ? T_ - 1 - s : s;
      const T* hcur = hbuf + (s & 1) * B * H;
      T* hnext = hbuf + ((s + 1) & 1) * B * H;
      if (nj > 0 && r1 > r0) {
        // This step's rows of xa are far apart (G gate blocks per row, rows xa_ld apart), which the
        // hardware prefetchers do not follow: request this thread's part now, into L2, so it
        // arrives while the recurrent GEMM runs (measured: the gate kernel's loads of xa were
        // about a fifth of its time).
        for (int64_t b = r0; b < r1; ++b) {
          for (int64_t g = 0; g < G; ++g) prefetch_l2(xa + (t * B + b) * xa_ld + g * H + j0, nj);
        }
        // ha (rows, G nj) = h[rows] W_hh[own units]^T (+ b_hh for GRU)
        const GemmView<T> v{r1 - r0, G * nj, H, hcur + r0 * H, H, false, wblk, ldw, wtrans, hap, G * nj, T(1), T(0),
                            gh_bias ? bp.data() + G * j0 : nullptr, wpacked};
        gemm_here<Isa, T>(v, abuf, bbuf, /*few_rows_reverse=*/(s & 1) != 0);
        for (int64_t b = r0; b < r1; ++b) gates_row(t, b, hap + (b - r0) * G * nj, j0, nj, hcur, hnext);
      }
      if (!split.by_rows) step_barrier.wait();
    }
  }
  if (team.was_short()) return rnn_forward<Isa, T>(on_one_thread(A));
  std::memcpy(A.h_n, hbuf + (T_ & 1) * B * H, sizeof(T) * B * H);
  if (lstm) std::memcpy(A.c_n, cstate, sizeof(T) * B * H);
}

// ---------------------------------------------------------------------------------- backward
// Gate gradients for row b, owned units: writes dA_x (G H row of da) and, for GRU, dA_h (dah)
// and the direct term d z (dhz); updates the carried dc (LSTM). d = dh + dy.

template <class Isa, class T>
void lstm_grad_row(const T* dy, const T* dh, T* dc, const T* g4, const T* cprev, const T* tc, int64_t H, int64_t nj,
                   int64_t j0, T* da) {
  using V = Vec<Isa, T>;
  const auto one = V::set1(T(1));
  for_lanes<Isa, T>(nj, [&](auto L, int64_t jj) {
    const int64_t j = j0 + jj;
    const auto d = V::add(L.ld(dh + j), L.ld(dy + j));
    const auto i = L.ld(g4 + j), f = L.ld(g4 + H + j), g = L.ld(g4 + 2 * H + j), o = L.ld(g4 + 3 * H + j);
    const auto t = L.ld(tc + j);
    const auto dcc = V::fmadd(V::mul(d, o), V::fnmadd(t, t, one), L.ld(dc + j));
    L.st(da + j, V::mul(V::mul(dcc, g), V::fnmadd(i, i, i)));
    L.st(da + H + j, V::mul(V::mul(dcc, L.ld(cprev + j)), V::fnmadd(f, f, f)));
    L.st(da + 2 * H + j, V::mul(V::mul(dcc, i), V::fnmadd(g, g, one)));
    L.st(da + 3 * H + j, V::mul(V::mul(d, t), V::fnmadd(o, o, o)));
    L.st(dc + j, V::mul(dcc, f));
  });
}

template <class Isa, class T>
void gru_grad_row(const T* dy, const T* dh, const T* g4, const T* hprev, int64_t H, int64_t nj, int64_t j0, T* da,
                  T* dah, T* dhz) {
  using V = Vec<Isa, T>;
  const auto one = V::set1(T(1));
  for_lanes<Isa, T>(nj, [&](auto L, int64_t jj) {
    const int64_t j = j0 + jj;
    const auto d = V::add(L.ld(dh + j), L.ld(dy + j));
    const auto r = L.ld(g4 + j), z = L.ld(g4 + H + j), n = L.ld(g4 + 2 * H + j), hn = L.ld(g4 + 3 * H + j);
    const auto dn = V::mul(V::mul(d, V::sub(one, z)), V::fnmadd(n, n, one));
    const auto dz = V::mul(V::mul(d, V::sub(L.ld(hprev + j), n)), V::fnmadd(z, z, z));
    const auto dr = V::mul(V::mul(dn, hn), V::fnmadd(r, r, r));
    L.st(da + j, dr);
    L.st(da + H + j, dz);
    L.st(da + 2 * H + j, dn);
    L.st(dah + j, dr);
    L.st(dah + H + j, dz);
    L.st(dah + 2 * H + j, V::mul(dn, r));
    L.st(dhz + j, V::mul(d, z));
  });
}

template <class Isa, class T>
void rnn_grad_row(const T* dy, const T* dh, const T* hnew, bool relu, int64_t nj, int64_t j0, T* da) {
  using V = Vec<Isa, T>;
  for_lanes<Isa, T>(nj, [&](auto L, int64_t jj) {
    const int64_t j = j0 + jj;
    const auto d = V::add(L.ld(dh + j), L.ld(dy + j));
    const auto h = L.ld(hnew + j);
    const auto g = relu ? V::select(V::gt(h, V::zero()), d, V::zero()) : V::mul(d, V::fnmadd(h, h, V::set1(T(1))));
    L.st(da + j, g);
  });
}

// sum[g H + j] += row[g H + j] for the units j in [j0, j0 + nj) of each of the G gate blocks.
template <class Isa, class T>
void add_units(const T* row, int64_t G, int64_t H, int64_t j0, int64_t nj, T* sum) {
  using V = Vec<Isa, T>;
  for (int64_t g = 0; g < G; ++g) {
    const T* r = row + g * H + j0;
    T* s = sum + g * H + j0;
    for_lanes<Isa, T>(nj, [&](auto L, int64_t jj) { L.st(s + jj, V::add(L.ld(s + jj), L.ld(r + jj))); });
  }
}

template <class Isa, class T>
void zero_units(T* row, int64_t G, int64_t H, int64_t j0, int64_t nj) {
  for (int64_t g = 0; g < G; ++g) std::fill(row + g * H + j0, row + g * H + j0 + nj, T(0));
}

template <class Isa, class T>
void rnn_backward(const RnnBackwardArgs<T>& A) {
  if (A.w_hr) return lstm_proj_backward<Isa, T>(A);
  const int64_t T_ = A.steps, B = A.B, I = A.I, H = A.H, G = rnn_gates(A.cell);
  const int64_t GH = G * H;
  const bool lstm = A.cell == RnnCell::lstm, gru = A.cell == RnnCell::gru;
  const bool relu = A.cell == RnnCell::rnn_relu;
  const RnnSplit split = rnn_split<Isa, T>(H, B, G, A.nthreads);
  const int nt = split.nt;
  const int64_t max_nj = split.max_units, max_rows = split.max_rows;
  const int64_t S = rnn_workspace_per_unit(A.cell) - (lstm ? 2 : 0);  // gate slots in ws (rnn.h)
  const T* ws_g = A.ws;
  const T* ws_cprev = lstm ? A.ws + T_ * B * S * H : nullptr;
  const T* ws_tc = lstm ? ws_cprev + T_ * B * H : nullptr;
  // The state (H) that entered step t of row b, an active row (rnn.h): a row of y or of h0.
  auto h_entering = [&](int64_t t, int64_t b) -> const T* {
    if (!A.reverse) return t > 0 ? A.y + ((t - 1) * B + b) * H : A.h0 + b * H;
    const int64_t len = A.lengths ? A.lengths[b] : T_;
    return t + 1 < len ? A.y + ((t + 1) * B + b) * H : A.h0 + b * H;
  };

  const PackSizes<Isa, T> ps(max_rows, max_nj, GH);
  // Temporaries (Scratch): da = d(input projection), GRU's dah = d(recurrent product) and dhz,
  // the carried dh and dc, per-thread step products, packing buffers and step weights.
  Scratch<T> scratch;
  const size_t at_da = scratch.reserve(T_ * B * GH), at_dah = scratch.reserve(gru ? T_ * B * GH : 0),
               at_dhz = scratch.reserve(gru ? B * H : 0), at_dh = scratch.reserve(B * H),
               at_dc = scratch.reserve(lstm ? B * H : 0), at_tmp = scratch.reserve(nt * max_rows * max_nj),
               at_pack = scratch.reserve((ps.a + ps.b) * nt), at_sx = scratch.reserve(B * GH),
               at_sh = scratch.reserve(gru ? B * H : 0),
               at_first = scratch.reserve(A.reverse && A.lengths ? B * GH : 0);
  const bool direct = rnn_steps_direct(T_, B, GH * H * static_cast<int64_t>(sizeof(T)));  // no time loop
  StepWeights<Isa, T> wsteps(direct ? 0 : max_rows, GH, max_nj, nt, scratch);
  // Split by units with too few rows to prepack, each thread copies its columns of W_hh into a
  // contiguous (G H, nj) block at wcols + G H j0 (read in place they are rows H apart, which use
  // only some of L1's sets; see few_rows_gemm). LSTM B=1 T=128 H=128 backward, 2 threads: 600 -> 490 us.
  const bool copy_columns = !direct && !split.by_rows && wsteps.per_thread == 0 && nt > 1;
  const size_t at_wcols = scratch.reserve(copy_columns ? GH * H : 0);
  scratch.allocate(rnn_scratch_block<Isa, T>());
  wsteps.bind(scratch);
  T* da = scratch.at(at_da);
  T* dah = gru ? scratch.at(at_dah) : nullptr;
  T* dhz = scratch.at(at_dhz);
  T* dh = scratch.at(at_dh);
  T* dc = scratch.at(at_dc);
  T* tmp = scratch.at(at_tmp);
  T* packbuf = scratch.at(at_pack);
  T* wcols = scratch.at(at_wcols);
  // The bias gradients are column sums of dA_x and dA_h over all T B rows. They are summed per
  // batch row over the steps inside the loop, while each row's gradients are still in L1, and
  // over the batch rows after it: the same order whichever thread owns a row or unit, so the
  // result does not depend on the thread count, and dA is not read again from memory (T=64 B=32
  // I=H=256, 2 threads, whole backward against a pass over dA after the loop: GRU 12.02 -> 11.72
  // ms, LSTM 15.37 -> 15.16).
  T* sum_x = scratch.at(at_sx);                        // (B, G H): sum over t of dA_x[t, b]
  // GRU: dA_h equals dA_x in the r and z blocks (the same values, stored twice), so only its n
  // block, r * dn, is summed separately, and db_hh's r and z blocks are db_ih's.
  T* sum_h = gru ? scratch.at(at_sh) : nullptr;        // (B, H): sum over t of dA_h[t, b, n block] (GRU)
  std::fill(sum_x, sum_x + B * GH, T(0));
  if (sum_h) std::fill(sum_h, sum_h + B * H, T(0));
  std::memcpy(dh, A.dh_n, sizeof(T) * B * H);
  if (lstm) std::memcpy(dc, A.dc_n, sizeof(T) * B * H);
  const T* dA_h = gru ? dah : da;

  // Gate gradients of row b at step t, units [j0, j0 + nj): dA_x (and GRU's dA_h, d z) from
  // d = dh + dy; the carried dc (LSTM); the row's bias-gradient sums.
  auto grad_row_at = [&](int64_t t, int64_t b, int64_t j0, int64_t nj) {
    const int64_t row = t * B + b;
    T* dar = da + row * GH;
    if (!row_active(A.lengths, b, t)) {
      zero_units<Isa, T>(dar, G, H, j0, nj);
      if (gru) zero_units<Isa, T>(dah + row * GH, G, H, j0, nj);
      return;
    }
    const T* dyr = A.dy + row * H;
    if (lstm) {
      lstm_grad_row<Isa, T>(dyr, dh + b * H, dc + b * H, ws_g + row * S * H, ws_cprev + row * H, ws_tc + row * H,
                            H, nj, j0, dar);
    } else if (gru) {
      gru_grad_row<Isa, T>(dyr, dh + b * H, ws_g + row * S * H, h_entering(t, b), H, nj, j0, dar,
                           dah + row * GH, dhz + b * H);
    } else {  // h' is the row's output
      rnn_grad_row<Isa, T>(dyr, dh + b * H, A.y + row * H, relu, nj, j0, dar);
    }
    add_units<Isa, T>(dar, G, H, j0, nj, sum_x + b * GH);
    if (gru) add_units<Isa, T>(dah + row * GH + 2 * H, 1, H, j0, nj, sum_h + b * H);
  };
  // dh[b, units j0 + jj] = tr[jj] (the step product's row) (+ d z for GRU); inactive rows keep dh.
  auto take_dh = [&](int64_t t, int64_t b, const T* tr, int64_t j0, int64_t nj) {
    if (!row_active(A.lengths, b, t)) return;
    T* dhr = dh + b * H + j0;
    if (gru) {
      const T* z = dhz + b * H + j0;
      for (int64_t jj = 0; jj < nj; ++jj) dhr[jj] = tr[jj] + z[jj];
    } else {
      std::memcpy(dhr, tr, sizeof(T) * nj);
    }
  };

  if (direct) {
    // As the forward (rnn_steps_direct): W_hh read in place by the GEMM driver, step by step, no
    // per-thread copies or packs. Backward at T=1, 2 threads: LSTM B=1 H=1024 3.08 -> 2.25 ms, B=8
    // H=512 723 -> 635 us, B=1 H=256 139 -> 112 us.
    const int ntg = threads_for(B * GH, A.nthreads);
    for (int64_t s = T_ - 1; s >= 0; --s) {
      const int64_t t = A.reverse ? T_ - 1 - s : s;
#pragma omp parallel for num_threads(ntg) if (ntg > 1) schedule(static)
      for (int64_t b = 0; b < B; ++b) {
        DenormalsFlushed flush;
        grad_row_at(t, b, 0, H);
      }
      // tmp (B, H) = dA_h[t] (B, G H) @ W_hh (G H, H)
      gemm_full<Isa, T>(B, H, GH, dA_h + t * B * GH, GH, false, A.w_hh, H, false, tmp, H, nullptr, A.nthreads);
      for (int64_t b = 0; b < B; ++b) take_dh(t, b, tmp + b * H, 0, H);
    }
  } else {
    TeamCheck team;
    StepBarrier step_barrier(nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    if (!team.short_of(nt)) {
      DenormalsFlushed flush;
      const int p = omp_get_thread_num();
      const int64_t j0 = split.j0[p], nj = split.j1[p] - split.j0[p];
      const int64_t r0 = split.r0[p], r1 = split.r1[p];
      T* tp = tmp + static_cast<size_t>(p) * max_rows * max_nj;
      T* abuf = packbuf + (ps.a + ps.b) * p;
      T* bbuf = abuf + ps.a;
      const T* wpacked = nj > 0 ? wsteps.pack(p, A.w_hh + j0, H, GH, nj) : nullptr;
      const T* wown = A.w_hh + j0;  // op(B) of the step product: W_hh[:, own units] (G H, nj)
      int64_t ldw = H;
      if (copy_columns && nj > 0) {
        T* own = wcols + GH * j0;
        for (int64_t r = 0; r < GH; ++r) std::memcpy(own + r * nj, A.w_hh + r * H + j0, sizeof(T) * nj);
        wown = own, ldw = nj;
      }
      for (int64_t s = T_ - 1; s >= 0; --s) {
        const int64_t t = A.reverse ? T_ - 1 - s : s;
        if (nj > 0) {
          for (int64_t b = r0; b < r1; ++b) grad_row_at(t, b, j0, nj);
        }
        // Split by units, the product below reads every unit's gradients: wait for the others.
        if (!split.by_rows) step_barrier.wait();
        if (nj > 0 && r1 > r0) {
          // dh[rows, own] = dA_h[t, rows] (rows, G H) @ W_hh[:, own] (G H, nj)  (+ d z for GRU);
          // inactive rows keep dh.
          const GemmView<T> v{r1 - r0, nj, GH, dA_h + (t * B + r0) * GH, GH, false, wown, ldw, false, tp, nj,
                              T(1), T(0), nullptr, wpacked};
          gemm_here<Isa, T>(v, abuf, bbuf, /*few_rows_reverse=*/(s & 1) != 0);
          for (int64_t b = r0; b < r1; ++b) take_dh(t, b, tp + (b - r0) * nj, j0, nj);
        }
        // The next step's stage 1 touches only this thread's columns (or rows) of dh and another
        // time row of da, so no second barrier is needed here.
      }
    }
    if (team.was_short()) return rnn_backward<Isa, T>(on_one_thread(A));
  }
  std::memcpy(A.dh0, dh, sizeof(T) * B * H);
  if (lstm) std::memcpy(A.dc0, dc, sizeof(T) * B * H);
  const int64_t R = T_ * B;
  // dx (T B, I) = dA_x W_ih;  dW_ih = dA_x^T x;  dW_hh = sum over (t, b) of dA_h[t, b]^T (state
  // entering step t of row b);  biases: column sums.
  gemm_full<Isa, T>(R, I, GH, da, GH, false, A.w_ih, I, false, A.dx, I, nullptr, A.nthreads);
  // dW_hh in two parts (see h_entering): the steps whose entering state is h0, one per row, then
  // += the others against y shifted by one step, (T-1) B rows of dA_h:
  //   forward:  dA_h[0]^T h0  +  dA_h[1:]^T y[:-1]
  //   reverse:  (dA_h[length_b - 1, b] for each b)^T h0  +  dA_h[:-1]^T y[1:]
  // In the reverse sum, a row shorter than T meets its h0 step inside dA_h[:-1] too, against
  // y[length_b, b] = 0 (inactive), and its steps past length_b have dA_h = 0.
  const T* dA_first = dA_h + (A.reverse ? (T_ - 1) * B * GH : 0);
  if (A.reverse && A.lengths) {
    T* gathered = scratch.at(at_first);  // (B, G H)
    for (int64_t b = 0; b < B; ++b) {
      std::memcpy(gathered + b * GH, dA_h + ((A.lengths[b] - 1) * B + b) * GH, sizeof(T) * GH);
    }
    dA_first = gathered;
  }
  gemm_full<Isa, T>(GH, H, B, dA_first, GH, true, A.h0, H, false, A.dw_hh, H, nullptr, A.nthreads);
  // The two weight-gradient products (G H x I and G H x H, k = T B and (T-1) B) run as a pair: at
  // two threads each on its own core, nothing packed twice (the first done helps with the other's
  // blocks; gemm_pair). Measured before that help existed (T=64 B=32 I=H=256, 2 threads, whole
  // backward: RNN 4.08 -> 3.83 ms, GRU 12.09 -> 11.75, LSTM even; pairing dx with dW_ih measured
  // no faster).
  GemmProblem<T> dw_ih, dw_hh;
  dw_ih.m = GH, dw_ih.n = I, dw_ih.k = R, dw_ih.a = da, dw_ih.lda = GH, dw_ih.trans_a = true;
  dw_ih.b = A.x, dw_ih.ldb = I, dw_ih.c = A.dw_ih, dw_ih.ldc = I;
  dw_hh.m = GH, dw_hh.n = H, dw_hh.k = R - B, dw_hh.lda = GH, dw_hh.trans_a = true;
  dw_hh.a = A.reverse ? dA_h : dA_h + B * GH;
  dw_hh.b = A.reverse ? A.y + B * H : A.y, dw_hh.ldb = H, dw_hh.c = A.dw_hh, dw_hh.ldc = H, dw_hh.beta = T(1);
  gemm_pair<Isa, T>(&dw_ih, T_ > 1 ? &dw_hh : nullptr, A.nthreads);
  column_sums<Isa, T>(sum_x, B, GH, A.db_ih, 1);
  if (gru) {
    std::memcpy(A.db_hh, A.db_ih, sizeof(T) * 2 * H);
    column_sums<Isa, T>(sum_h, B, H, A.db_hh + 2 * H, 1);
  } else {
    std::memcpy(A.db_hh, A.db_ih, sizeof(T) * GH);
  }
}


// ------------------------------------------------------------------- LSTM with a projection
// Per step, two phases with a barrier after each: (A) thread p owns hidden units [lo, hi): its
// rows of the recurrent product (k = P) and the gates, writing h_raw = o tanh(c') for its units;
// (B) thread p owns projection columns [qlo, qhi): h'[:, own] = h_raw W_hr^T[:, own]. Backward:
// (0) d = dh + dy on own columns (kept for dW_hr), (1) dh_raw = d W_hr[:, own units] and the gate
// gradients, (2) dh[:, own columns] = dA W_hh[:, own columns]; barriers after (0) and (1).

template <class Isa, class T>
void lstm_proj_forward(const RnnForwardArgs<T>& A) {
  using V = Vec<Isa, T>;
  const int64_t T_ = A.steps, B = A.B, I = A.I, H = A.H, P = A.P, G = 4, GH = 4 * H;
  constexpr int64_t W = V::width;
  const int nt = rnn_threads<Isa, T>(H, B, G, A.nthreads);
  std::vector<T> bias_x(static_cast<size_t>(GH), T(0));
  for (int64_t k = 0; k < GH; ++k) bias_x[k] = (A.b_ih ? A.b_ih[k] : T(0)) + (A.b_hh ? A.b_hh[k] : T(0));
  auto xa = uninit<T>(T_ * B * GH);
  gemm_full<Isa, T>(T_ * B, GH, I, A.x, I, false, A.w_ih, I, true, xa.get(), GH,
                    (A.b_ih || A.b_hh) ? bias_x.data() : nullptr, A.nthreads);
  std::vector<int64_t> lo(nt), hi(nt), qlo(nt), qhi(nt);
  for (int p = 0; p < nt; ++p) {
    thread_slice(H, nt, p, W, &lo[p], &hi[p]);
    thread_slice(P, nt, p, W, &qlo[p], &qhi[p]);
  }
  // W_hh^T (P, 4H) with each thread's gate blocks contiguous (as rnn_forward); W_hr^T (H, P).
  auto wp = uninit<T>(GH * P);
  auto whrT = uninit<T>(H * P);
  std::vector<int64_t> src_of(static_cast<size_t>(GH));  // wp column -> W_hh row
  for (int p = 0; p < nt; ++p) {
    const int64_t nj = hi[p] - lo[p];
    for (int64_t g = 0; g < G; ++g)
      for (int64_t jj = 0; jj < nj; ++jj) src_of[G * lo[p] + g * nj + jj] = g * H + lo[p] + jj;
  }
  permuted_transpose<Isa, T>(A.w_hh, P, GH, src_of.data(), wp.get(), 0, GH);
  std::vector<int64_t> identity(static_cast<size_t>(P));
  std::iota(identity.begin(), identity.end(), int64_t(0));
  permuted_transpose<Isa, T>(A.w_hr, H, P, identity.data(), whrT.get(), 0, P);
  int64_t max_nj = 0, max_nq = 0;
  for (int p = 0; p < nt; ++p) {
    max_nj = std::max(max_nj, hi[p] - lo[p]);
    max_nq = std::max(max_nq, qhi[p] - qlo[p]);
  }
  std::vector<T> ha(static_cast<size_t>(nt * B * G * max_nj)), hq(static_cast<size_t>(nt * B * max_nq));
  const PackSizes<Isa, T> ps1(B, G * max_nj, P), ps2(B, max_nq, H);
  const size_t pa = std::max(ps1.a, ps2.a), pb = std::max(ps1.b, ps2.b);
  std::vector<T> packbuf((pa + pb) * nt + 64);
  std::vector<T> hbuf(static_cast<size_t>(2 * B * P));
  std::memcpy(hbuf.data(), A.h0, sizeof(T) * B * P);
  std::vector<T> cstate(A.c0, A.c0 + B * H);
  std::vector<T> hraw(static_cast<size_t>(B * H));
  std::vector<T> ydummy(static_cast<size_t>(nt * H));  // per thread: the gate kernel's unused y row
  T* ws_g = A.ws;
  T* ws_hprev = A.ws ? ws_g + T_ * B * GH : nullptr;
  T* ws_cprev = A.ws ? ws_hprev + T_ * B * P : nullptr;
  T* ws_tc = A.ws ? ws_cprev + T_ * B * H : nullptr;
  T* ws_hraw = A.ws ? ws_tc + T_ * B * H : nullptr;

  TeamCheck team;
  StepBarrier step_barrier(nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  if (!team.short_of(nt)) {
    DenormalsFlushed flush;
    const int p = omp_get_thread_num();
    const int64_t j0 = lo[p], nj = hi[p] - lo[p], q0 = qlo[p], nq = qhi[p] - qlo[p];
    T* hap = ha.data() + static_cast<size_t>(p) * B * G * max_nj;
    T* hqp = hq.data() + static_cast<size_t>(p) * B * max_nq;
    T* abuf = aligned64(packbuf) + (pa + pb) * p;
    T* bbuf = abuf + pa;
    for (int64_t s = 0; s < T_; ++s) {
      const int64_t t = A.reverse ? T_ - 1 - s : s;
      const T* hcur = hbuf.data() + (s & 1) * B * P;
      T* hnext = hbuf.data() + ((s + 1) & 1) * B * P;
      if (nj > 0) {
        const GemmView<T> v{B, G * nj, P, hcur, P, false, wp.get() + G * j0, GH, false, hap, G * nj, T(1), T(0),
                            nullptr};
        gemm_here<Isa, T>(v, abuf, bbuf, /*few_rows_reverse=*/(s & 1) != 0);
        for (int64_t b = 0; b < B; ++b) {
          const int64_t row = t * B + b;
          if (!row_active(A.lengths, b, t)) {
            // h_raw of a skipped step is 0 in the workspace (dW_hr multiplies it by d = 0)
            if (ws_hraw) std::fill(ws_hraw + row * H + j0, ws_hraw + row * H + j0 + nj, T(0));
            continue;
          }
          // the gate kernel with h = h_raw (read and written at own units), y = the workspace copy
          lstm_gates_row<Isa, T>(xa.get() + row * GH + j0, H, hap + b * G * nj, H, nj, j0, hraw.data() + b * H,
                                 hraw.data() + b * H, cstate.data() + b * H,
                                 ws_hraw ? ws_hraw + row * H : ydummy.data() + p * H, ws_g ? ws_g + row * GH : nullptr,
                                 ws_cprev ? ws_cprev + row * H : nullptr, ws_tc ? ws_tc + row * H : nullptr,
                                 true);
        }
      }
      step_barrier.wait();
      if (nq > 0) {
        const GemmView<T> v{B, nq, H, hraw.data(), H, false, whrT.get() + q0, P, false, hqp, nq, T(1), T(0),
                            nullptr};
        gemm_here<Isa, T>(v, abuf, bbuf, /*few_rows_reverse=*/(s & 1) != 0);
        for (int64_t b = 0; b < B; ++b) {
          const int64_t row = t * B + b;
          T* yr = A.y + row * P + q0;
          const T* hc = hcur + b * P + q0;
          if (ws_hprev) std::memcpy(ws_hprev + row * P + q0, hc, sizeof(T) * nq);
          if (row_active(A.lengths, b, t)) {
            std::memcpy(hnext + b * P + q0, hqp + b * nq, sizeof(T) * nq);
            std::memcpy(yr, hqp + b * nq, sizeof(T) * nq);
          } else {
            std::memcpy(hnext + b * P + q0, hc, sizeof(T) * nq);
            std::fill(yr, yr + nq, T(0));
          }
        }
      }
      step_barrier.wait();
    }
  }
  if (team.was_short()) return lstm_proj_forward<Isa, T>(on_one_thread(A));
  std::memcpy(A.h_n, hbuf.data() + (T_ & 1) * B * P, sizeof(T) * B * P);
  std::memcpy(A.c_n, cstate.data(), sizeof(T) * B * H);
}

template <class Isa, class T>
void lstm_proj_backward(const RnnBackwardArgs<T>& A) {
  const int64_t T_ = A.steps, B = A.B, I = A.I, H = A.H, P = A.P, G = 4, GH = 4 * H;
  constexpr int64_t W = Vec<Isa, T>::width;
  const int nt = rnn_threads<Isa, T>(H, B, G, A.nthreads);
  const T* ws_g = A.ws;
  const T* ws_hprev = ws_g + T_ * B * GH;
  const T* ws_cprev = ws_hprev + T_ * B * P;
  const T* ws_tc = ws_cprev + T_ * B * H;
  const T* ws_hraw = ws_tc + T_ * B * H;
  auto da = uninit<T>(T_ * B * GH);
  auto dseq = uninit<T>(T_ * B * P);  // d = dh + dy per step (0 on inactive rows), for dW_hr
  std::vector<T> dh(A.dh_n, A.dh_n + B * P);
  std::vector<T> dc(A.dc_n, A.dc_n + B * H);
  std::vector<int64_t> lo(nt), hi(nt), qlo(nt), qhi(nt);
  for (int p = 0; p < nt; ++p) {
    thread_slice(H, nt, p, W, &lo[p], &hi[p]);
    thread_slice(P, nt, p, W, &qlo[p], &qhi[p]);
  }
  int64_t max_nj = 0, max_nq = 0;
  for (int p = 0; p < nt; ++p) {
    max_nj = std::max(max_nj, hi[p] - lo[p]);
    max_nq = std::max(max_nq, qhi[p] - qlo[p]);
  }
  std::vector<T> draw(static_cast<size_t>(B * H)), tq(static_cast<size_t>(nt * B * max_nq));  // dh_raw
  std::vector<T> zeros(static_cast<size_t>(H), T(0));
  const PackSizes<Isa, T> ps1(B, max_nj, P), ps2(B, max_nq, GH);
  const size_t pa = std::max(ps1.a, ps2.a), pb = std::max(ps1.b, ps2.b);
  std::vector<T> packbuf((pa + pb) * nt + 64);

  TeamCheck team;
  StepBarrier step_barrier(nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  if (!team.short_of(nt)) {
    DenormalsFlushed flush;
    const int p = omp_get_thread_num();
    const int64_t j0 = lo[p], nj = hi[p] - lo[p], q0 = qlo[p], nq = qhi[p] - qlo[p];
    T* tqp = tq.data() + static_cast<size_t>(p) * B * max_nq;
    T* abuf = aligned64(packbuf) + (pa + pb) * p;
    T* bbuf = abuf + pa;
    for (int64_t s = T_ - 1; s >= 0; --s) {
      const int64_t t = A.reverse ? T_ - 1 - s : s;
      for (int64_t b = 0; b < B && nq > 0; ++b) {  // (0) d on own columns
        T* d = dseq.get() + (t * B + b) * P + q0;
        if (row_active(A.lengths, b, t)) {
          const T* dyr = A.dy + (t * B + b) * P + q0;
          const T* dhr = dh.data() + b * P + q0;
          for (int64_t q = 0; q < nq; ++q) d[q] = dhr[q] + dyr[q];
        } else {
          std::fill(d, d + nq, T(0));
        }
      }
      step_barrier.wait();
      if (nj > 0) {  // (1) dh_raw (B, own units) = d (B, P) W_hr[:, own]; gate gradients
        const GemmView<T> v{B, nj, P, dseq.get() + t * B * P, P, false, A.w_hr + j0, H, false, draw.data() + j0, H,
                            T(1), T(0), nullptr};
        gemm_here<Isa, T>(v, abuf, bbuf, /*few_rows_reverse=*/(s & 1) != 0);
        for (int64_t b = 0; b < B; ++b) {
          const int64_t row = t * B + b;
          T* dar = da.get() + row * GH;
          if (!row_active(A.lengths, b, t)) {
            zero_units<Isa, T>(dar, G, H, j0, nj);
            continue;
          }
          // lstm_grad_row takes d = dh + dy at its units: here dh_raw + 0
          lstm_grad_row<Isa, T>(zeros.data(), draw.data() + b * H, dc.data() + b * H, ws_g + row * GH,
                                ws_cprev + row * H, ws_tc + row * H, H, nj, j0, dar);
        }
      }
      step_barrier.wait();
      if (nq > 0) {  // (2) dh[:, own columns] = dA (B, 4H) W_hh[:, own columns]
        const GemmView<T> v{B, nq, GH, da.get() + t * B * GH, GH, false, A.w_hh + q0, P, false, tqp, nq, T(1),
                            T(0), nullptr};
        gemm_here<Isa, T>(v, abuf, bbuf, /*few_rows_reverse=*/(s & 1) != 0);
        for (int64_t b = 0; b < B; ++b) {
          if (row_active(A.lengths, b, t)) std::memcpy(dh.data() + b * P + q0, tqp + b * nq, sizeof(T) * nq);
        }
      }
      // (0) of the next step touches only own columns of dh and another time row of dseq.
    }
  }
  if (team.was_short()) return lstm_proj_backward<Isa, T>(on_one_thread(A));
  std::memcpy(A.dh0, dh.data(), sizeof(T) * B * P);
  std::memcpy(A.dc0, dc.data(), sizeof(T) * B * H);
  const int64_t R = T_ * B;
  gemm_full<Isa, T>(R, I, GH, da.get(), GH, false, A.w_ih, I, false, A.dx, I, nullptr, A.nthreads);
  gemm_full<Isa, T>(GH, I, R, da.get(), GH, true, A.x, I, false, A.dw_ih, I, nullptr, A.nthreads);
  gemm_full<Isa, T>(GH, P, R, da.get(), GH, true, ws_hprev, P, false, A.dw_hh, P, nullptr, A.nthreads);
  gemm_full<Isa, T>(P, H, R, dseq.get(), P, true, ws_hraw, H, false, A.dw_hr, H, nullptr, A.nthreads);
  column_sums<Isa, T>(da.get(), R, GH, A.db_ih, A.nthreads);
  std::memcpy(A.db_hh, A.db_ih, sizeof(T) * GH);
}

}  // namespace

template <>
const RnnKernels& rnn_kernels<TargetIsa>() {
  static const RnnKernels table{
      &rnn_forward<TargetIsa, float>,
      &rnn_forward<TargetIsa, double>,
      &rnn_backward<TargetIsa, float>,
      &rnn_backward<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
