// advance_step_counts (step_counts.cuh): one block per launch of up to kCountsPerLaunch counts,
// whose pointers travel as a kernel argument, so no host array is copied to the device.
#include "step_counts.cuh"

#include "cuda_util.cuh"

namespace optim::cuda {

namespace {

constexpr int kCountsPerLaunch = 448;
struct StepCounts {
    int64_t* count[kCountsPerLaunch];
    int n;
};

__global__ void advance_kernel(StepCounts counts, const float* found_inf, const int* skip)
{
    if ((found_inf != nullptr && *found_inf != 0.0f) || (skip != nullptr && *skip != 0)) return;
    for (int i = threadIdx.x; i < counts.n; i += blockDim.x) ++*counts.count[i];
}

} // namespace

void advance_step_counts(int64_t* const* counts, int64_t n, const float* found_inf, const int* skip,
                         const char* fn)
{
    for (int64_t first = 0; first < n; first += kCountsPerLaunch) {
        StepCounts batch{};
        batch.n = static_cast<int>(n - first < kCountsPerLaunch ? n - first : kCountsPerLaunch);
        for (int i = 0; i < batch.n; ++i) batch.count[i] = counts[first + i];
        advance_kernel<<<1, 128, 0, active_stream()>>>(batch, found_inf, skip);
        check(cudaGetLastError(), fn, "step count launch");
    }
}

} // namespace optim::cuda
