// The read pass of gradient clipping on CUDA: one block per chunk (multi_tensor.cuh) sums its
// squared gradients in double in a fixed tree and writes one record; one finishing block sums the
// records in a fixed tree and writes the norm. No atomics, so the norm is the same on every run.
// Compiled in CI; see docs/design.md for what has run on a GPU.
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

template <typename S>
struct SquaredSumFunctor {
    double* records;

    __device__ void operator()(const NormTables::Table& table, const Chunk& ch) const
    {
        const S* __restrict g = static_cast<const S*>(table.ptr[0][ch.t]);
        double s[1] = {0.0};
        for (int64_t i = ch.begin + threadIdx.x; i < ch.end; i += kThreads) {
            const double v = load_value(g[i]);
            s[0] += v * v;
        }
        block_sum(s);
        if (threadIdx.x == 0) records[ch.index] = s[0];
    }
};

__global__ void __launch_bounds__(kFinishThreads)
    norm_finish_kernel(const double* records, int64_t n_records, double* total_norm)
{
    __shared__ double sums[kFinishThreads];
    double s = 0;
    for (int64_t i = threadIdx.x; i < n_records; i += kFinishThreads) s += records[i];
    sums[threadIdx.x] = s;
    __syncthreads();
    for (int width = kFinishThreads / 2; width > 0; width >>= 1) {
        if (static_cast<int>(threadIdx.x) < width) sums[threadIdx.x] += sums[threadIdx.x + width];
        __syncthreads();
    }
    if (threadIdx.x == 0) *total_norm = sqrt(sums[0]);
}

template <typename T>
void grad_norm_typed(int device_index, const void* const* grads, const int64_t* numels,
                     int64_t count, double* total_norm, const char* fn)
{
    NormTables& tables = NormTables::for_this_thread();
    for (int64_t k = 0; k < count; ++k) {
        if (numels[k] == 0) continue; // its pointer may be null
        void* const ptrs[1] = {const_cast<void*>(grads[k])};
        tables.add(ptrs, numels[k], NoMeta{0});
    }
    Scratch& s = scratch_for<kNormScratch>(device_index);
    std::lock_guard<std::mutex> lock(s.mutex);
    reserve(s, sizeof(double) * static_cast<size_t>(tables.chunks() > 0 ? tables.chunks() : 1), fn);
    double* records = static_cast<double*>(s.data);
    tables.launch(SquaredSumFunctor<T>{records}, nullptr, fn, "norm kernel launch");
    norm_finish_kernel<<<1, kFinishThreads, 0, 0>>>(records, tables.chunks(), total_norm);
    check(cudaGetLastError(), fn, "norm finishing kernel launch");
}

} // namespace

void grad_norm(int device_index, int32_t dtype, const void* const* grads, const int64_t* numels,
               int64_t count, double* total_norm, const char* fn)
{
    dispatch_storage(dtype, [&](auto storage) {
        grad_norm_typed<decltype(storage)>(device_index, grads, numels, count, total_norm, fn);
    });
}

} // namespace optim::cuda
