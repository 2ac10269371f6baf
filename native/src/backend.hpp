// Internal interface between the validated C entry points (api.cpp) and the device back ends.
#pragma once

#include <optim.h>

#include <cstdint>

namespace optim {

// A validated tensor list with typed hyperparameters; the back ends may assume every check of
// optim_sgd_step has passed.
struct SgdCall {
    const optim_tensor_list* tensors;
    double lr; // used when lr_ptr is null
    const double* lr_ptr;
    double momentum;
    double dampening;
    double weight_decay;
    bool nesterov;
    bool maximize;
};

namespace cpu {
void sgd_step_f32(const SgdCall& call);
void sgd_step_f64(const SgdCall& call);
} // namespace cpu

namespace cuda {
bool compiled() noexcept;
// Number of devices, 0 when none (never throws).
int device_count() noexcept;
// Throws optim::Error with OPTIM_STATUS_CUDA_UNAVAILABLE when not compiled or no device.
void sgd_step(int device_index, int32_t dtype, const SgdCall& call);
const char* architectures() noexcept;
// One GreedyLR evaluation on the device (one thread, stream 0).
void greedylr_step(int device_index, const optim_greedylr_config& config,
                   optim_greedylr_state* state, const optim_greedylr_buffers& buffers,
                   const void* metric, int32_t metric_dtype);
} // namespace cuda

} // namespace optim
