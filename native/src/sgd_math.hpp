// The per-element SGD update, written once and shared by the CPU loops (cpu/sgd_cpu.cpp) and the
// CUDA kernels (cuda/sgd_cuda.cu). Any change to the update rule is made here and nowhere else.
#pragma once

#if defined(__CUDACC__)
#define OPTIM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define OPTIM_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace optim {

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

// PyTorch's SGD for one element:
//   g = maximize ? -grad : grad;  g += weight_decay * p
//   buf = fresh ? g : momentum * buf + (1 - dampening) * g
//   d = nesterov ? g + momentum * buf : (momentum ? buf : g)
//   p -= lr * d
// `fresh` is true on a buffer's first step (PyTorch: the buffer is a clone of the gradient).
template <typename T, unsigned Flags>
OPTIM_HOST_DEVICE void sgd_element(T& p, T grad, T& buf, bool fresh, const SgdCoeffs<T>& c, T lr)
{
    T g = (Flags & kSgdMaximize) ? -grad : grad;
    if (Flags & kSgdWeightDecay) g = g + c.weight_decay * p;
    T d = g;
    if (Flags & kSgdMomentum) {
        const T b = fresh ? g : c.momentum * buf + c.one_minus_dampening * g;
        buf = b;
        d = (Flags & kSgdNesterov) ? g + c.momentum * b : b;
    }
    p = p - lr * d;
}

} // namespace optim
