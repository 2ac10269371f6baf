// Internal interface between the validated C entry points (api.cpp) and the device back ends.
#pragma once

#include "error.hpp"
#include "hd_math.hpp"
#include "precision.hpp"
#include "sgd_math.hpp"

#include <optim.h>

#include <cstdint>
#include <string>
#include <type_traits>

namespace optim {

// The mixed-precision options of a validated call (optim_precision; none for the plain and
// _clipped entry points): master weights or the rounding of an in-place update.
struct PrecisionCall {
    void* const* master = nullptr; // float32 copies, one per tensor; null: none
    bool stochastic = false;       // bfloat16 in place: stochastic rounding
    int64_t seed = 0;
    int64_t step = 0;

    explicit PrecisionCall(const optim_precision* p)
    {
        if (p == nullptr) return;
        master = p->master_params;
        stochastic = p->rounding == OPTIM_ROUNDING_STOCHASTIC;
        seed = p->seed;
        step = p->step;
    }
    // The stochastic rounding key of tensor k (0 when the rounding is to nearest).
    uint64_t key(int64_t k) const { return stochastic ? rounding_key(seed, step, k) : 0; }
};

// The one dispatch of a validated dtype to its storage type: fn(S{}) with S float, double, Half or
// BFloat16 (precision.hpp; the CPU path takes one function per type through run_on_backend).
template <class Fn>
void dispatch_storage(int32_t dtype, Fn&& fn)
{
    switch (dtype) {
    case OPTIM_DTYPE_FLOAT32:
        fn(float{});
        return;
    case OPTIM_DTYPE_FLOAT64:
        fn(double{});
        return;
    case OPTIM_DTYPE_FLOAT16:
        fn(Half{});
        return;
    case OPTIM_DTYPE_BFLOAT16:
        fn(BFloat16{});
        return;
    default:
        fail(OPTIM_STATUS_INTERNAL, "dtype " + std::to_string(dtype) + " reached no back end");
    }
}

// The one dispatch of a call's precision options to the compile-time form the element loops take:
// fn(std::bool_constant<Master>{}, std::integral_constant<int, Round>{}), only with the forms valid
// for storage type S (float32 and float64: neither; float16: master weights or not; bfloat16:
// master weights, or in place to nearest or stochastically).
template <typename S, class Fn>
void dispatch_precision(const PrecisionCall& p, Fn&& fn)
{
    using Nearest = std::integral_constant<int, kRoundNearest>;
    if constexpr (!is_low_precision<S>) {
        fn(std::false_type{}, Nearest{});
    } else {
        if (p.master != nullptr)
            fn(std::true_type{}, Nearest{});
        else if (std::is_same_v<S, BFloat16> && p.stochastic)
            fn(std::false_type{}, std::integral_constant<int, kRoundStochastic>{});
        else
            fn(std::false_type{}, Nearest{});
    }
}

// A validated SGD step: the back ends may assume every check of optim_sgd_step has passed.
struct SgdCall {
    const optim_tensor_list* tensors;
    int32_t n_groups;
    const optim_sgd_params* groups;
    const optim_grad_clip* clip = nullptr;      // null: no clipping
    const optim_grad_scale* scale = nullptr;    // null: no gradient scaler
    const optim_precision* precision = nullptr; // null: in place, to nearest
    const char* fn = "optim_sgd_step";          // the entry point, for messages
    // The param group of tensor k (group_index may be NULL: one group).
    int32_t group_of(int64_t k) const { return tensors->group_index ? tensors->group_index[k] : 0; }
};

// A validated Adam/AdamW step: the back ends may assume every check of optim_adam_step has passed.
struct AdamCall {
    const optim_adam_tensors* tensors;
    int32_t n_groups;
    const optim_adam_params* groups;
    const optim_grad_clip* clip = nullptr;      // null: no clipping
    const optim_grad_scale* scale = nullptr;    // null: no gradient scaler
    const optim_precision* precision = nullptr; // null: in place, to nearest
    const char* fn = "optim_adam_step";         // the entry point, for messages
    int32_t group_of(int64_t k) const { return tensors->group_index ? tensors->group_index[k] : 0; }
};

// A validated hypergradient step.
struct HdCall {
    const optim_hd_tensors* tensors;
    int32_t n_groups;
    const optim_hd_group* groups;
    const optim_hd_params* params;
    double* rates;
    int64_t* skipped;
    const optim_grad_clip* clip = nullptr;      // null: no clipping
    const optim_grad_scale* scale = nullptr;    // null: no gradient scaler
    const optim_precision* precision = nullptr; // null: in place, to nearest
    const char* fn = "optim_hd_step";           // the entry point, for messages
};

// A validated hypergradient Adam step.
struct HdAdamCall {
    const optim_hd_adam_tensors* tensors;
    int32_t n_groups;
    const optim_hd_adam_group* groups;
    const optim_hd_params* params;
    double* rates;
    int64_t* skipped;
    const optim_grad_clip* clip = nullptr;      // null: no clipping
    const optim_precision* precision = nullptr; // null: in place, to nearest
    const char* fn = "optim_hd_adam_step";      // the entry point, for messages
};

// A validated pass of the stochastic line search (optim_sls_save/_trial/_restore): op is a SlsOp
// of sls_math.hpp; step_size is used by the trial pass only.
struct SlsCall {
    const optim_sls_tensors* tensors;
    int32_t op;
    double step_size;
    const char* fn; // the entry point, for messages
};

// One param group's SGD flags and coefficients rounded to T, from validated options
// (optim_sgd_params or optim_hd_group); fn names the entry point in the internal error.
template <typename T>
struct SgdGroup {
    unsigned flags;
    SgdCoeffs<T> c;
};
template <typename T, class Options>
SgdGroup<T> sgd_group(const Options& o, const char* fn)
{
    SgdGroup<T> g;
    g.flags = sgd_flags(o.momentum, o.weight_decay, o.nesterov != 0, o.maximize != 0);
    g.c.momentum = static_cast<T>(o.momentum);
    g.c.one_minus_dampening = static_cast<T>(1.0 - o.dampening);
    g.c.weight_decay = static_cast<T>(o.weight_decay);
    if (!dispatch_sgd_flags(g.flags, [](auto) {}))
        fail(OPTIM_STATUS_INTERNAL, std::string(fn) + ": unexpected flag combination");
    return g;
}

// The HD rate-slot rule, written once: how many rates a scalar scope keeps (none for the
// per-parameter scope, whose rates are tensors) and which of them tensor k uses.
inline int64_t hd_slot_count(int32_t scope, int32_t n_groups, int64_t n_tensors)
{
    return scope == OPTIM_HD_SCOPE_GLOBAL       ? 1
           : scope == OPTIM_HD_SCOPE_PER_GROUP  ? n_groups
           : scope == OPTIM_HD_SCOPE_PER_TENSOR ? n_tensors
                                                : 0;
}
inline int64_t hd_rate_slot(int32_t scope, const int32_t* group_index, int64_t k)
{
    return scope == OPTIM_HD_SCOPE_GLOBAL       ? 0
           : scope == OPTIM_HD_SCOPE_PER_GROUP  ? group_index[k]
           : scope == OPTIM_HD_SCOPE_PER_TENSOR ? k
                                                : 0;
}

// The rate rule's coefficients of a step, rounded to R (double for the scalar rates, the element
// type for the per-parameter ones): written once for both optimizers and both back ends.
template <typename R>
HdCoeffs<R> hd_coeffs(const optim_hd_params& hp)
{
    return HdCoeffs<R>{static_cast<R>(hp.hypergrad_lr),     static_cast<R>(hp.lr_min),
                       static_cast<R>(hp.lr_max),           static_cast<R>(hp.eps),
                       hp.rule == OPTIM_HD_RULE_NORMALIZED, hp.first_step == 0};
}

namespace cpu {
void sgd_step_f32(const SgdCall& call);
void sgd_step_f64(const SgdCall& call);
void adam_step_f32(const AdamCall& call);
void adam_step_f64(const AdamCall& call);
void sgd_step_f16(const SgdCall& call);
void sgd_step_bf16(const SgdCall& call);
void adam_step_f16(const AdamCall& call);
void adam_step_bf16(const AdamCall& call);
void hd_step_f32(const HdCall& call);
void hd_step_f64(const HdCall& call);
void hd_adam_step_f32(const HdAdamCall& call);
void hd_adam_step_f64(const HdAdamCall& call);
void hd_step_f16(const HdCall& call);
void hd_step_bf16(const HdCall& call);
void hd_adam_step_f16(const HdAdamCall& call);
void hd_adam_step_bf16(const HdAdamCall& call);
void sls_pass_f32(const SlsCall& call);
void sls_pass_f64(const SlsCall& call);
// The sum of the squared gradient elements, in double, combined in piece order.
double sls_grad_norm_sq_f32(const optim_sls_tensors& tensors);
double sls_grad_norm_sq_f64(const optim_sls_tensors& tensors);
} // namespace cpu

// The calling thread's stream for a CUDA device (a cudaStream_t; null: the legacy default stream),
// set by optim_cuda_set_stream. Indices outside [0, OPTIM_MAX_CUDA_DEVICES) read null and set
// nothing (the entry points check them).
void* cuda_stream_of(int device_index) noexcept;
void set_cuda_stream(int device_index, void* stream) noexcept;

namespace cuda {
bool compiled() noexcept;
// Number of devices, 0 when none (never throws).
int device_count() noexcept;
// Throws optim::Error with OPTIM_STATUS_CUDA_UNAVAILABLE when not compiled or no device.
void sgd_step(int device_index, int32_t dtype, const SgdCall& call);
// One Adam/AdamW step on the device (the calling thread's stream, as every call below).
void adam_step(int device_index, int32_t dtype, const AdamCall& call);
// One hypergradient step on the device (no host round trip).
void hd_step(int device_index, int32_t dtype, const HdCall& call);
// One hypergradient Adam step on the device (no host round trip).
void hd_adam_step(int device_index, int32_t dtype, const HdAdamCall& call);
// One pass of the stochastic line search on the device.
void sls_pass(int device_index, int32_t dtype, const SlsCall& call);
// The squared gradient norm on the device, copied to the host (waits for the stream).
double sls_grad_norm_sq(int device_index, int32_t dtype, const optim_sls_tensors& tensors);
// One GreedyLR evaluation on the device (one thread).
void greedylr_step(int device_index, const optim_greedylr_config& config,
                   optim_greedylr_state* state, const optim_greedylr_buffers& buffers,
                   const void* metric, int32_t metric_dtype);
} // namespace cuda

} // namespace optim
