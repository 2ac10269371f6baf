// The CUDA side of gradient clipping by global norm (optim_grad_clip): grad_norm() launches the
// read pass and writes the norm to device memory; the update kernels turn it into the coefficient
// with clip_factor(), so no step waits for the host.
#pragma once

#include "../clip_math.hpp"

#include <optim.h>

#include <cstdint>

namespace optim::cuda {

// Launches the norm of every gradient of the call (count tensors, dtype) on stream 0 and writes it
// to *total_norm (device memory). The call's device is current.
void grad_norm(int device_index, int32_t dtype, const void* const* grads, const int64_t* numels,
               int64_t count, double* total_norm, const char* fn);

// The coefficient an update applies to each gradient element: 1 without clipping (norm null).
template <typename T>
__device__ __forceinline__ T clip_factor(const double* norm, double max_norm)
{
    return norm == nullptr ? T(1) : clip_coefficient<T>(*norm, max_norm);
}

} // namespace optim::cuda
