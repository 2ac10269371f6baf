// Per-device scratch memory of the reductions (hypergradient sums, gradient norms): grown when a
// step needs more, never shrunk or freed per step. Its mutex is held for a whole step, from sizing
// to the last launch: two threads stepping on one device share this memory, and holding it makes
// each step's launches consecutive on the (shared) legacy default stream.
#pragma once

#include "cuda_util.cuh"

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

namespace optim::cuda {

struct Scratch {
    std::mutex mutex;
    void* data = nullptr;
    size_t bytes = 0;
};

// The scratch of one user (Tag) on one device.
template <int Tag>
Scratch& scratch_for(int device)
{
    static const int devices = device_count();
    static const std::unique_ptr<Scratch[]> all(new Scratch[devices > 0 ? devices : 1]);
    return all[device];
}

enum ScratchTag { kHdScratch = 0, kNormScratch = 1 };

// Grows s to at least `need` bytes. Caller holds s.mutex and has made the device current.
inline void reserve(Scratch& s, size_t need, const char* fn)
{
    if (s.bytes >= need) return;
    const size_t bytes = need > 2 * s.bytes ? need : 2 * s.bytes;
    void* data = nullptr;
    const cudaError_t e = cudaMalloc(&data, bytes);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        fail(OPTIM_STATUS_OUT_OF_MEMORY, std::string(fn) + ": out of device memory (" +
                                             std::to_string(bytes) + " bytes of scratch)");
    }
    check(e, fn, "cudaMalloc (scratch)");
    if (s.data != nullptr) {
        // cudaFree waits for the device, so earlier steps' kernels are done with the old buffer.
        if (cudaFree(s.data) != cudaSuccess) cudaGetLastError();
    }
    s.data = data;
    s.bytes = bytes;
}

} // namespace optim::cuda
