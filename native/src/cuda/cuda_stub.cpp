// Built instead of sgd_cuda.cu when no CUDA compiler was found: every entry point still exists and
// a CUDA request fails with a clear status.
#include "../backend.hpp"
#include "../error.hpp"

#include <string>

namespace optim::cuda {

bool compiled() noexcept
{
    return false;
}
int device_count() noexcept
{
    return 0;
}

// The message of a step given CUDA tensors, naming its entry point.
[[noreturn]] void no_cuda(const char* fn)
{
    fail(OPTIM_STATUS_CUDA_UNAVAILABLE,
         std::string(fn) + ": CUDA tensors were given but this build of the optim library has no "
                           "CUDA support (no CUDA compiler was found when it was built)");
}

void sgd_step(int, int32_t, const SgdCall& call)
{
    no_cuda(call.fn);
}

void adam_step(int, int32_t, const AdamCall& call)
{
    no_cuda(call.fn);
}

void hd_step(int, int32_t, const HdCall& call)
{
    no_cuda(call.fn);
}

void hd_adam_step(int, int32_t, const HdAdamCall& call)
{
    no_cuda(call.fn);
}

void sls_pass(int, int32_t, const SlsCall& call)
{
    fail(
        OPTIM_STATUS_CUDA_UNAVAILABLE,
        std::string(call.fn) +
            ": CUDA tensors were given but this build of the optim library has no CUDA support (no "
            "CUDA compiler was found when it was built)");
}

double sls_grad_norm_sq(int, int32_t, const optim_sls_tensors&)
{
    fail(OPTIM_STATUS_CUDA_UNAVAILABLE,
         "optim_sls_grad_norm_sq: CUDA tensors were given but this build of the optim library has "
         "no CUDA support (no CUDA compiler was found when it was built)");
}

void greedylr_step(int, const optim_greedylr_config&, optim_greedylr_state*,
                   const optim_greedylr_buffers&, const void*, int32_t)
{
    fail(
        OPTIM_STATUS_CUDA_UNAVAILABLE,
        "optim_greedylr_step: a CUDA step was requested but this build of the optim library has no "
        "CUDA support (no CUDA compiler was found when it was built)");
}

} // namespace optim::cuda
