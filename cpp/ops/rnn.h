// Recurrent layers: one single-direction layer (LSTM, GRU, Elman RNN) over a whole padded
// sequence, forward and backward through time. Math (PyTorch's gate order and formulas):
//
//   LSTM  a = x_t W_ih^T + b_ih + h W_hh^T + b_hh = [i f g o] pre-activations (G = 4)
//         i, f, o = sigmoid, g = tanh;  c' = f c + i g;  h' = o tanh(c')
//   GRU   a_x = x_t W_ih^T + b_ih,  a_h = h W_hh^T + b_hh  (G = 3, order r z n)
//         r = sigmoid(a_x,r + a_h,r), z = sigmoid(a_x,z + a_h,z), n = tanh(a_x,n + r a_h,n)
//         h' = (1 - z) n + z h
//   RNN   h' = act(x_t W_ih^T + b_ih + h W_hh^T + b_hh), act = tanh or relu (G = 1)
//
// Shapes: x (T, B, I), states (B, H), w_ih (G H, I), w_hh (G H, H), biases (G H) or null,
// y (T, B, H), lengths (B) in [1, T] or null. Row b is active at step t iff t < lengths[b]; an
// inactive row carries its state unchanged and outputs 0 (PackedSequence numbers at padded
// shapes). `reverse` runs t = T-1 .. 0.
//
// Work: the input projection of all steps is one GEMM; the time loop is one parallel region.
// With at least 5 batch rows per thread and a W_hh that fits one core's L2, thread p owns batch
// rows [r0, r1) and all units: per step it multiplies its rows of h by all of W_hh (one GEMM
// against its own packed copy) and applies the fused gate kernel, with no barrier -- rows never
// depend on each other. Otherwise thread p owns hidden units [j0, j1): per step it multiplies h
// by its own rows of W_hh (permuted so its G gate blocks are contiguous, one GEMM), applies the
// fused gate kernel to its units and meets the others at one barrier (h is double-buffered; a
// StepBarrier from ops/parallel.h, which spins, then sleeps). Backward mirrors it: per step the
// fused gate-gradient kernel on owned rows or units, a barrier (units split only), then dh for
// owned rows or columns = dA_h W_hh[:, j0:j1]; after the loop dx, dW_ih, dW_hh are three large
// GEMMs and the bias gradients column sums (rows summed in order: results do not depend on the
// thread count).
//
// Workspace (training mode), T B H rnn_workspace_per_unit(cell) elements:
//   gates (T, B, S H): LSTM [i f g o] activations (S = 4), GRU [r z n a_h,n] (S = 4); RNN none
//   LSTM only: cprev (T, B, H) and tanh(c') (T, B, H)
// The backward also reads the forward's output y and h0 (RnnBackwardArgs), which hold every other
// state it needs, so the workspace does not copy them: an RNN's h' is y[t] (its activation
// derivative needs nothing else), and the state entering step t of an active row is
//   forward:  y[t-1] for t >= 1, h0 at t = 0;
//   reverse:  y[t+1] for t + 1 < length, h0 at t = length - 1
// (an active step's neighbour on the input side is active too, inactive steps have zero gate
// gradients). The RNN keeps no workspace at all; LSTM 7 -> 6 and GRU 5 -> 4 slots per unit.
// The forward also uses the gate slots for the input projection before the gate kernel
// overwrites them (rnn_forward), so training needs no separate (T, B, G H) temporary.
#pragma once

#include <cstdint>

#include "runtime/isa.h"

namespace seqblocks {

enum class RnnCell : int { lstm = 0, gru = 1, rnn_tanh = 2, rnn_relu = 3 };

static inline int64_t rnn_gates(RnnCell c) { return c == RnnCell::lstm ? 4 : c == RnnCell::gru ? 3 : 1; }

static inline int64_t rnn_workspace_per_unit(RnnCell c) {
  return c == RnnCell::lstm ? 4 + 2 : c == RnnCell::gru ? 4 : 0;
}

template <class T>
struct RnnForwardArgs {
  RnnCell cell;
  int64_t steps, B, I, H;  // steps = T, the sequence length
  const T* x;          // (T, B, I)
  const T* h0;         // (B, H)
  const T* c0;         // (B, H), LSTM only
  const T* w_ih;       // (G H, I)
  const T* w_hh;       // (G H, H)
  const T* b_ih;       // (G H) or null
  const T* b_hh;       // (G H) or null
  const int64_t* lengths;  // (B) or null
  bool reverse;
  T* y;    // (T, B, H)
  T* h_n;  // (B, H)
  T* c_n;  // (B, H), LSTM only
  T* ws;   // workspace or null (inference)
  int nthreads;
  // LSTM with a projection (proj_size P < H): w_hr (P, H), h' = (o tanh(c')) W_hr^T; then h0, h_n,
  // y and w_hh's columns have P instead of H. Null: no projection.
  const T* w_hr = nullptr;
  int64_t P = 0;
};

template <class T>
struct RnnBackwardArgs {
  RnnCell cell;
  int64_t steps, B, I, H;  // steps = T, the sequence length
  const T* dy;    // (T, B, H)
  const T* dh_n;  // (B, H)
  const T* dc_n;  // (B, H), LSTM only
  const T* x;     // (T, B, I)
  const T* w_ih;  // (G H, I)
  const T* w_hh;  // (G H, H)
  const int64_t* lengths;
  bool reverse;
  const T* ws;  // the forward's workspace
  const T* y;   // (T, B, H): the forward's output (read, with h0, for the states entering each step)
  const T* h0;  // (B, H): the forward's initial state
  T* dx;        // (T, B, I)
  T* dh0;       // (B, H)
  T* dc0;       // (B, H), LSTM only
  T* dw_ih;     // (G H, I)
  T* dw_hh;     // (G H, H)
  T* db_ih;     // (G H)
  T* db_hh;     // (G H)
  int nthreads;
  const T* w_hr = nullptr;  // (P, H) or null, as in RnnForwardArgs
  int64_t P = 0;
  T* dw_hr = nullptr;       // (P, H)
};

// Workspace elements of an LSTM with projection: gates (T, B, 4H), hprev (T, B, P), cprev and
// tanh(c') (T, B, H) each, and the unprojected h_raw = o tanh(c') (T, B, H).
static inline int64_t lstm_proj_workspace_per_row(int64_t H, int64_t P) { return 7 * H + P; }

struct RnnKernels {
  void (*forward_f32)(const RnnForwardArgs<float>&);
  void (*forward_f64)(const RnnForwardArgs<double>&);
  void (*backward_f32)(const RnnBackwardArgs<float>&);
  void (*backward_f64)(const RnnBackwardArgs<double>&);
};

template <class Isa>
const RnnKernels& rnn_kernels();

}  // namespace seqblocks
