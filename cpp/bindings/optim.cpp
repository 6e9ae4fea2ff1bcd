// Bindings for the in-place optimizer steps. Every array that is written must be C-contiguous,
// writable and of param's dtype and shape; all of them are checked before the kernel runs, so a
// bad argument raises with nothing written (never a silent update of a temporary copy).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/common.h"
#include "bindings/ops_args.h"
#include "bindings/registry.h"
#include "ops/optim.h"
#include "runtime/threads.h"

namespace seqblocks {
namespace {

// grad: param's dtype and shape (TypeError/ValueError); any layout (it is only read).
void check_grad(const py::array& grad, const py::array& param) {
  expect_dtype(grad, float_dtype_of(param, "param"), "grad", "param");
  if (!same_shape(grad, param)) {
    throw std::invalid_argument("grad: expected shape " + shape_str(param) + " (param's), got " + shape_str(grad));
  }
}

template <class T>
T* data_of(const py::object& a) {
  return a.is_none() ? nullptr : static_cast<T*>(py::cast<py::array>(a).mutable_data());
}

template <class T>
void sgd_impl(py::array& param, const py::array& grad_arr, const py::object& buf, const SgdHyper& h) {
  auto grad = c_input<T>(grad_arr);
  T* pp = static_cast<T*>(param.mutable_data());
  T* pb = data_of<T>(buf);
  const T* pg = grad.data();
  const int64_t n = static_cast<int64_t>(param.size());
  if (n == 0) return;
  py::gil_scoped_release release;
  const OptimKernels& k = SEQBLOCKS_DISPATCH(optim_kernels);
  if constexpr (std::is_same_v<T, float>) {
    k.sgd_f32(pp, pg, pb, n, h, num_threads());
  } else {
    k.sgd_f64(pp, pg, pb, n, h, num_threads());
  }
}

template <class T>
void adam_impl(py::array& param, const py::array& grad_arr, py::array& m, py::array& v, const py::object& vmax,
               const AdamHyper& h) {
  auto grad = c_input<T>(grad_arr);
  T* pp = static_cast<T*>(param.mutable_data());
  T* pm = static_cast<T*>(m.mutable_data());
  T* pv = static_cast<T*>(v.mutable_data());
  T* pvmax = data_of<T>(vmax);
  const T* pg = grad.data();
  const int64_t n = static_cast<int64_t>(param.size());
  if (n == 0) return;
  py::gil_scoped_release release;
  const OptimKernels& k = SEQBLOCKS_DISPATCH(optim_kernels);
  if constexpr (std::is_same_v<T, float>) {
    k.adam_f32(pp, pg, pm, pv, pvmax, n, h, num_threads());
  } else {
    k.adam_f64(pp, pg, pm, pv, pvmax, n, h, num_threads());
  }
}

void expect_optional_target(const py::object& a, const py::array& param, const char* name, bool required,
                            const char* why) {
  if (a.is_none()) {
    if (required) {
      throw std::invalid_argument(std::string(name) + ": expected an array of param's shape " + why + ", got None");
    }
    return;
  }
  if (!py::isinstance<py::array>(a)) {
    throw py::type_error(std::string(name) + ": expected a numpy.ndarray updated in place, got " +
                         std::string(py::str(a.get_type().attr("__name__"))));
  }
  expect_in_place_target(py::cast<py::array>(a), param, name);
}

}  // namespace
}  // namespace seqblocks

SEQBLOCKS_BINDINGS(optim) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def(
      "sgd_step_",
      [](py::array param, const py::array& grad, const py::object& momentum_buffer, double lr, double momentum,
         double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step) {
        const DType t = float_dtype_of(param, "param");
        expect_in_place_target(param, param, "param");
        check_grad(grad, param);
        expect_optional_target(momentum_buffer, param, "momentum_buffer", momentum != 0.0, "when momentum != 0");
        SgdHyper h;
        h.lr = lr, h.momentum = momentum, h.dampening = dampening, h.weight_decay = weight_decay;
        h.nesterov = nesterov, h.maximize = maximize, h.first_step = first_step;
        const py::object buf = momentum != 0.0 ? momentum_buffer : py::none();
        if (t == DType::f32) sgd_impl<float>(param, grad, buf, h);
        else sgd_impl<double>(param, grad, buf, h);
      },
      py::arg("param").noconvert(), py::arg("grad").noconvert(), py::arg("momentum_buffer"), py::kw_only(),
      py::arg("lr"), py::arg("momentum") = 0.0, py::arg("dampening") = 0.0, py::arg("weight_decay") = 0.0,
      py::arg("nesterov") = false, py::arg("maximize") = false, py::arg("first_step"),
      "one in-place SGD step (torch.optim.SGD, single tensor)");
  m.def(
      "adam_step_",
      [](py::array param, const py::array& grad, py::array exp_avg, py::array exp_avg_sq,
         const py::object& max_exp_avg_sq, int64_t step, double lr, double beta1, double beta2, double eps,
         double weight_decay, bool amsgrad, bool maximize, bool decoupled_weight_decay) {
        const DType t = float_dtype_of(param, "param");
        expect_in_place_target(param, param, "param");
        check_grad(grad, param);
        expect_in_place_target(exp_avg, param, "exp_avg");
        expect_in_place_target(exp_avg_sq, param, "exp_avg_sq");
        expect_optional_target(max_exp_avg_sq, param, "max_exp_avg_sq", amsgrad, "when amsgrad=True");
        if (step < 1) throw std::invalid_argument("step: expected an int >= 1, got " + std::to_string(step));
        AdamHyper h;
        h.step = step, h.lr = lr, h.beta1 = beta1, h.beta2 = beta2, h.eps = eps, h.weight_decay = weight_decay;
        h.amsgrad = amsgrad, h.maximize = maximize, h.decoupled_weight_decay = decoupled_weight_decay;
        const py::object vmax = amsgrad ? max_exp_avg_sq : py::none();
        if (t == DType::f32) adam_impl<float>(param, grad, exp_avg, exp_avg_sq, vmax, h);
        else adam_impl<double>(param, grad, exp_avg, exp_avg_sq, vmax, h);
      },
      py::arg("param").noconvert(), py::arg("grad").noconvert(), py::arg("exp_avg").noconvert(),
      py::arg("exp_avg_sq").noconvert(), py::arg("max_exp_avg_sq"), py::kw_only(), py::arg("step"), py::arg("lr"),
      py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay") = 0.0, py::arg("amsgrad") = false,
      py::arg("maximize") = false, py::arg("decoupled_weight_decay") = false,
      "one in-place Adam/AdamW step (torch.optim.Adam single tensor; step = count after this step)");
}
