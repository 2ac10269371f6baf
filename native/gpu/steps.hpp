// The one place optim_gpu_check calls each optimizer step of the C ABI, so that a change of a
// step's signature is one edit here.
#pragma once

#include <optim.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace optim_gpu {

// The variant the arguments ask for: _scaled when scale is given, else _clipped when clip is, else
// the plain step. args: what every variant takes before its own arguments; scaled is nullptr for a
// step without a _scaled variant.
template <class Plain, class Clipped, class Scaled, class... Args>
optim_status step_variant(Plain plain, Clipped clipped, Scaled scaled, const optim_grad_clip* clip,
                          const optim_grad_scale* scale, Args... args)
{
    if constexpr (!std::is_same_v<Scaled, std::nullptr_t>)
        if (scale) return scaled(args..., clip, scale);
    return clip ? clipped(args..., clip) : plain(args...);
}

template <class Group>
int32_t group_count(const std::vector<Group>& groups)
{
    return static_cast<int32_t>(groups.size());
}

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
    return step_variant(optim_sgd_step, optim_sgd_step_clipped, optim_sgd_step_scaled, clip, scale,
                        device, 0, dtype, &tensors, group_count(groups), groups.data());
}

// Several param groups in one call (tensors.group_index set, or NULL for one group); clipped when
// clip is not null, with a gradient scaler when scale is not null.
inline optim_status adam_step(int32_t device, int32_t dtype, const optim_adam_tensors& tensors,
                              const std::vector<optim_adam_params>& groups,
                              const optim_grad_clip* clip = nullptr,
                              const optim_grad_scale* scale = nullptr)
{
    return step_variant(optim_adam_step, optim_adam_step_clipped, optim_adam_step_scaled, clip,
                        scale, device, 0, dtype, &tensors, group_count(groups), groups.data());
}

// 16-bit parameters with `precision`: _mixed_scaled when scale is given, else _mixed.
inline optim_status sgd_step_mixed(int32_t device, int32_t dtype, const optim_tensor_list& tensors,
                                   const std::vector<optim_sgd_params>& groups,
                                   const optim_precision& precision, const optim_grad_clip* clip,
                                   const optim_grad_scale* scale)
{
    if (scale)
        return optim_sgd_step_mixed_scaled(device, 0, dtype, &tensors, group_count(groups),
                                           groups.data(), clip, scale, &precision);
    return optim_sgd_step_mixed(device, 0, dtype, &tensors, group_count(groups), groups.data(),
                                clip, &precision);
}

inline optim_status adam_step_mixed(int32_t device, int32_t dtype,
                                    const optim_adam_tensors& tensors,
                                    const std::vector<optim_adam_params>& groups,
                                    const optim_precision& precision, const optim_grad_clip* clip,
                                    const optim_grad_scale* scale)
{
    if (scale)
        return optim_adam_step_mixed_scaled(device, 0, dtype, &tensors, group_count(groups),
                                            groups.data(), clip, scale, &precision);
    return optim_adam_step_mixed(device, 0, dtype, &tensors, group_count(groups), groups.data(),
                                 clip, &precision);
}

inline optim_status hd_step(int32_t device, int32_t dtype, const optim_hd_tensors& tensors,
                            const std::vector<optim_hd_group>& groups,
                            const optim_hd_params& params, double* rates, int64_t* skipped,
                            const optim_grad_clip* clip = nullptr,
                            const optim_grad_scale* scale = nullptr)
{
    return step_variant(optim_hd_step, optim_hd_step_clipped, optim_hd_step_scaled, clip, scale,
                        device, 0, dtype, &tensors, group_count(groups), groups.data(), &params,
                        rates, skipped);
}

inline optim_status hd_adam_step(int32_t device, int32_t dtype,
                                 const optim_hd_adam_tensors& tensors,
                                 const std::vector<optim_hd_adam_group>& groups,
                                 const optim_hd_params& params, double* rates, int64_t* skipped,
                                 const optim_grad_clip* clip = nullptr)
{
    return step_variant(optim_hd_adam_step, optim_hd_adam_step_clipped, nullptr, clip, nullptr,
                        device, 0, dtype, &tensors, group_count(groups), groups.data(), &params,
                        rates, skipped);
}

// 16-bit parameters with `precision` (HD has no scaled mixed entry point).
inline optim_status hd_step_mixed(int32_t device, int32_t dtype, const optim_hd_tensors& tensors,
                                  const std::vector<optim_hd_group>& groups,
                                  const optim_hd_params& params, double* rates, int64_t* skipped,
                                  const optim_grad_clip* clip, const optim_precision& precision)
{
    return optim_hd_step_mixed(device, 0, dtype, &tensors, group_count(groups), groups.data(),
                               &params, rates, skipped, clip, &precision);
}

inline optim_status hd_adam_step_mixed(int32_t device, int32_t dtype,
                                       const optim_hd_adam_tensors& tensors,
                                       const std::vector<optim_hd_adam_group>& groups,
                                       const optim_hd_params& params, double* rates,
                                       int64_t* skipped, const optim_grad_clip* clip,
                                       const optim_precision& precision)
{
    return optim_hd_adam_step_mixed(device, 0, dtype, &tensors, group_count(groups), groups.data(),
                                    &params, rates, skipped, clip, &precision);
}

} // namespace optim_gpu
