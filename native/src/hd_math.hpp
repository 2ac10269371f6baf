// The per-element pieces of hypergradient descent (docs/hypergradient.md), written once for the
// CPU loops (cpu/hd_cpu.cpp) and the CUDA kernels (cuda/hd_cuda.cu). The SGD part is sgd_math's.
#pragma once

#include "sgd_math.hpp"

namespace optim {

// Hyperparameters of the rate update, rounded to the type the rates live in.
template <typename R>
struct HdCoeffs {
    R beta; // hypergrad_lr
    R lr_min;
    R lr_max;
    R eps; // normalized rule
    bool normalized;
    bool update; // false on the first step
};

// Which rule a loop uses: kHdRuntime reads c.normalized; the other two fix it at compile time, so
// that a vectorized loop does not compute both rules and select (the normalized one divides).
enum { kHdRuntime = -1, kHdAdditive = 0, kHdNormalized = 1 };

// New rate from hypergradient h (and, for the normalized rule, |g||u_prev| as `scale`), clamped to
// [lr_min, lr_max]. The rate stays unchanged on the first step and for a non-finite h.
// Written as selects, not early returns, so the per-parameter loops vectorize.
template <typename R, int Rule = kHdRuntime>
OPTIM_HOST_DEVICE R hd_rate(R alpha, R h, R scale, const HdCoeffs<R>& c)
{
    const bool normalized = Rule == kHdRuntime ? c.normalized : Rule == kHdNormalized;
    R next = normalized ? alpha * (R(1) + c.beta * h / (scale + c.eps)) : alpha + c.beta * h;
    next = next < c.lr_min ? c.lr_min : next;
    next = next > c.lr_max ? c.lr_max : next;
    // & rather than &&: a short circuit is a branch, which keeps GCC from vectorising the loops.
    return (c.update & is_finite(h)) ? next : alpha;
}

// One element of the update pass with a given rate: momentum, direction, u_prev, parameter.
template <typename T, unsigned Flags>
OPTIM_HOST_DEVICE void hd_update_element(T& p, T grad, T& buf, T& u_prev, bool fresh,
                                         const SgdCoeffs<T>& c, T lr)
{
    const T g = sgd_effective_grad<T, Flags>(p, grad, c);
    const T u = sgd_direction<T, Flags>(g, buf, fresh, c);
    if (!sgd_heavy_ball(Flags)) u_prev = u;
    p = p - lr * u;
}

// One element of the per-parameter scope: its own rate, updated from its own hypergradient, then
// the update with the new rate. u_prev is read before it is overwritten.
template <typename T, unsigned Flags, int Rule = kHdRuntime>
OPTIM_HOST_DEVICE void hd_per_parameter_element(T& p, T grad, T& buf, T& u_prev, T& alpha,
                                                bool fresh, const SgdCoeffs<T>& c,
                                                const HdCoeffs<T>& hc)
{
    const T g = sgd_effective_grad<T, Flags>(p, grad, c);
    const T up = sgd_heavy_ball(Flags) ? (fresh ? T(0) : buf) : u_prev;
    const T h = g * up;
    const T ag = g < T(0) ? -g : g;
    const T au = up < T(0) ? -up : up;
    alpha = hd_rate<T, Rule>(alpha, h, ag * au, hc);
    const T u = sgd_direction<T, Flags>(g, buf, fresh, c);
    if (!sgd_heavy_ball(Flags)) u_prev = u;
    p = p - alpha * u;
}

// The reduction pass's contribution of one element: h += g~ * u_prev, |g~|^2, |u_prev|^2, and
// whether the raw gradient is finite. Sums are in double.
// With clipping the coefficient c is known only after the pass, and g~ = c s + d (s the signed raw
// gradient, d = weight_decay * param): h and gg then sum s alone (gg is also the squared norm) and
// d is summed apart, so that hd_clipped() can form the sums of g~ once c is known.
struct HdPartial {
    double h = 0;
    double gg = 0;
    double uu = 0;
    double nonfinite = 0;
    double hd = 0; // clipping: sum of d * u_prev
    double sd = 0; // clipping: sum of s * d
    double dd = 0; // clipping: sum of d * d
};

// The sums of g~ = c s + d from a clipping reduction's sums (HdPartial) and the coefficient c.
OPTIM_HOST_DEVICE HdPartial hd_clipped(HdPartial s, double c)
{
    s.h = c * s.h + s.hd;
    s.gg = c * c * s.gg + 2.0 * c * s.sd + s.dd;
    return s;
}

} // namespace optim
