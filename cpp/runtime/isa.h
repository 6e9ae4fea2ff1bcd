// ISA tags and the run-time choice between them.
//
// Op families beyond GEMM and math keep their own table of kernels. The pattern:
//   // cpp/ops/foo.h (all TUs):
//   struct FooKernels { void (*forward_f32)(...); ... };
//   template <class Isa> const FooKernels& foo_kernels();   // declared only
//   // cpp/ops/foo_isa.cpp (compiled once per ISA, see CMakeLists.txt):
//   #include "runtime/isa_target.h"
//   template <> const FooKernels& foo_kernels<TargetIsa>() { static const FooKernels t{...}; return t; }
//   // caller:
//   const FooKernels& k = SEQBLOCKS_DISPATCH(foo_kernels);
#pragma once

namespace seqblocks {

struct Scalar { static constexpr const char* name = "scalar"; };
struct Avx2 { static constexpr const char* name = "avx2"; };
struct Avx512 { static constexpr const char* name = "avx512"; };

enum class IsaId : int { scalar = 0, avx2 = 1, avx512 = 2 };

// The ISA selected by dispatch.cpp (best supported, or as capped by set_isa()).
IsaId current_isa();

}  // namespace seqblocks

// The table of family `table_fn` for the ISA in use.
#define SEQBLOCKS_DISPATCH(table_fn)                                                  \
  (::seqblocks::current_isa() == ::seqblocks::IsaId::avx512 ? table_fn<::seqblocks::Avx512>() \
   : ::seqblocks::current_isa() == ::seqblocks::IsaId::avx2 ? table_fn<::seqblocks::Avx2>()   \
                                                            : table_fn<::seqblocks::Scalar>())
