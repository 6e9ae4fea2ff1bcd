#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/registry.h"
#include "runtime/cpu_features.h"
#include "runtime/dispatch.h"
#include "runtime/threads.h"

SEQBLOCKS_BINDINGS(runtime) {
  using namespace seqblocks;
  namespace py = pybind11;
  m.def("cpu_features", [] {
    const CpuFeatures& f = cpu_features();
    py::dict flags;
    flags["sse4_2"] = f.sse42;
    flags["avx"] = f.avx;
    flags["avx2"] = f.avx2;
    flags["fma"] = f.fma;
    flags["f16c"] = f.f16c;
    flags["avx512f"] = f.avx512f;
    flags["avx512dq"] = f.avx512dq;
    flags["avx512bw"] = f.avx512bw;
    flags["avx512vl"] = f.avx512vl;
    flags["os_saves_ymm"] = f.os_saves_ymm;
    flags["os_saves_zmm"] = f.os_saves_zmm;
    py::dict info;
    info["vendor"] = f.vendor;
    info["brand"] = f.brand;
    info["features"] = flags;
    info["family"] = f.family;
    info["model"] = f.model;
    info["stepping"] = f.stepping;
    py::dict cache;
    cache["l1d"] = f.l1d_bytes;
    cache["l2"] = f.l2_bytes;
    cache["l3"] = f.l3_bytes;
    info["cache_bytes"] = cache;
    return info;
  });
  m.def("supported_isas", &supported_isas, "ISAs this CPU can run, best first");
  m.def("compiled_isas", &compiled_isas, "ISAs compiled into this module, best first");
  m.def("set_isa", &set_isa, py::arg("name"));
  m.def("get_isa", [] { return std::string(kernels().isa); });
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &num_threads);
  m.def("in_forked_child", &in_forked_child);
}
