// The compiled module seqblocks._core. One register_*() per op family; each is thin:
// validate, release the GIL, call the dispatched kernel.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace seqblocks {
void register_runtime(py::module_& m);
void register_gemm(py::module_& m);
void register_math(py::module_& m);
}  // namespace seqblocks

PYBIND11_MODULE(_core, m) {
  m.doc() = "seqblocks native kernels (private; use seqblocks.ops)";
#ifdef SEQBLOCKS_VERSION
  m.attr("__version__") = SEQBLOCKS_VERSION;
#endif
  seqblocks::register_runtime(m);
  seqblocks::register_gemm(m);
  seqblocks::register_math(m);
}
