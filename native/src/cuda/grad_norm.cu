// The read pass of gradient clipping and of a fused gradient scaler on CUDA: one block per chunk
// (multi_tensor.cuh) sums its squared (unscaled) gradients in double in a fixed tree, and with a
// scaler counts its non-finite elements, and writes one record; one finishing block sums the
// records in a fixed tree, writes the norm and sets the scaler's flag. No atomics, so the norm is
// the same on every run. Gradients of any storage type are read as their
// compute type (precision.hpp). Compiled in CI; see docs/design.md for what has run on a GPU.
#include "../precision.hpp"
#include "block_sum.cuh"
#include "device_scratch.cuh"
#include "grad_norm.cuh"
#include "multi_tensor.cuh"

namespace optim::cuda {

namespace {

constexpr int kFinishThreads = 256;

struct NoMeta {
    unsigned char unused;
};
using NormTables = TensorTables<1, NoMeta>; // gradient

// One record per chunk: the squared sum and (with a scaler) the count of non-finite elements.
struct NormRecord {
    double squared;
    double nonfinite;
};

// inv_scale: a scaler's inverse scale in device memory, or null (no scaler: no finiteness count).
template <typename S>
struct SquaredSumFunctor {
    NormRecord* records;
    const float* inv_scale;

    __device__ void operator()(const NormTables::Table& table, const Chunk& ch) const
    {
        using T = compute_t<S>;
        const S* __restrict g = static_cast<const S*>(table.ptr[0][ch.t]);
        const T inv = scale_factor<T>(inv_scale);
        double s[2] = {0.0, 0.0};
        for_each_element(
            ch.begin, ch.end, [&](int64_t i) { return load_value(g[i]); },
            [&](int64_t, T gi) {
                if (inv_scale != nullptr) s[1] += is_finite(gi) ? 0.0 : 1.0;
                const double v = static_cast<T>(gi * inv);
                s[0] += v * v;
            });
        block_sum(s);
        if (threadIdx.x == 0) records[ch.index] = NormRecord{s[0], s[1]};
    }
};

// total_norm may be null (a scaler without clipping); found_inf null without a scaler.
__global__ void __launch_bounds__(kFinishThreads)
    norm_finish_kernel(const NormRecord* records, int64_t n_records, double* total_norm,
                       float* found_inf)
{
    __shared__ double sums[kFinishThreads];
    __shared__ double bad[kFinishThreads];
    double s = 0, b = 0;
    for (int64_t i = threadIdx.x; i < n_records; i += kFinishThreads) {
        s += records[i].squared;
        b += records[i].nonfinite;
    }
    sums[threadIdx.x] = s;
    bad[threadIdx.x] = b;
    __syncthreads();
    for (int width = kFinishThreads / 2; width > 0; width >>= 1) {
        if (static_cast<int>(threadIdx.x) < width) {
            sums[threadIdx.x] += sums[threadIdx.x + width];
            bad[threadIdx.x] += bad[threadIdx.x + width];
        }
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    if (total_norm != nullptr) *total_norm = sqrt(sums[0]);
    if (found_inf != nullptr && bad[0] > 0) *found_inf = 1.0f;
}

template <typename S>
void grad_norm_typed(int device_index, const void* const* grads, const int64_t* numels,
                     int64_t count, double* total_norm, const char* fn,
                     const optim_grad_scale* scale)
{
    NormTables& tables = NormTables::for_this_thread();
    for (int64_t k = 0; k < count; ++k) {
        if (numels[k] == 0) continue; // its pointer may be null
        void* const ptrs[1] = {const_cast<void*>(grads[k])};
        tables.add(ptrs, numels[k], NoMeta{0});
    }
    Scratch& s = scratch_for<kNormScratch>(device_index);
    std::lock_guard<std::mutex> lock(s.mutex);
    reserve(s, sizeof(NormRecord) * static_cast<size_t>(tables.chunks() > 0 ? tables.chunks() : 1),
            fn);
    NormRecord* records = static_cast<NormRecord*>(s.data);
    const float* inv_scale = scale != nullptr ? scale->inv_scale : nullptr;
    tables.launch(SquaredSumFunctor<S>{records, inv_scale}, nullptr, fn, "norm kernel launch");
    norm_finish_kernel<<<1, kFinishThreads, 0, active_stream()>>>(
        records, tables.chunks(), total_norm, scale != nullptr ? scale->found_inf : nullptr);
    check(cudaGetLastError(), fn, "norm finishing kernel launch");
}

} // namespace

void grad_norm(int device_index, int32_t dtype, const void* const* grads, const int64_t* numels,
               int64_t count, double* total_norm, const char* fn, const optim_grad_scale* scale)
{
    dispatch_storage(dtype, [&](auto storage) {
        grad_norm_typed<decltype(storage)>(device_index, grads, numels, count, total_norm, fn,
                                           scale);
    });
}

} // namespace optim::cuda
