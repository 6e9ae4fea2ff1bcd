// Bindings for scaled dot-product attention over (N, L, E) / (N, S, E) / (N, S, Ev) arrays (the
// Python layer flattens the leading dims and turns a boolean mask into an additive one):
// validate, allocate outputs, release the GIL, call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>

#include "bindings/common.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/attention.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;
using IArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

void check_dim(const py::array& a, const char* name, int axis, int64_t want, const char* what) {
  if (a.shape(axis) != want) {
    throw std::invalid_argument(std::string(name) + ": expected dim " + std::to_string(axis) + " = " +
                                std::to_string(want) + " (" + what + "), got shape " + shape_str(a));
  }
}

void check_dtype(const py::array& a, const char* name, DType t) {
  if (float_dtype_of(a, name) != t) {
    throw py::type_error(std::string(name) + ": expected the dtype of q, got " + std::string(py::str(a.dtype())));
  }
}

struct Common {
  int64_t n, l, s, e, ev;
};

// q, k, v shapes -- (N, len, features), or with heads (B, H, len, features): N = B H -- and the
// optional mask's bounds (every (n, i, j) it addresses lies inside it).
Common check_common(const py::array& q, const py::array& k, const py::array& v, const std::optional<py::array>& mask,
                    const std::optional<py::array>& mask_off, int64_t sl, int64_t ss, DType t, bool heads = false) {
  const int nd = heads ? 4 : 3;
  for (const auto& [a, name] : {std::pair<const py::array&, const char*>{q, "q"}, {k, "k"}, {v, "v"}}) {
    if (a.ndim() != nd) {
      throw std::invalid_argument(std::string(name) + (heads ? ": expected a 4-D array (B, H, len, features)"
                                                             : ": expected a 3-D array (N, len, features)") +
                                  ", got shape " + shape_str(a));
    }
  }
  check_dtype(k, "k", t);
  check_dtype(v, "v", t);
  const int lead = nd - 2;  // axes before (len, features)
  for (int ax = 0; ax < lead; ++ax) {
    check_dim(k, "k", ax, q.shape(ax), "q's leading dims");
    check_dim(v, "v", ax, q.shape(ax), "q's leading dims");
  }
  const int64_t n = heads ? checked_mul(q.shape(0), q.shape(1), "B H") : q.shape(0);
  Common c{n, q.shape(lead), k.shape(lead), q.shape(lead + 1), v.shape(lead + 1)};
  check_dim(k, "k", lead + 1, c.e, "q's head size");
  check_dim(v, "v", lead, c.s, "k's source length");
  if (mask.has_value() != mask_off.has_value()) {
    throw std::invalid_argument("mask_offsets: expected an array exactly when mask is given");
  }
  if (mask) {
    check_dtype(*mask, "mask", t);
    if (mask->ndim() != 1) throw std::invalid_argument("mask: expected a flat 1-D array, got shape " + shape_str(*mask));
    if (mask_off->ndim() != 1 || mask_off->shape(0) != c.n) {
      throw std::invalid_argument("mask_offsets: expected shape (" + std::to_string(c.n) + ",), got " +
                                  shape_str(*mask_off));
    }
    if (sl < 0 || ss < 0) throw std::invalid_argument("mask strides: expected >= 0");
    IArray off = IArray::ensure(*mask_off);
    const int64_t span = (c.l > 0 ? (c.l - 1) * sl : 0) + (c.s > 0 ? (c.s - 1) * ss : 0);
    for (int64_t i = 0; i < c.n; ++i) {
      const int64_t o = off.at(i);
      if (o < 0 || o + span >= mask->shape(0)) {
        throw std::invalid_argument("mask_offsets: entry " + std::to_string(i) + " addresses outside mask");
      }
    }
  }
  return c;
}

template <class T>
SdpaArgs<T> make_args(const Common& c, const T* q, const T* k, const T* v,
                      const std::optional<CArray<T>>& mask, const std::optional<IArray>& off, int64_t sl, int64_t ss,
                      bool causal, double scale, double p, uint64_t seed) {
  SdpaArgs<T> a;
  a.n = c.n; a.l = c.l; a.s = c.s; a.e = c.e; a.ev = c.ev;
  a.q = q; a.k = k; a.v = v;
  a.q_at = SdpaLayout::contiguous(c.l, c.e);
  a.k_at = SdpaLayout::contiguous(c.s, c.e);
  a.v_at = SdpaLayout::contiguous(c.s, c.ev);
  a.out_at = SdpaLayout::contiguous(c.l, c.ev);
  a.dout_at = a.out_at;
  a.dq_at = a.q_at;
  a.dk_at = a.k_at;
  a.dv_at = a.v_at;
  if (mask) {
    a.mask = mask->data();
    a.mask_off = off->data();
    a.mask_sl = sl;
    a.mask_ss = ss;
  }
  a.causal = causal;
  a.scale = static_cast<T>(scale);
  a.dropout_p = p;
  a.seed = seed;
  a.nthreads = num_threads();
  return a;
}

// The layout of a (B, H, len, features) view read in place: non-negative strides, rows
// contiguous (the Python layer copies anything else).
template <class T>
SdpaLayout heads_layout(const py::array& a, const char* name) {
  constexpr int64_t item = sizeof(T);
  for (int ax = 0; ax < 4; ++ax) {
    if (a.strides(ax) < 0 || a.strides(ax) % item != 0) {
      throw std::invalid_argument(std::string(name) + ": expected non-negative strides in whole elements, got " +
                                  std::to_string(a.strides(ax)) + " bytes on axis " + std::to_string(ax));
    }
  }
  if (a.shape(3) > 1 && a.strides(3) != item) {
    throw std::invalid_argument(std::string(name) + ": expected contiguous rows (last stride " +
                                std::to_string(item) + " bytes), got " + std::to_string(a.strides(3)));
  }
  return {a.strides(0) / item, a.strides(1) / item, a.strides(2) / item};
}

// 3-D q, k, v: contiguous (copied if not), out (N, L, Ev). 4-D (B, H, ...) q, k, v: read in place
// with their strides; out (B H, L, Ev), or with merge_heads (B, L, H Ev) -- the heads merged.
template <class T>
py::tuple forward(const py::array& q_arr, const py::array& k_arr, const py::array& v_arr,
                  const std::optional<py::array>& mask_arr, const std::optional<py::array>& off_arr, int64_t sl,
                  int64_t ss, bool causal, double scale, double p, uint64_t seed, bool merge_heads, const Common& c) {
  const bool heads = q_arr.ndim() == 4;
  if (merge_heads && !heads) throw std::invalid_argument("merge_heads: expected 4-D (B, H, L, E) q, k and v");
  std::optional<CArray<T>> q, k, v;
  if (!heads) q = CArray<T>::ensure(q_arr), k = CArray<T>::ensure(k_arr), v = CArray<T>::ensure(v_arr);
  std::optional<CArray<T>> mask;
  std::optional<IArray> off;
  if (mask_arr) {
    mask = CArray<T>::ensure(*mask_arr);
    off = IArray::ensure(*off_arr);
  }
  checked_mul(checked_mul(c.n, c.l, "out size"), c.ev, "out size");
  const int64_t B = heads ? q_arr.shape(0) : c.n, H = heads ? q_arr.shape(1) : 1;
  auto out = merge_heads ? new_output<T, py::array::c_style | py::array::forcecast>({B, c.l, H * c.ev})
                         : new_output<T, py::array::c_style | py::array::forcecast>({c.n, c.l, c.ev});
  auto stats = new_output<T, py::array::c_style | py::array::forcecast>({c.n, c.l, 2});
  SdpaArgs<T> a = heads ? make_args<T>(c, static_cast<const T*>(q_arr.data()), static_cast<const T*>(k_arr.data()),
                                       static_cast<const T*>(v_arr.data()), mask, off, sl, ss, causal, scale, p, seed)
                        : make_args<T>(c, q->data(), k->data(), v->data(), mask, off, sl, ss, causal, scale, p, seed);
  if (heads) {
    a.heads = H;
    a.q_at = heads_layout<T>(q_arr, "q");
    a.k_at = heads_layout<T>(k_arr, "k");
    a.v_at = heads_layout<T>(v_arr, "v");
    if (merge_heads) a.out_at = {c.l * H * c.ev, c.ev, H * c.ev};
    else a.out_at = {H * c.l * c.ev, c.l * c.ev, c.ev};
  }
  a.out = out.mutable_data();
  a.stats = stats.mutable_data();
  {
    py::gil_scoped_release release;
    const AttentionKernels& kt = SEQBLOCKS_DISPATCH(attention_kernels);
    if constexpr (std::is_same_v<T, float>) kt.sdpa_forward_f32(a); else kt.sdpa_forward_f64(a);
  }
  return py::make_tuple(std::move(out), std::move(stats));
}

// A 4-D (B, H, len, features) view the backward writes into: q's dtype, the given shape,
// writable, and a layout heads_layout accepts.
template <class T>
SdpaLayout grad_layout(const py::array& a, const char* name, int64_t b, int64_t h, int64_t len, int64_t feat,
                       DType t) {
  check_dtype(a, name, t);
  const int64_t want[4] = {b, h, len, feat};
  if (a.ndim() != 4) {
    throw std::invalid_argument(std::string(name) + ": expected a 4-D array (B, H, len, features), got shape " +
                                shape_str(a));
  }
  for (int ax = 0; ax < 4; ++ax) check_dim(a, name, ax, want[ax], "its input's shape");
  if (!a.writeable()) throw std::invalid_argument(std::string(name) + ": expected a writable array");
  return heads_layout<T>(a, name);
}

// 3-D (N, len, features) operands: contiguous (copied if not); dq, dk, dv allocated here.
// 4-D (B, H, len, features) q, k, v, out and grad_output: read in place with their strides,
// and dq, dk, dv written in place into the given 4-D views (views of one packed gradient of a
// projection, typically); every element of them is written.
template <class T>
py::object backward(const py::array& dout_arr, const py::array& q_arr, const py::array& k_arr, const py::array& v_arr,
                    const py::array& out_arr, const py::array& stats_arr, const std::optional<py::array>& mask_arr,
                    const std::optional<py::array>& off_arr, int64_t sl, int64_t ss, bool causal, double scale,
                    double p, uint64_t seed, const Common& c, const std::optional<py::tuple>& grads, DType t) {
  const bool heads = q_arr.ndim() == 4;
  std::optional<CArray<T>> q, k, v, dout, out;
  if (!heads) {
    q = CArray<T>::ensure(q_arr), k = CArray<T>::ensure(k_arr), v = CArray<T>::ensure(v_arr);
    dout = CArray<T>::ensure(dout_arr), out = CArray<T>::ensure(out_arr);
  }
  CArray<T> stats = CArray<T>::ensure(stats_arr);
  std::optional<CArray<T>> mask;
  std::optional<IArray> off;
  if (mask_arr) {
    mask = CArray<T>::ensure(*mask_arr);
    off = IArray::ensure(*off_arr);
  }
  SdpaArgs<T> a = heads ? make_args<T>(c, static_cast<const T*>(q_arr.data()), static_cast<const T*>(k_arr.data()),
                                       static_cast<const T*>(v_arr.data()), mask, off, sl, ss, causal, scale, p, seed)
                        : make_args<T>(c, q->data(), k->data(), v->data(), mask, off, sl, ss, causal, scale, p, seed);
  a.stats = const_cast<T*>(stats.data());
  py::object result;
  if (heads) {
    const int64_t B = q_arr.shape(0), H = q_arr.shape(1);
    a.heads = H;
    a.q_at = heads_layout<T>(q_arr, "q");
    a.k_at = heads_layout<T>(k_arr, "k");
    a.v_at = heads_layout<T>(v_arr, "v");
    a.out_at = heads_layout<T>(out_arr, "out");
    a.dout_at = heads_layout<T>(dout_arr, "grad_output");
    if (!grads || grads->size() != 3) {
      throw std::invalid_argument("grads: expected a tuple (dq, dk, dv) of 4-D arrays to write for 4-D q, k, v");
    }
    const char* names[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; ++i) {  // an array, not something a cast would copy (the writes would be lost)
      if (!py::isinstance<py::array>((*grads)[i])) {
        throw py::type_error(std::string(names[i]) + ": expected a NumPy array, got " +
                             std::string(py::str(py::type::of((*grads)[i]).attr("__name__"))));
      }
    }
    py::array dq = (*grads)[0].cast<py::array>(), dk = (*grads)[1].cast<py::array>(),
              dv = (*grads)[2].cast<py::array>();
    a.dq_at = grad_layout<T>(dq, "dq", B, H, c.l, c.e, t);
    a.dk_at = grad_layout<T>(dk, "dk", B, H, c.s, c.e, t);
    a.dv_at = grad_layout<T>(dv, "dv", B, H, c.s, c.ev, t);
    a.out = static_cast<T*>(const_cast<void*>(out_arr.data()));  // read only in the backward
    a.dout = static_cast<const T*>(dout_arr.data());
    a.dq = static_cast<T*>(dq.mutable_data());
    a.dk = static_cast<T*>(dk.mutable_data());
    a.dv = static_cast<T*>(dv.mutable_data());
    result = py::none();
  } else {
    if (grads) throw std::invalid_argument("grads: expected None for 3-D q, k, v (the gradients are allocated)");
    auto dq = new_output<T, py::array::c_style | py::array::forcecast>({c.n, c.l, c.e});
    auto dk = new_output<T, py::array::c_style | py::array::forcecast>({c.n, c.s, c.e});
    auto dv = new_output<T, py::array::c_style | py::array::forcecast>({c.n, c.s, c.ev});
    a.out = const_cast<T*>(out->data());  // read only in the backward
    a.dout = dout->data();
    a.dq = dq.mutable_data();
    a.dk = dk.mutable_data();
    a.dv = dv.mutable_data();
    result = py::make_tuple(std::move(dq), std::move(dk), std::move(dv));
  }
  {
    py::gil_scoped_release release;
    const AttentionKernels& kt = SEQBLOCKS_DISPATCH(attention_kernels);
    if constexpr (std::is_same_v<T, float>) kt.sdpa_backward_f32(a); else kt.sdpa_backward_f64(a);
  }
  return result;
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(attention) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "sdpa_forward",
      [](const py::array& q, const py::array& k, const py::array& v, std::optional<py::array> mask,
         std::optional<py::array> mask_offsets, int64_t sl, int64_t ss, bool causal, double scale, double p,
         uint64_t seed, bool merge_heads) {
        const DType t = float_dtype_of(q, "q");
        const Common c = check_common(q, k, v, mask, mask_offsets, sl, ss, t, q.ndim() == 4);
        return t == DType::f32
                   ? forward<float>(q, k, v, mask, mask_offsets, sl, ss, causal, scale, p, seed, merge_heads, c)
                   : forward<double>(q, k, v, mask, mask_offsets, sl, ss, causal, scale, p, seed, merge_heads, c);
      },
      py::arg("q").noconvert(), py::arg("k").noconvert(), py::arg("v").noconvert(), py::arg("mask").none(true),
      py::arg("mask_offsets").none(true), py::arg("mask_row_stride"), py::arg("mask_col_stride"), py::arg("causal"),
      py::arg("scale"), py::arg("dropout_p"), py::arg("seed"), py::arg("merge_heads") = false,
      "tiled scaled dot-product attention over (N, L, E) q, (N, S, E) k, (N, S, Ev) v -> (out, stats (N, L, 2)); "
      "or over (B, H, ...) views read in place (any non-negative strides, contiguous rows), out (B H, L, Ev) or "
      "with merge_heads (B, L, H Ev)");
  m.def(
      "sdpa_backward",
      [](const py::array& dout, const py::array& q, const py::array& k, const py::array& v, const py::array& out,
         const py::array& stats, std::optional<py::array> mask, std::optional<py::array> mask_offsets, int64_t sl,
         int64_t ss, bool causal, double scale, double p, uint64_t seed, std::optional<py::tuple> grads) {
        const DType t = float_dtype_of(q, "q");
        const bool heads = q.ndim() == 4;
        const Common c = check_common(q, k, v, mask, mask_offsets, sl, ss, t, heads);
        check_dtype(dout, "grad_output", t);
        check_dtype(out, "out", t);
        check_dtype(stats, "stats", t);
        const int nd = heads ? 4 : 3;
        for (const auto& [a, name] : {std::pair<const py::array&, const char*>{dout, "grad_output"}, {out, "out"}}) {
          if (a.ndim() != nd) {
            throw std::invalid_argument(std::string(name) + (heads ? ": expected a 4-D array (B, H, L, Ev)"
                                                                   : ": expected a 3-D array (N, L, Ev)") +
                                        ", got shape " + shape_str(a));
          }
          for (int ax = 0; ax < nd - 2; ++ax) check_dim(a, name, ax, q.shape(ax), "q's leading dims");
          check_dim(a, name, nd - 2, c.l, "the output's shape");
          check_dim(a, name, nd - 1, c.ev, "the output's shape");
        }
        if (stats.ndim() != 3 || stats.shape(0) != c.n || stats.shape(1) != c.l || stats.shape(2) != 2) {
          throw std::invalid_argument("stats: expected shape (N, L, 2), got " + shape_str(stats));
        }
        return t == DType::f32 ? backward<float>(dout, q, k, v, out, stats, mask, mask_offsets, sl, ss, causal, scale,
                                                 p, seed, c, grads, t)
                               : backward<double>(dout, q, k, v, out, stats, mask, mask_offsets, sl, ss, causal,
                                                  scale, p, seed, c, grads, t);
      },
      py::arg("grad_output").noconvert(), py::arg("q").noconvert(), py::arg("k").noconvert(),
      py::arg("v").noconvert(), py::arg("out").noconvert(), py::arg("stats").noconvert(), py::arg("mask").none(true),
      py::arg("mask_offsets").none(true), py::arg("mask_row_stride"), py::arg("mask_col_stride"), py::arg("causal"),
      py::arg("scale"), py::arg("dropout_p"), py::arg("seed"), py::arg("grads") = py::none(),
      "gradients of sdpa_forward, probabilities recomputed per tile: for 3-D operands a new (dq, dk, dv); for 4-D "
      "(B, H, ...) views (read in place) written into grads = (dq, dk, dv), 4-D writable views, returning None");
}
