// The CUDA path of the fused SGD step: many tensors per launch (a table of tensor pointers and a
// block -> (tensor, chunk) map passed as kernel arguments, as in NVIDIA apex's multi_tensor_apply),
// the per-element math from sgd_math.hpp, the rate optionally read from device memory, launches on
// the legacy default stream. Compiled in CI; see docs/design.md for what has run on a GPU.
#include "../sgd_math.hpp"
#include "cuda_util.cuh"

namespace optim::cuda {

namespace {

constexpr int kMaxTensors = 36;
constexpr int kMaxBlocks = 320;
constexpr int kThreads = 512;
constexpr int64_t kChunk = 64 * 1024; // elements per block

// Kernel-argument table (< 4 KiB): the tensors of one launch and which tensor/chunk each block
// updates.
struct LaunchTable {
    void* params[kMaxTensors];
    const void* grads[kMaxTensors];
    void* bufs[kMaxTensors];
    int64_t numels[kMaxTensors];
    unsigned char fresh[kMaxTensors];
    unsigned char block_tensor[kMaxBlocks];
    int32_t block_chunk[kMaxBlocks];
};
static_assert(sizeof(LaunchTable) < 4000, "kernel arguments are limited to 4 KiB");

template <typename T, unsigned Flags>
__global__ void __launch_bounds__(kThreads)
    sgd_kernel(LaunchTable table, SgdCoeffs<T> c, T lr_value, const double* lr_ptr)
{
    const int t = table.block_tensor[blockIdx.x];
    const int64_t begin = static_cast<int64_t>(table.block_chunk[blockIdx.x]) * kChunk;
    const int64_t n = table.numels[t];
    const int64_t end = begin + kChunk < n ? begin + kChunk : n;
    const T lr = lr_ptr ? static_cast<T>(*lr_ptr) : lr_value;
    T* __restrict p = static_cast<T*>(table.params[t]);
    const T* __restrict g = static_cast<const T*>(table.grads[t]);
    T* __restrict b = static_cast<T*>(table.bufs[t]);
    const bool fresh = table.fresh[t] != 0;
    T unused = T(0);
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
        T pi = p[i];
        if (Flags & kSgdMomentum) {
            T bi = fresh ? T(0) : b[i];
            sgd_element<T, Flags>(pi, g[i], bi, fresh, c, lr);
            b[i] = bi;
        } else {
            sgd_element<T, Flags>(pi, g[i], unused, false, c, lr);
        }
        p[i] = pi;
    }
}

// Launches the update of tensors [first, last) (one param group) with its hyperparameters.
template <typename T, unsigned Flags>
void launch_group(const optim_tensor_list& t, int64_t first, int64_t last, const SgdCoeffs<T>& c,
                  T lr, const double* lr_ptr)
{
    LaunchTable table;
    int tensors = 0;
    int blocks = 0;
    auto launch = [&] {
        if (blocks == 0) return;
        sgd_kernel<T, Flags><<<blocks, kThreads, 0, 0>>>(table, c, lr, lr_ptr);
        check(cudaGetLastError(), "optim_sgd_step", "kernel launch");
        tensors = 0;
        blocks = 0;
    };
    for (int64_t k = first; k < last; ++k) {
        const int64_t n = t.numels[k];
        if (n == 0) continue;
        const int64_t chunks = (n + kChunk - 1) / kChunk;
        for (int64_t ch = 0; ch < chunks; ++ch) {
            // The tensor enters the table on its first chunk, and again after a launch emptied it.
            if (ch == 0 || tensors == 0) {
                if (tensors == kMaxTensors) launch();
                table.params[tensors] = t.params[k];
                table.grads[tensors] = t.grads[k];
                table.bufs[tensors] = (Flags & kSgdMomentum) ? t.momentum_buffers[k] : nullptr;
                table.numels[tensors] = n;
                table.fresh[tensors] =
                    ((Flags & kSgdMomentum) && t.buffer_fresh && t.buffer_fresh[k]) ? 1 : 0;
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
void sgd_typed(const SgdCall& call)
{
    const optim_tensor_list& t = *call.tensors;
    int64_t first = 0;
    while (first < t.count) {
        const int32_t g = call.group_of(first);
        int64_t last = first + 1;
        while (last < t.count && call.group_of(last) == g) ++last;
        const optim_sgd_params& p = call.groups[g];
        SgdCoeffs<T> c;
        c.momentum = static_cast<T>(p.momentum);
        c.one_minus_dampening = static_cast<T>(1.0 - p.dampening);
        c.weight_decay = static_cast<T>(p.weight_decay);
        const T lr = static_cast<T>(p.lr);
        const unsigned flags =
            sgd_flags(p.momentum, p.weight_decay, p.nesterov != 0, p.maximize != 0);
        const bool known = dispatch_sgd_flags(flags, [&](auto F) {
            constexpr unsigned Flags = decltype(F)::value;
            launch_group<T, Flags>(t, first, last, c, lr, p.lr_ptr);
        });
        if (!known) fail(OPTIM_STATUS_INTERNAL, "optim_sgd_step: unexpected flag combination");
        first = last;
    }
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
    require_device(device_index, "optim_sgd_step");
    DeviceGuard guard(device_index, "optim_sgd_step");
    if (dtype == OPTIM_DTYPE_FLOAT32)
        sgd_typed<float>(call);
    else
        sgd_typed<double>(call);
}

} // namespace optim::cuda
