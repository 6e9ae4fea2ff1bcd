// Scaled dot-product attention kernels, forward and backward side by side (formulas and shapes in
// attention.h). Compiled once per ISA. Per tile, the products Q_blk K_blk^T, P V_blk, P^T dO,
// dO V^T, dS K and dS^T Q run on the GEMM's packed micro-kernel (single-threaded, on the calling
// thread's packing buffers); the softmax steps are vectorized row loops.
#include "ops/attention.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "gemm/gemm.h"
#include "ops/softmax.h"
#include "runtime/denormals.h"
#include "runtime/isa_target.h"
#include "simd/vec.h"

namespace seqblocks {
namespace {

// Query rows x key columns of one tile. The S/P tile (BR x BC) stays in L1/L2.
// Key blocks of 128 measured fastest (CPU time, B=4 H=8 L=S=512 E=64) for causal attention too,
// although 64 would compute fewer masked scores in the diagonal tiles: 32 / 64 / 128 / 256 ->
// 17.5 / 15.0 / 14.0 / 15.4 ms causal, 29.1 / 25.2 / 22.7 / 23.3 ms not causal.
constexpr int64_t kFwdBr = 64, kFwdBc = 128;
constexpr int64_t kBwdBr = 64, kBwdBc = 64;

// Scores are kept in base 2, s2 = log2(e) s (the factor folded into the product's alpha and
// into a float mask), so that the softmax takes 2^(s2 - max) (rowops::exp2_approx, 10 vector
// operations) rather than e^(s - max) (13), together with mul_pow2i: forward 3%, backward 2%
// faster. The workspace keeps m2 (the base-2 row maximum) and log2 l per row (attention.h).
template <class T>
constexpr T kLog2e = T(1.4426950408889634);

// C = alpha op(A) op(B) + beta C on one thread (GEMM driver's packed path; see gemm/gemm.h);
// a_packed: A already packed by PrepackedA, or null.
template <class Isa, class T>
void tile_gemm(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, bool ta, const T* b, int64_t ldb, bool tb,
               T* c, int64_t ldc, T alpha, T beta, T* abuf, T* bbuf, const T* a_packed = nullptr) {
  GemmView<T> v{m, n, k, a, lda, ta, b, ldb, tb, c, ldc, alpha, beta, nullptr};
  v.a_packed = a_packed;
  gemm_packed<Isa, T>(v, abuf, bbuf);
}

template <class Isa, class T>
void scale_row(T* x, int64_t n, T s) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  const auto vs = V::set1(s);
  int64_t j = 0;
  for (; j + W <= n; j += W) V::store(x + j, V::mul(V::load(x + j), vs));
  if (j < n) V::store_tail(x + j, V::mul(V::load_tail(x + j, static_cast<int>(n - j)), vs), static_cast<int>(n - j));
}

template <class Isa, class T>
T dot_row(const T* a, const T* b, int64_t n) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  auto acc = V::zero();
  int64_t j = 0;
  for (; j + W <= n; j += W) acc = V::fmadd(V::load(a + j), V::load(b + j), acc);
  if (j < n) {
    const int r = static_cast<int>(n - j);
    acc = V::fmadd(V::load_tail(a + j, r), V::load_tail(b + j, r), acc);
  }
  return V::hsum(acc);
}

// x[j] = 2^(x[j] - sub) for j < n (scores in base 2, see kLog2e), or 2^((x[j] - sub) - sub2)
// with kTwoShifts; returns the sum (masked lanes excluded).
template <class Isa, class T, bool kTwoShifts = false>
T exp2_row(T* x, int64_t n, T sub, T sub2 = T(0)) {
  using V = Vec<Isa, T>;
  constexpr int W = V::width;
  const auto vm = V::set1(sub), vm2 = V::set1(sub2);
  const auto shift = [&](typename V::reg v) { return kTwoShifts ? V::sub(V::sub(v, vm), vm2) : V::sub(v, vm); };
  auto s0 = V::zero();
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    const auto e = rowops::exp2_approx<Isa, T>(shift(V::load(x + j)));
    V::store(x + j, e);
    s0 = V::add(s0, e);
  }
  if (j < n) {
    const int r = static_cast<int>(n - j);
    const auto e = V::select(rowops::tail_mask<Isa, T>(r), rowops::exp2_approx<Isa, T>(shift(V::load_tail(x + j, r))),
                             V::zero());
    V::store_tail(x + j, e, r);
    s0 = V::add(s0, e);
  }
  return V::hsum(s0);
}

static inline uint64_t sdpa_splitmix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ULL;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z;
}

// Dropout factors of docs/ops.md for probability indices [idx0, idx0 + n): f = scale or 0.
struct DropoutKey {
  bool on = false;
  uint64_t seed = 0, threshold = 0;
  double scale = 1.0;
};
static inline DropoutKey make_dropout(double p, uint64_t seed) {
  DropoutKey d;
  d.on = p > 0.0;
  d.seed = seed;
  d.threshold = static_cast<uint64_t>(std::ceil(p * 16777216.0));
  d.scale = p >= 1.0 ? 0.0 : 1.0 / (1.0 - p);
  return d;
}
template <class T>
void apply_dropout(T* x, int64_t n, uint64_t idx0, const DropoutKey& d) {
  const T scale = static_cast<T>(d.scale);
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t z = d.seed + (idx0 + static_cast<uint64_t>(j)) * 0x9E3779B97F4A7C15ULL;
    x[j] = (sdpa_splitmix64(z) >> 40) >= d.threshold ? x[j] * scale : T(0);
  }
}

// x (rows, cols), row stride ldx -> blocked transpose: for each block of bc rows starting at j0, an
// (cols x bc) panel at xt + j0 * cols holding x[j0 + c][e] at [e * bc + c]. The score products
// then read K^T (and the backward V^T) in place, with no per-tile packing. Width x width register
// transposes where available (scalar element stores bc apart cost ~2 ns per element, 9% of the
// forward at L = S = 512), scalar for the remaining columns.
template <class Isa, class T>
void transpose_blocked(const T* x, int64_t ldx, int64_t rows, int64_t cols, int64_t bc, T* xt) {
  constexpr int64_t W = Vec<Isa, T>::width;
  const int64_t cols_vec = TransposeBlock<Isa, T>::available ? cols / W * W : 0;
  for (int64_t j0 = 0; j0 < rows; j0 += bc) {
    const int64_t nb = std::min(bc, rows - j0);
    T* panel = xt + j0 * cols;
    for (int64_t c0 = 0; c0 < nb; c0 += W) {
      const int rows_here = static_cast<int>(std::min(W, nb - c0));
      for (int64_t e0 = 0; e0 < cols_vec; e0 += W) {
        TransposeBlock<Isa, T>::run(x + (j0 + c0) * ldx + e0, ldx, rows_here, panel + e0 * bc + c0, bc);
      }
    }
    for (int64_t c = 0; c < nb; ++c) {
      const T* row = x + (j0 + c) * ldx;
      for (int64_t e = cols_vec; e < cols; ++e) panel[e * bc + c] = row[e];
    }
  }
}

// x (rows, cols) with row stride ldx -> the same rows contiguous in dense (row stride cols), or x
// itself when its rows already are. Operands read straight from a packed projection or merged
// heads have rows 2-6 KiB apart, which a tile product reading them as its B (V in P V; K, Q and
// dO in the backward) re-reads from a few L1 sets; dense, they are one block that stays in L1
// (64 x 64 x 128 P V, one thread: 118 GFLOP/s packing V per tile, 142 from a dense copy).
template <class T>
const T* dense_rows(const T* x, int64_t ldx, int64_t rows, int64_t cols, T* dense) {
  if (ldx == cols) return x;
  for (int64_t r = 0; r < rows; ++r) std::copy(x + r * ldx, x + r * ldx + cols, dense + r * cols);
  return dense;
}

// Scratch elements of backward_one's dense copies of q, k and dout (none for dense operands).
template <class T>
size_t backward_dense_elems(const SdpaArgs<T>& a) {
  return static_cast<size_t>((a.q_at.row != a.e ? a.l * a.e : 0) + (a.k_at.row != a.e ? a.s * a.e : 0) +
                             (a.dout_at.row != a.ev ? a.l * a.ev : 0));
}

// Scores of one tile in base 2: srow = log2(e) (scale q k^T (already in S) + mask), -inf above the
// causal diagonal.
template <class T>
void mask_tile(const SdpaArgs<T>& a, int64_t n, int64_t i0, int64_t rows, int64_t j0, int64_t cols, T* s,
               int64_t lds) {
  const T ninf = -std::numeric_limits<T>::infinity();
  // log2(e) m, saturated at +-max for a finite m: a mask value near the type's limit (the common
  // finfo.min "padding" value) must stay finite, as it is in natural units (a row masked with it
  // everywhere then averages its values, as PyTorch's does), not become +-inf.
  const auto scaled = [](T m) {
    constexpr T big = std::numeric_limits<T>::max();
    const T m2 = kLog2e<T> * m;
    return (std::fabs(m2) > big) & (std::fabs(m) <= big) ? std::copysign(big, m) : m2;
  };
  for (int64_t r = 0; r < rows; ++r) {
    T* srow = s + r * lds;
    const int64_t i = i0 + r;
    if (a.mask) {
      const T* mrow = a.mask + a.mask_off[n] + i * a.mask_sl + j0 * a.mask_ss;
      if (a.mask_ss == 1) {
        for (int64_t c = 0; c < cols; ++c) srow[c] += scaled(mrow[c]);
      } else {
        for (int64_t c = 0; c < cols; ++c) srow[c] += scaled(mrow[c * a.mask_ss]);
      }
    }
    if (a.causal && j0 + cols - 1 > i) {
      for (int64_t c = std::max<int64_t>(0, i - j0 + 1); c < cols; ++c) srow[c] = ninf;
    }
  }
}

// Threads worth waking for `flops` of work: below ~2 MFLOP per thread (tens of microseconds) a
// second thread costs more than it saves, and on a loaded machine a descheduled worker would hold
// the join for a whole time slice.
static inline int sdpa_threads(double flops, int64_t units, int nthreads) {
  constexpr double kMinFlopsPerThread = 2e6;
  const double by_work = std::max(1.0, flops / kMinFlopsPerThread);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({nthreads, units, static_cast<int64_t>(by_work)})));
}

// Hands out whole matrices (batch x head) to the region's threads. With at least two per thread
// they are claimed one at a time from a shared counter, so a thread slowed by the host (or woken
// late) takes fewer; otherwise each thread gets a fixed contiguous run of `units` (query blocks
// of the few matrices). A matrix's results never depend on the thread computing it. Measured
// (layer shapes, 64 heads of 128 x 64, 2 threads, alternating processes): calm, forward 0.98x
// and backward 1.02x the fixed halves (noise); with a busy loop on the second core, forward
// 1.30x and backward 1.12x (medians of the per-round ratios).
class MatrixClaims {
 public:
  MatrixClaims(int64_t matrices, int64_t units_per_matrix, int nt)
      : matrices_(matrices), per_(units_per_matrix), dynamic_(matrices >= 2 * static_cast<int64_t>(nt)) {}
  // The next run [begin, end) of units for thread tid of a team of nt; false when none is left.
  bool next(int tid, int nt, bool* first_call, int64_t* begin, int64_t* end) {
    if (dynamic_) {
      const int64_t m = next_.fetch_add(1, std::memory_order_relaxed);
      if (m >= matrices_) return false;
      *begin = m * per_, *end = (m + 1) * per_;
      return true;
    }
    if (!*first_call) return false;
    *first_call = false;
    rowops::split_range(matrices_ * per_, nt, tid, begin, end);
    return *begin < *end;
  }

 private:
  int64_t matrices_, per_;
  bool dynamic_;
  std::atomic<int64_t> next_{0};
};

// The first element of matrix n of an operand laid out as `at` (attention.h).
template <class T>
T* matrix(T* p, const SdpaLayout& at, int64_t heads, int64_t n) {
  return p + (n / heads) * at.batch + (n % heads) * at.head;
}

template <class Isa, class T>
size_t pack_elems(int64_t m, int64_t n, int64_t k) {
  const PackSizes<Isa, T> ps(m, n, k);
  return ps.a + ps.b;
}

// ---------------------------------------------------------------------------------- forward

// One (n, query block) tile row: online softmax over key blocks, out accumulated in place.
// qpack (PrepackedA::elems(kFwdBr, e), or null when e > KC): the query block is packed there
// once for all its key blocks (packing it per key block cost ~4% of the forward). v (s, ev), row
// stride ldv: V of matrix n (dense_rows).
template <class Isa, class T>
void forward_block(const SdpaArgs<T>& a, int64_t n, int64_t i0, int64_t bc, const T* kt, const T* v, int64_t ldv,
                   T* s, T* mrun, T* lrun, T* abuf, T* bbuf, T* qpack, const DropoutKey& drop) {
  T* mnext = lrun + kFwdBr;  // (kFwdBr,) scratch after mrun and lrun
  T* alpha = mnext + kFwdBr;
  const T ninf = -std::numeric_limits<T>::infinity();
  const int64_t rows = std::min(kFwdBr, a.l - i0);
  const int64_t ldq = a.q_at.row, ldo = a.out_at.row;
  const T* q = matrix(a.q, a.q_at, a.heads, n) + i0 * ldq;
  T* o = matrix(a.out, a.out_at, a.heads, n) + i0 * ldo;
  std::fill(mrun, mrun + rows, ninf);
  std::fill(lrun, lrun + rows, T(0));
  // Causal: rows i < i0 + rows see keys j <= i, so key blocks past the diagonal are skipped.
  const int64_t kv_end = a.causal ? std::min(a.s, i0 + rows) : a.s;
  // The first key block's P V overwrites o (beta = 0); with no keys at all o is zero.
  if (kv_end <= 0) {
    for (int64_t r = 0; r < rows; ++r) std::fill(o + r * ldo, o + r * ldo + a.ev, T(0));
  }
  if (qpack && kv_end > bc) {
    PrepackedA<Isa, T>::pack(q, ldq, false, rows, a.e, qpack);
  } else {
    qpack = nullptr;
  }
  for (int64_t j0 = 0; j0 < kv_end; j0 += bc) {
    const int64_t cols = std::min(bc, kv_end - j0);
    tile_gemm<Isa, T>(rows, cols, a.e, q, ldq, false, kt + j0 * a.e, bc, false, s, bc, kLog2e<T> * a.scale, T(0), abuf,
                      bbuf, qpack);
    mask_tile(a, n, i0, rows, j0, cols, s, bc);
    // Row maxima first, then the rescale factors alpha = 2^(m_old - m_new) of all rows in one
    // vector pass (a scalar exp per row and tile cost ~2% of the forward).
    for (int64_t r = 0; r < rows; ++r) {
      const T mnew = std::max(mrun[r], rowops::row_max<Isa, T>(s + r * bc, cols));
      mnext[r] = mnew;
      const bool visible = !(mnew == ninf || std::isnan(mnew));
      alpha[r] = !visible ? T(0) : mrun[r] == ninf ? ninf : mrun[r] - mnew;
    }
    exp2_row<Isa, T>(alpha, rows, T(0));
    for (int64_t r = 0; r < rows; ++r) {
      T* srow = s + r * bc;
      const T mnew = mnext[r];
      if (mnew == ninf || std::isnan(mnew)) {  // nothing visible yet in this row
        std::fill(srow, srow + cols, T(0));
        continue;
      }
      const T sum = exp2_row<Isa, T>(srow, cols, mnew);
      lrun[r] = lrun[r] * alpha[r] + sum;
      // (o's row is still zero while m_old = -inf)
      if (mrun[r] != ninf && alpha[r] != T(1)) scale_row<Isa, T>(o + r * ldo, a.ev, alpha[r]);
      mrun[r] = mnew;
      if (drop.on) apply_dropout(srow, cols, static_cast<uint64_t>((n * a.l + i0 + r) * a.s + j0), drop);
    }
    tile_gemm<Isa, T>(rows, a.ev, cols, s, bc, false, v + j0 * ldv, ldv, false, o, ldo, T(1), j0 == 0 ? T(0) : T(1),
                      abuf, bbuf);
  }
  T* stats = a.stats + 2 * (n * a.l + i0);
  for (int64_t r = 0; r < rows; ++r) {
    const bool any = lrun[r] > T(0);
    scale_row<Isa, T>(o + r * ldo, a.ev, any ? T(1) / lrun[r] : T(0));
    stats[2 * r] = any ? mrun[r] : ninf;
    stats[2 * r + 1] = any ? std::log2(lrun[r]) : ninf;
  }
}

template <class Isa, class T>
void sdpa_forward(const SdpaArgs<T>& a) {
  if (a.n <= 0 || a.l <= 0) return;
  const int64_t qblocks = (a.l + kFwdBr - 1) / kFwdBr;
  const int64_t units = a.n * qblocks;
  const double flops = 2.0 * static_cast<double>(a.n) * a.l * a.s * (a.e + a.ev) * (a.causal ? 0.5 : 1.0);
  const int nt = sdpa_threads(flops, units, a.nthreads);
  const size_t tile = static_cast<size_t>(kFwdBr * kFwdBc);
  const size_t pack = pack_elems<Isa, T>(kFwdBr, std::max(kFwdBc, a.ev), std::max(a.e, kFwdBc));
  const int64_t bc = kFwdBc;
  const size_t kt_elems = static_cast<size_t>((a.s + bc - 1) / bc * bc * a.e);
  const bool prepack_q = PrepackedA<Isa, T>::fits(kFwdBr, a.e);
  const size_t qpack_elems = prepack_q ? static_cast<size_t>(PrepackedA<Isa, T>::elems(kFwdBr, a.e)) : 0;
  const size_t vdense_elems = a.v_at.row != a.ev ? static_cast<size_t>(a.s * a.ev) : 0;
  const size_t per = tile + 4 * kFwdBr + pack + kt_elems + qpack_elems + vdense_elems + 64;
  std::vector<T> buf(per * static_cast<size_t>(nt));  // allocated (and may throw) before the region
  const DropoutKey drop = make_dropout(a.dropout_p, a.seed);
  MatrixClaims claims(a.n, qblocks, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    const int tid = omp_get_thread_num();
    T* s = buf.data() + per * static_cast<size_t>(tid);
    T* mrun = s + tile;
    T* lrun = mrun + kFwdBr;
    T* abuf = lrun + 3 * kFwdBr;  // mrun, lrun, then two scratch rows used by forward_block
    T* bbuf = abuf + PackSizes<Isa, T>(kFwdBr, std::max(kFwdBc, a.ev), std::max(a.e, kFwdBc)).a;
    T* kt = abuf + pack;
    T* qpack = prepack_q ? kt + kt_elems : nullptr;
    T* vdense = kt + kt_elems + qpack_elems;
    // Runs of whole matrices (or of query blocks, when there are few matrices): K[n] is
    // transposed, and V[n] made dense, once per thread and n. (Claiming single query blocks from
    // a counter measured ~5% slower: K[n] was transposed again per claim.)
    int64_t begin, end, kt_n = -1;
    const T* v = nullptr;
    bool first_call = true;
    while (claims.next(tid, omp_get_num_threads(), &first_call, &begin, &end)) {
      for (int64_t u = begin; u < end; ++u) {
        const int64_t n = u / qblocks;
        if (n != kt_n) {
          transpose_blocked<Isa, T>(matrix(a.k, a.k_at, a.heads, n), a.k_at.row, a.s, a.e, bc, kt);
          v = dense_rows(matrix(a.v, a.v_at, a.heads, n), a.v_at.row, a.s, a.ev, vdense);
          kt_n = n;
        }
        forward_block<Isa, T>(a, n, (u % qblocks) * kFwdBr, bc, kt, v, a.ev, s, mrun, lrun, abuf, bbuf, qpack,
                              drop);
      }
    }
  }
}

// --------------------------------------------------------------------------------- backward

// Rows [r0, r1) of one (len, cols) matrix with row stride ld set to zero.
template <class T>
void zero_rows(T* p, int64_t ld, int64_t r0, int64_t r1, int64_t cols) {
  for (int64_t r = r0; r < r1; ++r) std::fill(p + r * ld, p + r * ld + cols, T(0));
}

// All of dq[n], dk[n], dv[n]: key blocks outer (dk_j, dv_j accumulate in place), query blocks
// inner (dq_i accumulates in place). Every operand is addressed through its layout (row stride
// ld*), so packed projections and merged heads are read and written in place; only q, k and dout
// are first copied, one head at a time, into dense rows (see below).
template <class Isa, class T>
void backward_one(const SdpaArgs<T>& a, int64_t n, T* p, T* dp, T* d, T* kt, T* vt, T* dense, T* abuf, T* bbuf,
                  const DropoutKey& drop) {
  // q, k and dout with dense rows (dense_rows; scratch `dense` holds backward_dense_elems): the B
  // operands of the dk, dq and dv products below.
  const T* q = dense_rows(matrix(a.q, a.q_at, a.heads, n), a.q_at.row, a.l, a.e, dense);
  if (a.q_at.row != a.e) dense += a.l * a.e;
  const T* k = dense_rows(matrix(a.k, a.k_at, a.heads, n), a.k_at.row, a.s, a.e, dense);
  if (a.k_at.row != a.e) dense += a.s * a.e;
  const T* dout = dense_rows(matrix(a.dout, a.dout_at, a.heads, n), a.dout_at.row, a.l, a.ev, dense);
  const T* v = matrix(a.v, a.v_at, a.heads, n);
  const T* out = matrix(a.out, a.out_at, a.heads, n);
  const T* stats = a.stats + 2 * n * a.l;
  T* dq = matrix(a.dq, a.dq_at, a.heads, n);
  T* dk = matrix(a.dk, a.dk_at, a.heads, n);
  T* dv = matrix(a.dv, a.dv_at, a.heads, n);
  const int64_t ldq = a.e, ldk = a.e, ldv = a.v_at.row, ldo = a.out_at.row, lddo = a.ev;
  const int64_t lddq = a.dq_at.row, lddk = a.dk_at.row, lddv = a.dv_at.row;
  // The first product into each gradient block overwrites it (beta = 0): dq_i first at key
  // block 0, dk_j and dv_j first at their first visible query block. Only blocks no product
  // reaches (no keys; causal keys past the last query) are cleared here.
  if (a.s == 0) zero_rows(dq, lddq, 0, a.l, a.e);
  for (int64_t i = 0; i < a.l; ++i) d[i] = dot_row<Isa, T>(dout + i * lddo, out + i * ldo, a.ev);
  transpose_blocked<Isa, T>(k, ldk, a.s, a.e, kBwdBc, kt);
  transpose_blocked<Isa, T>(v, ldv, a.s, a.ev, kBwdBc, vt);
  for (int64_t j0 = 0; j0 < a.s; j0 += kBwdBc) {
    const int64_t cols = std::min(kBwdBc, a.s - j0);
    const int64_t i_first = a.causal ? j0 / kBwdBr * kBwdBr : 0;  // query blocks that see key j0
    if (i_first >= a.l) {
      zero_rows(dk, lddk, j0, j0 + cols, a.e);
      zero_rows(dv, lddv, j0, j0 + cols, a.ev);
    }
    for (int64_t i0 = i_first; i0 < a.l; i0 += kBwdBr) {
      const int64_t rows = std::min(kBwdBr, a.l - i0);
      const T beta_kv = i0 == i_first ? T(0) : T(1), beta_q = j0 == 0 ? T(0) : T(1);
      tile_gemm<Isa, T>(rows, cols, a.e, q + i0 * ldq, ldq, false, kt + j0 * a.e, kBwdBc, false, p, kBwdBc,
                        kLog2e<T> * a.scale, T(0), abuf, bbuf);
      mask_tile(a, n, i0, rows, j0, cols, p, kBwdBc);
      for (int64_t r = 0; r < rows; ++r) {
        T* prow = p + r * kBwdBc;
        const T m2 = stats[2 * (i0 + r)], log2_l = stats[2 * (i0 + r) + 1];
        if (std::isinf(m2) || std::isnan(m2) || std::isnan(log2_l)) {  // nothing visible (or NaN)
          std::fill(prow, prow + cols, T(0));
        } else {
          exp2_row<Isa, T, true>(prow, cols, m2, log2_l);
        }
      }
      // dv_j += (p f)^T dout_i   (pd in dp's buffer first)
      const T* pd = p;
      if (drop.on) {
        for (int64_t r = 0; r < rows; ++r) {
          std::copy(p + r * kBwdBc, p + r * kBwdBc + cols, dp + r * kBwdBc);
          apply_dropout(dp + r * kBwdBc, cols, static_cast<uint64_t>((n * a.l + i0 + r) * a.s + j0), drop);
        }
        pd = dp;
      }
      tile_gemm<Isa, T>(cols, a.ev, rows, pd, kBwdBc, true, dout + i0 * lddo, lddo, false, dv + j0 * lddv, lddv, T(1),
                        beta_kv, abuf, bbuf);
      // dp = (dout_i v_j^T) f,  ds = p (dp - D)  (in p's buffer)
      tile_gemm<Isa, T>(rows, cols, a.ev, dout + i0 * lddo, lddo, false, vt + j0 * a.ev, kBwdBc, false, dp, kBwdBc,
                        T(1), T(0), abuf, bbuf);
      for (int64_t r = 0; r < rows; ++r) {
        T* dprow = dp + r * kBwdBc;
        if (drop.on) apply_dropout(dprow, cols, static_cast<uint64_t>((n * a.l + i0 + r) * a.s + j0), drop);
        T* prow = p + r * kBwdBc;
        const T di = d[i0 + r];
        for (int64_t c = 0; c < cols; ++c) prow[c] = prow[c] * (dprow[c] - di);
      }
      tile_gemm<Isa, T>(rows, a.e, cols, p, kBwdBc, false, k + j0 * ldk, ldk, false, dq + i0 * lddq, lddq, a.scale,
                        beta_q, abuf, bbuf);
      tile_gemm<Isa, T>(cols, a.e, rows, p, kBwdBc, true, q + i0 * ldq, ldq, false, dk + j0 * lddk, lddk, a.scale,
                        beta_kv, abuf, bbuf);
    }
  }
}

template <class Isa, class T>
void sdpa_backward(const SdpaArgs<T>& a) {
  if (a.n <= 0) return;
  const double flops = 5.0 * static_cast<double>(a.n) * a.l * a.s * (a.e + a.ev) * (a.causal ? 0.5 : 1.0);
  const int nt = sdpa_threads(flops, a.n, a.nthreads);
  const size_t tile = static_cast<size_t>(kBwdBr * kBwdBc);
  const int64_t mx = std::max({kBwdBr, kBwdBc, a.e, a.ev});
  const PackSizes<Isa, T> ps(std::max(kBwdBr, kBwdBc), mx, mx);
  const int64_t s_pad = (a.s + kBwdBc - 1) / kBwdBc * kBwdBc;
  const size_t dense = backward_dense_elems(a);
  const size_t per = 2 * tile + static_cast<size_t>(a.l + s_pad * (a.e + a.ev)) + dense + ps.a + ps.b + 64;
  std::vector<T> buf(per * static_cast<size_t>(nt));
  const DropoutKey drop = make_dropout(a.dropout_p, a.seed);
  MatrixClaims claims(a.n, 1, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed ftz;
    const int tid = omp_get_thread_num();
    T* p = buf.data() + per * static_cast<size_t>(tid);
    T* dp = p + tile;
    T* d = dp + tile;
    T* abuf = d + a.l;
    T* bbuf = abuf + ps.a;
    T* kt = bbuf + ps.b;
    T* vt = kt + s_pad * a.e;
    T* dense_qkdo = vt + s_pad * a.ev;
    int64_t begin, end;
    bool first_call = true;
    while (claims.next(tid, omp_get_num_threads(), &first_call, &begin, &end)) {
      for (int64_t n = begin; n < end; ++n) backward_one<Isa, T>(a, n, p, dp, d, kt, vt, dense_qkdo, abuf, bbuf, drop);
    }
  }
}

}  // namespace

template <>
const AttentionKernels& attention_kernels<TargetIsa>() {
  static const AttentionKernels table = {
      &sdpa_forward<TargetIsa, float>,
      &sdpa_forward<TargetIsa, double>,
      &sdpa_backward<TargetIsa, float>,
      &sdpa_backward<TargetIsa, double>,
  };
  return table;
}

}  // namespace seqblocks
