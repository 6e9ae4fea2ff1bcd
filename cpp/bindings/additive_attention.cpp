// Bindings for the fused additive attention scores: validate, allocate outputs, release the GIL,
// call. qp (B, Lq, H), kp (B, S, H), w (H,).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/common.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/additive_attention.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

struct Dims {
  int64_t b, lq, s, h;
};

Dims check(const py::array& qp, const py::array& kp, const py::array& w, DType* t) {
  *t = float_dtype_of(qp, "qp");
  for (auto [a, name] : {std::pair<const py::array*, const char*>{&kp, "kp"}, {&w, "w"}}) {
    if (float_dtype_of(*a, name) != *t) {
      throw py::type_error(std::string(name) + ": expected qp's dtype " + std::string(py::str(qp.dtype())) +
                           ", got " + std::string(py::str(a->dtype())));
    }
  }
  if (qp.ndim() != 3) throw std::invalid_argument("qp: expected a 3-D array (B, Lq, H), got shape " + shape_str(qp));
  if (kp.ndim() != 3 || kp.shape(0) != qp.shape(0) || kp.shape(2) != qp.shape(2)) {
    throw std::invalid_argument("kp: expected shape (" + std::to_string(qp.shape(0)) + ", S, " +
                                std::to_string(qp.shape(2)) + "), got " + shape_str(kp));
  }
  if (w.ndim() != 1 || w.shape(0) != qp.shape(2)) {
    throw std::invalid_argument("w: expected shape (" + std::to_string(qp.shape(2)) + ",), got " + shape_str(w));
  }
  return {qp.shape(0), qp.shape(1), kp.shape(1), qp.shape(2)};
}

template <class T>
py::array forward(const py::array& qp_a, const py::array& kp_a, const py::array& w_a, const Dims& d) {
  CArray<T> qp = CArray<T>::ensure(qp_a), kp = CArray<T>::ensure(kp_a), w = CArray<T>::ensure(w_a);
  auto scores = new_output<T, py::array::c_style | py::array::forcecast>({d.b, d.lq, d.s});
  const T *q = qp.data(), *k = kp.data(), *wp = w.data();
  T* out = scores.mutable_data();
  {
    py::gil_scoped_release release;
    const AdditiveScoreKernels& kt = SEQBLOCKS_DISPATCH(additive_score_kernels);
    if constexpr (std::is_same_v<T, float>) {
      kt.forward_f32(q, k, wp, out, d.b, d.lq, d.s, d.h, num_threads());
    } else {
      kt.forward_f64(q, k, wp, out, d.b, d.lq, d.s, d.h, num_threads());
    }
  }
  return std::move(scores);
}

template <class T>
py::tuple backward(const py::array& ds_a, const py::array& qp_a, const py::array& kp_a, const py::array& w_a,
                   const Dims& d) {
  CArray<T> ds = CArray<T>::ensure(ds_a), qp = CArray<T>::ensure(qp_a), kp = CArray<T>::ensure(kp_a),
            w = CArray<T>::ensure(w_a);
  auto dqp = new_output<T, py::array::c_style | py::array::forcecast>({d.b, d.lq, d.h});
  auto dkp = new_output<T, py::array::c_style | py::array::forcecast>({d.b, d.s, d.h});
  auto dwp = new_output<T, py::array::c_style | py::array::forcecast>({d.b, d.h});
  const T *g = ds.data(), *q = qp.data(), *k = kp.data(), *wp = w.data();
  T *dq = dqp.mutable_data(), *dk = dkp.mutable_data(), *dw = dwp.mutable_data();
  {
    py::gil_scoped_release release;
    const AdditiveScoreKernels& kt = SEQBLOCKS_DISPATCH(additive_score_kernels);
    if constexpr (std::is_same_v<T, float>) {
      kt.backward_f32(g, q, k, wp, dq, dk, dw, d.b, d.lq, d.s, d.h, num_threads());
    } else {
      kt.backward_f64(g, q, k, wp, dq, dk, dw, d.b, d.lq, d.s, d.h, num_threads());
    }
  }
  return py::make_tuple(std::move(dqp), std::move(dkp), std::move(dwp));
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(additive_attention) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "additive_scores_forward",
      [](const py::array& qp, const py::array& kp, const py::array& w) {
        DType t;
        const Dims d = check(qp, kp, w, &t);
        return t == DType::f32 ? forward<float>(qp, kp, w, d) : forward<double>(qp, kp, w, d);
      },
      py::arg("qp").noconvert(), py::arg("kp").noconvert(), py::arg("w").noconvert(),
      "scores[b,i,j] = sum_h w_h tanh(qp[b,i,h] + kp[b,j,h])");
  m.def(
      "additive_scores_backward",
      [](const py::array& ds, const py::array& qp, const py::array& kp, const py::array& w) {
        DType t;
        const Dims d = check(qp, kp, w, &t);
        if (float_dtype_of(ds, "grad_output") != t) throw py::type_error("grad_output: expected qp's dtype");
        if (ds.ndim() != 3 || ds.shape(0) != d.b || ds.shape(1) != d.lq || ds.shape(2) != d.s) {
          throw std::invalid_argument("grad_output: expected shape (B, Lq, S) of the scores, got " + shape_str(ds));
        }
        return t == DType::f32 ? backward<float>(ds, qp, kp, w, d) : backward<double>(ds, qp, kp, w, d);
      },
      py::arg("grad_output").noconvert(), py::arg("qp").noconvert(), py::arg("kp").noconvert(),
      py::arg("w").noconvert(), "(dqp, dkp, dw per batch (B, H)) of additive_scores_forward");
}
