// The one place optim_gpu_check calls each optimizer step of the C ABI, so that a change of a
// step's signature is one edit here.
#pragma once

#include <optim.h>

#include <cstdint>
#include <vector>

namespace optim_gpu {

inline optim_status sgd_step(int32_t device, int32_t dtype, const optim_tensor_list& tensors,
                             const optim_sgd_params& params)
{
    return optim_sgd_step(device, 0, dtype, &tensors, 1, &params);
}

// Several param groups in one call (tensors.group_index set); clipped when clip is not null,
// with a gradient scaler when scale is not null.
inline optim_status sgd_step(int32_t device, int32_t dtype, const optim_tensor_list& tensors,
                             const std::vector<optim_sgd_params>& groups,
                             const optim_grad_clip* clip = nullptr,
                             const optim_grad_scale* scale = nullptr)
{
    const int32_t n = static_cast<int32_t>(groups.size());
    if (scale)
        return optim_sgd_step_scaled(device, 0, dtype, &tensors, n, groups.data(), clip, scale);
    return clip ? optim_sgd_step_clipped(device, 0, dtype, &tensors, n, groups.data(), clip)
                : optim_sgd_step(device, 0, dtype, &tensors, n, groups.data());
}

// Several param groups in one call (tensors.group_index set, or NULL for one group); clipped when
// clip is not null, with a gradient scaler when scale is not null.
inline optim_status adam_step(int32_t device, int32_t dtype, const optim_adam_tensors& tensors,
                              const std::vector<optim_adam_params>& groups,
                              const optim_grad_clip* clip = nullptr,
                              const optim_grad_scale* scale = nullptr)
{
    const int32_t n = static_cast<int32_t>(groups.size());
    if (scale)
        return optim_adam_step_scaled(device, 0, dtype, &tensors, n, groups.data(), clip, scale);
    return clip ? optim_adam_step_clipped(device, 0, dtype, &tensors, n, groups.data(), clip)
                : optim_adam_step(device, 0, dtype, &tensors, n, groups.data());
}

inline optim_status hd_step(int32_t device, int32_t dtype, const optim_hd_tensors& tensors,
                            const std::vector<optim_hd_group>& groups,
                            const optim_hd_params& params, double* rates, int64_t* skipped,
                            const optim_grad_clip* clip = nullptr,
                            const optim_grad_scale* scale = nullptr)
{
    const int32_t n = static_cast<int32_t>(groups.size());
    if (scale)
        return optim_hd_step_scaled(device, 0, dtype, &tensors, n, groups.data(), &params, rates,
                                    skipped, clip, scale);
    return clip ? optim_hd_step_clipped(device, 0, dtype, &tensors, n, groups.data(), &params,
                                        rates, skipped, clip)
                : optim_hd_step(device, 0, dtype, &tensors, n, groups.data(), &params, rates,
                                skipped);
}

inline optim_status hd_adam_step(int32_t device, int32_t dtype,
                                 const optim_hd_adam_tensors& tensors,
                                 const std::vector<optim_hd_adam_group>& groups,
                                 const optim_hd_params& params, double* rates, int64_t* skipped,
                                 const optim_grad_clip* clip = nullptr)
{
    const int32_t n = static_cast<int32_t>(groups.size());
    return clip ? optim_hd_adam_step_clipped(device, 0, dtype, &tensors, n, groups.data(), &params,
                                             rates, skipped, clip)
                : optim_hd_adam_step(device, 0, dtype, &tensors, n, groups.data(), &params, rates,
                                     skipped);
}

} // namespace optim_gpu
