// A probe of the machine's multiply-add throughput right now: the float FMA peak of the ISA in
// use, measured rather than computed from a clock that a shared or throttled host does not keep.
// A benchmark prints it before and after its cases, so a table taken while the cores were busy
// (a neighbour on the hyperthread siblings, a lowered turbo) says so.
//
//   fma_gflops(nthreads, seconds): every thread runs kChains independent chains
//   acc = acc * b + c of Vec<Isa, float> registers for about `seconds`; returns the sum over the
//   threads of 2 * lanes * FMAs / that thread's own time, in GFLOP/s. kChains = 12 covers
//   latency x ports of every ISA here (AVX-512: 4 cycles x 2 ports = 8 chains in flight).
#pragma once

#include "runtime/isa.h"

namespace seqblocks {

struct PeakProbeKernels {
  double (*fma_gflops)(int nthreads, double seconds);
};

template <class Isa>
const PeakProbeKernels& peak_probe_kernels();

}  // namespace seqblocks
