// Compiled three times, with SEQBLOCKS_TARGET = scalar, avx2 or avx512 and that ISA's flags
// (see CMakeLists.txt). Every kernel below is a template over the ISA tag, so each compilation
// produces its own symbols.
#include "gemm/gemm.h"
#include "math/unary.h"
#include "runtime/kernel_table.h"

#include "runtime/isa_target.h"

#define SEQBLOCKS_CONCAT_(a, b) a##b
#define SEQBLOCKS_CONCAT(a, b) SEQBLOCKS_CONCAT_(a, b)
#define SEQBLOCKS_STR_(a) #a
#define SEQBLOCKS_STR(a) SEQBLOCKS_STR_(a)

namespace seqblocks {
using Isa = TargetIsa;

const KernelTable& SEQBLOCKS_CONCAT(kernel_table_, SEQBLOCKS_TARGET)() {
  static const KernelTable table = {
      SEQBLOCKS_STR(SEQBLOCKS_TARGET),
      &gemm<Isa, float>,
      &gemm<Isa, double>,
      &gemm_pair<Isa, float>,
      &gemm_pair<Isa, double>,
      &unary_apply<Isa, float>,
      &unary_apply<Isa, double>,
  };
  return table;
}

}  // namespace seqblocks
