// The CUDA path of the fused Adam/AdamW step: per param group, one multi-tensor launch
// (multi_tensor.cuh) whose functor applies adam_element() from adam_math.hpp to each element of its
// chunk, with each tensor's own bias corrections (from its step number, or from its step count in
// device memory, which a last launch then advances). Compiled in CI; see docs/design.md for what
// has run on a GPU. With clipping or a gradient scaler, grad_norm() runs first and each block reads
// the norm, the inverse scale and the scaler's flag from device memory (grad_norm.cuh). 16-bit
// parameters (precision.hpp) are updated in float32 with float32 moments, in place or through
// master weights, by the same functor.
#include "../adam_math.hpp"
#include "../precision.hpp"
#include "grad_norm.cuh"
#include "multi_tensor.cuh"
#include "step_counts.cuh"

namespace optim::cuda {

namespace {

// Per tensor: the coefficients that depend on its own step count (or, with step_counts, where
// that count is in device memory), and its stochastic rounding key.
template <typename T>
struct AdamMeta {
    T step_size;
    T bc2_sqrt;
    uint64_t key;
    const int64_t* count; // the steps taken so far (step_counts), else null
};
// parameter, gradient, exp_avg, exp_avg_sq, max_exp_avg_sq, master weights
template <typename T>
using AdamTables = TensorTables<6, AdamMeta<T>>;

// S: the parameters' storage type; the math and the moments are in compute_t<S>.
template <typename S, unsigned Flags, bool Master, int Round>
struct AdamFunctor {
    using T = compute_t<S>;
    AdamCoeffs<T> group;     // step_size and bc2_sqrt come per tensor from the table
    double lr, beta1, beta2; // for the step coefficients of a count in device memory
    const double* norm;      // clipping: the gradients' norm in device memory, else null
    double max_norm;
    const float* inv_scale; // a gradient scaler's, in device memory, else null
    const float* found_inf; // the scaler's flag (set: write nothing), else null

    __device__ void operator()(const typename AdamTables<T>::Table& table, const Chunk& ch) const
    {
        if (scaled_skip(found_inf)) return;
        const T inv = scale_factor<T>(inv_scale);
        const T clip = clip_factor<T>(norm, max_norm);
        AdamCoeffs<T> c = group;
        const AdamMeta<T>& meta = table.meta[ch.t];
        if (meta.count != nullptr) {
            adam_step_coeffs(c, lr, beta1, beta2, *meta.count + 1);
        } else {
            c.step_size = meta.step_size;
            c.bc2_sqrt = meta.bc2_sqrt;
        }
        const ParamAccess<S, Master, Round> p{static_cast<S*>(table.ptr[0][ch.t]),
                                              static_cast<T*>(table.ptr[5][ch.t]),
                                              table.meta[ch.t].key, 0};
        const S* __restrict g = static_cast<const S*>(table.ptr[1][ch.t]);
        T* __restrict m = static_cast<T*>(table.ptr[2][ch.t]);
        T* __restrict v = static_cast<T*>(table.ptr[3][ch.t]);
        T* __restrict vmax = static_cast<T*>(table.ptr[4][ch.t]);
        struct Inputs {
            T p, g, m, v, w;
        };
        for_each_element(
            ch.begin, ch.end,
            [&](int64_t i) {
                return Inputs{p.load(i), load_value(g[i]), m[i], v[i],
                              (Flags & kAdamAmsgrad) ? vmax[i] : T(0)};
            },
            [&](int64_t i, Inputs in) {
                adam_element<T, Flags>(in.p, in.g * inv * clip, in.m, in.v, in.w, c);
                p.store(i, in.p);
                m[i] = in.m;
                v[i] = in.v;
                if (Flags & kAdamAmsgrad) vmax[i] = in.w;
            });
    }
};

// Launches the update of tensors [first, last) (one param group) with its hyperparameters.
template <typename S, unsigned Flags, bool Master, int Round>
void launch_group(const AdamCall& call, const PrecisionCall& precision, int64_t first, int64_t last,
                  const AdamCoeffs<compute_t<S>>& group)
{
    using T = compute_t<S>;
    const optim_adam_tensors& t = *call.tensors;
    const optim_adam_params& o = call.groups[call.group_of(first)];
    AdamTables<T>& tables = AdamTables<T>::for_this_thread();
    for (int64_t k = first; k < last; ++k) {
        if (t.numels[k] == 0) continue; // its pointers may be null
        const bool counted = t.step_counts != nullptr;
        const AdamCoeffs<T> c =
            adam_coeffs<T>(o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, counted ? 1 : t.steps[k]);
        void* const ptrs[6] = {t.params[k],
                               const_cast<void*>(t.grads[k]),
                               t.exp_avgs[k],
                               t.exp_avg_sqs[k],
                               (Flags & kAdamAmsgrad) ? t.max_exp_avg_sqs[k] : nullptr,
                               Master ? precision.master[k] : nullptr};
        tables.add(ptrs, t.numels[k],
                   AdamMeta<T>{c.step_size, c.bc2_sqrt, precision.key(k),
                               counted ? t.step_counts[k] : nullptr});
    }
    const StepScaling s = step_scaling(call);
    tables.launch(AdamFunctor<S, Flags, Master, Round>{group, o.lr, o.beta1, o.beta2, s.norm,
                                                       s.max_norm, s.inv_scale, s.found_inf},
                  nullptr, call.fn, "kernel launch");
}

// One group's launches per param group, in group order (the tensors are in group order).
template <typename S>
void adam_typed(const AdamCall& call)
{
    using T = compute_t<S>;
    const PrecisionCall precision(call.precision);
    for_each_group_run(call, [&](int32_t g, int64_t first, int64_t last) {
        const optim_adam_params& o = call.groups[g];
        // The group-wide coefficients; step_size and bc2_sqrt come per tensor from the table.
        const AdamCoeffs<T> group =
            adam_coeffs<T>(o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, 1);
        const unsigned flags =
            adam_flags(o.weight_decay, o.decoupled != 0, o.amsgrad != 0, o.maximize != 0);
        bool known = true;
        dispatch_precision<S>(precision, [&](auto master, auto round) {
            constexpr bool Master = decltype(master)::value;
            constexpr int Round = decltype(round)::value;
            known = dispatch_adam_flags(flags, [&](auto F) {
                launch_group<S, decltype(F)::value, Master, Round>(call, precision, first, last,
                                                                   group);
            });
        });
        if (!known) fail(OPTIM_STATUS_INTERNAL, "optim_adam_step: unexpected flag combination");
    });
    if (call.tensors->step_counts)
        advance_step_counts(call.tensors->step_counts, call.tensors->numels, call.tensors->count,
                            call.scale ? call.scale->found_inf : nullptr, nullptr, call.fn);
}

} // namespace

void adam_step(int device_index, int32_t dtype, const AdamCall& call)
{
    step_after_norm(device_index, dtype, call,
                    [&](auto storage) { adam_typed<decltype(storage)>(call); });
}

} // namespace optim::cuda
