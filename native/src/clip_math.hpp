// Gradient clipping by global norm (optim.h, optim_grad_clip): the coefficient from the norm,
// written once for the CPU loops and the CUDA kernels. The steps multiply each gradient element by
// it as they read it; without clipping they multiply by 1, which is exact.
#pragma once

#include "sgd_math.hpp" // OPTIM_HOST_DEVICE

namespace optim {

// PyTorch's clip_grad_norm_ in the element type: coef = max_norm / (total_norm + 1e-6), clamped to
// at most 1 (torch.clamp: a NaN stays NaN). The norm, summed in double, is rounded to T first, as
// PyTorch's norm tensor has the gradients' dtype.
template <typename T>
OPTIM_HOST_DEVICE T clip_coefficient(double total_norm, double max_norm)
{
    const T coef = static_cast<T>(max_norm) / (static_cast<T>(total_norm) + static_cast<T>(1e-6));
    return coef > T(1) ? T(1) : coef;
}

} // namespace optim
