// The one place optim_gpu_check calls each optimizer step of the C ABI, so that a change of a
// step's signature (optim_sgd_step may come to take several param groups) is one edit here.
#pragma once

#include <optim.h>

#include <cstdint>
#include <vector>

namespace optim_gpu {

inline optim_status sgd_step(int32_t device, int32_t dtype, const optim_tensor_list& tensors,
                             const optim_sgd_params& params)
{
    return optim_sgd_step(device, 0, dtype, &tensors, &params);
}

inline optim_status hd_step(int32_t device, int32_t dtype, const optim_hd_tensors& tensors,
                            const std::vector<optim_hd_group>& groups,
                            const optim_hd_params& params, double* rates, int64_t* skipped)
{
    return optim_hd_step(device, 0, dtype, &tensors, static_cast<int32_t>(groups.size()),
                         groups.data(), &params, rates, skipped);
}

} // namespace optim_gpu
