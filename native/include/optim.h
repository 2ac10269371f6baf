/*
 * optim.h — the one public C ABI of the Optim native core.
 *
 * Conventions (they hold for every function below unless its comment says otherwise):
 *
 *  - Only fixed-size types cross the boundary (int32_t, int64_t, uint8_t, double, pointers).
 *    Structs are passed by pointer, never by value.
 *  - Every fallible function returns an optim_status. OPTIM_STATUS_OK (0) is success; on any other
 *    value optim_last_error() describes the problem. Every argument of a call (every tensor and
 *    every param group) is checked before anything is written, so a failed check
 *    (OPTIM_STATUS_INVALID_ARGUMENT, _UNSUPPORTED, _CUDA_UNAVAILABLE) and a failed host allocation
 *    leave parameters, buffers and rates exactly as they were. A CPU step that passed its checks
 *    cannot fail part-way (when worker threads cannot be started, it runs on fewer). A CUDA step
 *    may take several kernel launches: OPTIM_STATUS_CUDA_ERROR from a later launch means the
 *    earlier launches' writes have happened (the device is then usually unusable anyway), and
 *    faults inside a kernel surface on a later synchronising call.
 *  - No C++ exception, abort() or exit() ever leaves the library.
 *  - "Host memory" means ordinary CPU memory; "device memory" means CUDA global memory of the
 *    device named by the call. The library never takes ownership of caller memory.
 *  - Aliasing: an array a call writes may not be another array of the same tensor (a parameter
 *    passed as its own gradient, ...): that is rejected (OPTIM_STATUS_INVALID_ARGUMENT). Partial
 *    overlaps and memory shared between tensors are not detected; every access then still stays
 *    inside the arrays given, but the values written are unspecified.
 *  - Thread safety: functions may be called from any thread, at the same time. Calls that update
 *    the same memory must not run concurrently (as with any optimizer). Small CPU calls run on the
 *    calling thread alone. Large ones are split over several threads, one such call at a time
 *    (the others wait): on an OpenMP team when an OpenMP runtime is loaded in the process (LibTorch
 *    brings one) and the calling thread is the one that uses it, else on the library's own worker
 *    pool. The one thread that uses the team is the first to run a large CPU call while the
 *    runtime is loaded, until it exits (then the next such thread takes over), so the process
 *    holds at most one OpenMP team and one worker pool for this library, whatever the number of
 *    calling threads. Results never depend on which threads run a call, nor on how many.
 */
#ifndef OPTIM_H
#define OPTIM_H

#include <stdint.h>

#if defined(_WIN32)
#if defined(OPTIM_BUILDING_LIBRARY)
#define OPTIM_API __declspec(dllexport)
#else
#define OPTIM_API __declspec(dllimport)
#endif
#else
#define OPTIM_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature, struct layout or enum value below changes. The managed bindings
 * refuse to run against a library whose optim_abi_version() differs from the one they were built
 * for. */
#define OPTIM_ABI_VERSION 9

/* ---- Status codes ---------------------------------------------------------------------------- */
typedef int32_t optim_status;
enum {
    OPTIM_STATUS_OK = 0,
    OPTIM_STATUS_INVALID_ARGUMENT = 1, /* a null pointer, bad count, bad hyperparameter, ... */
    OPTIM_STATUS_UNSUPPORTED = 2,      /* a dtype or device this build cannot handle */
    OPTIM_STATUS_CUDA_UNAVAILABLE = 3, /* built without CUDA, or no CUDA device present */
    OPTIM_STATUS_CUDA_ERROR = 4,       /* the CUDA runtime reported an error */
    OPTIM_STATUS_OUT_OF_MEMORY = 5,
    OPTIM_STATUS_INTERNAL = 6, /* a bug: please report the message */
    OPTIM_STATUS_MPI_ERROR = 7 /* MPI reported an error (a peer died, a network failure, ...) */
};

/* ---- Element types and devices --------------------------------------------------------------- */
/* FLOAT16 (IEEE 754 binary16) and BFLOAT16 are accepted by the SGD, Adam and hypergradient steps
 * only, for parameters and gradients: the math is done in float32 and the optimizer state (momentum
 * buffers, moments, previous updates, per-parameter rates) is float32 (see "Mixed precision"
 * below). */
enum {
    OPTIM_DTYPE_FLOAT32 = 0,
    OPTIM_DTYPE_FLOAT64 = 1,
    OPTIM_DTYPE_FLOAT16 = 2,
    OPTIM_DTYPE_BFLOAT16 = 3
};
enum { OPTIM_DEVICE_CPU = 0, OPTIM_DEVICE_CUDA = 1 };

/* ---- Library information (never fail) -------------------------------------------------------- */

/* OPTIM_ABI_VERSION of the library that was loaded. */
OPTIM_API int32_t optim_abi_version(void);

/* A static, human-readable version and build description, e.g. "optim 0.1.0 (cpu, cuda: sm_70
 * sm_80 sm_90)". A string constant: nothing is built or allocated. */
OPTIM_API const char* optim_build_info(void);

/* The message of the last failing call on the calling thread. Owned by the library; valid until the
 * next failing call on the same thread. Empty string if no call has failed. Never NULL. Recording
 * it needs no memory, so even a call that ran out of memory leaves its own message (cut at 4095
 * bytes). */
OPTIM_API const char* optim_last_error(void);

/* A static name for a status code ("OPTIM_STATUS_INVALID_ARGUMENT", ...). Never NULL. */
OPTIM_API const char* optim_status_name(optim_status status);

/* 1 if this build contains the CUDA kernels, 0 otherwise. */
OPTIM_API int32_t optim_cuda_compiled(void);

/* Number of usable CUDA devices in *count (0 when built without CUDA or when no device is present;
 * both are OK). Fails only for a NULL count. */
OPTIM_API optim_status optim_cuda_device_count(int32_t* count);

/* ---- CUDA streams ---------------------------------------------------------------------------- */

/* Every CUDA call runs on the calling thread's stream for its device: the cudaStream_t set here,
 * per thread and per device index, as LibTorch's current stream is (the legacy default stream,
 * NULL, until set). A step launches its kernels on that stream and returns without waiting (except
 * optim_sls_grad_norm_sq, which waits for that stream only), allocates nothing once warm (scratch
 * grows on the first steps of a size, per device and stream), and so can be captured in a CUDA
 * graph after a warm-up step on the capturing stream. Steps on one stream are ordered by it;
 * steps on different streams that write the same memory are the caller's to order.
 * device_index: 0 <= device_index < OPTIM_MAX_CUDA_DEVICES (not checked against the devices
 * present, so this works in any build). stream: a cudaStream_t of that device, never
 * dereferenced here; it must stay valid while steps use it. */
#define OPTIM_MAX_CUDA_DEVICES 64
OPTIM_API optim_status optim_cuda_set_stream(int32_t device_index, void* stream);

/* The calling thread's stream for device_index in *stream (NULL: the legacy default stream). */
OPTIM_API optim_status optim_cuda_get_stream(int32_t device_index, void** stream);

/* LibTorch's current CUDA stream for device_index on the calling thread
 * (c10::cuda::getCurrentCUDAStream(device_index).stream()) in *stream, so a caller can pass it to
 * optim_cuda_set_stream and order our steps with its LibTorch work. The library does not link
 * LibTorch; it finds libc10_cuda in the process. Returns OPTIM_STATUS_UNSUPPORTED when LibTorch's
 * CUDA library is not loaded or does not export those functions (*stream untouched), and
 * OPTIM_STATUS_INVALID_ARGUMENT for a device index outside [0, OPTIM_MAX_CUDA_DEVICES). */
OPTIM_API optim_status optim_torch_cuda_stream(int32_t device_index, void** stream);

/* ---- CPU threading --------------------------------------------------------------------------- */

/* Sets the number of threads of the CPU path (the caller counts as one). 0 restores the default:
 * the environment variable OPTIM_NUM_THREADS if set, else the CPUs this process may run on. Results
 * never depend on this number. Fails for n < 0 or n > 1024. */
OPTIM_API optim_status optim_set_num_threads(int32_t n);
OPTIM_API int32_t optim_get_num_threads(void);

/* Which threads run the calling thread's large CPU calls (see Thread safety above): "openmp team of
 * <path>" when an OpenMP runtime is loaded in the process (LibTorch brings its own; sharing its
 * team avoids fighting its spinning threads for the cores) and this thread uses it or no thread
 * does yet; "optim worker pool (another thread uses the openmp team of <path>)" when another
 * thread uses it; else "optim worker pool". A runtime loaded later is found at the next large call.
 * OPTIM_THREADING=pool forces the pool. Static text, valid while the library is loaded. Never
 * NULL. */
OPTIM_API const char* optim_threading_info(void);

/* ---- Tensor lists ---------------------------------------------------------------------------- */

/* Many tensors, updated in one call. Every array has `count` entries. All tensors of one list share
 * one dtype and one device, and are dense and contiguous; element i of params[k], grads[k] and
 * momentum_buffers[k] belong together. A tensor with numel 0 is allowed (its pointers may be NULL).
 * The tensors may belong to several param groups, each with its own hyperparameters.
 *
 * params:           parameter data, updated in place.
 * grads:            gradient data, read only.
 * momentum_buffers: momentum buffer data, updated in place; may be NULL (the array itself) when the
 *                   step uses no momentum.
 * numels:           element count of each tensor (host memory, always).
 * buffer_fresh:     may be NULL (= all zero). Nonzero for tensor k means its momentum buffer has no
 *                   history yet: this step writes the (decayed, possibly negated) gradient into it
 *                   instead of blending, exactly as PyTorch does on a parameter's first step.
 * group_index:      may be NULL (= every tensor is in group 0). Otherwise the param group of each
 *                   tensor, in [0, n_groups) and non-decreasing (tensors in param-group order).
 *
 * The arrays themselves are host memory. The data they point to is host memory for OPTIM_DEVICE_CPU
 * and device memory of the named device for OPTIM_DEVICE_CUDA. */
typedef struct optim_tensor_list {
    int64_t count;
    void* const* params;
    const void* const* grads;
    void* const* momentum_buffers;
    const int64_t* numels;
    const uint8_t* buffer_fresh;
    const int32_t* group_index;
} optim_tensor_list;

/* ---- Gradient clipping by global norm ----------------------------------------------------------
 */

/* Clipping fused into a step (optim_sgd_step_clipped, optim_adam_step_clipped,
 * optim_hd_step_clipped): the step equals PyTorch's torch.nn.utils.clip_grad_norm_(params,
 * max_norm) followed by the optimizer step, over every tensor of the call:
 *   total_norm = sqrt(sum of grad^2 over every element of every tensor)
 *   coef = min(max_norm / (total_norm + 1e-6), 1)       (in the element type, as PyTorch does)
 *   the step then uses coef * grad wherever it uses grad
 * The norm takes one read pass over the gradients (for hypergradient descent, the same pass as its
 * reduction); the coefficient is applied inside the update, so the gradients themselves are never
 * written (PyTorch scales .grad in place). The squared norm is summed in double in fixed chunks
 * combined in a fixed order: it never depends on the number of threads. A non-finite gradient
 * makes the norm non-finite and, as in PyTorch, coef 0 (infinity) or NaN (NaN).
 *   max_norm:   finite, > 0.
 *   total_norm: one double, written with the norm: host memory for OPTIM_DEVICE_CPU, device memory
 *               of the step's device for OPTIM_DEVICE_CUDA (the update kernels read the norm there,
 *               so a CUDA step never waits for the host). Not NULL.
 *   across_ranks: 0 or 1. 1: the tensors are this rank's shard of a model split over the ranks of
 *               the MPI job (optim_mpi_init; sharded optimizer state): the squared norm is summed
 *               over every rank (optim_mpi_allreduce_scalars) before the coefficient, so every rank
 *               clips by the norm of the whole model. A collective: every rank makes the call, with
 *               or without tensors. CPU only (the MPI layer has no CUDA path). */
typedef struct optim_grad_clip {
    double max_norm;
    double* total_norm;
    int32_t across_ranks;
} optim_grad_clip;

/* ---- Gradient scaling (dynamic loss scaling) ------------------------------------------------- */

/* A gradient scaler fused into a step (optim_sgd_step_scaled, optim_adam_step_scaled,
 * optim_hd_step_scaled): the gradients hold loss-scaled values, and the step equals PyTorch's
 * GradScaler.unscale_ (each gradient multiplied by the inverse scale, a non-finite element found)
 * followed by the optimizer step when no element was non-finite:
 *   before anything is written, one read pass over every gradient of the call finds whether any
 *   element is infinite or NaN (checked before the multiply, as PyTorch checks) and, when clipping,
 *   sums the squared norm of the unscaled gradient (inv_scale * grad, rounded to the element type);
 *   skip = (*found_inf != 0 on entry) or a non-finite element; a non-finite element sets *found_inf
 *   to 1 (the flag is never cleared, so several calls can share it);
 *   a skipped step writes nothing else at all (parameters, buffers, moments, rates, the skip report
 *   of hypergradient descent); the clipping norm is still written;
 *   otherwise the step uses (inv_scale * grad) * coef wherever it uses grad, in the element type
 *   (inv_scale converted to it: exact for float32 and float64), coef being clipping's coefficient
 *   of that unscaled gradient (1 without clipping).
 * The gradients themselves are never written (PyTorch's unscale_ writes them). With inv_scale 1
 * the step is the unscaled step that honours the flag: what a caller that has unscaled the
 * gradients itself (and recorded the flag) passes.
 *   inv_scale: one float, read: host memory for OPTIM_DEVICE_CPU (finite and > 0), device memory of
 *              the step's device for OPTIM_DEVICE_CUDA (not validated; the kernels read it there).
 *   found_inf: one float, read and written, in the same memory as inv_scale.
 * On CUDA the decision stays on the device: every kernel of the step reads the flag, so a step
 * never waits for the host. Neither may be NULL. */
typedef struct optim_grad_scale {
    const float* inv_scale;
    float* found_inf;
} optim_grad_scale;

/* ---- Mixed precision --------------------------------------------------------------------------
 */

/* Parameters and gradients of dtype OPTIM_DTYPE_FLOAT16 or OPTIM_DTYPE_BFLOAT16 (optim_sgd_step,
 * optim_adam_step, optim_hd_step, optim_hd_adam_step and their _clipped, _scaled and _mixed forms):
 * every element is converted to float32 (exactly), updated in float32 with float32 state (momentum
 * buffers, exp_avg, exp_avg_sq, max_exp_avg_sq, prev_updates, param_rates: float32 arrays; the
 * hypergradient steps' scalar rates stay doubles), and written back rounded. The hypergradient
 * steps' reduction reads the gradient and the parameter (or, with master_params, its copy) as the
 * update does. Hyperparameters are rounded to
 * float32. The plain and _clipped entry points write back in place, rounded to nearest (ties to
 * even). The _mixed entry points add, through optim_precision: master_params: float32 copies of the
 * parameters (the mixed-precision recipe of apex and DeepSpeed): the update reads and writes the
 * copy, and writes the parameter as the copy rounded to nearest; the 16-bit parameter itself is
 * then never read. rounding = OPTIM_ROUNDING_STOCHASTIC (bfloat16, without master_params): each
 * element is rounded up with probability (its 16 dropped bits) / 2^16, so the rounding is unbiased.
 * The random bits come from a counter-based hash of (seed, step, the tensor's index k in the call,
 * the element's index in its tensor) (SplitMix64's finalizer, docs/design.md): no generator state,
 * the same bits for the same four numbers on any thread count and device, different ones for
 * another seed or step. A value above the largest finite bfloat16 may round up to infinity. Float16
 * conversions round to nearest even, keep subnormals, overflow to infinity (at 65520 and above) and
 * keep NaNs NaN; CPU conversions are done in software, bit for bit those of the CUDA intrinsics
 * (__float2half_rn, __float2bfloat16_rn). */
enum { OPTIM_ROUNDING_NEAREST = 0, OPTIM_ROUNDING_STOCHASTIC = 1 };

typedef struct optim_precision {
    /* NULL: no master weights. Otherwise `count` entries (one per tensor of the call, in its order,
     * host memory), each the float32 copy of that parameter (numel elements, on the step's device;
     * may be NULL for a tensor with numel 0). Only with FLOAT16 or BFLOAT16 parameters. */
    void* const* master_params;
    int64_t seed;     /* stochastic rounding: any value */
    int64_t step;     /* stochastic rounding: the step's number, any value (callers count steps) */
    int32_t rounding; /* OPTIM_ROUNDING_*: STOCHASTIC needs BFLOAT16 and no master_params */
} optim_precision;

/* ---- Fused SGD ------------------------------------------------------------------------------- */

/* Hyperparameters of one SGD step, with PyTorch's meaning and PyTorch's order of operations:
 *   g = maximize ? -grad : grad
 *   g = g + weight_decay * param                       (coupled L2)
 *   if momentum != 0:
 *       buf = fresh ? g : momentum * buf + (1 - dampening) * g
 *       d   = nesterov ? g + momentum * buf : buf
 *   else d = g
 *   param = param - lr * d
 * Arithmetic is done in the element type; hyperparameters are rounded to it once per call.
 *
 * lr_ptr: optional. When not NULL the rate is read from *lr_ptr (one double) instead of `lr`:
 *   host memory for the CPU path, device memory for the CUDA path, where the kernels read it, so
 *   a rate computed on the device (hypergradient descent, GreedyLR) never makes a step wait for
 *   the host. The library does not validate a device-resident rate. */
typedef struct optim_sgd_params {
    double lr;
    double momentum;
    double dampening;
    double weight_decay;
    int32_t nesterov; /* 0 or 1: requires momentum > 0 and dampening == 0 */
    int32_t maximize; /* 0 or 1 */
    const double* lr_ptr;
} optim_sgd_params;

/* Fills *params with PyTorch's defaults (lr 0.01 — PyTorch requires one; everything else 0/NULL).
 * Does nothing for NULL. */
OPTIM_API void optim_sgd_params_default(optim_sgd_params* params);

/* One fused SGD step over every tensor of `tensors`, each with the hyperparameters of its param
 * group: groups[group_index[k]] for tensor k (n_groups >= 1 entries, host memory).
 *   device:       OPTIM_DEVICE_CPU or OPTIM_DEVICE_CUDA.
 *   device_index: CUDA device ordinal (ignored for the CPU). The calling thread's current CUDA
 *                 device is restored before returning.
 *   dtype:        OPTIM_DTYPE_FLOAT32 or OPTIM_DTYPE_FLOAT64; or OPTIM_DTYPE_FLOAT16 or
 *                 OPTIM_DTYPE_BFLOAT16 for params and grads, with float32 momentum buffers (see
 *                 "Mixed precision").
 * Validation (of every group and every tensor, before anything is written): counts, group indices,
 * NULL pointers, finite and non-negative lr, momentum and weight_decay, finite dampening,
 * Nesterov's requirements, momentum buffers present where a group's momentum != 0.
 * CPU: one pass over memory per tensor; large calls are split over the worker pool in fixed chunks
 * spanning every group.
 * CUDA: launches on the calling thread's stream (optim_cuda_set_stream) and returns without waiting
 * for the kernels; kernel faults surface on a later synchronising call, as with any asynchronous
 * CUDA work. Returns OPTIM_STATUS_CUDA_UNAVAILABLE for a CUDA request when the library was built
 * without CUDA or no device is present. */
OPTIM_API optim_status optim_sgd_step(int32_t device, int32_t device_index, int32_t dtype,
                                      const optim_tensor_list* tensors, int32_t n_groups,
                                      const optim_sgd_params* groups);

/* optim_sgd_step with gradient clipping by global norm (optim_grad_clip above; clip not NULL). */
OPTIM_API optim_status optim_sgd_step_clipped(int32_t device, int32_t device_index, int32_t dtype,
                                              const optim_tensor_list* tensors, int32_t n_groups,
                                              const optim_sgd_params* groups,
                                              const optim_grad_clip* clip);

/* optim_sgd_step with a gradient scaler (optim_grad_scale above; scale not NULL) and optionally
 * clipping (clip may be NULL). */
OPTIM_API optim_status optim_sgd_step_scaled(int32_t device, int32_t device_index, int32_t dtype,
                                             const optim_tensor_list* tensors, int32_t n_groups,
                                             const optim_sgd_params* groups,
                                             const optim_grad_clip* clip,
                                             const optim_grad_scale* scale);

/* optim_sgd_step with the mixed-precision options of `precision` (not NULL; see "Mixed precision")
 * and optional clipping (clip may be NULL: no clipping). */
OPTIM_API optim_status optim_sgd_step_mixed(int32_t device, int32_t device_index, int32_t dtype,
                                            const optim_tensor_list* tensors, int32_t n_groups,
                                            const optim_sgd_params* groups,
                                            const optim_grad_clip* clip,
                                            const optim_precision* precision);

/* optim_sgd_step_mixed with a gradient scaler (optim_grad_scale above; scale not NULL): a skipped
 * step writes nothing but the flag, master weights included. */
OPTIM_API optim_status optim_sgd_step_mixed_scaled(int32_t device, int32_t device_index,
                                                   int32_t dtype, const optim_tensor_list* tensors,
                                                   int32_t n_groups, const optim_sgd_params* groups,
                                                   const optim_grad_clip* clip,
                                                   const optim_grad_scale* scale,
                                                   const optim_precision* precision);

/* ---- Fused Adam and AdamW -------------------------------------------------------------------- */

/* Hyperparameters of one param group, with PyTorch's meaning and PyTorch's order of operations
 * (its _single_tensor_adam), for a parameter at its own step t (t >= 1, counted per tensor):
 *   decoupled (AdamW):  param = param * (1 - lr * weight_decay)
 *   g = maximize ? -grad : grad
 *   not decoupled (Adam): g = g + weight_decay * param                       (coupled L2)
 *   exp_avg     = lerp(exp_avg, g, 1 - beta1)
 *   exp_avg_sq  = beta2 * exp_avg_sq + (1 - beta2) * g * g
 *   amsgrad: max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq), used below instead of exp_avg_sq
 *   param = param - lr / (1 - beta1^t) * exp_avg / (sqrt(exp_avg_sq) / sqrt(1 - beta2^t) + eps)
 * Arithmetic is done in the element type; the per-tensor coefficients (lr / (1 - beta1^t),
 * sqrt(1 - beta2^t), 1 - lr * weight_decay) are computed in double and rounded to it once. */
typedef struct optim_adam_params {
    double lr;           /* finite, >= 0 */
    double beta1;        /* in [0, 1) */
    double beta2;        /* in [0, 1) */
    double eps;          /* finite, >= 0 */
    double weight_decay; /* finite, >= 0 */
    int32_t amsgrad;     /* 0 or 1 */
    int32_t maximize;    /* 0 or 1 */
    int32_t decoupled;   /* 0: Adam (coupled L2 decay), 1: AdamW (decoupled decay) */
} optim_adam_params;

/* Fills *params with PyTorch's Adam defaults (lr 1e-3, betas 0.9 and 0.999, eps 1e-8, everything
 * else 0). Does nothing for NULL. */
OPTIM_API void optim_adam_params_default(optim_adam_params* params);

/* The tensors of one Adam step, in param-group order. Every array has `count` entries and is host
 * memory; the data they point to is host memory for OPTIM_DEVICE_CPU and device memory of the named
 * device for OPTIM_DEVICE_CUDA. Element i of params[k], grads[k], exp_avgs[k], exp_avg_sqs[k] and
 * max_exp_avg_sqs[k] belong together. A tensor with numel 0 is allowed (its pointers may be NULL).
 *
 * params:          parameter data, updated in place.
 * grads:           gradient data, read only.
 * exp_avgs, exp_avg_sqs: the first and second moments, updated in place (zeros before a tensor's
 *                  first step, as PyTorch creates them).
 * max_exp_avg_sqs: the running maximum of exp_avg_sq, updated in place; entry k is used when tensor
 *                  k's group has amsgrad. May be NULL (the array) when no group has.
 * numels:          element count of each tensor.
 * steps:           the step number t of this update of each tensor (>= 1): PyTorch's state["step"]
 *                  after its increment. Counted per tensor, as PyTorch does, so a parameter whose
 *                  first gradient arrives late starts its bias corrections at t = 1. NULL when
 *                  step_counts is given.
 * group_index:     may be NULL (= every tensor is in group 0). Otherwise the param group of each
 *                  tensor, in [0, n_groups) and non-decreasing.
 * step_counts:     NULL: the step numbers are `steps`. Otherwise (steps NULL) `count` pointers,
 * none NULL (numel 0 included), each to one int64 in the step's memory (device memory for
 * OPTIM_DEVICE_CUDA): the steps tensor k has taken so far (>= 0; PyTorch's state["step"] before its
 * increment). The update uses t = count + 1 and the step writes t back, unless a gradient scaler
 * skips it (then no count changes either); an entry with no elements takes no step, so its count
 * stays (a parameter whose first gradient comes late starts at t = 1). The pointers must be
 * distinct. The counts never have to visit the host, so with a
 * scaler a CUDA step needs no host round trip, and a captured step replays with the right t
 * (PyTorch's "capturable" Adam). On CUDA the counts are read by the kernels, not checked. */
typedef struct optim_adam_tensors {
    int64_t count;
    void* const* params;
    const void* const* grads;
    void* const* exp_avgs;
    void* const* exp_avg_sqs;
    void* const* max_exp_avg_sqs;
    const int64_t* numels;
    const int64_t* steps;
    const int32_t* group_index;
    int64_t* const* step_counts;
} optim_adam_tensors;

/* One fused Adam/AdamW step over every tensor of `tensors`, each with the hyperparameters of its
 * param group: groups[group_index[k]] for tensor k (n_groups >= 1 entries, host memory).
 * device, device_index and dtype as for optim_sgd_step (FLOAT16 and BFLOAT16 parameters and
 * gradients with float32 moments included).
 * Validation (of every group and every tensor, before anything is written): counts, group indices,
 * NULL pointers, finite and non-negative lr, eps and weight_decay, betas in [0, 1), flags 0 or 1,
 * steps >= 1, max_exp_avg_sqs present where a group has amsgrad, no array written passed twice for
 * one tensor.
 * CPU: one pass over memory (read p, g, m, v[, vmax]; write p, m, v[, vmax]); large calls are split
 * over the worker pool in the fixed chunks of optim_sgd_step. Results never depend on the number of
 * threads.
 * CUDA: many tensors per launch, on the calling thread's stream, returns without waiting.
 */
OPTIM_API optim_status optim_adam_step(int32_t device, int32_t device_index, int32_t dtype,
                                       const optim_adam_tensors* tensors, int32_t n_groups,
                                       const optim_adam_params* groups);

/* optim_adam_step with gradient clipping by global norm (optim_grad_clip above; clip not NULL). */
OPTIM_API optim_status optim_adam_step_clipped(int32_t device, int32_t device_index, int32_t dtype,
                                               const optim_adam_tensors* tensors, int32_t n_groups,
                                               const optim_adam_params* groups,
                                               const optim_grad_clip* clip);

/* optim_adam_step with a gradient scaler (optim_grad_scale above; scale not NULL) and optionally
 * clipping (clip may be NULL). steps[k] is the count after this update if it happens: a skipped
 * step leaves the caller to keep the old counts (on CUDA the caller learns of the skip only by
 * reading found_inf). */
OPTIM_API optim_status optim_adam_step_scaled(int32_t device, int32_t device_index, int32_t dtype,
                                              const optim_adam_tensors* tensors, int32_t n_groups,
                                              const optim_adam_params* groups,
                                              const optim_grad_clip* clip,
                                              const optim_grad_scale* scale);

/* optim_adam_step with the mixed-precision options of `precision` (not NULL; see "Mixed precision")
 * and optional clipping (clip may be NULL: no clipping). */
OPTIM_API optim_status optim_adam_step_mixed(int32_t device, int32_t device_index, int32_t dtype,
                                             const optim_adam_tensors* tensors, int32_t n_groups,
                                             const optim_adam_params* groups,
                                             const optim_grad_clip* clip,
                                             const optim_precision* precision);

/* optim_adam_step_mixed with a gradient scaler (optim_grad_scale above; scale not NULL): a skipped
 * step writes nothing but the flag, master weights included; steps[k] as for
 * optim_adam_step_scaled. */
OPTIM_API optim_status optim_adam_step_mixed_scaled(
    int32_t device, int32_t device_index, int32_t dtype, const optim_adam_tensors* tensors,
    int32_t n_groups, const optim_adam_params* groups, const optim_grad_clip* clip,
    const optim_grad_scale* scale, const optim_precision* precision);

/* ---- Hypergradient descent ------------------------------------------------------------------- */

/* SGD whose learning rate adapts online by hypergradient descent (Baydin et al., ICLR 2018;
 * docs/hypergradient.md). One step, in this order:
 *   g~ = (maximize ? -g : g) + weight_decay * theta
 *   h  = sum of g~ * u_prev over the scope of each rate   (u_prev: the previous update direction)
 *   alpha = clamp(alpha + hypergrad_lr * h, lr_min, lr_max)                             (additive)
 *        or clamp(alpha * (1 + hypergrad_lr * h / (|g~| |u_prev| + eps)), lr_min, lr_max)
 *                                                                                   (normalized)
 *     (not on the first step, nor when h is not finite)
 *   buf = fresh ? g~ : momentum * buf + (1 - dampening) * g~
 *   u = nesterov ? g~ + momentum * buf : (momentum ? buf : g~)
 *   u_prev = u;  theta = theta - alpha * u
 * With heavy-ball momentum u_prev is the momentum buffer itself; without momentum or with Nesterov
 * it is a separate buffer (prev_updates), zero before the first step. If any gradient element is
 * not finite the whole step is skipped: nothing is written except the skip report (unless
 * assume_finite is set, below). */
enum {
    OPTIM_HD_SCOPE_GLOBAL = 0,     /* one rate for all tensors */
    OPTIM_HD_SCOPE_PER_GROUP = 1,  /* one rate per param group */
    OPTIM_HD_SCOPE_PER_TENSOR = 2, /* one rate per tensor */
    /* a rate per element: param_rates, shaped like the parameter */
    OPTIM_HD_SCOPE_PER_PARAMETER = 3
};
enum { OPTIM_HD_RULE_ADDITIVE = 0, OPTIM_HD_RULE_NORMALIZED = 1 };

/* Options of one param group (host memory). */
typedef struct optim_hd_group {
    double momentum;
    double dampening;
    double weight_decay;
    int32_t nesterov;
    int32_t maximize;
} optim_hd_group;

/* Options of the step (host memory). */
typedef struct optim_hd_params {
    double hypergrad_lr; /* beta >= 0 */
    double lr_min;       /* >= 0 */
    double lr_max;       /* >= lr_min; may be +inf */
    double eps;          /* > 0: the normalized rule's guard */
    int32_t scope;       /* OPTIM_HD_SCOPE_* */
    int32_t rule;        /* OPTIM_HD_RULE_* */
    int32_t first_step;  /* nonzero: the optimizer's first step (rates are not updated) */
    /* 0 (the default): a step with a non-finite gradient element is skipped whole and reported.
     * 1: the caller has checked the gradients (a gradient scaler's unscale pass does): no step is
     * skipped, and the per-parameter scope saves its pass over the gradients before the update (4
     * of its 32 bytes per fp32 element). A non-finite gradient element then reaches its parameter
     * as in plain SGD; a non-finite hypergradient still leaves its rate unchanged. */
    int32_t assume_finite;
    /* 0 (the default) or 1. 1: the tensors are this rank's shard of a model split over the ranks
     * of the MPI job (sharded optimizer state). The step's sums are then summed over every rank
     * (optim_mpi_allreduce_scalars) before they are used: the global and per-group scopes'
     * hypergradients and norms, the non-finite count (a non-finite gradient on any rank skips the
     * step on every rank) and, with clipping, the squared norm. The per-tensor and per-parameter
     * scopes' sums stay local. Every rank holding the same rates then gets the same new rates. A
     * collective: every rank makes the call, with or without tensors. CPU only. */
    int32_t across_ranks;
} optim_hd_params;

/* The tensors of one step, in param-group order (host arrays; data on the step's device). */
typedef struct optim_hd_tensors {
    int64_t count;
    void* const* params;
    const void* const* grads;
    void* const* momentum_buffers; /* entry k used when its group's momentum != 0 */
    void* const* prev_updates;     /* entry k used when its group has no momentum, or Nesterov */
    void* const* param_rates;      /* per-parameter scope: rates of tensor k (compute type) */
    const int64_t* numels;
    const int32_t* group_index;  /* group of tensor k, non-decreasing */
    const uint8_t* buffer_fresh; /* may be NULL: momentum buffer k has no history yet */
} optim_hd_tensors;

/* One hypergradient SGD step.
 *   groups/n_groups: the options of each param group.
 *   rates: the scalar rates (global: 1, per group: n_groups, per tensor: count entries), doubles
 *     in host memory for the CPU path and device memory for the CUDA path; read and written.
 *     Unused (may be NULL) for the per-parameter scope.
 *   skipped: host memory for the CPU path (set to 1 when the step was skipped for a non-finite
 *     gradient, else 0); device memory for the CUDA path, where it is a counter incremented on
 *     each skipped step. May be NULL.
 * Reductions are deterministic: fixed chunks, partial sums in double, combined in chunk order;
 * results never depend on the number of threads. CUDA: block partial sums and a finishing kernel
 * (no atomics), launches on the calling thread's stream, no host round trip. */
/* How many scalar rates `rates` of optim_hd_step holds for a scope: 1 (global), n_groups (per
 * group), n_tensors (per tensor), 0 (per parameter, whose rates are tensors); -1 for an unknown
 * scope or a negative count. Never fails otherwise; callers size their rate arrays with it. */
OPTIM_API int64_t optim_hd_rate_count(int32_t scope, int32_t n_groups, int64_t n_tensors);

OPTIM_API optim_status optim_hd_step(int32_t device, int32_t device_index, int32_t dtype,
                                     const optim_hd_tensors* tensors, int32_t n_groups,
                                     const optim_hd_group* groups, const optim_hd_params* params,
                                     double* rates, int64_t* skipped);

/* optim_hd_step with gradient clipping by global norm (optim_grad_clip above; clip not NULL). The
 * norm is summed in the reduction pass, beside h; the hypergradient uses the clipped gradient
 * (coef * grad + weight_decay * param). A skipped step (non-finite gradient) still writes the
 * (non-finite) norm. */
OPTIM_API optim_status optim_hd_step_clipped(int32_t device, int32_t device_index, int32_t dtype,
                                             const optim_hd_tensors* tensors, int32_t n_groups,
                                             const optim_hd_group* groups,
                                             const optim_hd_params* params, double* rates,
                                             int64_t* skipped, const optim_grad_clip* clip);

/* optim_hd_step with a gradient scaler (optim_grad_scale above; scale not NULL) and optionally
 * clipping (clip may be NULL). The gradients are always checked (assume_finite is ignored): a step
 * the scaler skips is reported through found_inf alone, never in `skipped` (set to 0 on the CPU,
 * not incremented on CUDA). The hypergradient uses the unscaled (and clipped) gradient. */
OPTIM_API optim_status optim_hd_step_scaled(int32_t device, int32_t device_index, int32_t dtype,
                                            const optim_hd_tensors* tensors, int32_t n_groups,
                                            const optim_hd_group* groups,
                                            const optim_hd_params* params, double* rates,
                                            int64_t* skipped, const optim_grad_clip* clip,
                                            const optim_grad_scale* scale);

/* optim_hd_step with the mixed-precision options of `precision` (not NULL; see "Mixed precision";
 * dtype FLOAT16 or BFLOAT16 for master_params or stochastic rounding) and optional clipping (clip
 * may be NULL). The reduction reads the master copy when there is one; a skipped step writes
 * nothing but the skip report, master copies included. */
OPTIM_API optim_status optim_hd_step_mixed(int32_t device, int32_t device_index, int32_t dtype,
                                           const optim_hd_tensors* tensors, int32_t n_groups,
                                           const optim_hd_group* groups,
                                           const optim_hd_params* params, double* rates,
                                           int64_t* skipped, const optim_grad_clip* clip,
                                           const optim_precision* precision);

/* ---- Hypergradient Adam ---------------------------------------------------------------------- */

/* Adam whose learning rate adapts online by hypergradient descent (Adam-HD of Baydin et al., ICLR
 * 2018; docs/hypergradient.md). One step, for a tensor at its own step t (t >= 1):
 *   g~ = (maximize ? -g : g) + weight_decay * theta                       (coupled L2, as Adam)
 *   h  = sum of g~ * u_prev over the scope of each rate
 *   alpha: the rule of optim_hd_step (optim_hd_params: additive or normalized, bounds, not on the
 *          first step nor for a non-finite h)
 *   exp_avg, exp_avg_sq[, max_exp_avg_sq] and denom = sqrt(v) / sqrt(1 - beta2^t) + eps as
 *          optim_adam_step (v: max_exp_avg_sq with amsgrad)
 *   u_prev = (exp_avg / (1 - beta1^t)) / denom            (the direction the rate multiplies)
 *   theta  = theta - alpha / (1 - beta1^t) * exp_avg / denom            (optim_adam_step's order)
 * With hypergrad_lr 0 every scope is optim_adam_step with decoupled 0 and lr = alpha. u_prev is a
 * buffer like the parameter (prev_updates), zero before a tensor's first step. If any gradient
 * element is not finite the whole step is skipped (unless params->assume_finite is set): nothing is
 * written except the skip report. */

/* Options of one param group (host memory): Adam's, with optim_adam_params' meaning and checks. */
typedef struct optim_hd_adam_group {
    double beta1;        /* in [0, 1) */
    double beta2;        /* in [0, 1) */
    double eps;          /* finite, >= 0 */
    double weight_decay; /* finite, >= 0: coupled L2 */
    int32_t amsgrad;     /* 0 or 1 */
    int32_t maximize;    /* 0 or 1 */
} optim_hd_adam_group;

/* The tensors of one step, in param-group order (host arrays; data on the step's device). Element i
 * of every array of tensor k belongs together; a tensor with numel 0 may have NULL pointers. */
typedef struct optim_hd_adam_tensors {
    int64_t count;
    void* const* params;
    const void* const* grads;
    void* const* exp_avgs;        /* zeros before a tensor's first step */
    void* const* exp_avg_sqs;     /* zeros before a tensor's first step */
    void* const* max_exp_avg_sqs; /* entry k used when its group has amsgrad; may be NULL if none */
    void* const* prev_updates;    /* u_prev: zeros before a tensor's first step */
    void* const* param_rates;     /* per-parameter scope: rates of tensor k (compute type) */
    const int64_t* numels;
    const int64_t* steps; /* t of this update of each tensor (>= 1), as optim_adam_tensors; NULL
                             when step_counts is given */
    const int32_t* group_index; /* group of tensor k, in [0, n_groups), non-decreasing */
    /* NULL: the step numbers are `steps`. Otherwise (steps NULL) optim_adam_tensors' step_counts:
     * one distinct pointer per tensor to its count of steps taken, in the step's memory; t = count
     * + 1, and the step advances the count of every tensor with elements unless it is skipped (a
     * non-finite gradient), so on CUDA a skipped step leaves the bias corrections where they were
     * without the host knowing. */
    int64_t* const* step_counts;
} optim_hd_adam_tensors;

/* One hypergradient Adam step over every tensor of every group. params, rates (sized by
 * optim_hd_rate_count), skipped and the CUDA behaviour are those of optim_hd_step; the reduction
 * pass (h, the norms of the normalized rule, the finiteness check and, clipped, the squared norm)
 * is optim_hd_step's, then one update pass reads theta, g, exp_avg, exp_avg_sq, u_prev[,
 * max_exp_avg_sq][, rates] and writes theta, exp_avg, exp_avg_sq, u_prev[, max_exp_avg_sq][,
 * rates]. Validation, before anything is written: everything optim_adam_step and optim_hd_step
 * check of their parts, prev_updates present for every tensor. */
OPTIM_API optim_status optim_hd_adam_step(int32_t device, int32_t device_index, int32_t dtype,
                                          const optim_hd_adam_tensors* tensors, int32_t n_groups,
                                          const optim_hd_adam_group* groups,
                                          const optim_hd_params* params, double* rates,
                                          int64_t* skipped);

/* optim_hd_adam_step with gradient clipping by global norm (optim_grad_clip; clip not NULL), as
 * optim_hd_step_clipped: the norm summed in the reduction pass, the hypergradient of the clipped
 * gradient (coef * grad + weight_decay * param). */
OPTIM_API optim_status optim_hd_adam_step_clipped(
    int32_t device, int32_t device_index, int32_t dtype, const optim_hd_adam_tensors* tensors,
    int32_t n_groups, const optim_hd_adam_group* groups, const optim_hd_params* params,
    double* rates, int64_t* skipped, const optim_grad_clip* clip);

/* optim_hd_adam_step with the mixed-precision options of `precision` (not NULL; see "Mixed
 * precision"; dtype FLOAT16 or BFLOAT16 for master_params or stochastic rounding) and optional
 * clipping (clip may be NULL). The reduction reads the master copy when there is one. */
OPTIM_API optim_status optim_hd_adam_step_mixed(int32_t device, int32_t device_index, int32_t dtype,
                                                const optim_hd_adam_tensors* tensors,
                                                int32_t n_groups, const optim_hd_adam_group* groups,
                                                const optim_hd_params* params, double* rates,
                                                int64_t* skipped, const optim_grad_clip* clip,
                                                const optim_precision* precision);

/* ---- GreedyLR -------------------------------------------------------------------------------- */

/* GreedyLR (docs/greedylr.md): raises every group's rate while the monitored metric keeps
 * improving and lowers it while it does not. Its whole state is plain data: the fixed-size
 * optim_greedylr_state plus the arrays of optim_greedylr_buffers; one update function serves the
 * CPU path and a one-thread CUDA kernel, so on a GPU the metric is read from, and the new rates
 * written to, device memory, where the fused optimizer kernels read them (optim_sgd_params.lr_ptr).
 */
enum { OPTIM_GREEDY_MODE_MIN = 0, OPTIM_GREEDY_MODE_MAX = 1 };
enum { OPTIM_GREEDY_THRESHOLD_ABS = 0, OPTIM_GREEDY_THRESHOLD_REL = 1 };

/* Hyperparameters (always host memory). Meanings and defaults: docs/greedylr.md. */
typedef struct optim_greedylr_config {
    double factor;          /* in (0, 1): decrease lr * factor, increase lr / factor */
    double threshold;       /* >= 0: margin an evaluation must beat the best by */
    double eps;             /* >= 0: a new rate is written only if it moves by more than eps */
    int32_t mode;           /* OPTIM_GREEDY_MODE_MIN or _MAX */
    int32_t threshold_mode; /* OPTIM_GREEDY_THRESHOLD_ABS or _REL */
    int32_t patience;       /* >= 0 */
    int32_t cooldown;       /* >= 0: evaluations ignored after a decrease */
    int32_t warmup;         /* >= 0: evaluations ignored after an increase */
    int32_t window_size;    /* >= 1: rolling-mean window when smooth */
    int32_t reset_start;    /* >= 0: decreases at the floor before a full reset (0: never reset) */
    int32_t smooth;         /* 0 or 1 */
    int32_t trend;          /* 0 or 1: warmup/cooldown evaluations keep increasing/decreasing */
    int32_t groups;         /* >= 1: number of rates */
} optim_greedylr_config;

/* The counters (host memory for the CPU path, device memory for the CUDA path). */
typedef struct optim_greedylr_state {
    double best;
    int64_t num_good;
    int64_t num_bad;
    int64_t cooldown_counter;
    int64_t warmup_counter;
    int64_t reset_budget;
    int64_t window_count; /* values in the window */
    int64_t window_next;  /* ring-buffer slot the next value goes to */
    int64_t steps;        /* evaluations seen */
    int64_t resets;       /* full resets done */
} optim_greedylr_state;

/* The arrays (each `groups` doubles; window: `window_size` doubles). Host memory for the CPU path,
 * device memory for the CUDA path. rates are read and written. */
typedef struct optim_greedylr_buffers {
    double* rates;
    const double* initial_rates;
    const double* min_lr;
    const double* max_lr;
    double* window;
} optim_greedylr_buffers;

/* Checks a configuration and fills *state with the initial state (best = +inf in min mode, -inf in
 * max mode, counters 0, reset budget = reset_start). Both in host memory. */
OPTIM_API optim_status optim_greedylr_init(const optim_greedylr_config* config,
                                           optim_greedylr_state* state);

/* One evaluation of `metric`. device OPTIM_DEVICE_CPU: state, buffers and metric in host memory.
 * OPTIM_DEVICE_CUDA: they are in device memory of device_index; a one-thread kernel is launched on
 * the calling thread's stream and the call returns without waiting. metric_dtype:
 * OPTIM_DTYPE_FLOAT32 or _FLOAT64. A NaN or infinite metric counts as "not better" and never enters
 * the smoothing window. Checked on either device, before anything else: the config, the device,
 * metric_dtype, and that state, buffers, metric and the four rate arrays (and the window, when
 * smooth) are not NULL. Then the state and buffers: that the window position is inside the window
 * (0 <= window_count <= window_size, 0 <= window_next < window_size), that no counter is negative
 * (reset_budget excepted) or at its limit, that 0 <= min_lr <= max_lr with min_lr finite, and that
 * the rates and initial rates are finite and >= 0. OPTIM_DEVICE_CPU reports a problem there as
 * OPTIM_STATUS_INVALID_ARGUMENT. OPTIM_DEVICE_CUDA cannot read them from the host: the kernel
 * makes the same check and, on a problem, writes nothing at all, so state->steps does not advance
 * (the call has already returned OK). The lengths of the arrays cannot be checked on either
 * device. */
OPTIM_API optim_status optim_greedylr_step(int32_t device, int32_t device_index,
                                           const optim_greedylr_config* config,
                                           optim_greedylr_state* state,
                                           const optim_greedylr_buffers* buffers,
                                           const void* metric, int32_t metric_dtype);

/* ---- Stochastic line search (Sls) ----------------------------------------------------------- */

/* The fused passes of the stochastic Armijo line search (Vaswani et al., 2019; docs/sls.md). A step
 * saves the parameters theta into `origins` (optim_sls_save), measures |g|^2
 * (optim_sls_grad_norm_sq), then writes trial points theta - eta * g (optim_sls_trial) while the
 * caller evaluates the loss at each, and goes back to theta (optim_sls_restore) if it must abandon
 * the search. The step-size logic lives with the caller; these calls only move memory, each in one
 * pass over every tensor.
 *
 * The tensors, in any order (host arrays of `count` entries; the data is host memory for
 * OPTIM_DEVICE_CPU and device memory of the named device for OPTIM_DEVICE_CUDA). Element i of
 * params[k], origins[k] and grads[k] belong together. A tensor with numel 0 is allowed (its
 * pointers may be NULL). A call reads or writes only the arrays it names below; the others may be
 * NULL (the arrays themselves). */
typedef struct optim_sls_tensors {
    int64_t count;
    void* const* params;      /* the parameters */
    void* const* origins;     /* theta: where the line search started, shaped like params */
    const void* const* grads; /* the gradient at theta, read only */
    const int64_t* numels;
} optim_sls_tensors;

/* origins[k] = params[k] for every tensor (reads params, writes origins).
 * device, device_index and dtype as for optim_sgd_step; the same fixed chunks and threads.
 * Checked before anything is written: the device, dtype, counts, NULL pointers, a params array that
 * is its origin. CUDA: launches on the calling thread's stream and returns without waiting. */
OPTIM_API optim_status optim_sls_save(int32_t device, int32_t device_index, int32_t dtype,
                                      const optim_sls_tensors* tensors);

/* params[k] = origins[k] - step_size * grads[k] for every tensor, in the element type (step_size
 * rounded to it once, as PyTorch rounds a scalar operand): the trial point at step size eta.
 * step_size: finite and >= 0. Checks as optim_sls_save's, plus grads and the step size. */
OPTIM_API optim_status optim_sls_trial(int32_t device, int32_t device_index, int32_t dtype,
                                       const optim_sls_tensors* tensors, double step_size);

/* params[k] = origins[k] for every tensor (reads origins, writes params). Checks as
 * optim_sls_save's. */
OPTIM_API optim_status optim_sls_restore(int32_t device, int32_t device_index, int32_t dtype,
                                         const optim_sls_tensors* tensors);

/* *result = the sum over every tensor of grads[k][i]^2, each square and the sums in double (reads
 * grads only). Deterministic: per-chunk partial sums (the fixed chunks of optim_sgd_step) combined
 * in chunk order, so the result never depends on the number of threads; the CUDA path sums in
 * another fixed order (a block tree per chunk), so it may differ from the CPU's in the last bits.
 * A non-finite element makes the result non-finite. result: host memory, not NULL. CUDA: waits for
 * the calling thread's stream (the caller needs the value on the host to decide on the step). */
OPTIM_API optim_status optim_sls_grad_norm_sq(int32_t device, int32_t device_index, int32_t dtype,
                                              const optim_sls_tensors* tensors, double* result);

/* ---- LibTorch integration -------------------------------------------------------------------- */

/* Bumps the autograd version counter of each tensor, as LibTorch's own in-place operations do, so
 * that a backward pass through a graph that saved one of these tensors before it was updated fails
 * with LibTorch's "modified by an inplace operation" error instead of silently using the new
 * values. tensors: `count` LibTorch tensor handles (the address of an at::Tensor, which is what a
 * TorchSharp Tensor.Handle is); NULL entries are skipped. No kernel is launched and no data is
 * touched: one atomic increment per tensor. The library does not link LibTorch; it finds
 * libtorch_cpu in the process at the first call. Returns OPTIM_STATUS_UNSUPPORTED when LibTorch is
 * not loaded, and OPTIM_STATUS_INVALID_ARGUMENT (naming the tensor) when LibTorch refuses, e.g. for
 * an inference tensor outside inference mode; the tensors before it were bumped. */
OPTIM_API optim_status optim_torch_bump_versions(void* const* tensors, int64_t count);

/* The gradient of each tensor, without making a tensor handle: grads[k] receives the address of the
 * at::Tensor that holds tensors[k]'s gradient inside LibTorch's autograd record (a borrowed handle:
 * valid until that gradient is replaced or the tensor is freed, and never to be disposed), or NULL
 * when it has none; a NULL entry of tensors gives NULL. tensors: `count` LibTorch tensor handles
 * (as for optim_torch_bump_versions). Nothing is written but grads. The library does not link
 * LibTorch; it finds libc10 in the process at the first call. Returns OPTIM_STATUS_UNSUPPORTED when
 * LibTorch is not loaded (grads untouched). */
OPTIM_API optim_status optim_torch_gradients(const void* const* tensors, int64_t count,
                                             const void** grads);

/* ---- Data parallelism over MPI --------------------------------------------------------------- */

/* Collectives for data-parallel training (docs/distributed.md): every rank of an MPI job (launched
 * with mpirun) holds a replica of the model; parameters are broadcast once, gradients are averaged
 * after each backward pass, and small scalar vectors (metrics, flags) are reduced so that every
 * rank takes the same decisions.
 *
 * Build and loading: MPI lives in a plugin, libOptim.Native.Mpi.so, built next to this library
 * when CMake finds MPI (find_package(MPI COMPONENTS C)); only the plugin links libmpi, so this
 * library loads on machines without MPI. optim_mpi_compiled() says whether the plugin was built.
 * The first optim_mpi_* call loads it (from this library's directory); without it, or when it or
 * libmpi cannot be loaded, every call returns OPTIM_STATUS_UNSUPPORTED saying why.
 *
 * Communicator: optim_mpi_init initialises MPI if nobody has (MPI_Init_thread asking for
 * MPI_THREAD_SERIALIZED; an application that initialised MPI itself keeps it) and duplicates
 * MPI_COMM_WORLD, with errors returned instead of aborting: every call below works on that
 * duplicate, so the library's messages never mix with the application's own MPI traffic.
 * optim_mpi_finalize frees it, and calls MPI_Finalize only if optim_mpi_init called
 * MPI_Init_thread.
 *
 * Collectives: every rank must make the same calls in the same order with lists of the same shape
 * (counts, numels, dtype, bucket size, owners); a mismatch is not detected and corrupts, or waits
 * until the timeout ends the job (optim_mpi_set_timeout), as in MPI. OPTIM_STATUS_MPI_ERROR means
 * MPI failed (a peer died, ...): the tensors of that call hold unspecified values and the job
 * should stop. Under mpirun a rank that exits early makes mpirun end the others; a rank that hangs
 * makes the others end the job at the timeout (docs/distributed.md, Faults).
 *
 * Memory: host memory only. OPTIM_DEVICE_CUDA returns OPTIM_STATUS_UNSUPPORTED: a CUDA-aware path
 * is not written yet. The library keeps one packing buffer of up to bucket_bytes between calls
 * (freed by optim_mpi_finalize); it never takes ownership of caller memory.
 *
 * Thread safety: calls may come from any thread; the library serialises them (one collective at a
 * time per process). */
enum {
    OPTIM_REDUCE_SUM = 0,
    OPTIM_REDUCE_MEAN = 1, /* the sum divided by the number of ranks, in the element type */
    OPTIM_REDUCE_MAX = 2,
    OPTIM_REDUCE_MIN = 3
};

/* The tensors of one collective: count dense, contiguous arrays of one dtype (host arrays).
 * A tensor with numel 0 is allowed (its pointer may be NULL). */
typedef struct optim_comm_tensors {
    int64_t count;
    void* const* data;
    const int64_t* numels;
} optim_comm_tensors;

/* 1 if the MPI plugin was built with this library, 0 otherwise. Never fails. */
OPTIM_API int32_t optim_mpi_compiled(void);

/* Joins the job: *rank and *size of MPI_COMM_WORLD (host memory, not NULL). Idempotent. Fails after
 * optim_mpi_finalize (MPI cannot be initialised twice in a process). */
OPTIM_API optim_status optim_mpi_init(int32_t* rank, int32_t* size);

/* Leaves the job (see Communicator above). Collective: every rank calls it. A no-op when not
 * joined.
 */
OPTIM_API optim_status optim_mpi_finalize(void);

/* Ends the whole job now (MPI_Abort on MPI_COMM_WORLD with error_code; mpirun then stops every
 * rank and exits with an error): for a rank that cannot go on, so that the others do not wait in a
 * collective for it. Callable from any thread, also while another thread is inside a collective.
 * Returns (OPTIM_STATUS_MPI_ERROR) only when MPI is not initialised or could not abort. */
OPTIM_API optim_status optim_mpi_abort(int32_t error_code);

/* How long a collective may wait for the other ranks, in seconds (> 0; +infinity waits for ever;
 * default 1800, PyTorch's process-group default). Every collective below is started non-blocking
 * and polled against this deadline; past it, a rank or the network has failed and the collective
 * cannot be cancelled, so the library writes which collective, in which call, waited how long to
 * stderr and ends the job (MPI_Abort; mpirun then stops every rank with an error). Not a limit on
 * the time between collectives: a rank computing for an hour is waited for only once others reach
 * a collective. Callable at any time, before optim_mpi_init too, also while another thread waits
 * (the new value applies to the wait in progress). */
OPTIM_API optim_status optim_mpi_set_timeout(double seconds);

/* The timeout in force, in *seconds (host memory, not NULL). */
OPTIM_API optim_status optim_mpi_get_timeout(double* seconds);

/* Copies every tensor of `tensors` from rank `root` to every other rank, in place. Tensors smaller
 * than bucket_bytes are packed into buckets of at most bucket_bytes (one MPI_Bcast per bucket);
 * larger ones are sent in place. dtype: OPTIM_DTYPE_FLOAT32 or _FLOAT64. bucket_bytes >= 8.
 * Checked before any communication: the device, dtype, NULL pointers, counts, the root. */
OPTIM_API optim_status optim_mpi_broadcast(int32_t device, int32_t dtype,
                                           const optim_comm_tensors* tensors, int32_t root,
                                           int64_t bucket_bytes);

/* Reduces every tensor of `tensors` element-wise across ranks, in place, with `op`
 * (OPTIM_REDUCE_*): on return every rank holds the result. Buckets as optim_mpi_broadcast's
 * (one MPI_Allreduce per bucket). OPTIM_REDUCE_MEAN divides the sum by the number of ranks. A
 * non-finite element on any rank makes that element non-finite on every rank (sum and mean). */
OPTIM_API optim_status optim_mpi_allreduce(int32_t device, int32_t dtype,
                                           const optim_comm_tensors* tensors, int32_t op,
                                           int64_t bucket_bytes);

/* Reduces `count` doubles (host memory) across ranks in place with `op` (OPTIM_REDUCE_*): a
 * metric's mean, a flag's maximum. count in [0, 2^31). The values are gathered and combined in rank
 * order, so every rank gets the same bits (rates derived from them stay identical everywhere). */
OPTIM_API optim_status optim_mpi_allreduce_scalars(double* values, int64_t count, int32_t op);

/* Sharded optimizer state (ZeRO stage 1, docs/distributed.md): whole tensors are owned by ranks,
 * tensor k by rank owners[k] (host memory, count entries, each in [0, size); the same on every
 * rank). Buckets as optim_mpi_allreduce's: within a bucket the tensors are laid out rank by rank,
 * so that one MPI_Reduce_scatter (one MPI_Allgatherv) moves the bucket; a tensor at least as large
 * as a bucket goes in place (MPI_Reduce to its owner, MPI_Bcast from its owner). Checked before any
 * communication as optim_mpi_allreduce's arguments, and the owners (NULL, out of range: naming the
 * tensor).
 *
 * Reduce-scatter: every tensor a rank owns is reduced across ranks with `op` (OPTIM_REDUCE_*) in
 * place; the tensors it does not own are read, never written. Each rank sends about
 * (size - 1) / size of the list's bytes (a ring), against twice that for optim_mpi_allreduce. */
OPTIM_API optim_status optim_mpi_reduce_scatter(int32_t device, int32_t dtype,
                                                const optim_comm_tensors* tensors,
                                                const int32_t* owners, int32_t op,
                                                int64_t bucket_bytes);

/* All-gather: every tensor is overwritten on every rank by its owner's values (the owner's own
 * tensors are read, never written). */
OPTIM_API optim_status optim_mpi_allgather(int32_t device, int32_t dtype,
                                           const optim_comm_tensors* tensors, const int32_t* owners,
                                           int64_t bucket_bytes);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* OPTIM_H */
