// The per-element update of hypergradient Adam (Adam-HD, docs/hypergradient.md), written once for
// the CPU loops (cpu/hd_adam_cpu.cpp) and the CUDA kernels (cuda/hd_adam_cuda.cu). The Adam part is
// adam_math.hpp's, the rate rule hd_math.hpp's; the reduction pass is hypergradient SGD's (the
// gradient Adam uses is sgd_effective_grad's: maximize, then coupled L2).
#pragma once

#include "adam_math.hpp"
#include "hd_math.hpp"

namespace optim {

// The SGD flags whose effective gradient is Adam's gradient for these Adam flags (the reduction
// pass and the per-parameter rule compute g~ with them). Adam-HD has no decoupled decay.
OPTIM_HOST_DEVICE constexpr unsigned hd_adam_grad_flags(unsigned adam_flags)
{
    return ((adam_flags & kAdamWeightDecay) ? kSgdWeightDecay : 0u) |
           ((adam_flags & kAdamMaximize) ? kSgdMaximize : 0u);
}

// The SGD coefficients under which sgd_effective_grad gives Adam's gradient: only the weight
// decay is read.
template <typename T>
OPTIM_HOST_DEVICE SgdCoeffs<T> hd_adam_grad_coeffs(const AdamCoeffs<T>& c)
{
    return SgdCoeffs<T>{T(0), T(1), c.weight_decay};
}

// One element with its tensor's scalar rate already in c.step_size (rate / (1 - beta1^t), rounded
// to T as FusedAdam rounds lr / (1 - beta1^t)): Adam's step, and u_prev <- the direction the rate
// multiplies, u = m_hat / denom = (m / (1 - beta1^t)) / (sqrt(v) / sqrt(1 - beta2^t) + eps).
template <typename T, unsigned Flags>
OPTIM_HOST_DEVICE void hd_adam_element(T& p, T grad, T& m, T& v, T& vmax, T& u_prev,
                                       const AdamCoeffs<T>& c)
{
    const T denom = adam_moments<T, Flags>(p, grad, m, v, vmax, c);
    u_prev = m / c.bc1 / denom;
    p = p - c.step_size * m / denom;
}

// One element of the per-parameter scope: its own rate moves by its own hypergradient
// h = g~ * u_prev (u_prev read before it is overwritten), then the step with the new rate. The step
// size alpha / (1 - beta1^t) is divided in double (bc1 is 1 - beta1^t unrounded), so that with
// hypergrad_lr 0 it is FusedAdam's lr / (1 - beta1^t) rounded once.
template <typename T, unsigned Flags, int Rule = kHdRuntime>
OPTIM_HOST_DEVICE void hd_adam_per_parameter_element(T& p, T grad, T& m, T& v, T& vmax, T& u_prev,
                                                     T& alpha, const AdamCoeffs<T>& c, double bc1,
                                                     const HdCoeffs<T>& hc)
{
    const T g = sgd_effective_grad<T, hd_adam_grad_flags(Flags)>(p, grad, hd_adam_grad_coeffs(c));
    const T up = u_prev;
    const T ag = g < T(0) ? -g : g;
    const T au = up < T(0) ? -up : up;
    alpha = hd_rate<T, Rule>(alpha, g * up, ag * au, hc);
    AdamCoeffs<T> with_rate = c;
    with_rate.step_size = static_cast<T>(static_cast<double>(alpha) / bc1);
    hd_adam_element<T, Flags>(p, grad, m, v, vmax, u_prev, with_rate);
}

} // namespace optim
