// The calling thread's CUDA stream per device (optim_cuda_set_stream): plain per-thread storage,
// compiled in every build, read by the CUDA back end when a step makes its device current.
#include "backend.hpp"

#include <optim.h>

namespace optim {

namespace {
thread_local void* thread_streams[OPTIM_MAX_CUDA_DEVICES] = {};
} // namespace

void* cuda_stream_of(int device_index) noexcept
{
    return device_index >= 0 && device_index < OPTIM_MAX_CUDA_DEVICES ? thread_streams[device_index]
                                                                      : nullptr;
}

void set_cuda_stream(int device_index, void* stream) noexcept
{
    if (device_index >= 0 && device_index < OPTIM_MAX_CUDA_DEVICES)
        thread_streams[device_index] = stream;
}

} // namespace optim
