// The exported C entry points: argument validation and dispatch. Every body runs inside guard(), so
// no exception crosses the ABI, and every check runs before any memory is written.
#include "backend.hpp"
#include "cpu/thread_pool.hpp"
#include "error.hpp"
#include "greedylr_math.hpp"
#include "sls_math.hpp"
#include "validation.hpp"

#include <optim.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#ifndef OPTIM_VERSION
#define OPTIM_VERSION "0.0.0"
#endif
// A string literal, so that optim_build_info() has nothing to build (CMake defines the
// architectures exactly when it compiles the CUDA kernels).
#ifdef OPTIM_CUDA_ARCHITECTURES
#define OPTIM_BUILD_INFO "optim " OPTIM_VERSION " (cpu, cuda: " OPTIM_CUDA_ARCHITECTURES ")"
#else
#define OPTIM_BUILD_INFO "optim " OPTIM_VERSION " (cpu, no cuda)"
#endif

namespace optim {

namespace {
// A fixed buffer: recording an error never allocates, so it cannot fail (longer messages are cut).
thread_local char t_last_error[4096];

std::string group(int32_t g)
{
    return " (group " + std::to_string(g) + ")";
}

// The options SGD and hypergradient descent share, of param group g: the one native check of them
// (the managed classes check the same for their messages, but the C ABI is public).
void validate_momentum_options(const char* fn, int32_t g, double momentum, double dampening,
                               double weight_decay, int32_t nesterov, int32_t maximize)
{
    OPTIM_REQUIRE(std::isfinite(momentum) && momentum >= 0.0, fn,
                  "invalid momentum value: " + num(momentum) + group(g));
    OPTIM_REQUIRE(std::isfinite(dampening), fn,
                  "invalid dampening value: " + num(dampening) + group(g));
    OPTIM_REQUIRE(std::isfinite(weight_decay) && weight_decay >= 0.0, fn,
                  "invalid weight_decay value: " + num(weight_decay) + group(g));
    OPTIM_REQUIRE(nesterov == 0 || nesterov == 1, fn, "nesterov must be 0 or 1" + group(g));
    OPTIM_REQUIRE(maximize == 0 || maximize == 1, fn, "maximize must be 0 or 1" + group(g));
    OPTIM_REQUIRE(!nesterov || (momentum > 0.0 && dampening == 0.0), fn,
                  "Nesterov momentum requires a momentum and zero dampening" + group(g));
}

// Every group's hyperparameters, then every tensor (with its group's momentum) and the group order.
// The device and element type of an optimizer step: float32 and float64 everywhere; float16 and
// bfloat16 where the step has them (low_precision: SGD, Adam and the hypergradient steps).
void require_step_target(const char* fn, int32_t device, int32_t dtype, bool low_precision = false)
{
    OPTIM_REQUIRE(device == OPTIM_DEVICE_CPU || device == OPTIM_DEVICE_CUDA, fn,
                  "unknown device " + std::to_string(device));
    if (dtype == OPTIM_DTYPE_FLOAT32 || dtype == OPTIM_DTYPE_FLOAT64) return;
    if (dtype == OPTIM_DTYPE_FLOAT16 || dtype == OPTIM_DTYPE_BFLOAT16) {
        if (low_precision) return;
        fail(OPTIM_STATUS_UNSUPPORTED,
             std::string(fn) + ": unsupported dtype " + std::to_string(dtype) +
                 " (float16 and bfloat16 are supported by the SGD, Adam and hypergradient "
                 "steps only)");
    }
    fail(
        OPTIM_STATUS_UNSUPPORTED,
        std::string(fn) + ": unsupported dtype " + std::to_string(dtype) +
            (low_precision ? " (float32, float64, float16 or bfloat16)" : " (float32 or float64)"));
}

// The mixed-precision options of a _mixed step (precision not NULL there; NULL for the others),
// after the tensors were validated: master weights only for 16-bit parameters, one float32 copy per
// tensor that is neither its parameter nor its gradient; stochastic rounding only for bfloat16
// parameters updated in place.
void validate_precision(const char* fn, int32_t dtype, const optim_precision* p, bool mixed,
                        int64_t count, const int64_t* numels, void* const* params,
                        const void* const* grads)
{
    OPTIM_REQUIRE(!mixed || p != nullptr, fn, "precision is NULL");
    if (p == nullptr) return;
    const bool low = dtype == OPTIM_DTYPE_FLOAT16 || dtype == OPTIM_DTYPE_BFLOAT16;
    OPTIM_REQUIRE(p->rounding == OPTIM_ROUNDING_NEAREST || p->rounding == OPTIM_ROUNDING_STOCHASTIC,
                  fn, "unknown rounding " + std::to_string(p->rounding));
    if (p->rounding == OPTIM_ROUNDING_STOCHASTIC) {
        OPTIM_REQUIRE(dtype == OPTIM_DTYPE_BFLOAT16, fn,
                      "stochastic rounding needs bfloat16 parameters (dtype " +
                          std::to_string(dtype) + ")");
        OPTIM_REQUIRE(p->master_params == nullptr, fn,
                      "stochastic rounding is for parameters updated in place: with master "
                      "weights the parameter is the master copy rounded to nearest");
    }
    if (p->master_params == nullptr) return;
    OPTIM_REQUIRE(low, fn,
                  "master weights need float16 or bfloat16 parameters (dtype " +
                      std::to_string(dtype) + ")");
    for (int64_t k = 0; k < count; ++k) {
        if (numels[k] == 0) continue;
        OPTIM_REQUIRE(p->master_params[k] != nullptr, fn,
                      at(k) + ": master weight pointer is NULL");
        const Array arrays[] = {{p->master_params[k], "master weights"},
                                {params[k], "parameter"},
                                {grads[k], "gradient"}};
        require_unaliased(fn, k, arrays, 3, 2);
    }
}

// The clipping options of a clipped step.
void validate_clip(const char* fn, const optim_grad_clip& clip)
{
    OPTIM_REQUIRE(std::isfinite(clip.max_norm) && clip.max_norm > 0.0, fn,
                  "invalid max_norm: " + num(clip.max_norm) + " (must be finite and > 0)");
    OPTIM_REQUIRE(clip.total_norm != nullptr, fn, "clip->total_norm is NULL");
}

// The group count and group array of a step.
void require_groups(const char* fn, const void* groups, int32_t n_groups)
{
    OPTIM_REQUIRE(groups != nullptr, fn, "groups is NULL");
    OPTIM_REQUIRE(n_groups >= 1, fn, "n_groups must be >= 1, got " + std::to_string(n_groups));
}

// The group of tensor k (group_index NULL: one group), in range and in param-group order.
int32_t require_group_of(const char* fn, int64_t k, const int32_t* group_index, int32_t n_groups)
{
    const int32_t g = group_index ? group_index[k] : 0;
    OPTIM_REQUIRE(g >= 0 && g < n_groups, fn,
                  at(k) + ": group index " + std::to_string(g) + " is out of range");
    OPTIM_REQUIRE(k == 0 || group_index == nullptr || g >= group_index[k - 1], fn,
                  at(k) + ": tensors must be in param-group order");
    return g;
}

// The step count of tensor k: the count after this update.
void require_step_count(const char* fn, int64_t k, int64_t step)
{
    OPTIM_REQUIRE(step >= 1, fn,
                  at(k) + ": step must be >= 1 (the step count after this update), got " +
                      std::to_string(step));
}

// Exactly one of the step numbers (steps) and the step counts in memory (step_counts) is given.
void require_one_step_source(const char* fn, const int64_t* steps, int64_t* const* step_counts)
{
    OPTIM_REQUIRE((steps == nullptr) != (step_counts == nullptr), fn,
                  steps ? "tensors->steps and step_counts are both given: one of them must be NULL"
                        : "tensors->steps and step_counts are both NULL: one of them must not be "
                          "NULL");
}

// Tensor k's step number, or its step count: present and (in host memory) >= 0. Device memory
// cannot be read here; the CUDA kernels take the counts as they are.
void require_step_of(const char* fn, int32_t device, int64_t k, const int64_t* steps,
                     int64_t* const* step_counts)
{
    if (steps) {
        require_step_count(fn, k, steps[k]);
        return;
    }
    OPTIM_REQUIRE(step_counts[k] != nullptr, fn, at(k) + ": step count pointer is NULL");
    if (device == OPTIM_DEVICE_CPU) {
        const int64_t taken = *step_counts[k];
        OPTIM_REQUIRE(taken >= 0 && taken < INT64_MAX, fn,
                      at(k) + ": step count must be >= 0 (the steps taken so far), got " +
                          std::to_string(taken));
    }
}

// The element count of tensor k; true when it has elements (and so pointers to check).
bool require_numel(const char* fn, int64_t k, int64_t n)
{
    OPTIM_REQUIRE(n >= 0, fn, at(k) + ": numel is negative (" + std::to_string(n) + ")");
    return n > 0;
}

void validate_sgd(const char* fn, int32_t device, const optim_tensor_list* t, int32_t n_groups,
                  const optim_sgd_params* groups)
{
    require_groups(fn, groups, n_groups);
    for (int32_t g = 0; g < n_groups; ++g) {
        const optim_sgd_params& p = groups[g];
        OPTIM_REQUIRE(p.lr_ptr != nullptr || (std::isfinite(p.lr) && p.lr >= 0.0), fn,
                      "invalid learning rate: " + num(p.lr) + group(g));
        if (p.lr_ptr != nullptr && device == OPTIM_DEVICE_CPU)
            OPTIM_REQUIRE(std::isfinite(*p.lr_ptr) && *p.lr_ptr >= 0.0, fn,
                          "invalid learning rate: " + num(*p.lr_ptr) + group(g));
        validate_momentum_options(fn, g, p.momentum, p.dampening, p.weight_decay, p.nesterov,
                                  p.maximize);
    }
    OPTIM_REQUIRE(t != nullptr, fn, "tensors is NULL");
    OPTIM_REQUIRE(t->count >= 0, fn,
                  "tensors->count is negative (" + std::to_string(t->count) + ")");
    if (t->count == 0) return;
    OPTIM_REQUIRE(t->params && t->grads && t->numels, fn,
                  "tensors->params, tensors->grads and tensors->numels must not be NULL");
    OPTIM_REQUIRE(t->group_index != nullptr || n_groups == 1, fn,
                  "tensors->group_index is NULL but n_groups is " + std::to_string(n_groups));
    for (int64_t k = 0; k < t->count; ++k) {
        const int32_t g = require_group_of(fn, k, t->group_index, n_groups);
        if (!require_numel(fn, k, t->numels[k])) continue;
        OPTIM_REQUIRE(t->params[k] != nullptr, fn, at(k) + ": parameter pointer is NULL");
        OPTIM_REQUIRE(t->grads[k] != nullptr, fn, at(k) + ": gradient pointer is NULL");
        const bool momentum = groups[g].momentum != 0.0;
        if (momentum)
            OPTIM_REQUIRE(t->momentum_buffers && t->momentum_buffers[k], fn,
                          at(k) + ": momentum buffer pointer is NULL but momentum is nonzero");
        const Array arrays[] = {{t->params[k], "parameter"},
                                {momentum ? t->momentum_buffers[k] : nullptr, "momentum buffer"},
                                {t->grads[k], "gradient"}};
        require_unaliased(fn, k, arrays, 3, 2);
    }
}

// Every group's hyperparameters (PyTorch's checks and messages), then every tensor and the group
// order.
void validate_adam(const char* fn, int32_t device, const optim_adam_tensors* t, int32_t n_groups,
                   const optim_adam_params* groups)
{
    require_groups(fn, groups, n_groups);
    for (int32_t g = 0; g < n_groups; ++g) {
        const optim_adam_params& p = groups[g];
        const auto where = [&] { return " (group " + std::to_string(g) + ")"; };
        OPTIM_REQUIRE(std::isfinite(p.lr) && p.lr >= 0.0, fn,
                      "invalid learning rate: " + num(p.lr) + where());
        OPTIM_REQUIRE(std::isfinite(p.eps) && p.eps >= 0.0, fn,
                      "invalid epsilon value: " + num(p.eps) + where());
        OPTIM_REQUIRE(p.beta1 >= 0.0 && p.beta1 < 1.0, fn,
                      "invalid beta parameter at index 0: " + num(p.beta1) + where());
        OPTIM_REQUIRE(p.beta2 >= 0.0 && p.beta2 < 1.0, fn,
                      "invalid beta parameter at index 1: " + num(p.beta2) + where());
        OPTIM_REQUIRE(std::isfinite(p.weight_decay) && p.weight_decay >= 0.0, fn,
                      "invalid weight_decay value: " + num(p.weight_decay) + where());
        OPTIM_REQUIRE(p.amsgrad == 0 || p.amsgrad == 1, fn, "amsgrad must be 0 or 1" + where());
        OPTIM_REQUIRE(p.maximize == 0 || p.maximize == 1, fn, "maximize must be 0 or 1" + where());
        OPTIM_REQUIRE(p.decoupled == 0 || p.decoupled == 1, fn,
                      "decoupled must be 0 or 1" + where());
    }
    OPTIM_REQUIRE(t != nullptr, fn, "tensors is NULL");
    OPTIM_REQUIRE(t->count >= 0, fn,
                  "tensors->count is negative (" + std::to_string(t->count) + ")");
    if (t->count == 0) return;
    OPTIM_REQUIRE(t->params && t->grads && t->exp_avgs && t->exp_avg_sqs && t->numels, fn,
                  "tensors->params, grads, exp_avgs, exp_avg_sqs and numels must not be NULL");
    require_one_step_source(fn, t->steps, t->step_counts);
    OPTIM_REQUIRE(t->group_index != nullptr || n_groups == 1, fn,
                  "tensors->group_index is NULL but n_groups is " + std::to_string(n_groups));
    for (int64_t k = 0; k < t->count; ++k) {
        const int32_t g = require_group_of(fn, k, t->group_index, n_groups);
        require_step_of(fn, device, k, t->steps, t->step_counts);
        if (!require_numel(fn, k, t->numels[k])) continue;
        OPTIM_REQUIRE(t->params[k] != nullptr, fn, at(k) + ": parameter pointer is NULL");
        OPTIM_REQUIRE(t->grads[k] != nullptr, fn, at(k) + ": gradient pointer is NULL");
        OPTIM_REQUIRE(t->exp_avgs[k] != nullptr, fn, at(k) + ": exp_avg pointer is NULL");
        OPTIM_REQUIRE(t->exp_avg_sqs[k] != nullptr, fn, at(k) + ": exp_avg_sq pointer is NULL");
        const bool amsgrad = groups[g].amsgrad != 0;
        if (amsgrad)
            OPTIM_REQUIRE(t->max_exp_avg_sqs && t->max_exp_avg_sqs[k], fn,
                          at(k) + ": max_exp_avg_sq pointer is NULL but its group has amsgrad");
        const Array arrays[] = {{t->params[k], "parameter"},
                                {t->exp_avgs[k], "exp_avg"},
                                {t->exp_avg_sqs[k], "exp_avg_sq"},
                                {amsgrad ? t->max_exp_avg_sqs[k] : nullptr, "max_exp_avg_sq"},
                                {t->grads[k], "gradient"}};
        require_unaliased(fn, k, arrays, 5, 4);
    }
}

void validate_greedy_config(const char* fn, const optim_greedylr_config* c)
{
    OPTIM_REQUIRE(c != nullptr, fn, "config is NULL");
    OPTIM_REQUIRE(c->factor > 0.0 && c->factor < 1.0, fn,
                  "factor must be in (0, 1), got " + num(c->factor));
    OPTIM_REQUIRE(std::isfinite(c->threshold) && c->threshold >= 0.0, fn,
                  "threshold must be finite and >= 0, got " + num(c->threshold));
    OPTIM_REQUIRE(std::isfinite(c->eps) && c->eps >= 0.0, fn,
                  "eps must be finite and >= 0, got " + num(c->eps));
    OPTIM_REQUIRE(c->mode == OPTIM_GREEDY_MODE_MIN || c->mode == OPTIM_GREEDY_MODE_MAX, fn,
                  "unknown mode " + std::to_string(c->mode));
    OPTIM_REQUIRE(c->threshold_mode == OPTIM_GREEDY_THRESHOLD_ABS ||
                      c->threshold_mode == OPTIM_GREEDY_THRESHOLD_REL,
                  fn, "unknown threshold_mode " + std::to_string(c->threshold_mode));
    OPTIM_REQUIRE(c->patience >= 0, fn,
                  "patience must be >= 0, got " + std::to_string(c->patience));
    OPTIM_REQUIRE(c->cooldown >= 0, fn,
                  "cooldown must be >= 0, got " + std::to_string(c->cooldown));
    OPTIM_REQUIRE(c->warmup >= 0, fn, "warmup must be >= 0, got " + std::to_string(c->warmup));
    OPTIM_REQUIRE(c->window_size >= 1, fn,
                  "window_size must be >= 1, got " + std::to_string(c->window_size));
    OPTIM_REQUIRE(c->reset_start >= 0, fn,
                  "reset_start must be >= 0, got " + std::to_string(c->reset_start));
    OPTIM_REQUIRE(c->smooth == 0 || c->smooth == 1, fn, "smooth must be 0 or 1");
    OPTIM_REQUIRE(c->trend == 0 || c->trend == 1, fn, "trend must be 0 or 1");
    OPTIM_REQUIRE(c->groups >= 1, fn, "groups must be >= 1, got " + std::to_string(c->groups));
}

// The message of a problem greedy_check() found (host memory only).
void report_greedy_problem(const char* fn, GreedyCheck check, const optim_greedylr_buffers& b)
{
    const int32_t g = check.group;
    const auto at = [g] { return "[" + std::to_string(g) + "]"; };
    switch (check.problem) {
    case kGreedyOk:
        return;
    case kGreedyWindowPosition:
        fail(OPTIM_STATUS_INVALID_ARGUMENT,
             std::string(fn) + ": state's window position is outside the window (corrupt state?)");
    case kGreedyCounter:
        fail(OPTIM_STATUS_INVALID_ARGUMENT,
             std::string(fn) + ": a state counter is negative or at its limit (corrupt state?)");
    case kGreedyMinLr:
        fail(OPTIM_STATUS_INVALID_ARGUMENT, std::string(fn) + ": min_lr" + at() +
                                                " must be finite and >= 0, got " +
                                                num(b.min_lr[g]));
    case kGreedyBounds:
        fail(OPTIM_STATUS_INVALID_ARGUMENT, std::string(fn) + ": min_lr" + at() + " = " +
                                                num(b.min_lr[g]) + " is greater than max_lr" +
                                                at() + " = " + num(b.max_lr[g]));
    case kGreedyRate:
        fail(OPTIM_STATUS_INVALID_ARGUMENT, std::string(fn) + ": rate " + std::to_string(g) +
                                                " must be finite and >= 0, got " + num(b.rates[g]));
    default:
        fail(OPTIM_STATUS_INVALID_ARGUMENT,
             std::string(fn) + ": initial rate " + std::to_string(g) +
                 " must be finite and >= 0, got " + num(b.initial_rates[g]));
    }
}

// Runs a validated call on its backend: the CUDA path, or the CPU kernel of the element type (f16
// and bf16 only for the steps that take 16-bit parameters; require_step_target rejects them for
// the others).
template <typename Call>
void run_on_backend(int32_t device, int32_t device_index, int32_t dtype, const Call& call,
                    void (*cuda_path)(int32_t, int32_t, const Call&), void (*f32)(const Call&),
                    void (*f64)(const Call&), void (*f16)(const Call&) = nullptr,
                    void (*bf16)(const Call&) = nullptr)
{
    if (device == OPTIM_DEVICE_CUDA)
        cuda_path(device_index, dtype, call);
    else if (dtype == OPTIM_DTYPE_FLOAT32)
        f32(call);
    else if (dtype == OPTIM_DTYPE_FLOAT64)
        f64(call);
    else if (dtype == OPTIM_DTYPE_FLOAT16 && f16 != nullptr)
        f16(call);
    else if (dtype == OPTIM_DTYPE_BFLOAT16 && bf16 != nullptr)
        bf16(call);
    else
        fail(OPTIM_STATUS_INTERNAL, std::string(call.fn) + ": dtype reached no back end");
}

// A step's across_ranks flag: 0 or 1, and 1 only on the CPU (the MPI layer has no CUDA path).
void check_across_ranks(const char* fn, int32_t device, int32_t across_ranks, const char* field)
{
    OPTIM_REQUIRE(across_ranks == 0 || across_ranks == 1, fn,
                  std::string(field) + " must be 0 or 1, not " + std::to_string(across_ranks));
    if (across_ranks == 1 && device == OPTIM_DEVICE_CUDA)
        fail(OPTIM_STATUS_UNSUPPORTED,
             std::string(fn) + ": " + field +
                 " is CPU only (the MPI layer has no CUDA path yet); reduce on the host");
}

// The clip of a step: required by the _clipped entry points, checked when given.
void check_clip(const char* fn, int32_t device, const optim_grad_clip* clip, bool clipped)
{
    OPTIM_REQUIRE(!clipped || clip != nullptr, fn, "clip is NULL");
    if (clip == nullptr) return;
    validate_clip(fn, *clip);
    check_across_ranks(fn, device, clip->across_ranks, "clip->across_ranks");
}

// Whether a step reduces across ranks, and so must run even without tensors (a collective).
bool clip_across_ranks(const optim_grad_clip* clip)
{
    return clip != nullptr && clip->across_ranks == 1;
}

// The gradient scaler of a _scaled entry point: required, both pointers present; on the CPU the
// inverse scale is read and must be finite and > 0 (on CUDA it is device memory).
void check_scale(const char* fn, int32_t device, const optim_grad_scale* scale)
{
    OPTIM_REQUIRE(scale != nullptr, fn, "scale is NULL");
    OPTIM_REQUIRE(scale->inv_scale != nullptr, fn, "scale->inv_scale is NULL");
    OPTIM_REQUIRE(scale->found_inf != nullptr, fn, "scale->found_inf is NULL");
    if (device == OPTIM_DEVICE_CPU)
        OPTIM_REQUIRE(std::isfinite(*scale->inv_scale) && *scale->inv_scale > 0.0f, fn,
                      "invalid inverse scale: " + num(*scale->inv_scale) +
                          " (must be finite and > 0)");
}

// Which variant of a step an entry point is: plain, _clipped (clip required), _scaled (scale
// required, clip optional), _mixed (precision required, clip optional) or _mixed_scaled (precision
// and scale required, clip optional), with the optional inputs it was given (NULL where it has
// none).
enum class Variant { Plain, Clipped, Scaled, Mixed, MixedScaled };

bool scaled(Variant v)
{
    return v == Variant::Scaled || v == Variant::MixedScaled;
}

bool mixed(Variant v)
{
    return v == Variant::Mixed || v == Variant::MixedScaled;
}

struct VariantArgs {
    Variant variant;
    const optim_grad_clip* clip;
    const optim_grad_scale* scale;
    const optim_precision* precision;
};

void check_variant(const char* fn, int32_t device, const VariantArgs& v)
{
    check_clip(fn, device, v.clip, v.variant == Variant::Clipped);
    if (scaled(v.variant)) check_scale(fn, device, v.scale);
}

// What the entry points need of one optimizer step: its tensor and group structs, its validated
// call, its checks and its back ends. step_entry does the rest, the same for every optimizer.
struct SgdStep {
    using Tensors = optim_tensor_list;
    using Groups = optim_sgd_params;
    using Call = SgdCall;
    static void validate(const char* fn, int32_t device, const Tensors* t, int32_t n_groups,
                         const Groups* groups)
    {
        validate_sgd(fn, device, t, n_groups, groups);
    }
    static void run(int32_t device, int32_t device_index, int32_t dtype, const Call& call)
    {
        run_on_backend(device, device_index, dtype, call, cuda::sgd_step, cpu::sgd_step_f32,
                       cpu::sgd_step_f64, cpu::sgd_step_f16, cpu::sgd_step_bf16);
    }
};

struct AdamStep {
    using Tensors = optim_adam_tensors;
    using Groups = optim_adam_params;
    using Call = AdamCall;
    static void validate(const char* fn, int32_t device, const Tensors* t, int32_t n_groups,
                         const Groups* groups)
    {
        validate_adam(fn, device, t, n_groups, groups);
    }
    static void run(int32_t device, int32_t device_index, int32_t dtype, const Call& call)
    {
        run_on_backend(device, device_index, dtype, call, cuda::adam_step, cpu::adam_step_f32,
                       cpu::adam_step_f64, cpu::adam_step_f16, cpu::adam_step_bf16);
    }
};

// One step of a variant (SGD, Adam); fn names the entry point in messages.
template <typename Step>
optim_status step_entry(const char* fn, const VariantArgs& v, int32_t device, int32_t device_index,
                        int32_t dtype, const typename Step::Tensors* tensors, int32_t n_groups,
                        const typename Step::Groups* groups)
{
    return guard(fn, [&] {
        check_variant(fn, device, v);
        require_step_target(fn, device, dtype, true);
        Step::validate(fn, device, tensors, n_groups, groups);
        validate_precision(fn, dtype, v.precision, mixed(v.variant), tensors->count,
                           tensors->numels, tensors->params, tensors->grads);
        if (tensors->count == 0 && !clip_across_ranks(v.clip)) return;
        typename Step::Call call{tensors, n_groups, groups};
        call.clip = v.clip;
        call.scale = scaled(v.variant) ? v.scale : nullptr;
        call.precision = v.precision;
        call.fn = fn;
        Step::run(device, device_index, dtype, call);
    });
}

// The rate options of a hypergradient step (SGD or Adam), its clip's agreement on across_ranks,
// and its scalar rates on the CPU.
void validate_hd_params(const char* fn, int32_t device, const optim_hd_params& hp, int32_t n_groups,
                        int64_t n_tensors, const double* rates, const optim_grad_clip* clip)
{
    OPTIM_REQUIRE(hp.scope >= OPTIM_HD_SCOPE_GLOBAL && hp.scope <= OPTIM_HD_SCOPE_PER_PARAMETER, fn,
                  "unknown scope " + std::to_string(hp.scope));
    OPTIM_REQUIRE(hp.rule == OPTIM_HD_RULE_ADDITIVE || hp.rule == OPTIM_HD_RULE_NORMALIZED, fn,
                  "unknown rule " + std::to_string(hp.rule));
    OPTIM_REQUIRE(std::isfinite(hp.hypergrad_lr) && hp.hypergrad_lr >= 0.0, fn,
                  "invalid hypergrad_lr: " + num(hp.hypergrad_lr));
    OPTIM_REQUIRE(std::isfinite(hp.lr_min) && hp.lr_min >= 0.0, fn,
                  "invalid lr_min: " + num(hp.lr_min));
    OPTIM_REQUIRE(hp.lr_max >= hp.lr_min, fn,
                  "lr_min (" + num(hp.lr_min) + ") is greater than lr_max (" + num(hp.lr_max) +
                      ")");
    OPTIM_REQUIRE(std::isfinite(hp.eps) && hp.eps > 0.0, fn, "invalid eps: " + num(hp.eps));
    OPTIM_REQUIRE(hp.assume_finite == 0 || hp.assume_finite == 1, fn,
                  "assume_finite must be 0 or 1, not " + std::to_string(hp.assume_finite));
    check_across_ranks(fn, device, hp.across_ranks, "across_ranks");
    OPTIM_REQUIRE(clip == nullptr || clip->across_ranks == hp.across_ranks, fn,
                  "clip->across_ranks (" + std::to_string(clip ? clip->across_ranks : 0) +
                      ") differs from params->across_ranks (" + std::to_string(hp.across_ranks) +
                      "): the step reduces across ranks or not");
    if (hp.scope == OPTIM_HD_SCOPE_PER_PARAMETER) return;
    OPTIM_REQUIRE(rates != nullptr, fn, "rates is NULL");
    if (device != OPTIM_DEVICE_CPU) return;
    const int64_t slots = hd_slot_count(hp.scope, n_groups, n_tensors);
    for (int64_t s = 0; s < slots; ++s)
        OPTIM_REQUIRE(std::isfinite(rates[s]) && rates[s] >= 0.0, fn,
                      "rate " + std::to_string(s) + " is invalid: " + num(rates[s]));
}

// Every group's momentum options (optim_sgd_step's checks and messages), then every tensor.
void validate_hd_sgd(const char* fn, const optim_hd_tensors& t, int32_t n_groups,
                     const optim_hd_group* groups, bool per_parameter)
{
    OPTIM_REQUIRE(n_groups >= 1, fn, "n_groups must be >= 1");
    for (int32_t g = 0; g < n_groups; ++g) {
        const optim_hd_group& o = groups[g];
        validate_momentum_options(fn, g, o.momentum, o.dampening, o.weight_decay, o.nesterov,
                                  o.maximize);
    }
    OPTIM_REQUIRE(t.count >= 0, fn, "tensors->count is negative");
    if (t.count > 0)
        OPTIM_REQUIRE(t.params && t.grads && t.numels && t.group_index, fn,
                      "tensors->params, grads, numels and group_index must not be NULL");
    for (int64_t k = 0; k < t.count; ++k) {
        const int32_t gi = t.group_index[k];
        OPTIM_REQUIRE(gi >= 0 && gi < n_groups, fn, at(k) + ": group index out of range");
        OPTIM_REQUIRE(k == 0 || gi >= t.group_index[k - 1], fn,
                      at(k) + ": tensors must be in param-group order");
        OPTIM_REQUIRE(t.numels[k] >= 0, fn, at(k) + ": numel is negative");
        if (t.numels[k] == 0) continue;
        const optim_hd_group& o = groups[gi];
        OPTIM_REQUIRE(t.params[k] && t.grads[k], fn,
                      at(k) + ": parameter or gradient pointer is NULL");
        if (o.momentum != 0.0)
            OPTIM_REQUIRE(t.momentum_buffers && t.momentum_buffers[k], fn,
                          at(k) + ": momentum buffer pointer is NULL but momentum is nonzero");
        if (o.momentum == 0.0 || o.nesterov)
            OPTIM_REQUIRE(
                t.prev_updates && t.prev_updates[k], fn,
                at(k) + ": prev_updates pointer is NULL (needed without heavy-ball momentum)");
        if (per_parameter)
            OPTIM_REQUIRE(t.param_rates && t.param_rates[k], fn,
                          at(k) + ": param_rates pointer is NULL (per-parameter scope)");
        const Array arrays[] = {
            {t.params[k], "parameter"},
            {o.momentum != 0.0 ? t.momentum_buffers[k] : nullptr, "momentum buffer"},
            {o.momentum == 0.0 || o.nesterov ? t.prev_updates[k] : nullptr, "previous update"},
            {per_parameter ? t.param_rates[k] : nullptr, "parameter rates"},
            {t.grads[k], "gradient"}};
        require_unaliased(fn, k, arrays, 5, 4);
    }
}

// Every group's Adam options (optim_adam_step's checks and messages), then every tensor.
void validate_hd_adam(const char* fn, int32_t device, const optim_hd_adam_tensors& t,
                      int32_t n_groups, const optim_hd_adam_group* groups, bool per_parameter)
{
    OPTIM_REQUIRE(n_groups >= 1, fn, "n_groups must be >= 1, got " + std::to_string(n_groups));
    for (int32_t g = 0; g < n_groups; ++g) {
        const optim_hd_adam_group& o = groups[g];
        OPTIM_REQUIRE(std::isfinite(o.eps) && o.eps >= 0.0, fn,
                      "invalid epsilon value: " + num(o.eps) + group(g));
        OPTIM_REQUIRE(o.beta1 >= 0.0 && o.beta1 < 1.0, fn,
                      "invalid beta parameter at index 0: " + num(o.beta1) + group(g));
        OPTIM_REQUIRE(o.beta2 >= 0.0 && o.beta2 < 1.0, fn,
                      "invalid beta parameter at index 1: " + num(o.beta2) + group(g));
        OPTIM_REQUIRE(std::isfinite(o.weight_decay) && o.weight_decay >= 0.0, fn,
                      "invalid weight_decay value: " + num(o.weight_decay) + group(g));
        OPTIM_REQUIRE(o.amsgrad == 0 || o.amsgrad == 1, fn, "amsgrad must be 0 or 1" + group(g));
        OPTIM_REQUIRE(o.maximize == 0 || o.maximize == 1, fn, "maximize must be 0 or 1" + group(g));
    }
    OPTIM_REQUIRE(t.count >= 0, fn, "tensors->count is negative (" + std::to_string(t.count) + ")");
    if (t.count == 0) return;
    OPTIM_REQUIRE(t.params && t.grads && t.exp_avgs && t.exp_avg_sqs && t.prev_updates &&
                      t.numels && t.group_index,
                  fn,
                  "tensors->params, grads, exp_avgs, exp_avg_sqs, prev_updates, numels and "
                  "group_index must not be NULL");
    require_one_step_source(fn, t.steps, t.step_counts);
    for (int64_t k = 0; k < t.count; ++k) {
        const int32_t g = require_group_of(fn, k, t.group_index, n_groups);
        require_step_of(fn, device, k, t.steps, t.step_counts);
        if (!require_numel(fn, k, t.numels[k])) continue;
        OPTIM_REQUIRE(t.params[k] != nullptr, fn, at(k) + ": parameter pointer is NULL");
        OPTIM_REQUIRE(t.grads[k] != nullptr, fn, at(k) + ": gradient pointer is NULL");
        OPTIM_REQUIRE(t.exp_avgs[k] != nullptr, fn, at(k) + ": exp_avg pointer is NULL");
        OPTIM_REQUIRE(t.exp_avg_sqs[k] != nullptr, fn, at(k) + ": exp_avg_sq pointer is NULL");
        OPTIM_REQUIRE(t.prev_updates[k] != nullptr, fn, at(k) + ": prev_updates pointer is NULL");
        const bool amsgrad = groups[g].amsgrad != 0;
        if (amsgrad)
            OPTIM_REQUIRE(t.max_exp_avg_sqs && t.max_exp_avg_sqs[k], fn,
                          at(k) + ": max_exp_avg_sq pointer is NULL but its group has amsgrad");
        if (per_parameter)
            OPTIM_REQUIRE(t.param_rates && t.param_rates[k], fn,
                          at(k) + ": param_rates pointer is NULL (per-parameter scope)");
        const Array arrays[] = {{t.params[k], "parameter"},
                                {t.exp_avgs[k], "exp_avg"},
                                {t.exp_avg_sqs[k], "exp_avg_sq"},
                                {amsgrad ? t.max_exp_avg_sqs[k] : nullptr, "max_exp_avg_sq"},
                                {t.prev_updates[k], "previous update"},
                                {per_parameter ? t.param_rates[k] : nullptr, "parameter rates"},
                                {t.grads[k], "gradient"}};
        require_unaliased(fn, k, arrays, 7, 6);
    }
}

struct HdStep {
    using Tensors = optim_hd_tensors;
    using Groups = optim_hd_group;
    using Call = HdCall;
    static constexpr bool kScaled = true; // has a _scaled variant (HdCall::scale)
    static void validate(const char* fn, int32_t, const Tensors& t, int32_t n_groups,
                         const Groups* groups, bool per_parameter)
    {
        validate_hd_sgd(fn, t, n_groups, groups, per_parameter);
    }
    static void run(int32_t device, int32_t device_index, int32_t dtype, const Call& call)
    {
        run_on_backend(device, device_index, dtype, call, cuda::hd_step, cpu::hd_step_f32,
                       cpu::hd_step_f64, cpu::hd_step_f16, cpu::hd_step_bf16);
    }
};

struct HdAdamStep {
    using Tensors = optim_hd_adam_tensors;
    using Groups = optim_hd_adam_group;
    using Call = HdAdamCall;
    static constexpr bool kScaled = false;
    static void validate(const char* fn, int32_t device, const Tensors& t, int32_t n_groups,
                         const Groups* groups, bool per_parameter)
    {
        validate_hd_adam(fn, device, t, n_groups, groups, per_parameter);
    }
    static void run(int32_t device, int32_t device_index, int32_t dtype, const Call& call)
    {
        run_on_backend(device, device_index, dtype, call, cuda::hd_adam_step, cpu::hd_adam_step_f32,
                       cpu::hd_adam_step_f64, cpu::hd_adam_step_f16, cpu::hd_adam_step_bf16);
    }
};

// One hypergradient step of a variant (HD, HD-Adam); fn names the entry point in messages.
template <typename Step>
optim_status step_entry(const char* fn, const VariantArgs& v, int32_t device, int32_t device_index,
                        int32_t dtype, const typename Step::Tensors* tensors, int32_t n_groups,
                        const typename Step::Groups* groups, const optim_hd_params* params,
                        double* rates, int64_t* skipped)
{
    return guard(fn, [&] {
        check_variant(fn, device, v);
        require_step_target(fn, device, dtype, true);
        OPTIM_REQUIRE(params != nullptr && tensors != nullptr && groups != nullptr, fn,
                      "tensors, groups and params must not be NULL");
        const optim_hd_params& hp = *params;
        validate_hd_params(fn, device, hp, n_groups, tensors->count, rates, v.clip);
        Step::validate(fn, device, *tensors, n_groups, groups,
                       hp.scope == OPTIM_HD_SCOPE_PER_PARAMETER);
        validate_precision(fn, dtype, v.precision, mixed(v.variant), tensors->count,
                           tensors->numels, tensors->params, tensors->grads);
        if (tensors->count == 0 && hp.across_ranks == 0) {
            if (skipped && device == OPTIM_DEVICE_CPU) *skipped = 0;
            return;
        }
        typename Step::Call call{tensors, n_groups, groups, params, rates, skipped};
        call.clip = v.clip;
        if constexpr (Step::kScaled) call.scale = scaled(v.variant) ? v.scale : nullptr;
        call.precision = v.precision;
        call.fn = fn;
        Step::run(device, device_index, dtype, call);
    });
}

// The tensors of an Sls pass: what the pass reads and writes must be there (origins and params for
// save, trial and restore; grads for trial and the norm), and no written array may be another of
// the same tensor.
void validate_sls(const char* fn, const optim_sls_tensors* t, bool moves, bool reads_grads)
{
    OPTIM_REQUIRE(t != nullptr, fn, "tensors is NULL");
    OPTIM_REQUIRE(t->count >= 0, fn,
                  "tensors->count is negative (" + std::to_string(t->count) + ")");
    if (t->count == 0) return;
    OPTIM_REQUIRE(t->numels != nullptr, fn, "tensors->numels is NULL");
    if (moves)
        OPTIM_REQUIRE(t->params && t->origins, fn,
                      "tensors->params and tensors->origins must not be NULL");
    if (reads_grads) OPTIM_REQUIRE(t->grads != nullptr, fn, "tensors->grads is NULL");
    for (int64_t k = 0; k < t->count; ++k) {
        if (!require_numel(fn, k, t->numels[k])) continue;
        if (moves) {
            OPTIM_REQUIRE(t->params[k] != nullptr, fn, at(k) + ": parameter pointer is NULL");
            OPTIM_REQUIRE(t->origins[k] != nullptr, fn, at(k) + ": origin pointer is NULL");
        }
        if (reads_grads)
            OPTIM_REQUIRE(t->grads[k] != nullptr, fn, at(k) + ": gradient pointer is NULL");
        if (moves) {
            const Array arrays[] = {{t->params[k], "parameter"},
                                    {t->origins[k], "origin"},
                                    {reads_grads ? t->grads[k] : nullptr, "gradient"}};
            require_unaliased(fn, k, arrays, 3, 2);
        }
    }
}

// One validated pass of save, trial or restore.
void sls_pass(const char* fn, int32_t device, int32_t device_index, int32_t dtype,
              const optim_sls_tensors* tensors, int32_t op, double step_size)
{
    require_step_target(fn, device, dtype);
    validate_sls(fn, tensors, true, op == kSlsTrial);
    if (op == kSlsTrial)
        OPTIM_REQUIRE(std::isfinite(step_size) && step_size >= 0.0, fn,
                      "invalid step size: " + num(step_size));
    if (tensors->count == 0) return;
    const SlsCall call{tensors, op, step_size, fn};
    run_on_backend(device, device_index, dtype, call, cuda::sls_pass, cpu::sls_pass_f32,
                   cpu::sls_pass_f64);
}

} // namespace

void set_last_error(const char* first, const char* second, const char* third) noexcept
{
    std::snprintf(t_last_error, sizeof t_last_error, "%s%s%s", first, second, third);
}

} // namespace optim

using namespace optim;

// An exported step entry point: its parameters are those of optim.h (its family's, then its
// variant's own), its body the one step_entry of its family. family STEP takes (device,
// device_index, dtype, tensors, n_groups, groups) and HD adds (params, rates, skipped); each
// variant adds its own parameters (a leading comma where there are any) and names its VariantArgs.
#define OPTIM_STEP_PARAMS(Step)                                                                    \
    int32_t device, int32_t device_index, int32_t dtype, const Step::Tensors *tensors,             \
        int32_t n_groups, const Step::Groups *groups
#define OPTIM_STEP_ARGS device, device_index, dtype, tensors, n_groups, groups
#define OPTIM_HD_PARAMS(Step)                                                                      \
    OPTIM_STEP_PARAMS(Step), const optim_hd_params *params, double *rates, int64_t *skipped
#define OPTIM_HD_ARGS OPTIM_STEP_ARGS, params, rates, skipped

#define OPTIM_PLAIN_PARAMS
#define OPTIM_PLAIN_ARGS (VariantArgs{Variant::Plain, nullptr, nullptr, nullptr})
#define OPTIM_CLIPPED_PARAMS , const optim_grad_clip* clip
#define OPTIM_CLIPPED_ARGS (VariantArgs{Variant::Clipped, clip, nullptr, nullptr})
#define OPTIM_SCALED_PARAMS , const optim_grad_clip *clip, const optim_grad_scale *scale
#define OPTIM_SCALED_ARGS (VariantArgs{Variant::Scaled, clip, scale, nullptr})
#define OPTIM_MIXED_PARAMS , const optim_grad_clip *clip, const optim_precision *precision
#define OPTIM_MIXED_ARGS (VariantArgs{Variant::Mixed, clip, nullptr, precision})
#define OPTIM_MIXED_SCALED_PARAMS                                                                  \
    , const optim_grad_clip *clip, const optim_grad_scale *scale, const optim_precision *precision
#define OPTIM_MIXED_SCALED_ARGS (VariantArgs{Variant::MixedScaled, clip, scale, precision})

#define OPTIM_STEP_ENTRY(name, Step, family, variant)                                              \
    OPTIM_API optim_status name(OPTIM_##family##_PARAMS(Step) OPTIM_##variant##_PARAMS)            \
    {                                                                                              \
        return step_entry<Step>(#name, OPTIM_##variant##_ARGS, OPTIM_##family##_ARGS);             \
    }

extern "C" {

OPTIM_API int32_t optim_abi_version(void)
{
    return OPTIM_ABI_VERSION;
}

OPTIM_API const char* optim_build_info(void)
{
    return OPTIM_BUILD_INFO;
}

OPTIM_API const char* optim_last_error(void)
{
    return t_last_error;
}

OPTIM_API const char* optim_status_name(optim_status status)
{
    switch (status) {
    case OPTIM_STATUS_OK:
        return "OPTIM_STATUS_OK";
    case OPTIM_STATUS_INVALID_ARGUMENT:
        return "OPTIM_STATUS_INVALID_ARGUMENT";
    case OPTIM_STATUS_UNSUPPORTED:
        return "OPTIM_STATUS_UNSUPPORTED";
    case OPTIM_STATUS_CUDA_UNAVAILABLE:
        return "OPTIM_STATUS_CUDA_UNAVAILABLE";
    case OPTIM_STATUS_CUDA_ERROR:
        return "OPTIM_STATUS_CUDA_ERROR";
    case OPTIM_STATUS_OUT_OF_MEMORY:
        return "OPTIM_STATUS_OUT_OF_MEMORY";
    case OPTIM_STATUS_INTERNAL:
        return "OPTIM_STATUS_INTERNAL";
    case OPTIM_STATUS_MPI_ERROR:
        return "OPTIM_STATUS_MPI_ERROR";
    default:
        return "OPTIM_STATUS_UNKNOWN";
    }
}

OPTIM_API int32_t optim_cuda_compiled(void)
{
    return cuda::compiled() ? 1 : 0;
}

OPTIM_API optim_status optim_cuda_device_count(int32_t* count)
{
    return guard("optim_cuda_device_count", [&] {
        OPTIM_REQUIRE(count != nullptr, "optim_cuda_device_count", "count is NULL");
        *count = cuda::device_count();
    });
}

namespace {
void require_stream_device(int32_t device_index, const char* fn)
{
    OPTIM_REQUIRE(device_index >= 0 && device_index < OPTIM_MAX_CUDA_DEVICES, fn,
                  "device_index must be in [0, " + std::to_string(OPTIM_MAX_CUDA_DEVICES) +
                      "), got " + std::to_string(device_index));
}
} // namespace

OPTIM_API optim_status optim_cuda_set_stream(int32_t device_index, void* stream)
{
    static const char* fn = "optim_cuda_set_stream";
    return guard(fn, [&] {
        require_stream_device(device_index, fn);
        set_cuda_stream(device_index, stream);
    });
}

OPTIM_API optim_status optim_cuda_get_stream(int32_t device_index, void** stream)
{
    static const char* fn = "optim_cuda_get_stream";
    return guard(fn, [&] {
        require_stream_device(device_index, fn);
        OPTIM_REQUIRE(stream != nullptr, fn, "stream is NULL");
        *stream = cuda_stream_of(device_index);
    });
}

OPTIM_API optim_status optim_set_num_threads(int32_t n)
{
    return guard("optim_set_num_threads", [&] {
        OPTIM_REQUIRE(n >= 0 && n <= 1024, "optim_set_num_threads",
                      "n must be in [0, 1024] (0 = default), got " + std::to_string(n));
        cpu::ThreadPool::instance().set_num_threads(n);
    });
}

OPTIM_API int32_t optim_get_num_threads(void)
{
    int32_t n = 1;
    guard("optim_get_num_threads", [&] { n = cpu::ThreadPool::instance().num_threads(); });
    return n;
}

OPTIM_API const char* optim_threading_info(void)
{
    const char* text = "unknown";
    guard("optim_threading_info", [&] { text = cpu::ThreadPool::instance().backend(); });
    return text;
}

OPTIM_API void optim_sgd_params_default(optim_sgd_params* params)
{
    if (!params) return;
    *params = optim_sgd_params{};
    params->lr = 0.01;
}

OPTIM_API void optim_adam_params_default(optim_adam_params* params)
{
    if (!params) return;
    *params = optim_adam_params{};
    params->lr = 1e-3;
    params->beta1 = 0.9;
    params->beta2 = 0.999;
    params->eps = 1e-8;
}

OPTIM_API int64_t optim_hd_rate_count(int32_t scope, int32_t n_groups, int64_t n_tensors)
{
    if (scope < OPTIM_HD_SCOPE_GLOBAL || scope > OPTIM_HD_SCOPE_PER_PARAMETER || n_groups < 0 ||
        n_tensors < 0)
        return -1;
    return hd_slot_count(scope, n_groups, n_tensors);
}

// The step entry points, one line each: OPTIM_STEP_ENTRY(name, Step, family, variant).
OPTIM_STEP_ENTRY(optim_sgd_step, SgdStep, STEP, PLAIN)
OPTIM_STEP_ENTRY(optim_sgd_step_clipped, SgdStep, STEP, CLIPPED)
OPTIM_STEP_ENTRY(optim_sgd_step_scaled, SgdStep, STEP, SCALED)
OPTIM_STEP_ENTRY(optim_sgd_step_mixed, SgdStep, STEP, MIXED)
OPTIM_STEP_ENTRY(optim_sgd_step_mixed_scaled, SgdStep, STEP, MIXED_SCALED)
OPTIM_STEP_ENTRY(optim_adam_step, AdamStep, STEP, PLAIN)
OPTIM_STEP_ENTRY(optim_adam_step_clipped, AdamStep, STEP, CLIPPED)
OPTIM_STEP_ENTRY(optim_adam_step_scaled, AdamStep, STEP, SCALED)
OPTIM_STEP_ENTRY(optim_adam_step_mixed, AdamStep, STEP, MIXED)
OPTIM_STEP_ENTRY(optim_adam_step_mixed_scaled, AdamStep, STEP, MIXED_SCALED)
OPTIM_STEP_ENTRY(optim_hd_step, HdStep, HD, PLAIN)
OPTIM_STEP_ENTRY(optim_hd_step_clipped, HdStep, HD, CLIPPED)
OPTIM_STEP_ENTRY(optim_hd_step_scaled, HdStep, HD, SCALED)
OPTIM_STEP_ENTRY(optim_hd_step_mixed, HdStep, HD, MIXED)
OPTIM_STEP_ENTRY(optim_hd_adam_step, HdAdamStep, HD, PLAIN)
OPTIM_STEP_ENTRY(optim_hd_adam_step_clipped, HdAdamStep, HD, CLIPPED)
OPTIM_STEP_ENTRY(optim_hd_adam_step_mixed, HdAdamStep, HD, MIXED)

OPTIM_API optim_status optim_sls_save(int32_t device, int32_t device_index, int32_t dtype,
                                      const optim_sls_tensors* tensors)
{
    static const char* fn = "optim_sls_save";
    return guard(fn, [&] { sls_pass(fn, device, device_index, dtype, tensors, kSlsSave, 0.0); });
}

OPTIM_API optim_status optim_sls_trial(int32_t device, int32_t device_index, int32_t dtype,
                                       const optim_sls_tensors* tensors, double step_size)
{
    static const char* fn = "optim_sls_trial";
    return guard(fn,
                 [&] { sls_pass(fn, device, device_index, dtype, tensors, kSlsTrial, step_size); });
}

OPTIM_API optim_status optim_sls_restore(int32_t device, int32_t device_index, int32_t dtype,
                                         const optim_sls_tensors* tensors)
{
    static const char* fn = "optim_sls_restore";
    return guard(fn, [&] { sls_pass(fn, device, device_index, dtype, tensors, kSlsRestore, 0.0); });
}

OPTIM_API optim_status optim_sls_grad_norm_sq(int32_t device, int32_t device_index, int32_t dtype,
                                              const optim_sls_tensors* tensors, double* result)
{
    static const char* fn = "optim_sls_grad_norm_sq";
    return guard(fn, [&] {
        require_step_target(fn, device, dtype);
        OPTIM_REQUIRE(result != nullptr, fn, "result is NULL");
        validate_sls(fn, tensors, false, true);
        double sum = 0.0;
        if (tensors->count > 0) {
            if (device == OPTIM_DEVICE_CUDA)
                sum = cuda::sls_grad_norm_sq(device_index, dtype, *tensors);
            else if (dtype == OPTIM_DTYPE_FLOAT32)
                sum = cpu::sls_grad_norm_sq_f32(*tensors);
            else
                sum = cpu::sls_grad_norm_sq_f64(*tensors);
        }
        *result = sum;
    });
}

OPTIM_API optim_status optim_greedylr_init(const optim_greedylr_config* config,
                                           optim_greedylr_state* state)
{
    static const char* fn = "optim_greedylr_init";
    return guard(fn, [&] {
        validate_greedy_config(fn, config);
        OPTIM_REQUIRE(state != nullptr, fn, "state is NULL");
        greedy_init(*config, *state);
    });
}

OPTIM_API optim_status optim_greedylr_step(int32_t device, int32_t device_index,
                                           const optim_greedylr_config* config,
                                           optim_greedylr_state* state,
                                           const optim_greedylr_buffers* buffers,
                                           const void* metric, int32_t metric_dtype)
{
    static const char* fn = "optim_greedylr_step";
    return guard(fn, [&] {
        validate_greedy_config(fn, config);
        OPTIM_REQUIRE(device == OPTIM_DEVICE_CPU || device == OPTIM_DEVICE_CUDA, fn,
                      "unknown device " + std::to_string(device));
        OPTIM_REQUIRE(state != nullptr && buffers != nullptr && metric != nullptr, fn,
                      "state, buffers and metric must not be NULL");
        const optim_greedylr_buffers& b = *buffers;
        OPTIM_REQUIRE(b.rates && b.initial_rates && b.min_lr && b.max_lr, fn,
                      "buffers->rates, initial_rates, min_lr and max_lr must not be NULL");
        OPTIM_REQUIRE(!config->smooth || b.window, fn, "buffers->window is NULL but smooth is on");
        OPTIM_REQUIRE(metric_dtype == OPTIM_DTYPE_FLOAT32 || metric_dtype == OPTIM_DTYPE_FLOAT64,
                      fn, "metric_dtype must be OPTIM_DTYPE_FLOAT32 or OPTIM_DTYPE_FLOAT64");
        // Everything above is host memory on either device. A device-resident state and buffers
        // are checked by the kernel itself (greedy_check), which leaves a bad state as it is.
        if (device == OPTIM_DEVICE_CUDA) {
            cuda::greedylr_step(device_index, *config, state, b, metric, metric_dtype);
            return;
        }
        // Host memory: check everything the update will read, so that a corrupt state (a bad file)
        // is reported instead of indexing out of the window.
        report_greedy_problem(fn, greedy_check(*config, *state, b), b);
        const double m = metric_dtype == OPTIM_DTYPE_FLOAT32
                             ? static_cast<double>(*static_cast<const float*>(metric))
                             : *static_cast<const double*>(metric);
        greedy_step(*config, *state, b, m);
    });
}

} // extern "C"
