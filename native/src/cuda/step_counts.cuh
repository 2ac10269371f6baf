// Step counts in device memory (optim_adam_tensors and optim_hd_adam_tensors' step_counts): the
// update kernels read t = count + 1, then one small launch advances the counts.
#pragma once

#include <cstdint>

namespace optim::cuda {

// Adds one to each of the n step counts (device memory) after the launches before it on the active
// stream, unless the step was skipped: the gradient scaler's flag (found_inf, device memory, may be
// null) or a hypergradient step's skip flag (skip, device memory, may be null) is set.
void advance_step_counts(int64_t* const* counts, int64_t n, const float* found_inf, const int* skip,
                         const char* fn);

} // namespace optim::cuda
