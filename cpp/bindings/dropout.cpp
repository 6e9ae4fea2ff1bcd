// Binding for dropout: y = x * f with the counter-based mask of ops/dropout.h (forward and
// backward are the same call, on x and on dy).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>

#include "bindings/common.h"
#include "bindings/ops_args.h"
#include "bindings/output_cache.h"
#include "bindings/registry.h"
#include "ops/dropout.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

template <class T>
py::array dropout_impl(const py::array& x_arr, double p, uint64_t seed) {
  auto x = c_input<T>(x_arr);
  auto y = new_output<T>(shape_of(x));
  const int64_t n = static_cast<int64_t>(x.size());
  if (n == 0) return std::move(y);
  const T* px = x.data();
  T* pyv = y.mutable_data();
  {
    py::gil_scoped_release release;
    const DropoutKernels& k = SEQBLOCKS_DISPATCH(dropout_kernels);
    if constexpr (std::is_same_v<T, float>) {
      k.apply_f32(px, pyv, n, p, seed, num_threads());
    } else {
      k.apply_f64(px, pyv, n, p, seed, num_threads());
    }
  }
  return std::move(y);
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(dropout) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "dropout",
      [](const py::array& x, double p, uint64_t seed) {
        if (!(p >= 0.0 && p <= 1.0)) {
          throw std::invalid_argument("p: expected a probability in [0, 1], got " + std::to_string(p));
        }
        return float_dtype_of(x, "x") == DType::f32 ? dropout_impl<float>(x, p, seed)
                                                     : dropout_impl<double>(x, p, seed);
      },
      py::arg("x").noconvert(), py::arg("p"), py::arg("seed"),
      "y = x * f, f_i = 1/(1-p) where the counter-based mask keeps element i, else 0 (C order)");
}
