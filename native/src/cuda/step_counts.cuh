// Step counts in device memory (optim_adam_tensors and optim_hd_adam_tensors' step_counts): the
// update kernels read t = count + 1, then one small launch advances the counts.
#pragma once

#include <cstdint>

namespace optim::cuda {

// Adds one to the step count (device memory) of each of the n tensors that has elements (numels; an
// entry without elements takes no step), after the launches before it on the active stream, unless
// the step was skipped: the gradient scaler's flag (found_inf, device memory, may be null) or a
// hypergradient step's skip flag (skip, device memory, may be null) is set. The counts must be
// distinct (optim.h).
void advance_step_counts(int64_t* const* counts, const int64_t* numels, int64_t n,
                         const float* found_inf, const int* skip, const char* fn);

} // namespace optim::cuda
