// Self-registering binding files: each cpp/bindings/<family>.cpp defines its Python functions in
//   SEQBLOCKS_BINDINGS(family) { m.def(...); }
// and module.cpp calls every registered function (sorted by name) when the module loads, so a
// new op family adds one file and touches nothing shared.
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <utility>
#include <vector>

namespace seqblocks {

using BindingsFn = void (*)(pybind11::module_&);
std::vector<std::pair<std::string, BindingsFn>>& bindings_registry();

struct BindingsRegistrar {
  BindingsRegistrar(const char* name, BindingsFn fn) { bindings_registry().emplace_back(name, fn); }
};

}  // namespace seqblocks

#define SEQBLOCKS_BINDINGS(family)                                                   \
  static void seqblocks_bindings_##family(pybind11::module_& m);                     \
  static const ::seqblocks::BindingsRegistrar seqblocks_registrar_##family(          \
      #family, &seqblocks_bindings_##family);                                        \
  static void seqblocks_bindings_##family(pybind11::module_& m)
