#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/registry.h"
#include "runtime/cpu_features.h"
#include "runtime/dispatch.h"
#include "runtime/peak_probe.h"
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
  m.def(
      "fma_peak_probe",
      [](int nthreads, double seconds) {
        if (nthreads < 1 || nthreads > 1024) {
          throw py::value_error("fma_peak_probe: nthreads must be in [1, 1024], got " + std::to_string(nthreads));
        }
        if (!(seconds > 0.0 && seconds <= 10.0)) {
          throw py::value_error("fma_peak_probe: seconds must be in (0, 10], got " + std::to_string(seconds));
        }
        const PeakProbeKernels& k = SEQBLOCKS_DISPATCH(peak_probe_kernels);
        py::gil_scoped_release release;
        return k.fma_gflops(nthreads, seconds);
      },
      py::arg("nthreads"), py::arg("seconds"),
      "float FMA throughput of the ISA in use right now, GFLOP/s summed over nthreads threads");
  m.def("supported_isas", &supported_isas, "ISAs this CPU can run, best first");
  m.def("compiled_isas", &compiled_isas, "ISAs compiled into this module, best first");
  m.def("set_isa", &set_isa, py::arg("name"));
  m.def("get_isa", [] { return std::string(kernels().isa); });
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &num_threads);
  m.def("in_forked_child", &in_forked_child);
}
