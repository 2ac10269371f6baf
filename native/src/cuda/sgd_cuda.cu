// The CUDA path of the fused SGD step: per param group, one multi-tensor launch (multi_tensor.cuh)
// whose functor applies sgd_element() from sgd_math.hpp to each element of its chunk; the rate is
// optionally read from device memory. With clipping or a gradient scaler, grad_norm() runs first
// and each block reads the norm, the inverse scale and the scaler's flag from device memory
// (grad_norm.cuh). Compiled in CI; see docs/design.md for what has run on a GPU. 16-bit parameters
// (precision.hpp) are updated in float32 with float32 momentum buffers, in place or through master
// weights, by the same functor.
#include "../precision.hpp"
#include "../sgd_math.hpp"
#include "grad_norm.cuh"
#include "multi_tensor.cuh"

namespace optim::cuda {

namespace {

// Per tensor: whether its momentum buffer has no history yet (PyTorch's first step), and its
// stochastic rounding key.
struct SgdMeta {
    unsigned char fresh;
    uint64_t key;
};
using SgdTables = TensorTables<4, SgdMeta>; // parameter, gradient, momentum buffer, master weights

// S: the parameters' storage type; the math and the momentum buffers are in compute_t<S>.
template <typename S, unsigned Flags, bool Master, int Round>
struct SgdFunctor {
    using T = compute_t<S>;
    SgdCoeffs<T> c;
    T lr_value;
    const double* lr_ptr; // device memory, or null: lr_value
    const double* norm;   // clipping: the gradients' norm in device memory, else null
    double max_norm;
    const float* inv_scale; // a gradient scaler's, in device memory, else null
    const float* found_inf; // the scaler's flag (set: write nothing), else null

    __device__ void operator()(const SgdTables::Table& table, const Chunk& ch) const
    {
        if (scaled_skip(found_inf)) return;
        const T lr = lr_ptr ? static_cast<T>(*lr_ptr) : lr_value;
        const T inv = scale_factor<T>(inv_scale);
        const T clip = clip_factor<T>(norm, max_norm);
        const ParamAccess<S, Master, Round> p{static_cast<S*>(table.ptr[0][ch.t]),
                                              static_cast<T*>(table.ptr[3][ch.t]),
                                              table.meta[ch.t].key, 0};
        const S* __restrict g = static_cast<const S*>(table.ptr[1][ch.t]);
        T* __restrict b = static_cast<T*>(table.ptr[2][ch.t]);
        const bool fresh = table.meta[ch.t].fresh != 0;
        struct Inputs {
            T p, g, b;
        };
        for_each_element(
            ch.begin, ch.end,
            [&](int64_t i) {
                // A fresh buffer is never read (it may hold anything).
                return Inputs{p.load(i), load_value(g[i]),
                              (Flags & kSgdMomentum) && !fresh ? b[i] : T(0)};
            },
            [&](int64_t i, Inputs in) {
                sgd_element<T, Flags>(in.p, in.g * inv * clip, in.b,
                                      (Flags & kSgdMomentum) && fresh, c, lr);
                if (Flags & kSgdMomentum) b[i] = in.b;
                p.store(i, in.p);
            });
    }
};

// Launches the update of tensors [first, last) (one param group) with its hyperparameters.
template <typename S, unsigned Flags, bool Master, int Round>
void launch_group(const SgdCall& call, const PrecisionCall& precision, int64_t first, int64_t last,
                  const SgdCoeffs<compute_t<S>>& c, compute_t<S> lr, const double* lr_ptr)
{
    const optim_tensor_list& t = *call.tensors;
    SgdTables& tables = SgdTables::for_this_thread();
    for (int64_t k = first; k < last; ++k) {
        if (t.numels[k] == 0) continue; // its pointers may be null
        const bool momentum = (Flags & kSgdMomentum) != 0;
        void* const ptrs[4] = {t.params[k], const_cast<void*>(t.grads[k]),
                               momentum ? t.momentum_buffers[k] : nullptr,
                               Master ? precision.master[k] : nullptr};
        const bool fresh = momentum && t.buffer_fresh && t.buffer_fresh[k];
        tables.add(ptrs, t.numels[k],
                   SgdMeta{static_cast<unsigned char>(fresh ? 1 : 0), precision.key(k)});
    }
    const StepScaling s = step_scaling(call);
    tables.launch(SgdFunctor<S, Flags, Master, Round>{c, lr, lr_ptr, s.norm, s.max_norm,
                                                      s.inv_scale, s.found_inf},
                  nullptr, call.fn, "kernel launch");
}

// One group's launches per param group, in group order (the tensors are in group order).
template <typename S>
void sgd_typed(const SgdCall& call)
{
    using T = compute_t<S>;
    const PrecisionCall precision(call.precision);
    for_each_group_run(call, [&](int32_t g, int64_t first, int64_t last) {
        const optim_sgd_params& p = call.groups[g];
        const SgdGroup<T> group = sgd_group<T>(p, "optim_sgd_step");
        dispatch_precision<S>(precision, [&](auto master, auto round) {
            constexpr bool Master = decltype(master)::value;
            constexpr int Round = decltype(round)::value;
            dispatch_sgd_flags(group.flags, [&](auto F) {
                constexpr unsigned Flags = decltype(F)::value;
                launch_group<S, Flags, Master, Round>(call, precision, first, last, group.c,
                                                      static_cast<T>(p.lr), p.lr_ptr);
            });
        });
    });
}

} // namespace

bool compiled() noexcept
{
    return true;
}

int device_count() noexcept
{
    static int count = [] {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess) {
            cudaGetLastError();
            n = 0;
        }
        return n;
    }();
    return count;
}

void sgd_step(int device_index, int32_t dtype, const SgdCall& call)
{
    step_after_norm(device_index, dtype, call,
                    [&](auto storage) { sgd_typed<decltype(storage)>(call); });
}

} // namespace optim::cuda
