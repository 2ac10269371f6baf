// advance_step_counts (step_counts.cuh): one block per launch of up to kCountsPerLaunch counts,
// whose pointers travel as a kernel argument, so no host array is copied to the device.
#include "step_counts.cuh"

#include "cuda_util.cuh"
#include "grad_norm.cuh" // scaled_skip

namespace optim::cuda {

namespace {

constexpr int kCountsPerLaunch = 448;
struct StepCounts {
    int64_t* count[kCountsPerLaunch];
    int n;
};

__global__ void advance_kernel(StepCounts counts, const float* found_inf, const int* skip)
{
    if (scaled_skip(found_inf) || (skip != nullptr && *skip != 0)) return;
    for (int i = threadIdx.x; i < counts.n; i += blockDim.x) ++*counts.count[i];
}

} // namespace

void advance_step_counts(int64_t* const* counts, const int64_t* numels, int64_t n,
                         const float* found_inf, const int* skip, const char* fn)
{
    StepCounts batch{};
    const auto launch = [&] {
        advance_kernel<<<1, 128, 0, active_stream()>>>(batch, found_inf, skip);
        check(cudaGetLastError(), fn, "step count launch");
        batch.n = 0;
    };
    for (int64_t k = 0; k < n; ++k) {
        if (numels[k] == 0) continue;
        batch.count[batch.n++] = counts[k];
        if (batch.n == kCountsPerLaunch) launch();
    }
    if (batch.n > 0) launch();
}

} // namespace optim::cuda
