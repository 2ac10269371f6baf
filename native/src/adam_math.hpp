// The per-element Adam/AdamW update, written once and shared by the CPU loop (cpu/adam_cpu.cpp)
// and the CUDA kernel (cuda/adam_cuda.cu). Any change to the update rule is made here and nowhere
// else.
#pragma once

#include "sgd_math.hpp" // OPTIM_HOST_DEVICE

#include <optim.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace optim {

// Which optional parts of the update are active (compile-time, so the CPU loop vectorises without
// branches; the CUDA kernel instantiates the same set).
enum AdamFlags : unsigned {
    kAdamWeightDecay = 1u << 0, // coupled L2: g += weight_decay * p (Adam)
    kAdamDecoupled = 1u << 1,   // decoupled decay: p *= 1 - lr * weight_decay (AdamW)
    kAdamAmsgrad = 1u << 2,
    kAdamMaximize = 1u << 3,
};

// What the update of one tensor needs, rounded to the element type once per call. The bias
// corrections depend on the tensor's own step count, so these are per tensor.
template <typename T>
struct AdamCoeffs {
    T beta1_weight; // 1 - beta1: the weight of lerp(m, g, 1 - beta1)
    T beta2;        // v = beta2 * v + (1 - beta2) * g * g
    T one_minus_beta2;
    T weight_decay; // coupled L2 (Adam)
    T decay;        // 1 - lr * weight_decay (AdamW), rounded once as PyTorch's mul_ does
    T step_size;    // lr / (1 - beta1^t)
    T bc2_sqrt;     // sqrt(1 - beta2^t)
    T eps;
    T bc1; // 1 - beta1^t (hypergradient Adam's update direction divides by it)
};

// PyTorch's lerp(a, b, w): a + w * (b - a) for |w| < 0.5, else b - (b - a) * (1 - w).
template <typename T>
OPTIM_HOST_DEVICE T adam_lerp(T a, T b, T w)
{
    const T d = b - a;
    // Both computed, then one selected by |w| < 0.5: a branch (or &&) here keeps GCC from
    // vectorising the 16-bit loops.
    const T from_a = a + w * d, from_b = b - d * (T(1) - w);
    return (w < T(0) ? -w : w) < T(0.5) ? from_a : from_b;
}

template <typename T>
OPTIM_HOST_DEVICE T adam_sqrt(T x)
{
#if defined(__CUDA_ARCH__)
    return sqrt(x);
#else
    return std::sqrt(x);
#endif
}

// PyTorch's single-tensor Adam/AdamW for one element, in its order of operations:
//   AdamW: p *= 1 - lr * weight_decay
//   g = maximize ? -grad : grad;  Adam: g += weight_decay * p
//   m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
//   amsgrad: vmax = max(vmax, v), and vmax replaces v below
//   p -= step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// Everything of the step but the parameter's own update: the decay, the moments and the
// denominator sqrt(v) / sqrt(1 - beta2^t) + eps, which it returns. Hypergradient Adam
// (hd_adam_math.hpp) shares it.
template <typename T, unsigned Flags>
OPTIM_HOST_DEVICE T adam_moments(T& p, T grad, T& m, T& v, T& vmax, const AdamCoeffs<T>& c)
{
    if (Flags & kAdamDecoupled) p = p * c.decay;
    T g = (Flags & kAdamMaximize) ? -grad : grad;
    if (Flags & kAdamWeightDecay) g = g + c.weight_decay * p;
    m = adam_lerp(m, g, c.beta1_weight);
    v = c.beta2 * v + c.one_minus_beta2 * g * g;
    T second = v;
    if (Flags & kAdamAmsgrad) {
        vmax = (v > vmax || v != v) ? v : vmax; // torch.maximum: a NaN in either propagates
        second = vmax;
    }
    return adam_sqrt(second) / c.bc2_sqrt + c.eps;
}

template <typename T, unsigned Flags>
OPTIM_HOST_DEVICE void adam_element(T& p, T grad, T& m, T& v, T& vmax, const AdamCoeffs<T>& c)
{
    const T denom = adam_moments<T, Flags>(p, grad, m, v, vmax, c);
    p = p - c.step_size * m / denom;
}

// The coefficients that depend on the step number t (>= 1), in double as PyTorch computes its
// Python floats, then rounded to T; on the host, and in a kernel that reads t from device memory.
template <typename T>
OPTIM_HOST_DEVICE void adam_step_coeffs(AdamCoeffs<T>& c, double lr, double beta1, double beta2,
                                        int64_t step)
{
    const double t = static_cast<double>(step);
#if defined(__CUDA_ARCH__)
    const double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t);
    c.bc2_sqrt = static_cast<T>(sqrt(bc2));
#else
    const double bc1 = 1.0 - std::pow(beta1, t), bc2 = 1.0 - std::pow(beta2, t);
    c.bc2_sqrt = static_cast<T>(std::sqrt(bc2));
#endif
    c.step_size = static_cast<T>(lr / bc1);
    c.bc1 = static_cast<T>(bc1);
}

// The coefficients of one tensor at step t (>= 1) of its group's hyperparameters.
template <typename T>
AdamCoeffs<T> adam_coeffs(double lr, double beta1, double beta2, double eps, double weight_decay,
                          int64_t step)
{
    AdamCoeffs<T> c;
    c.beta1_weight = static_cast<T>(1.0 - beta1);
    c.beta2 = static_cast<T>(beta2);
    c.one_minus_beta2 = static_cast<T>(1.0 - beta2);
    c.weight_decay = static_cast<T>(weight_decay);
    c.decay = static_cast<T>(1.0 - lr * weight_decay);
    c.eps = static_cast<T>(eps);
    adam_step_coeffs(c, lr, beta1, beta2, step);
    return c;
}

// The step number t of tensor k's update: given (steps), or its count so far plus one (step_counts,
// host memory: the CPU path).
inline int64_t adam_step_number(const optim_adam_tensors& t, int64_t k)
{
    return t.steps ? t.steps[k] : *t.step_counts[k] + 1;
}

// The flags of one group's options.
inline unsigned adam_flags(double weight_decay, bool decoupled, bool amsgrad, bool maximize)
{
    const unsigned wd = weight_decay != 0.0 ? (decoupled ? kAdamDecoupled : kAdamWeightDecay) : 0u;
    return wd | (amsgrad ? kAdamAmsgrad : 0u) | (maximize ? kAdamMaximize : 0u);
}

// Calls fn(std::integral_constant<unsigned, F>{}) with the compile-time flags equal to `flags`, for
// the 12 reachable combinations (coupled and decoupled decay exclude each other). Returns false for
// any other value.
template <class Fn>
bool dispatch_adam_flags(unsigned flags, Fn&& fn)
{
    switch (flags) {
#define OPTIM_FLAG_CASE(F)                                                                         \
    case (F):                                                                                      \
        fn(std::integral_constant<unsigned, (F)>{});                                               \
        return true;
        OPTIM_FLAG_CASE(0)
        OPTIM_FLAG_CASE(kAdamWeightDecay)
        OPTIM_FLAG_CASE(kAdamDecoupled)
        OPTIM_FLAG_CASE(kAdamAmsgrad)
        OPTIM_FLAG_CASE(kAdamWeightDecay | kAdamAmsgrad)
        OPTIM_FLAG_CASE(kAdamDecoupled | kAdamAmsgrad)
        OPTIM_FLAG_CASE(kAdamMaximize)
        OPTIM_FLAG_CASE(kAdamWeightDecay | kAdamMaximize)
        OPTIM_FLAG_CASE(kAdamDecoupled | kAdamMaximize)
        OPTIM_FLAG_CASE(kAdamAmsgrad | kAdamMaximize)
        OPTIM_FLAG_CASE(kAdamWeightDecay | kAdamAmsgrad | kAdamMaximize)
        OPTIM_FLAG_CASE(kAdamDecoupled | kAdamAmsgrad | kAdamMaximize)
#undef OPTIM_FLAG_CASE
    default:
        return false;
    }
}

} // namespace optim
