// Helpers shared by the CUDA sources: error checks that become optim::Error, the current-device
// and stream guard and the device checks every CUDA entry point makes.
#pragma once

#include "../backend.hpp"
#include "../error.hpp"

#include <cuda_runtime.h>

#include <string>

namespace optim::cuda {

inline void check(cudaError_t e, const char* function, const char* what)
{
    if (e != cudaSuccess) {
        cudaGetLastError(); // clear a non-sticky error so later calls are not blamed for it
        fail(OPTIM_STATUS_CUDA_ERROR,
             std::string(function) + ": " + what + ": " + cudaGetErrorString(e));
    }
}

// Fails unless a device with this ordinal exists.
inline void require_device(int device_index, const char* function)
{
    const int n = device_count();
    if (n == 0)
        fail(OPTIM_STATUS_CUDA_UNAVAILABLE,
             std::string(function) + ": CUDA memory was given but no CUDA device is present");
    if (device_index < 0 || device_index >= n)
        fail(OPTIM_STATUS_INVALID_ARGUMENT,
             std::string(function) + ": CUDA device index " + std::to_string(device_index) +
                 " is out of range (" + std::to_string(n) + " devices)");
}

// The stream every launch of the step in progress on this thread goes to: the calling thread's
// stream (optim_cuda_set_stream) for the device a DeviceGuard made current.
inline cudaStream_t& active_stream()
{
    thread_local cudaStream_t stream = nullptr;
    return stream;
}

// Makes `device` current, and the caller's stream for it active, for its lifetime; restores both
// on every exit path.
class DeviceGuard {
  public:
    DeviceGuard(int device, const char* function) : stream_(active_stream())
    {
        check(cudaGetDevice(&previous_), function, "cudaGetDevice");
        if (previous_ != device) check(cudaSetDevice(device), function, "cudaSetDevice");
        changed_ = previous_ != device;
        active_stream() = static_cast<cudaStream_t>(cuda_stream_of(device));
    }
    ~DeviceGuard()
    {
        active_stream() = stream_;
        if (changed_) cudaSetDevice(previous_);
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

  private:
    cudaStream_t stream_;
    int previous_ = 0;
    bool changed_ = false;
};

// Runs body(T{}) with T float or double (the steps without a 16-bit path) on device_index, checked
// and made current for the call.
template <class Body>
void on_device_typed(int device_index, int32_t dtype, const char* function, Body&& body)
{
    require_device(device_index, function);
    DeviceGuard guard(device_index, function);
    if (dtype == OPTIM_DTYPE_FLOAT32)
        body(float{});
    else
        body(double{});
}

// Runs typed(S{}) on device_index, checked and made current (its stream active) for the call, S the
// storage type of dtype (dispatch_storage: float, double, Half or BFloat16).
template <class Typed>
void on_device_storage(int device_index, int32_t dtype, const char* function, Typed&& typed)
{
    require_device(device_index, function);
    DeviceGuard guard(device_index, function);
    dispatch_storage(dtype, typed);
}

// Calls body(g, first, last) for each run [first, last) of the call's tensors in param group g
// (the tensors are in group order), in order: one set of launches per group.
template <class Call, class Body>
void for_each_group_run(const Call& call, Body&& body)
{
    const int64_t count = call.tensors->count;
    int64_t first = 0;
    while (first < count) {
        const int32_t g = call.group_of(first);
        int64_t last = first + 1;
        while (last < count && call.group_of(last) == g) ++last;
        body(g, first, last);
        first = last;
    }
}

// The clipping and loss-scaling inputs of a step's update kernel (null or 0 where the call has
// none).
struct StepScaling {
    const double* norm;
    double max_norm;
    const float* inv_scale;
    const float* found_inf;
};

template <class Call>
StepScaling step_scaling(const Call& call)
{
    return {call.clip ? call.clip->total_norm : nullptr, call.clip ? call.clip->max_norm : 0.0,
            call.scale ? call.scale->inv_scale : nullptr,
            call.scale ? call.scale->found_inf : nullptr};
}

} // namespace optim::cuda
