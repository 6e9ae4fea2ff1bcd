// Argument helpers for the ops-pair bindings (elementwise, linear_pair, activation, dropout,
// embedding, optim): C-contiguous views of inputs whose dtype was already checked, shapes as
// vectors, and the checks of the in-place contract.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/common.h"

namespace seqblocks {

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

// A C-contiguous array of T with the values of `a` (no copy when it already is one). Only for
// arrays the kernel reads: the dtype must have been checked (a cast would hide a wrong dtype).
template <class T>
CArray<T> c_input(const py::array& a) {
  return CArray<T>::ensure(a);
}

static inline std::vector<py::ssize_t> shape_of(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

static inline bool same_shape(const py::array& a, const py::array& b) {
  if (a.ndim() != b.ndim()) return false;
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    if (a.shape(d) != b.shape(d)) return false;
  }
  return true;
}

// The dtype of `a` must be `want` (TypeError naming both arrays otherwise).
static inline void expect_dtype(const py::array& a, DType want, const char* name, const char* like) {
  if (float_dtype_of(a, name) != want) {
    throw py::type_error(std::string(name) + ": expected the dtype of " + like + " (" +
                         (want == DType::f32 ? "float32" : "float64") + "), got " +
                         std::string(py::str(a.dtype())));
  }
}

// An array a kernel updates in place: `like`'s dtype and shape, C-contiguous and writable,
// else TypeError/ValueError. Nothing is written by the caller before every target is checked.
static inline void expect_in_place_target(const py::array& a, const py::array& like, const char* name) {
  expect_dtype(a, float_dtype_of(like, "param"), name, "param");
  if (!same_shape(a, like)) {
    throw std::invalid_argument(std::string(name) + ": expected shape " + shape_str(like) +
                                " (param's), got " + shape_str(a));
  }
  if (!(a.flags() & py::array::c_style)) {
    throw std::invalid_argument(std::string(name) +
                                ": expected a C-contiguous array (it is updated in place), got a strided one");
  }
  if (!a.writeable()) {
    throw std::invalid_argument(std::string(name) +
                                ": expected a writable array (it is updated in place), got a read-only one");
  }
}

}  // namespace seqblocks
