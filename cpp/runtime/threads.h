// Thread-count control for the coarse OpenMP regions of the kernels.
#pragma once

namespace seqblocks {

// The thread count kernels use: set_num_threads() if called, else OpenMP's default (which
// honours OMP_NUM_THREADS). In a child process created by fork() after OpenMP threads were
// started, this is 1: GNU libgomp's thread pool does not survive fork(), and entering a
// parallel region there would hang.
int num_threads();
// n >= 1, else std::invalid_argument.
void set_num_threads(int n);
bool in_forked_child();

}  // namespace seqblocks
