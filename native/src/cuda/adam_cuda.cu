// The CUDA path of the fused Adam/AdamW step, shaped like sgd_cuda.cu: many tensors per launch (a
// table of tensor pointers, each tensor's bias-correction coefficients and a block -> (tensor,
// chunk) map, passed as kernel arguments), the per-element math of adam_element() from
// adam_math.hpp, launches on the legacy default stream. Compiled in CI, never run here.
#include "../adam_math.hpp"
#include "cuda_util.cuh"

namespace optim::cuda {

namespace {

constexpr int kMaxTensors = 24;
constexpr int kMaxBlocks = 320;
constexpr int kThreads = 512;
constexpr int64_t kChunk = 64 * 1024; // elements per block

// Kernel-argument table (< 4 KiB): the tensors of one launch, their own step-dependent
// coefficients, and which tensor/chunk each block updates.
template <typename T>
struct LaunchTable {
    void* params[kMaxTensors];
    const void* grads[kMaxTensors];
    void* exp_avgs[kMaxTensors];
    void* exp_avg_sqs[kMaxTensors];
    void* max_exp_avg_sqs[kMaxTensors];
    int64_t numels[kMaxTensors];
    T step_size[kMaxTensors];
    T bc2_sqrt[kMaxTensors];
    unsigned char block_tensor[kMaxBlocks];
    int32_t block_chunk[kMaxBlocks];
};
static_assert(sizeof(LaunchTable<double>) < 4000, "kernel arguments are limited to 4 KiB");

template <typename T, unsigned Flags>
__global__ void __launch_bounds__(kThreads) adam_kernel(LaunchTable<T> table, AdamCoeffs<T> group)
{
    const int t = table.block_tensor[blockIdx.x];
    const int64_t begin = static_cast<int64_t>(table.block_chunk[blockIdx.x]) * kChunk;
    const int64_t n = table.numels[t];
    const int64_t end = begin + kChunk < n ? begin + kChunk : n;
    AdamCoeffs<T> c = group;
    c.step_size = table.step_size[t];
    c.bc2_sqrt = table.bc2_sqrt[t];
    T* __restrict p = static_cast<T*>(table.params[t]);
    const T* __restrict g = static_cast<const T*>(table.grads[t]);
    T* __restrict m = static_cast<T*>(table.exp_avgs[t]);
    T* __restrict v = static_cast<T*>(table.exp_avg_sqs[t]);
    T* __restrict vmax = static_cast<T*>(table.max_exp_avg_sqs[t]);
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
        T pi = p[i];
        T mi = m[i];
        T vi = v[i];
        T wi = (Flags & kAdamAmsgrad) ? vmax[i] : T(0);
        adam_element<T, Flags>(pi, g[i], mi, vi, wi, c);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        if (Flags & kAdamAmsgrad) vmax[i] = wi;
    }
}

// Launches the update of tensors [first, last) (one param group).
template <typename T, unsigned Flags>
void launch_group(const AdamCall& call, int64_t first, int64_t last, const AdamCoeffs<T>& group)
{
    const optim_adam_tensors& t = *call.tensors;
    const optim_adam_params& o = call.groups[call.group_of(first)];
    LaunchTable<T> table;
    int tensors = 0;
    int blocks = 0;
    auto launch = [&] {
        if (blocks == 0) return;
        adam_kernel<T, Flags><<<blocks, kThreads, 0, 0>>>(table, group);
        check(cudaGetLastError(), "optim_adam_step", "kernel launch");
        tensors = 0;
        blocks = 0;
    };
    for (int64_t k = first; k < last; ++k) {
        const int64_t n = t.numels[k];
        if (n == 0) continue;
        const AdamCoeffs<T> c =
            adam_coeffs<T>(o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, t.steps[k]);
        const int64_t chunks = (n + kChunk - 1) / kChunk;
        for (int64_t ch = 0; ch < chunks; ++ch) {
            // The tensor enters the table on its first chunk, and again after a launch emptied it.
            if (ch == 0 || tensors == 0) {
                if (tensors == kMaxTensors) launch();
                table.params[tensors] = t.params[k];
                table.grads[tensors] = t.grads[k];
                table.exp_avgs[tensors] = t.exp_avgs[k];
                table.exp_avg_sqs[tensors] = t.exp_avg_sqs[k];
                table.max_exp_avg_sqs[tensors] =
                    (Flags & kAdamAmsgrad) ? t.max_exp_avg_sqs[k] : nullptr;
                table.numels[tensors] = n;
                table.step_size[tensors] = c.step_size;
                table.bc2_sqrt[tensors] = c.bc2_sqrt;
                ++tensors;
            }
            table.block_tensor[blocks] = static_cast<unsigned char>(tensors - 1);
            table.block_chunk[blocks] = static_cast<int32_t>(ch);
            ++blocks;
            if (blocks == kMaxBlocks) launch();
        }
    }
    launch();
}

// One group's launches per param group, in group order (the tensors are in group order).
template <typename T>
void adam_typed(const AdamCall& call)
{
    const optim_adam_tensors& t = *call.tensors;
    int64_t first = 0;
    while (first < t.count) {
        const int32_t g = call.group_of(first);
        int64_t last = first + 1;
        while (last < t.count && call.group_of(last) == g) ++last;
        const optim_adam_params& o = call.groups[g];
        // The group-wide coefficients; step_size and bc2_sqrt come per tensor from the table.
        const AdamCoeffs<T> group =
            adam_coeffs<T>(o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, 1);
        const unsigned flags =
            adam_flags(o.weight_decay, o.decoupled != 0, o.amsgrad != 0, o.maximize != 0);
        const bool known = dispatch_adam_flags(
            flags, [&](auto F) { launch_group<T, decltype(F)::value>(call, first, last, group); });
        if (!known) fail(OPTIM_STATUS_INTERNAL, "optim_adam_step: unexpected flag combination");
        first = last;
    }
}

} // namespace

void adam_step(int device_index, int32_t dtype, const AdamCall& call)
{
    require_device(device_index, "optim_adam_step");
    DeviceGuard guard(device_index, "optim_adam_step");
    if (dtype == OPTIM_DTYPE_FLOAT32)
        adam_typed<float>(call);
    else
        adam_typed<double>(call);
}

} // namespace optim::cuda
