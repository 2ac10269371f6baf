// Sums over a block in a fixed tree (lanes inside each warp, then the warps' results): the same
// order on every run, so the reductions built on it are deterministic without atomics.
#pragma once

#include "multi_tensor.cuh" // kThreads

namespace optim::cuda {

constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ double warp_sum(double v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

// Sums N values of every thread of a kThreads block; the results are valid in thread 0.
template <int N>
__device__ __forceinline__ void block_sum(double (&v)[N])
{
    __shared__ double partial[N][kWarps];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    for (int j = 0; j < N; ++j) v[j] = warp_sum(v[j]);
    if (lane == 0)
        for (int j = 0; j < N; ++j) partial[j][warp] = v[j];
    __syncthreads();
    if (warp == 0)
        for (int j = 0; j < N; ++j) v[j] = warp_sum(lane < kWarps ? partial[j][lane] : 0.0);
}

} // namespace optim::cuda
