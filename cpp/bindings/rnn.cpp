// Bindings for the recurrent layer pairs (ops/rnn.h): validate, release the GIL, call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "bindings/common.h"
#include "bindings/ops_args.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/rnn.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

using OptArray = std::optional<py::array>;

static inline std::string dims(std::initializer_list<int64_t> d) {
  std::string s = "(";
  bool first = true;
  for (int64_t v : d) {
    s += (first ? "" : ", ") + std::to_string(v);
    first = false;
  }
  return s + (d.size() == 1 ? ",)" : ")");
}

static inline void expect_shape(const py::array& a, std::initializer_list<int64_t> want, const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(want.size());
  if (ok) {
    int i = 0;
    for (int64_t w : want) ok = ok && a.shape(i++) == w;
  }
  if (!ok) throw std::invalid_argument(std::string(name) + ": expected shape " + dims(want) + ", got " + shape_str(a));
}

static inline RnnCell cell_of(int cell) {
  if (cell < 0 || cell > 3) throw std::invalid_argument("cell: expected 0 (lstm), 1 (gru), 2 (rnn_tanh) or 3 (rnn_relu)");
  return static_cast<RnnCell>(cell);
}

// lengths as a C-contiguous int64 array of shape (B,) with values in [1, T], or empty.
static inline std::optional<py::array_t<int64_t, py::array::c_style>> lengths_of(const OptArray& l, int64_t B,
                                                                                 int64_t T) {
  if (!l) return std::nullopt;
  if (l->dtype().kind() != 'i' && l->dtype().kind() != 'u') {
    throw py::type_error("lengths: expected an integer array, got dtype " + std::string(py::str(l->dtype())));
  }
  auto a = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(*l);
  expect_shape(a, {B}, "lengths");
  const int64_t* p = a.data();
  for (int64_t b = 0; b < B; ++b) {
    if (p[b] < 1 || p[b] > T) {
      throw std::invalid_argument("lengths: expected values in [1, " + std::to_string(T) + "], got " +
                                  std::to_string(p[b]));
    }
  }
  return a;
}

template <class T>
py::tuple forward_impl(RnnCell cell, const py::array& x_arr, const py::array& h0_arr, const OptArray& c0_arr,
                       const py::array& wih_arr, const py::array& whh_arr, const OptArray& bih_arr,
                       const OptArray& bhh_arr, const OptArray& whr_arr, const OptArray& len_arr, bool reverse,
                       bool needs_grad) {
  const DType dt = std::is_same_v<T, float> ? DType::f32 : DType::f64;
  if (x_arr.ndim() != 3) throw std::invalid_argument("x: expected a 3-D array (T, B, I), got shape " + shape_str(x_arr));
  const int64_t T_ = x_arr.shape(0), B = x_arr.shape(1), I = x_arr.shape(2);
  const int64_t G = rnn_gates(cell);
  if (wih_arr.ndim() != 2 || wih_arr.shape(0) % G != 0) {
    throw std::invalid_argument("w_ih: expected shape (" + std::to_string(G) + "*hidden_size, input_size), got " +
                                shape_str(wih_arr));
  }
  const int64_t H = wih_arr.shape(0) / G;
  if (H <= 0 || T_ <= 0 || B <= 0) throw std::invalid_argument("x, w_ih: expected non-empty sizes");
  const bool lstm = cell == RnnCell::lstm;
  if (whr_arr && !lstm) throw std::invalid_argument("w_hr: only an LSTM has a projection");
  int64_t P = H;
  if (whr_arr) {
    expect_dtype(*whr_arr, dt, "w_hr", "x");
    if (whr_arr->ndim() != 2 || whr_arr->shape(1) != H || whr_arr->shape(0) <= 0 || whr_arr->shape(0) >= H) {
      throw std::invalid_argument("w_hr: expected shape (proj_size, " + std::to_string(H) +
                                  ") with 0 < proj_size < hidden_size, got " + shape_str(*whr_arr));
    }
    P = whr_arr->shape(0);
  }
  expect_dtype(h0_arr, dt, "h0", "x");
  expect_dtype(wih_arr, dt, "w_ih", "x");
  expect_dtype(whh_arr, dt, "w_hh", "x");
  expect_shape(whh_arr, {G * H, P}, "w_hh");
  expect_shape(wih_arr, {G * H, I}, "w_ih");
  expect_shape(h0_arr, {B, P}, "h0");
  if (lstm && !c0_arr) throw std::invalid_argument("c0: required for an LSTM");
  if (lstm) {
    expect_dtype(*c0_arr, dt, "c0", "x");
    expect_shape(*c0_arr, {B, H}, "c0");
  }
  for (auto [b, name] : {std::pair{&bih_arr, "b_ih"}, std::pair{&bhh_arr, "b_hh"}}) {
    if (*b) {
      expect_dtype(**b, dt, name, "x");
      expect_shape(**b, {G * H}, name);
    }
  }
  auto lengths = lengths_of(len_arr, B, T_);
  auto x = c_input<T>(x_arr);
  auto h0 = c_input<T>(h0_arr);
  auto wih = c_input<T>(wih_arr);
  auto whh = c_input<T>(whh_arr);
  std::optional<CArray<T>> c0, bih, bhh, whr;
  if (lstm) c0 = c_input<T>(*c0_arr);
  if (whr_arr) whr = c_input<T>(*whr_arr);
  if (bih_arr) bih = c_input<T>(*bih_arr);
  if (bhh_arr) bhh = c_input<T>(*bhh_arr);
  const int64_t ws_elems = checked_mul(checked_mul(T_, B, "workspace"),
                                       whr ? lstm_proj_workspace_per_row(H, P) : H * rnn_workspace_per_unit(cell),
                                       "workspace");
  checked_mul(checked_mul(T_, B, "x"), G * H, "x");
  auto y = new_output<T>({T_, B, P});
  auto h_n = new_output<T>({B, P});
  py::object c_n = py::none();
  py::object ws = py::none();
  RnnForwardArgs<T> a{};
  a.cell = cell, a.steps = T_, a.B = B, a.I = I, a.H = H;
  a.x = x.data(), a.h0 = h0.data(), a.c0 = lstm ? c0->data() : nullptr;
  a.w_ih = wih.data(), a.w_hh = whh.data(), a.b_ih = bih ? bih->data() : nullptr, a.b_hh = bhh ? bhh->data() : nullptr;
  a.lengths = lengths ? lengths->data() : nullptr;
  a.reverse = reverse;
  a.w_hr = whr ? whr->data() : nullptr, a.P = P;
  a.y = y.mutable_data(), a.h_n = h_n.mutable_data();
  if (lstm) {
    auto c = new_output<T>({B, H});
    a.c_n = c.mutable_data();
    c_n = c;
  }
  if (needs_grad) {
    auto w = new_output<T>({ws_elems});
    a.ws = w.mutable_data();
    ws = w;
  }
  {
    py::gil_scoped_release release;
    a.nthreads = num_threads();
    const RnnKernels& k = SEQBLOCKS_DISPATCH(rnn_kernels);
    if constexpr (std::is_same_v<T, float>) k.forward_f32(a);
    else k.forward_f64(a);
  }
  return py::make_tuple(y, h_n, c_n, ws);
}

template <class T>
py::tuple backward_impl(RnnCell cell, const py::array& dy_arr, const py::array& dhn_arr, const OptArray& dcn_arr,
                        const py::array& x_arr, const py::array& wih_arr, const py::array& whh_arr,
                        const OptArray& whr_arr, const OptArray& len_arr, bool reverse, const py::array& ws_arr,
                        const py::array& y_arr, const py::array& h0_arr) {
  const DType dt = std::is_same_v<T, float> ? DType::f32 : DType::f64;
  const int64_t G = rnn_gates(cell);
  if (x_arr.ndim() != 3 || wih_arr.ndim() != 2 || wih_arr.shape(0) % G != 0 || wih_arr.shape(0) == 0) {
    throw std::invalid_argument("x, w_ih: expected a 3-D array and a (G*hidden_size, input_size) matrix");
  }
  const int64_t T_ = x_arr.shape(0), B = x_arr.shape(1), I = x_arr.shape(2), H = wih_arr.shape(0) / G;
  const bool lstm = cell == RnnCell::lstm;
  if (whr_arr && !lstm) throw std::invalid_argument("w_hr: only an LSTM has a projection");
  int64_t P = H;
  if (whr_arr) {
    expect_dtype(*whr_arr, dt, "w_hr", "grad_output");
    if (whr_arr->ndim() != 2 || whr_arr->shape(1) != H || whr_arr->shape(0) <= 0 || whr_arr->shape(0) >= H) {
      throw std::invalid_argument("w_hr: expected shape (proj_size, " + std::to_string(H) + "), got " +
                                  shape_str(*whr_arr));
    }
    P = whr_arr->shape(0);
  }
  for (auto [a, name] : {std::pair{&dhn_arr, "dh_n"}, std::pair{&x_arr, "x"}, std::pair{&wih_arr, "w_ih"},
                         std::pair{&whh_arr, "w_hh"}, std::pair{&ws_arr, "workspace"}, std::pair{&y_arr, "y"},
                         std::pair{&h0_arr, "h0"}}) {
    expect_dtype(*a, dt, name, "grad_output");
  }
  expect_shape(dy_arr, {T_, B, P}, "dy");
  expect_shape(dhn_arr, {B, P}, "dh_n");
  expect_shape(y_arr, {T_, B, P}, "y");
  expect_shape(h0_arr, {B, P}, "h0");
  expect_shape(wih_arr, {G * H, I}, "w_ih");
  expect_shape(whh_arr, {G * H, P}, "w_hh");
  expect_shape(ws_arr, {T_ * B * (whr_arr ? lstm_proj_workspace_per_row(H, P) : H * rnn_workspace_per_unit(cell))},
               "workspace");
  if (lstm) {
    if (!dcn_arr) throw std::invalid_argument("dc_n: required for an LSTM");
    expect_dtype(*dcn_arr, dt, "dc_n", "grad_output");
    expect_shape(*dcn_arr, {B, H}, "dc_n");
  }
  auto lengths = lengths_of(len_arr, B, T_);
  auto dy = c_input<T>(dy_arr);
  auto dhn = c_input<T>(dhn_arr);
  auto x = c_input<T>(x_arr);
  auto wih = c_input<T>(wih_arr);
  auto whh = c_input<T>(whh_arr);
  auto ws = c_input<T>(ws_arr);
  auto y = c_input<T>(y_arr);
  auto h0 = c_input<T>(h0_arr);
  std::optional<CArray<T>> dcn, whr;
  if (lstm) dcn = c_input<T>(*dcn_arr);
  if (whr_arr) whr = c_input<T>(*whr_arr);
  auto dx = new_output<T>({T_, B, I});
  auto dh0 = new_output<T>({B, P});
  auto dwih = new_output<T>({G * H, I});
  auto dwhh = new_output<T>({G * H, P});
  auto dbih = new_output<T>({G * H});
  auto dbhh = new_output<T>({G * H});
  py::object dc0 = py::none();
  py::object dwhr = py::none();
  RnnBackwardArgs<T> a{};
  a.cell = cell, a.steps = T_, a.B = B, a.I = I, a.H = H;
  a.dy = dy.data(), a.dh_n = dhn.data(), a.dc_n = lstm ? dcn->data() : nullptr;
  a.x = x.data(), a.w_ih = wih.data(), a.w_hh = whh.data();
  a.lengths = lengths ? lengths->data() : nullptr;
  a.reverse = reverse;
  a.ws = ws.data(), a.y = y.data(), a.h0 = h0.data();
  a.dx = dx.mutable_data(), a.dh0 = dh0.mutable_data(), a.dw_ih = dwih.mutable_data(), a.dw_hh = dwhh.mutable_data();
  a.db_ih = dbih.mutable_data(), a.db_hh = dbhh.mutable_data();
  if (whr) {
    auto w = new_output<T>({P, H});
    a.w_hr = whr->data(), a.P = P, a.dw_hr = w.mutable_data();
    dwhr = w;
  }
  if (lstm) {
    auto c = new_output<T>({B, H});
    a.dc0 = c.mutable_data();
    dc0 = c;
  }
  {
    py::gil_scoped_release release;
    a.nthreads = num_threads();
    const RnnKernels& k = SEQBLOCKS_DISPATCH(rnn_kernels);
    if constexpr (std::is_same_v<T, float>) k.backward_f32(a);
    else k.backward_f64(a);
  }
  return py::make_tuple(dx, dh0, dc0, dwih, dwhh, dbih, dbhh, dwhr);
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(rnn) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "rnn_layer_forward",
      [](int cell, const py::array& x, const py::array& h0, const OptArray& c0, const py::array& w_ih,
         const py::array& w_hh, const OptArray& b_ih, const OptArray& b_hh, const OptArray& w_hr,
         const OptArray& lengths, bool reverse, bool needs_grad) {
        const RnnCell c = cell_of(cell);
        return float_dtype_of(x, "x") == DType::f32
                   ? forward_impl<float>(c, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, needs_grad)
                   : forward_impl<double>(c, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse, needs_grad);
      },
      py::arg("cell"), py::arg("x").noconvert(), py::arg("h0").noconvert(), py::arg("c0").none(true),
      py::arg("w_ih").noconvert(), py::arg("w_hh").noconvert(), py::arg("b_ih").none(true),
      py::arg("b_hh").none(true), py::arg("w_hr").none(true), py::arg("lengths").none(true), py::arg("reverse"), py::arg("needs_grad"),
      "One recurrent layer direction over x (T, B, I) -> (y, h_n, c_n or None, workspace or None)");
  m.def(
      "rnn_layer_backward",
      [](int cell, const py::array& dy, const py::array& dh_n, const OptArray& dc_n, const py::array& x,
         const py::array& w_ih, const py::array& w_hh, const OptArray& w_hr, const OptArray& lengths, bool reverse,
         const py::array& ws, const py::array& y, const py::array& h0) {
        const RnnCell c = cell_of(cell);
        return float_dtype_of(dy, "dy") == DType::f32
                   ? backward_impl<float>(c, dy, dh_n, dc_n, x, w_ih, w_hh, w_hr, lengths, reverse, ws, y, h0)
                   : backward_impl<double>(c, dy, dh_n, dc_n, x, w_ih, w_hh, w_hr, lengths, reverse, ws, y, h0);
      },
      py::arg("cell"), py::arg("dy").noconvert(), py::arg("dh_n").noconvert(), py::arg("dc_n").none(true),
      py::arg("x").noconvert(), py::arg("w_ih").noconvert(), py::arg("w_hh").noconvert(),
      py::arg("w_hr").none(true), py::arg("lengths").none(true), py::arg("reverse"), py::arg("ws").noconvert(),
      py::arg("y").noconvert(), py::arg("h0").noconvert(),
      "Backward through time (y, h0: the forward's output and initial state) -> (dx, dh0, dc0 or None, dw_ih, "
      "dw_hh, db_ih, db_hh, dw_hr or None)");
}
