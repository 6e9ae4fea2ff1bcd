// The compiled module seqblocks._core. Each cpp/bindings/<family>.cpp registers itself with
// SEQBLOCKS_BINDINGS (registry.h); the bindings are thin: validate, release the GIL, call the
// dispatched kernel.
#include <pybind11/pybind11.h>

#include <algorithm>

#include "bindings/registry.h"

namespace seqblocks {
std::vector<std::pair<std::string, BindingsFn>>& bindings_registry() {
  static std::vector<std::pair<std::string, BindingsFn>> registry;
  return registry;
}
}  // namespace seqblocks

PYBIND11_MODULE(_core, m) {
  m.doc() = "seqblocks native kernels (private; use seqblocks.ops)";
#ifdef SEQBLOCKS_VERSION
  m.attr("__version__") = SEQBLOCKS_VERSION;
#endif
  auto& registry = seqblocks::bindings_registry();
  std::sort(registry.begin(), registry.end());
  for (const auto& [name, fn] : registry) fn(m);
}
