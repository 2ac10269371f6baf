// The CUDA side of gradient clipping by global norm (optim_grad_clip) and of a fused gradient
// scaler (optim_grad_scale): grad_norm() launches the read pass and writes the norm (and the
// scaler's found-inf flag) to device memory; the update kernels turn them into the coefficient with
// clip_factor() and scale_factor(), so no step waits for the host.
#pragma once

#include "../clip_math.hpp"
#include "cuda_util.cuh"

#include <optim.h>

#include <cstdint>

namespace optim::cuda {

// Launches the norm of every gradient of the call (count tensors, dtype) on the active stream and
// writes it to *total_norm (device memory). The call's device is current. With a scaler (scale not
// null) the pass also finds non-finite gradient elements (setting *scale->found_inf) and, when
// total_norm is not null, sums the squares of inv_scale * grad; with a scaler and no clipping
// total_norm is null.
void grad_norm(int device_index, int32_t dtype, const void* const* grads, const int64_t* numels,
               int64_t count, double* total_norm, const char* fn,
               const optim_grad_scale* scale = nullptr);

// The entry of a step whose clip and scaler take a read pass first (SGD, Adam): device_index
// checked and current, the pass when the call has a clip or a scaler, then typed(S{}) for its
// storage type.
template <class Call, class Typed>
void step_after_norm(int device_index, int32_t dtype, const Call& call, Typed&& typed)
{
    on_device_storage(device_index, dtype, call.fn, [&](auto storage) {
        const auto& t = *call.tensors;
        if (call.clip || call.scale)
            grad_norm(device_index, dtype, t.grads, t.numels, t.count,
                      call.clip ? call.clip->total_norm : nullptr, call.fn, call.scale);
        typed(storage);
    });
}

// The coefficient an update applies to each gradient element: 1 without clipping (norm null).
template <typename T>
__device__ __forceinline__ T clip_factor(const double* norm, double max_norm)
{
    return norm == nullptr ? T(1) : clip_coefficient<T>(*norm, max_norm);
}

// Whether a block of a scaled step must write nothing (the scaler's flag is set); false unscaled.
__device__ __forceinline__ bool scaled_skip(const float* found_inf)
{
    return found_inf != nullptr && *found_inf != 0.0f;
}

// The inverse scale an update applies to each gradient element: 1 without a scaler (null).
template <typename T>
__device__ __forceinline__ T scale_factor(const float* inv_scale)
{
    return inv_scale == nullptr ? T(1) : static_cast<T>(*inv_scale);
}

} // namespace optim::cuda
