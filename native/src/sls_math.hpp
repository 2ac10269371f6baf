// The per-element math of the stochastic line search (Sls, docs/sls.md), written once and shared
// by the CPU loops (cpu/sls_cpu.cpp) and the CUDA kernels (cuda/sls_cuda.cu).
#pragma once

#include "sgd_math.hpp" // OPTIM_HOST_DEVICE

namespace optim {

// What one pass over the tensors does to each element.
enum SlsOp : int {
    kSlsSave = 0,    // origin = param: keep the point the line search starts from
    kSlsTrial = 1,   // param = origin - step_size * grad: the point a trial evaluates
    kSlsRestore = 2, // param = origin: back to the start (a trial that must be abandoned)
};

// One element of a pass, in the element type (the reference's p = p0 - eta * g, eta rounded to T
// once per call, as PyTorch rounds a scalar operand).
template <typename T, int Op>
OPTIM_HOST_DEVICE void sls_element(T& param, T& origin, T grad, T step_size)
{
    if (Op == kSlsSave) origin = param;
    if (Op == kSlsTrial) param = origin - step_size * grad;
    if (Op == kSlsRestore) param = origin;
}

// An element's contribution to the squared gradient norm, in double.
template <typename T>
OPTIM_HOST_DEVICE double sls_square(T grad)
{
    const double g = static_cast<double>(grad);
    return g * g;
}

} // namespace optim
