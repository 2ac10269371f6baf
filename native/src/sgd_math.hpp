// The per-element SGD update, written once and shared by the CPU loops (cpu/sgd_cpu.cpp) and the
// CUDA kernels (cuda/sgd_cuda.cu). Any change to the update rule is made here and nowhere else.
#pragma once

#if defined(__CUDACC__)
#define OPTIM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define OPTIM_HOST_DEVICE inline __attribute__((always_inline))
#endif

#include <type_traits>

namespace optim {

// The one finiteness test of the library (CPU loops and CUDA kernels): v - v is exactly 0 for a
// finite v and NaN for an infinity or NaN, so a sum of marks flags a bad element without a branch.
template <typename T>
OPTIM_HOST_DEVICE T nonfinite_mark(T v)
{
    return v - v;
}
template <typename T>
OPTIM_HOST_DEVICE bool is_finite(T v)
{
    return nonfinite_mark(v) == T(0);
}

// Which optional parts of the update are active. Compile-time so that the CPU loops vectorise
// without branches; the CUDA kernels instantiate the same set.
enum SgdFlags : unsigned {
    kSgdMomentum = 1u << 0,
    kSgdNesterov = 1u << 1,
    kSgdWeightDecay = 1u << 2,
    kSgdMaximize = 1u << 3,
};

// Hyperparameters rounded to the element type once per call.
template <typename T>
struct SgdCoeffs {
    T momentum;
    T one_minus_dampening;
    T weight_decay;
};

// The gradient as the update sees it: negated for maximize, plus coupled L2 weight decay.
template <typename T, unsigned Flags>
OPTIM_HOST_DEVICE T sgd_effective_grad(T p, T grad, const SgdCoeffs<T>& c)
{
    T g = (Flags & kSgdMaximize) ? -grad : grad;
    if (Flags & kSgdWeightDecay) g = g + c.weight_decay * p;
    return g;
}

// Heavy-ball momentum: momentum without Nesterov. Hypergradient descent then reads u_prev from the
// momentum buffer instead of keeping a separate one.
OPTIM_HOST_DEVICE constexpr bool sgd_heavy_ball(unsigned flags)
{
    return (flags & kSgdMomentum) != 0 && (flags & kSgdNesterov) == 0;
}

// Updates the momentum buffer (fresh: PyTorch's first step, the buffer becomes g) and returns the
// update direction u: nesterov ? g + momentum * buf : (momentum ? buf : g).
template <typename T, unsigned Flags>
OPTIM_HOST_DEVICE T sgd_direction(T g, T& buf, bool fresh, const SgdCoeffs<T>& c)
{
    if (!(Flags & kSgdMomentum)) return g;
    const T b = fresh ? g : c.momentum * buf + c.one_minus_dampening * g;
    buf = b;
    return (Flags & kSgdNesterov) ? g + c.momentum * b : b;
}

// PyTorch's SGD for one element:
//   g = maximize ? -grad : grad;  g += weight_decay * p
//   buf = fresh ? g : momentum * buf + (1 - dampening) * g
//   d = nesterov ? g + momentum * buf : (momentum ? buf : g)
//   p -= lr * d
// `fresh` is true on a buffer's first step (PyTorch: the buffer is a clone of the gradient).
template <typename T, unsigned Flags>
OPTIM_HOST_DEVICE void sgd_element(T& p, T grad, T& buf, bool fresh, const SgdCoeffs<T>& c, T lr)
{
    const T g = sgd_effective_grad<T, Flags>(p, grad, c);
    p = p - lr * sgd_direction<T, Flags>(g, buf, fresh, c);
}

// The flags of one group's options.
inline unsigned sgd_flags(double momentum, double weight_decay, bool nesterov, bool maximize)
{
    return (momentum != 0.0 ? kSgdMomentum : 0u) | (nesterov ? kSgdNesterov : 0u) |
           (weight_decay != 0.0 ? kSgdWeightDecay : 0u) | (maximize ? kSgdMaximize : 0u);
}

// X(F) for each of the 12 reachable flag combinations (Nesterov implies momentum): the one list
// that the CPU dispatch and the CUDA kernels' switches expand.
#define OPTIM_SGD_FLAG_LIST(X)                                                                     \
    X(0)                                                                                           \
    X(kSgdMomentum)                                                                                \
    X(kSgdMomentum | kSgdNesterov)                                                                 \
    X(kSgdWeightDecay)                                                                             \
    X(kSgdMomentum | kSgdWeightDecay)                                                              \
    X(kSgdMomentum | kSgdNesterov | kSgdWeightDecay)                                               \
    X(kSgdMaximize)                                                                                \
    X(kSgdMomentum | kSgdMaximize)                                                                 \
    X(kSgdMomentum | kSgdNesterov | kSgdMaximize)                                                  \
    X(kSgdWeightDecay | kSgdMaximize)                                                              \
    X(kSgdMomentum | kSgdWeightDecay | kSgdMaximize)                                               \
    X(kSgdMomentum | kSgdNesterov | kSgdWeightDecay | kSgdMaximize)

// Calls fn(std::integral_constant<unsigned, F>{}) with the compile-time flags equal to `flags`
// (host code; the CUDA kernels expand the list in their own switch). Returns false for a value
// outside OPTIM_SGD_FLAG_LIST.
template <class Fn>
bool dispatch_sgd_flags(unsigned flags, Fn&& fn)
{
    switch (flags) {
#define OPTIM_FLAG_CASE(F)                                                                         \
    case (F):                                                                                      \
        fn(std::integral_constant<unsigned, (F)>{});                                               \
        return true;
        OPTIM_SGD_FLAG_LIST(OPTIM_FLAG_CASE)
#undef OPTIM_FLAG_CASE
    default:
        return false;
    }
}

} // namespace optim
