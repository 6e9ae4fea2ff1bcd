// Compiled three times, with SEQBLOCKS_TARGET = scalar, avx2 or avx512 and that ISA's flags
// (see CMakeLists.txt). Every kernel below is a template over the ISA tag, so each compilation
// produces its own symbols.
#include "gemm/gemm.h"
#include "math/unary.h"
#include "runtime/kernel_table.h"

#ifndef SEQBLOCKS_TARGET
#error "SEQBLOCKS_TARGET must be defined (scalar, avx2 or avx512)"
#endif

#define SEQBLOCKS_CONCAT_(a, b) a##b
#define SEQBLOCKS_CONCAT(a, b) SEQBLOCKS_CONCAT_(a, b)
#define SEQBLOCKS_STR_(a) #a
#define SEQBLOCKS_STR(a) SEQBLOCKS_STR_(a)

namespace seqblocks {
namespace {
struct scalar_tag { using type = Scalar; };
struct avx2_tag { using type = Avx2; };
struct avx512_tag { using type = Avx512; };
using Isa = SEQBLOCKS_CONCAT(SEQBLOCKS_TARGET, _tag)::type;
}  // namespace

const KernelTable& SEQBLOCKS_CONCAT(kernel_table_, SEQBLOCKS_TARGET)() {
  static const KernelTable table = {
      SEQBLOCKS_STR(SEQBLOCKS_TARGET),
      &gemm<Isa, float>,
      &gemm<Isa, double>,
      &unary_apply<Isa, float>,
      &unary_apply<Isa, double>,
  };
  return table;
}

}  // namespace seqblocks
