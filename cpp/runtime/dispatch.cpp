#include "runtime/dispatch.h"

#include <atomic>
#include <stdexcept>

#include "runtime/cpu_features.h"
#include "runtime/isa.h"

namespace seqblocks {
namespace {

const KernelTable* best_table() {
  const CpuFeatures& f = cpu_features();
  if (f.has_avx512()) return &kernel_table_avx512();
  if (f.has_avx2_fma()) return &kernel_table_avx2();
  return &kernel_table_scalar();
}

std::atomic<const KernelTable*>& current_table() {
  static std::atomic<const KernelTable*> table{best_table()};
  return table;
}

}  // namespace

std::vector<std::string> compiled_isas() { return {"avx512", "avx2", "scalar"}; }

std::vector<std::string> supported_isas() {
  const CpuFeatures& f = cpu_features();
  std::vector<std::string> isas;
  if (f.has_avx512()) isas.push_back("avx512");
  if (f.has_avx2_fma()) isas.push_back("avx2");
  isas.push_back("scalar");
  return isas;
}

void set_isa(const std::string& name) {
  const CpuFeatures& f = cpu_features();
  const KernelTable* table = nullptr;
  if (name == "avx512") {
    if (!f.has_avx512()) throw std::invalid_argument("isa: this CPU does not support 'avx512'");
    table = &kernel_table_avx512();
  } else if (name == "avx2") {
    if (!f.has_avx2_fma()) throw std::invalid_argument("isa: this CPU does not support 'avx2' (AVX2 + FMA)");
    table = &kernel_table_avx2();
  } else if (name == "scalar") {
    table = &kernel_table_scalar();
  } else {
    throw std::invalid_argument("isa: expected one of 'avx512', 'avx2', 'scalar', got '" + name + "'");
  }
  current_table().store(table, std::memory_order_release);
}

const KernelTable& kernels() { return *current_table().load(std::memory_order_acquire); }

IsaId current_isa() {
  const KernelTable* table = current_table().load(std::memory_order_acquire);
  if (table == &kernel_table_avx512()) return IsaId::avx512;
  if (table == &kernel_table_avx2()) return IsaId::avx2;
  return IsaId::scalar;
}

}  // namespace seqblocks
