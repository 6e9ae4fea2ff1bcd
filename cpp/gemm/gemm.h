// GEMM driver: C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] + bias, for the semantics of
// GemmProblem (runtime/kernel_table.h).
//
// Paths (chosen from the shape only, so a given problem always takes the same arithmetic):
//   empty_k  k == 0 or alpha == 0: C = beta * C + bias (C not read when beta == 0; as in
//            BLAS, A and B are not read, so Inf/NaN in them do not reach C).
//   dot      !trans_a && trans_b && small m: unpacked dot products of contiguous rows
//            (dot_gemm.h) -- the `linear` shape of an RNN step.
//   packed   everything else: BLIS-style blocking, mirrored for row-major C (vectors run
//            along n, A is broadcast):
//              for ic in M step MC:                 A block (MC x KC) packed     -> L3
//                for pc in K step KC:
//                  pack A[ic:+MC, pc:+KC] into MR-row micro-panels
//                  for jc in N step NC:             B block (KC x NC) packed     -> L2
//                    pack B[pc:+KC, jc:+NC] into NR-column micro-panels
//                    for ir in MC step MR:          A micro-panel (KC x MR)      -> L1
//                      for jr in NC step NR:        micro-kernel, MR x NR tile  -> registers
//            Packing is skipped where it does not pay: B (not transposed) is read in place
//            when m spans only a few micro-panels or B is small enough to stay in cache (its
//            rows are already contiguous along n); A is read in place when n fits in one B
//            micro-panel (each A element would be broadcast once anyway). Tiny and batched
//            problems therefore run the micro-kernel straight on the caller's arrays.
//
// Threads: one parallel region per call, never one per matrix or per block. The batch x (a tm x tn
// grid of each matrix, in whole micro-panels) is cut into at least one unit per thread, which
// the threads claim from a shared counter: many small matrices go whole to threads (several per
// claim), a single large one is split over M/N panels, one rectangle per thread (two on the dot
// path); when that makes two packed rectangles on two threads, the thread that finishes first
// computes chunks of the other's blocks (PairShare). K is never split and every C element is
// computed by the same sequence of operations whichever thread computes it, so results are
// bit-identical for any thread count. Each thread packs into its own slice of a workspace
// obtained (and, if need be, allocated) before the region, so nothing inside it can throw.
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <numeric>
#include <stdexcept>
#include <thread>

#include "gemm/dot_gemm.h"
#include "gemm/microkernel.h"
#include "gemm/pack.h"
#include "gemm/traits.h"
#include "gemm/workspace.h"
#include "runtime/denormals.h"
#include "runtime/kernel_table.h"
#include "runtime/threads.h"
#include "simd/vec.h"

namespace seqblocks {

template <class T>
struct PairShare;

// One matrix of the batch, possibly restricted to a rectangle of its C.
template <class T>
struct GemmView {
  int64_t m, n, k;
  const T* a;
  int64_t lda;
  bool trans_a;
  const T* b;
  int64_t ldb;
  bool trans_b;
  T* c;
  int64_t ldc;
  T alpha, beta;
  const T* bias;
  // The same B packed by PrepackedB, or null. When set, gemm_packed reads it instead of b, ldb
  // and trans_b (which must still describe B: sub() falls back to them for any column range
  // but the whole width).
  const T* b_packed = nullptr;
  const GemmPost<T>* post = nullptr;  // GemmProblem::post
  // All of A packed by PrepackedA (m <= MC, k <= KC), or null: one query block of attention
  // multiplied by several key blocks. Read by gemm_packed instead of packing A per call.
  const T* a_packed = nullptr;
  // The block queue of this product when it runs on one thread as one of a pair (the two
  // products of gemm_pair, or the two halves of one product in gemm_shared), or null: the other
  // thread may then compute panels of each block.
  PairShare<T>* share = nullptr;
  // GemmProblem::a_row_sums at this view's first row, or null: only the rectangle holding C's
  // first column sums its rows of A (the others pack the same rows).
  T* a_row_sums = nullptr;

  // Rows [i0, i1) and columns [j0, j1) of C.
  GemmView sub(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    GemmView v = *this;
    v.m = i1 - i0;
    v.n = j1 - j0;
    if (k > 0) {
      v.a = trans_a ? a + i0 : a + i0 * lda;
      v.b = trans_b ? b + j0 * ldb : b + j0;
    }
    v.c = c + i0 * ldc + j0;
    v.bias = bias ? bias + j0 : nullptr;
    v.a_row_sums = a_row_sums && j0 == 0 ? a_row_sums + i0 : nullptr;
    if (j0 != 0 || j1 != n) v.b_packed = nullptr;  // its panel offsets assume all n columns
    if (i0 != 0 || i1 != m) v.a_packed = nullptr;  // its panel heights assume all m rows
    return v;
  }
};

enum class GemmPath { empty_k, dot, packed };

// Largest m for the dot path; above it the packed kernel's register reuse wins.
constexpr int64_t kGemmDotMaxM = 32;
// B is read in place (!trans_b only) when m spans at most this many A micro-panels (packing
// would not be amortised), or when all of B is at most this many bytes and its rows are
// contiguous (ldb == n: it stays in L1/L2 as one dense block, so packing buys nothing).
// Rows far apart are packed however small B is: rows a few KiB apart fall into a few L1 sets
// and evict each other while every micro-tile re-reads them. The V rows of attention (128 x 64
// read from a packed Q/K/V projection, ldb 1536 floats = 6 KiB: 512 lines in 8 sets of a 48 KiB
// L1) ran the 64 x 64 x 128 P V product at 80 GFLOP/s in place, 118 packed on every call, 142
// from a contiguous copy (Ice Lake Xeon, one thread, C++ micro-benchmark).
constexpr int64_t kGemmDirectBMaxPanels = 4;
constexpr int64_t kGemmDirectBMaxBytes = 64 * 1024;
// A is read in place when n spans at most this many B micro-panels: each element of A would be
// broadcast only that many times, so packing it costs as much as it saves.
constexpr int64_t kGemmDirectAMaxPanels = 2;
// A row-major A (!trans_a) is read in place up to this many B micro-panels: the micro-kernel
// then broadcasts from MR row streams (kARows), which cost no more than the packed panel, and
// packing A (a register transpose of every element) is saved. AVX-512 float, 1 and 2 threads,
// `linear` GFLOP/s against packing A (2 panels): n = 256 rows 2048, k = 256 / 768 / 1024 / 4096:
// +3-8 %; 512^3 +4 % (1 thread), +7 % (2); 1024 x 512 -> 512 +3 %; k = 2048 -> 512 even;
// n = 768-2048 even or slower (2048^3 -5 % at 1 thread), hence the limit. A transposed A read
// in place is a different pattern (a row of A^T per k step, lda apart) and lost up to 40 % when
// lda was 1024 or 2048 elements (4 or 8 KiB: every row in the same L1 sets); it keeps the
// general limit above. (Those figures are for 32-column panels, i.e. n <= 512. With the 6 x 64
// AVX-512 float tile the same 16 panels reach n = 1024; alternating processes, one thread,
// `linear` with A read in place against packed (a limit of 8 panels): n = 768 and 1024 at
// k = 512 and 1024 read 0.98-1.03x, quartiles straddling 1, so the limit stays in panels.)
constexpr int64_t kGemmDirectRowsAMaxPanels = 16;
// Less work than this (estimated cycles, ~15 us) per thread is not worth waking another
// thread for: waking a sleeping OpenMP worker alone can take tens of microseconds.
constexpr double kGemmMinCyclesPerThread = 40000;

template <class Isa, class T>
static inline GemmPath gemm_choose_path(const GemmProblem<T>& p) {
  if (p.k == 0 || p.alpha == T(0)) return GemmPath::empty_k;
  // Each dot tile ends with MI x NJ horizontal sums, so it needs a long k to amortise them,
  // except for m <= 4 where packing B (all of W) would cost more than the whole product.
  constexpr int64_t W = Vec<Isa, T>::width;
  if (!p.trans_a && p.trans_b && p.m <= kGemmDotMaxM && p.k >= (p.m <= 4 ? 2 : 8) * W) {
    return GemmPath::dot;
  }
  return GemmPath::packed;
}

template <class T>
static void gemm_empty_k(const GemmView<T>& v) {
  for (int64_t i = 0; i < v.m; ++i) {
    T* crow = v.c + i * v.ldc;
    for (int64_t j = 0; j < v.n; ++j) {
      T r = v.beta == T(0) ? T(0) : v.beta * crow[j];
      if (v.bias) r += v.bias[j];
      crow[j] = r;
    }
  }
}

// Packing-buffer sizes (elements) one thread needs for a view of at most m x n x k.
template <class Isa, class T>
struct PackSizes {
  size_t a = 0, b = 0;
  PackSizes(int64_t m, int64_t n, int64_t k) {
    using Tr = GemmTraits<Isa, T>;
    constexpr int64_t MR = Tr::MR, NR = Tr::NV * Vec<Isa, T>::width;
    const int64_t kc = std::min(k, Tr::KC);
    const int64_t mc = std::min(m, Tr::MC), nc = std::min(n, Tr::NC);
    a = GemmWorkspace<T>::round_up(static_cast<size_t>((mc + MR - 1) / MR * MR * kc));
    b = GemmWorkspace<T>::round_up(static_cast<size_t>((nc + NR - 1) / NR * NR * kc));
  }
};

// B packed once for many products with the same B -- the weights of a recurrent step, which a
// time loop multiplies T times. The layout is what gemm_packed's own B packing produces, laid
// out for the whole n at once: K block pc (rows [pc, pc + KC)) starts at element pc * n_pad and
// holds ceil(n / NR) micro-panels of kc x NR, zero-padded past column n. The panels are then
// read sequentially (hardware prefetch works), where B read in place with a large ldb touches a
// new page every row.
template <class Isa, class T>
struct PrepackedB {
  static constexpr int64_t NR = GemmTraits<Isa, T>::NV * Vec<Isa, T>::width;
  static int64_t n_pad(int64_t n) { return (n + NR - 1) / NR * NR; }
  static int64_t elems(int64_t k, int64_t n) { return n_pad(n) * k; }
  // dst (elems(k, n)) <- op(B) (k x n): b[l * ldb + j], or b[j * ldb + l] when trans.
  static void pack(const T* b, int64_t ldb, bool trans, int64_t k, int64_t n, T* dst) {
    for (int64_t pc = 0; pc < k; pc += GemmTraits<Isa, T>::KC) {
      const int64_t kc = std::min(GemmTraits<Isa, T>::KC, k - pc);
      pack_b_block<Isa, T>(trans ? b + pc : b + pc * ldb, ldb, trans, kc, n, dst + pc * n_pad(n));
    }
  }
};

// The block size <= max_block, a multiple of unit, that cuts `total` into the fewest
// near-equal blocks.
static inline int64_t gemm_balanced_block(int64_t total, int64_t max_block, int64_t unit) {
  if (total <= max_block) return max_block;
  const int64_t blocks = (total + max_block - 1) / max_block;
  const int64_t per = (total + blocks - 1) / blocks;
  return std::min(max_block, (per + unit - 1) / unit * unit);
}

// A (m x k, m <= MC, k <= KC: one block) packed once for several products with the same A, in
// the layout gemm_packed's own A packing produces for it: micro-panels of the height that
// gemm_packed picks for m rows, each k x height.
template <class Isa, class T>
struct PrepackedA {
  static bool fits(int64_t m, int64_t k) { return m <= GemmTraits<Isa, T>::MC && k <= GemmTraits<Isa, T>::KC; }
  static int panel_height(int64_t m) {
    return static_cast<int>(gemm_balanced_block(m, GemmTraits<Isa, T>::MR, 1));
  }
  static int64_t elems(int64_t m, int64_t k) {
    constexpr int64_t MR = GemmTraits<Isa, T>::MR;
    return (m + MR - 1) / MR * MR * k;
  }
  // dst (elems(m, k)) <- op(A) (m x k): a[i * lda + l], or a[l * lda + i] when trans.
  static void pack(const T* a, int64_t lda, bool trans, int64_t m, int64_t k, T* dst) {
    pack_a_block<Isa, T>(a, lda, trans, m, k, panel_height(m), dst);
  }
};

// One (K block, column block) of gemm_packed, packed and ready: what a sweep over its micro-panel
// rows needs. Panel ir (rows [ir, ir + h) of the block) starts at a0 + ir * a_step.
template <class T>
struct PanelBlock {
  int64_t mc = 0, h = 1, kc = 0, nc = 0;
  const T* a0 = nullptr;
  int64_t a_step = 0, a_stride = 0;
  bool a_rows = false;  // a row-major A read in place (kARows)
  const T* bblk = nullptr;
  int64_t ldb_blk = 0;
  bool b_direct = false;
  T* c0 = nullptr;  // C at the block's (0, 0)
  int64_t ldc = 0;
  const T* bias0 = nullptr;  // bias at the block's first column, or null
  TileEpilogue<T> ep{};
};

// Micro-panel rows [p0, p1) of a block, across all its columns.
template <class Isa, class T>
static void sweep_panels(const PanelBlock<T>& blk, int64_t p0, int64_t p1) {
  constexpr int64_t NR = GemmTraits<Isa, T>::NV * Vec<Isa, T>::width;
  TileEpilogue<T> ep = blk.ep;
  const int64_t end = std::min(blk.mc, p1 * blk.h);
  for (int64_t ir = p0 * blk.h; ir < end; ir += blk.h) {
    const int mr = static_cast<int>(std::min<int64_t>(blk.h, blk.mc - ir));
    const T* apanel = blk.a0 + ir * blk.a_step;
    T* crow = blk.c0 + ir * blk.ldc;
    for (int64_t jr = 0; jr < blk.nc; jr += NR) {
      const int nr = static_cast<int>(std::min(NR, blk.nc - jr));
      const T* bpanel = blk.b_direct ? blk.bblk + jr : blk.bblk + jr * blk.kc;
      ep.bias = blk.bias0 ? blk.bias0 + jr : nullptr;
      pick_micro_tile<Isa, T>(mr, nr, blk.b_direct, blk.a_rows)(blk.kc, apanel, blk.a_stride, bpanel, blk.ldb_blk,
                                                                 crow + jr, blk.ldc, nr, ep);
    }
  }
}

// The block queue of one side of a pair: one of gemm_pair's two products, or one of the two
// halves gemm_shared cuts a product into at two threads. Its owner publishes each packed block
// as a new generation and claims chunks of kChunkPanels micro-panels; the other thread, once
// its own product is done, claims chunks too, reading the owner's packed panels (nothing is
// packed twice). A claim is a compare-and-swap on `state`, which holds the generation with the
// chunk count and the next chunk, so a claim can only succeed on the block it read. The owner
// waits until every chunk of a block is done before it packs the next one into the same buffers
// (and before a later K block adds into the same C rows). Every tile is computed by the same
// operations whoever claims it: results are bit-identical to the unshared product.
template <class T>
struct PairShare {
  static constexpr int64_t kChunkPanels = 4;
  static constexpr int kCountBits = 20;  // chunks of a block: mc <= MC rows, so at most a few hundred
  static constexpr uint64_t kCountMask = (uint64_t{1} << kCountBits) - 1;
  std::atomic<uint64_t> state{0};  // generation << 2 kCountBits | chunks << kCountBits | next
  std::atomic<int64_t> done{0};    // chunks of the current generation finished
  std::atomic<bool> finished{false};
  PanelBlock<T> block;             // written by the owner before it publishes a generation
  uint64_t generation = 0;         // the owner's

  static uint64_t chunks_of(uint64_t st) { return (st >> kCountBits) & kCountMask; }
  static uint64_t next_of(uint64_t st) { return st & kCountMask; }

  // Claims the next chunk of the published block; false once none is left. Everything the claim
  // relies on is in the word it swaps, so even a stale read can only claim a chunk that is
  // really unclaimed in the block published now.
  bool claim(uint64_t* chunk) {
    uint64_t st = state.load(std::memory_order_acquire);
    while (next_of(st) < chunks_of(st)) {
      if (state.compare_exchange_weak(st, st + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        *chunk = next_of(st);
        return true;
      }
    }
    return false;
  }
  template <class Isa>
  void run_chunk(uint64_t chunk) {
    const int64_t panels = (block.mc + block.h - 1) / block.h;
    const int64_t p0 = static_cast<int64_t>(chunk) * kChunkPanels;
    sweep_panels<Isa, T>(block, p0, std::min(panels, p0 + kChunkPanels));
    done.fetch_add(1, std::memory_order_release);
  }
  // Owner: publish blk, work through it with the helper, return when all of it is done.
  template <class Isa>
  void run_block(const PanelBlock<T>& blk) {
    const int64_t panels = (blk.mc + blk.h - 1) / blk.h;
    const uint64_t chunks = static_cast<uint64_t>((panels + kChunkPanels - 1) / kChunkPanels);
    block = blk;
    done.store(0, std::memory_order_relaxed);
    ++generation;
    state.store(generation << (2 * kCountBits) | chunks << kCountBits, std::memory_order_release);
    uint64_t chunk;
    while (claim(&chunk)) run_chunk<Isa>(chunk);
    Backoff backoff;
    while (done.load(std::memory_order_acquire) < static_cast<int64_t>(chunks)) backoff.wait();
  }
  // Helper: claim chunks of the owner's blocks until the owner says its product is finished.
  template <class Isa>
  void help() {
    Backoff backoff;
    for (;;) {
      uint64_t chunk;
      if (claim(&chunk)) {
        run_chunk<Isa>(chunk);
        backoff = Backoff{};
      } else if (finished.load(std::memory_order_acquire)) {
        return;
      } else {
        backoff.wait();
      }
    }
  }
  // Thread tid of a pair: its own product (own(&shares[tid]) queues its blocks there), then
  // chunks of the other's until that one is finished too.
  template <class Isa, class Own>
  static void run_then_help(PairShare<T> (&shares)[2], int tid, Own&& own) {
    {
      // The other thread stops helping once this is set, however this product ends.
      struct Finished {
        PairShare<T>* share;
        ~Finished() { share->finished.store(true, std::memory_order_release); }
      } finished{&shares[tid]};
      own(&shares[tid]);
    }
    DenormalsFlushed flush;  // as inside gemm's own region: chunks of the other's blocks
    shares[1 - tid].template help<Isa>();
  }
  // Both waits (the helper for the owner's next block, the owner for a chunk the helper still
  // computes) are normally short: a block's packing, one chunk. They spin with pause for about
  // 100 us (as StepBarrier does), then yield the core at each check: where the process has more
  // runnable threads than cores, the thread waited for may be queued behind the waiting one on
  // the same core. Two threads pinned to one core, 1024 x 512 -> 2048 `linear`: spinning alone
  // was 1.10-1.18x slower than OpenMP's own barrier had been; with the yield, 0.98x its time.
  // With a core to itself, a yield returns at once (no change measured on the layer products).
  struct Backoff {
    static constexpr int kSpins = 2048;
    int spins = 0;
    void wait() {
      if (spins < kSpins) {
        ++spins;
        cpu_pause();
      } else {
        std::this_thread::yield();
      }
    }
  };
};

template <class Isa, class T>
static void gemm_packed(const GemmView<T>& v, T* abuf, T* bbuf) {
  using Tr = GemmTraits<Isa, T>;
  constexpr int64_t MR = Tr::MR, NR = Tr::NV * Vec<Isa, T>::width;
  const bool b_pre = v.b_packed != nullptr;
  const bool b_direct =
      !b_pre && !v.trans_b && (v.m <= kGemmDirectBMaxPanels * MR ||
                               (v.ldb == v.n && v.k * v.n * static_cast<int64_t>(sizeof(T)) <= kGemmDirectBMaxBytes));
  // With B prepacked (a recurrent step: a few rows of A against weights in L2), A is read in
  // place too: its micro-panel stays in L1 across the B panels, and packing it every step would
  // copy A once per thread per step.
  const bool a_pre = v.a_packed != nullptr;
  const int64_t a_direct_panels = v.trans_a ? kGemmDirectAMaxPanels : kGemmDirectRowsAMaxPanels;
  const bool a_direct = !a_pre && (v.n <= a_direct_panels * NR ||
                                   (b_pre && !v.trans_a && v.m <= kGemmDirectBMaxPanels * MR));

  // Equal-sized blocks (whole micro-panels) rather than full blocks plus a thin remainder,
  // which would pack a whole B block for a few rows, or sweep L1 for a few columns.
  const int64_t mc_step = gemm_balanced_block(v.m, Tr::MC, MR);
  const int64_t nc_step = gemm_balanced_block(v.n, Tr::NC, NR);
  for (int64_t ic = 0; ic < v.m; ic += mc_step) {
    const int64_t mc = std::min(mc_step, v.m - ic);
    // Micro-panel height: MR, or less so that the panels of this block are near-equal (m = 32
    // runs as 11 + 11 + 10 rows rather than 14 + 14 + 4, whose 4-row tile would be bound by
    // FMA latency). Tile heights never change the arithmetic of an element.
    const int h = static_cast<int>(gemm_balanced_block(mc, MR, 1));
    T* sums = v.a_row_sums ? v.a_row_sums + ic : nullptr;
    if (sums) std::fill(sums, sums + mc, T(0));
    for (int64_t pc = 0; pc < v.k; pc += Tr::KC) {
      const int64_t kc = std::min(Tr::KC, v.k - pc);
      const T* ablk = v.trans_a ? v.a + pc * v.lda + ic : v.a + ic * v.lda + pc;
      const bool sums_in_pack = sums && !a_direct && !a_pre && v.trans_a;
      if (!a_direct && !a_pre) {
        pack_a_block<Isa, T>(ablk, v.lda, v.trans_a, mc, kc, h, abuf, sums_in_pack ? sums : nullptr);
      }
      if (sums && !sums_in_pack) add_row_sums(ablk, v.lda, v.trans_a, mc, kc, sums);
      TileEpilogue<T> ep{v.alpha, v.beta, nullptr, pc == 0, pc + kc == v.k, v.post};

      for (int64_t jc = 0; jc < v.n; jc += nc_step) {
        const int64_t nc = std::min(nc_step, v.n - jc);
        const T* bblk;
        int64_t ldb_blk;
        if (b_pre) {
          bblk = v.b_packed + pc * PrepackedB<Isa, T>::n_pad(v.n) + jc * kc;
          ldb_blk = NR;
        } else if (b_direct) {
          bblk = v.b + pc * v.ldb + jc;
          ldb_blk = v.ldb;
        } else {
          pack_b_block<Isa, T>(v.trans_b ? v.b + jc * v.ldb + pc : v.b + pc * v.ldb + jc, v.ldb,
                               v.trans_b, kc, nc, bbuf);
          bblk = bbuf;
          ldb_blk = NR;
        }
        PanelBlock<T> blk;
        blk.mc = mc, blk.h = h, blk.kc = kc, blk.nc = nc;
        blk.a0 = a_pre ? v.a_packed : !a_direct ? abuf : ablk;
        blk.a_step = (a_pre || !a_direct) ? kc : v.trans_a ? 1 : v.lda;
        blk.a_stride = a_direct ? v.lda : h;
        blk.a_rows = a_direct && !v.trans_a;
        blk.bblk = bblk, blk.ldb_blk = ldb_blk, blk.b_direct = b_direct;
        blk.c0 = v.c + ic * v.ldc + jc, blk.ldc = v.ldc;
        blk.bias0 = v.bias ? v.bias + jc : nullptr;
        blk.ep = ep;
        if (v.share) {
          v.share->template run_block<Isa>(blk);
        } else {
          sweep_panels<Isa, T>(blk, 0, (mc + h - 1) / h);
        }
      }
    }
  }
}

// How one matrix is cut into tm x tn rectangles of whole micro-panels.
struct GemmGrid {
  int64_t tm = 1, tn = 1;
  int64_t row_unit = 1, col_unit = 1;
};

// Picks tm x tn = parts minimising the largest share: its multiply-adds plus the packing it
// duplicates (each rectangle packs its own rows of A and columns of B; one packed element
// costs about as much as `pack_cost` multiply-adds).
static inline GemmGrid gemm_choose_grid(int64_t m, int64_t n, int64_t k, int64_t parts,
                                        int64_t row_unit, int64_t col_unit, bool rows_allowed) {
  GemmGrid best;
  best.row_unit = row_unit;
  best.col_unit = col_unit;
  best.tn = parts;
  if (!rows_allowed) return best;
  constexpr double pack_cost = 16.0;
  const int64_t pm = (m + row_unit - 1) / row_unit, pn = (n + col_unit - 1) / col_unit;
  double best_cost = -1;
  for (int64_t tm = 1; tm <= parts; ++tm) {
    if (parts % tm != 0) continue;
    const int64_t tn = parts / tm;
    const double rows = static_cast<double>((pm + tm - 1) / tm * row_unit);
    const double cols = static_cast<double>((pn + tn - 1) / tn * col_unit);
    const double cost = rows * cols * static_cast<double>(k) + pack_cost * (rows + cols) * k;
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best.tm = tm;
      best.tn = tn;
    }
  }
  return best;
}

// [begin, end) of the r-th of `parts` near-equal runs of whole units over [0, total).
static inline void gemm_split_range(int64_t total, int64_t unit, int64_t parts, int64_t r,
                                    int64_t* begin, int64_t* end) {
  const int64_t units = (total + unit - 1) / unit;
  *begin = std::min(total, r * units / parts * unit);
  *end = std::min(total, (r + 1) * units / parts * unit);
}

// One GEMV-like product (the dot path, a single matrix) on nt threads: thread t takes the t-th
// contiguous run of W rows, the same run on every call, and the calls alternate the direction
// in which the runs are walked. A repeated product with the same W (an RNN step, a decoding
// loop) then starts each call on the rows the previous call read last, which are still in
// the core's L2 when W is somewhat larger than it; walking always forwards, an LRU-like cache
// has evicted exactly the rows needed next. Measured, x (1, 512) W (2048, 512) float32: 1
// thread 145-150 -> 110 us, 2 threads 45-49 -> 40-45 us; rows 4 at 1 thread 156 -> 130 us.
// (The counter belongs to the calling thread; two W used in turn each keep one direction,
// which is the order every call had before.)
template <class Isa, class T>
void gemm_dot(const GemmProblem<T>& p, int nt) {
  static thread_local unsigned calls = 0;
  const bool reverse = (calls++ & 1u) != 0;
  const GemmView<T> v{p.m, p.n, p.k, p.a, p.lda, p.trans_a, p.b, p.ldb, p.trans_b, p.c, p.ldc, p.alpha, p.beta,
                      p.bias};
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed flush;
    int64_t j0, j1;  // this thread's run of W rows (all of them in a team of one)
    gemm_split_range(p.n, GemmTraits<Isa, T>::DOT_NJ, omp_get_num_threads(), omp_get_thread_num(), &j0, &j1);
    if (j0 < j1) {
      const GemmView<T> s = v.sub(0, p.m, j0, j1);
      dot_gemm<Isa, T>(s.m, s.n, s.k, s.a, s.lda, s.b, s.ldb, s.c, s.ldc, s.alpha, s.beta, s.bias, reverse);
      if (p.post) p.post->fn(s.c, s.ldc, s.m, s.n, p.post->ctx);
    }
  }
}

// share: the product's block queue when it runs on one thread as one of a pair (gemm_pair).
template <class Isa, class T>
void gemm_shared(const GemmProblem<T>& p, PairShare<T>* share) {
  if (p.a_row_sums && p.m > 0) {
    if (p.batch != 1) throw std::invalid_argument("gemm: a_row_sums needs batch 1");
    // Paths that never pack A sum it here, before the product (the packed path sums per K block).
    if (p.n <= 0 || p.k <= 0 || gemm_choose_path<Isa, T>(p) != GemmPath::packed) {
      std::fill(p.a_row_sums, p.a_row_sums + p.m, T(0));
      if (p.k > 0) add_row_sums(p.a, p.lda, p.trans_a, p.m, p.k, p.a_row_sums);
    }
  }
  if (p.m <= 0 || p.n <= 0 || p.batch <= 0) return;
  using Tr = GemmTraits<Isa, T>;
  constexpr int64_t W = Vec<Isa, T>::width;
  const GemmPath path = gemm_choose_path<Isa, T>(p);

  // Rough cycle estimate: multiply-adds at 16 per cycle plus every element of A, B and C
  // touched at half a cycle (GEMV-like shapes are bound by memory, not FMAs).
  const double m = static_cast<double>(p.m), n = static_cast<double>(p.n),
               k = static_cast<double>(std::max<int64_t>(p.k, 1));
  const double cycles = static_cast<double>(p.batch) * (m * n * k / 16 + (m * k + k * n + m * n) / 2);
  int nt = std::max(1, p.nthreads);
  nt = static_cast<int>(std::max(1.0, std::min<double>(nt, cycles / kGemmMinCyclesPerThread)));
  if (path == GemmPath::dot && p.batch == 1) return gemm_dot<Isa, T>(p, nt);

  // Work is cut into `units` = batch x parts rectangles of whole panels, fixed by the shape and
  // nt alone, and threads claim runs of units from a shared counter. A single matrix is cut into
  // nt rectangles: each rectangle packs its own rows of A and columns of B, so two per thread
  // (which would let a thread that starts late leave its second one to the others) duplicate
  // twice the packing -- measured at 2 threads, one per thread is 1-5% faster on the layer
  // shapes (1024 x 512 x 512: 305 against 232-284 GFLOP/s). Who computes a unit never changes
  // its arithmetic, so results stay bit-identical for any thread count.
  // A batch of dot-path products (GEMV-like, bound by memory bandwidth, nothing packed) keeps
  // two units per thread: the thread whose reads are served faster takes the spare unit (A/B
  // at 2 threads, x(1,512) W(2048,512), before gemm_dot: 44-49 us against 44-56 us with one
  // unit each).
  const int64_t units_per_thread = path == GemmPath::dot ? 2 : 1;
  const int64_t target_units = nt > 1 ? units_per_thread * nt : 1;
  const int64_t parts = std::max<int64_t>(1, (target_units + p.batch - 1) / p.batch);
  const int64_t units = p.batch * parts;
  nt = static_cast<int>(std::min<int64_t>(nt, units));
  // Many small matrices: claim several at a time so the counter is not touched per matrix.
  const int64_t claim = std::max<int64_t>(1, units / (static_cast<int64_t>(nt) * 8));
  const GemmGrid grid =
      path == GemmPath::dot
          ? gemm_choose_grid(p.m, p.n, p.k, parts, Tr::DOT_MI, Tr::DOT_NJ, false)
          : gemm_choose_grid(p.m, p.n, p.k, parts, Tr::MR, Tr::NV * W, true);

  // Per-thread packing buffers, sized for the largest rectangle a thread can get.
  T* workspace = nullptr;
  size_t per_thread = 0;
  PackSizes<Isa, T> sizes(0, 0, 0);
  if (path == GemmPath::packed) {
    const int64_t rows = ((p.m + grid.row_unit - 1) / grid.row_unit + grid.tm - 1) / grid.tm *
                         grid.row_unit;
    const int64_t cols = ((p.n + grid.col_unit - 1) / grid.col_unit + grid.tn - 1) / grid.tn *
                         grid.col_unit;
    sizes = PackSizes<Isa, T>(rows, cols, p.k);
    per_thread = sizes.a + sizes.b;
    workspace = gemm_workspace<Isa, T>().get(per_thread * static_cast<size_t>(nt));
  }

  GemmView<T> base{p.m,     p.n,       p.k, p.a,   p.lda,   p.trans_a, p.b,
                   p.ldb,   p.trans_b, p.c, p.ldc, p.alpha, p.beta,    p.bias};
  base.post = p.post;
  base.share = nt == 1 && units == 1 ? share : nullptr;
  base.a_row_sums = path == GemmPath::packed ? p.a_row_sums : nullptr;
  // Two packed units on two threads (one matrix cut in two, or two matrices): each thread takes
  // its own and then helps with the other's remaining blocks through a PairShare queue, as the
  // two products of gemm_pair do. A static half per thread left 5-8 % of a layer-shaped
  // product's two-thread time idle on a busy host (one core slowed); the claim counter cannot
  // even that out with one unit per thread. Helping measured 1.04-1.12x on the four forward
  // products of a Transformer layer and 1.10-1.13x on its inference (busy host, medians of
  // alternating processes); bit-identical results.
  const bool paired = path == GemmPath::packed && nt == 2 && units == 2 && share == nullptr;
  PairShare<T> pair_shares[2];
  std::atomic<int64_t> next_unit{0};

  // Computes unit u (one rectangle of one matrix) with its blocks queued on unit_share, if any.
  auto run_unit = [&](int64_t u, T* abuf, T* bbuf, PairShare<T>* unit_share) {
    const int64_t item = parts > 1 ? u / parts : u, part = parts > 1 ? u % parts : 0;
    GemmView<T> v = base;
    v.a = p.a ? p.a + item * p.batch_stride_a : nullptr;
    v.b = p.b ? p.b + item * p.batch_stride_b : nullptr;
    v.c = p.c + item * p.batch_stride_c;
    if (unit_share) v.share = unit_share;
    // (Whole matrices skip the divisions: they are most of the cost of a tiny GEMM.)
    int64_t i0 = 0, i1 = p.m, j0 = 0, j1 = p.n;
    if (parts > 1) {
      gemm_split_range(p.m, grid.row_unit, grid.tm, part / grid.tn, &i0, &i1);
      gemm_split_range(p.n, grid.col_unit, grid.tn, part % grid.tn, &j0, &j1);
      if (i0 >= i1 || j0 >= j1) return;
    }
    const GemmView<T> s = parts > 1 ? v.sub(i0, i1, j0, j1) : v;
    switch (path) {
      case GemmPath::empty_k:
        gemm_empty_k(s);
        if (s.post) s.post->fn(s.c, s.ldc, s.m, s.n, s.post->ctx);
        break;
      case GemmPath::dot:
        dot_gemm<Isa, T>(s.m, s.n, s.k, s.a, s.lda, s.b, s.ldb, s.c, s.ldc, s.alpha, s.beta, s.bias);
        if (s.post) s.post->fn(s.c, s.ldc, s.m, s.n, s.post->ctx);
        break;
      case GemmPath::packed:
        gemm_packed<Isa, T>(s, abuf, bbuf);
        break;
    }
  };

#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    DenormalsFlushed flush;
    const int tid = omp_get_thread_num();
    T* abuf = workspace ? workspace + per_thread * static_cast<size_t>(tid) : nullptr;
    T* bbuf = abuf ? abuf + sizes.a : nullptr;
    if (paired && omp_get_num_threads() == 2 && !short_team_forced_for_tests()) {
      PairShare<T>::template run_then_help<Isa>(pair_shares, tid,
                                                [&](PairShare<T>* mine) { run_unit(tid, abuf, bbuf, mine); });
    } else {
      for (;;) {
        const int64_t u0 = next_unit.fetch_add(claim, std::memory_order_relaxed);
        if (u0 >= units) break;
        const int64_t u1 = std::min(units, u0 + claim);
        for (int64_t u = u0; u < u1; ++u) run_unit(u, abuf, bbuf, nullptr);
      }
    }
  }
}

template <class Isa, class T>
void gemm(const GemmProblem<T>& p) {
  gemm_shared<Isa, T>(p, nullptr);
}

// Two independent products of equal work (the input and weight gradients of a linear map:
// rows x in x out multiply-adds each). With exactly two threads each runs on its own thread --
// one core and its L2 per product, no split of either, no duplicated packing -- and the thread
// that finishes first helps with the other's remaining blocks through its PairShare queue
// (chunks of micro-panels computed from the owner's packed panels). Equal work does not mean
// equal time: dW (transposed A to pack) took 1.06-1.08x dX's time, and a busy host slows one
// core; one product per thread left 3-9 % of the pair's two-thread time idle (C++ harness,
// the layer's four shapes, busy host). Helping measured 1.01-1.09x on those pairs (medians of
// 15 alternating rounds, three runs; bit-identical results). Otherwise (not two threads, or
// too little work) one product after the other on all threads. Either may be null. Exceptions
// (a workspace allocation) are carried out of the region and rethrown on the calling thread.
template <class Isa, class T>
void gemm_pair(const GemmProblem<T>* first, const GemmProblem<T>* second, int nthreads) {
  constexpr double kMinMacsEach = 4e6;  // below, the split costs more than it saves
  const double work = first && second ? static_cast<double>(first->m) * first->n * first->k : 0.0;
  if (nthreads != 2 || work < kMinMacsEach) {
    for (const GemmProblem<T>* p : {first, second}) {
      if (p) {
        GemmProblem<T> q = *p;
        q.nthreads = nthreads;
        gemm<Isa, T>(q);
      }
    }
    return;
  }
  std::exception_ptr failed[2];
  PairShare<T> shares[2];  // [0] first's queue, [1] second's
#pragma omp parallel num_threads(2)
  {
    const int tid = omp_get_thread_num();
    try {
      // A team of one (OpenMP may start fewer threads than asked for): thread 0 computes both.
      const bool short_team = omp_get_num_threads() < 2 || short_team_forced_for_tests();
      if (short_team) {
        if (tid == 0) {
          for (const GemmProblem<T>* p : {first, second}) {
            GemmProblem<T> q = *p;
            q.nthreads = 1;
            gemm<Isa, T>(q);
          }
        }
      } else {
        GemmProblem<T> q = tid == 0 ? *first : *second;
        q.nthreads = 1;
        PairShare<T>::template run_then_help<Isa>(shares, tid,
                                                  [&](PairShare<T>* mine) { gemm_shared<Isa, T>(q, mine); });
      }
    } catch (...) {
      failed[tid] = std::current_exception();
    }
  }
  for (const auto& e : failed) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace seqblocks
