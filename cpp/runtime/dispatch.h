// Run-time ISA selection. The best ISA the CPU supports is chosen on first use; set_isa() caps
// it (the Python layer applies SEQBLOCKS_ISA at import and lets tests switch between ISAs).
#pragma once

#include <string>
#include <vector>

#include "runtime/kernel_table.h"

namespace seqblocks {

// ISAs this CPU can run, best first (always ends with "scalar").
std::vector<std::string> supported_isas();
// Every ISA compiled into the module, best first.
std::vector<std::string> compiled_isas();
// Selects the kernel table; throws std::invalid_argument for an unknown or unsupported name.
void set_isa(const std::string& name);
const KernelTable& kernels();

}  // namespace seqblocks
