// Scratch device memory of the reductions (hypergradient sums, gradient norms, the line search's
// norm), one per device, stream and user: grown when a step needs more, never shrunk or freed per
// step. A step's launches on its stream are ordered by that stream, so each stream has its own
// scratch (steps on different streams never share it); its mutex is held for the whole step, from
// sizing to the last launch, for two threads stepping on one stream.
#pragma once

#include "cuda_util.cuh"

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace optim::cuda {

struct Scratch {
    std::mutex mutex;
    void* data = nullptr;
    size_t bytes = 0;
};

enum ScratchTag { kHdScratch = 0, kNormScratch = 1, kSlsScratch = 2 };

// The scratch of one user (Tag) on one device for the active stream (the first step on a stream
// creates it).
template <int Tag>
Scratch& scratch_for(int device)
{
    struct OfDevice {
        std::mutex mutex;
        std::vector<std::pair<cudaStream_t, std::unique_ptr<Scratch>>> by_stream;
    };
    static const int devices = device_count();
    static const std::unique_ptr<OfDevice[]> all(new OfDevice[devices > 0 ? devices : 1]);
    OfDevice& d = all[device];
    const cudaStream_t stream = active_stream();
    std::lock_guard<std::mutex> lock(d.mutex);
    for (auto& [s, scratch] : d.by_stream)
        if (s == stream) return *scratch;
    d.by_stream.emplace_back(stream, std::make_unique<Scratch>());
    return *d.by_stream.back().second;
}

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
