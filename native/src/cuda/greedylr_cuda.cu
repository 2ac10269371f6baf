// GreedyLR on the device: one thread runs the same greedy_check() and greedy_step() as the CPU
// path, reading the metric from device memory and writing the rates to device memory, where the
// fused optimizer kernels read them; nothing waits for the host. Compiled in CI; see
// docs/design.md for what has run on a GPU.
#include "../greedylr_math.hpp"
#include "cuda_util.cuh"

namespace optim::cuda {

namespace {

template <typename M>
__global__ void greedylr_kernel(optim_greedylr_config config, optim_greedylr_state* state,
                                optim_greedylr_buffers buffers, const M* metric)
{
    // The host cannot read the state: a corrupt one is left as it is (steps does not advance).
    if (greedy_check(config, *state, buffers).problem != kGreedyOk) return;
    greedy_step(config, *state, buffers, static_cast<double>(*metric));
}

} // namespace

void greedylr_step(int device_index, const optim_greedylr_config& config,
                   optim_greedylr_state* state, const optim_greedylr_buffers& buffers,
                   const void* metric, int32_t metric_dtype)
{
    static const char* fn = "optim_greedylr_step";
    require_device(device_index, fn);
    DeviceGuard guard(device_index, fn);
    if (metric_dtype == OPTIM_DTYPE_FLOAT32)
        greedylr_kernel<float><<<1, 1, 0, active_stream()>>>(config, state, buffers,
                                                             static_cast<const float*>(metric));
    else
        greedylr_kernel<double><<<1, 1, 0, active_stream()>>>(config, state, buffers,
                                                              static_cast<const double*>(metric));
    check(cudaGetLastError(), fn, "kernel launch");
}

} // namespace optim::cuda
