// Helpers shared by the CUDA sources: error checks that become optim::Error, the current-device
// guard and the device checks every CUDA entry point makes.
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

// Makes `device` current for its lifetime and restores the caller's device on every exit path.
class DeviceGuard {
  public:
    DeviceGuard(int device, const char* function)
    {
        check(cudaGetDevice(&previous_), function, "cudaGetDevice");
        if (previous_ != device) check(cudaSetDevice(device), function, "cudaSetDevice");
        changed_ = previous_ != device;
    }
    ~DeviceGuard()
    {
        if (changed_) cudaSetDevice(previous_);
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

  private:
    int previous_ = 0;
    bool changed_ = false;
};

} // namespace optim::cuda
