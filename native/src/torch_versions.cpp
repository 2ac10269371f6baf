// LibTorch's autograd records, reached through LibTorch's own exported functions, found in the
// process at run time (never linked). optim_torch_bump_versions: LibTorch's in-place operations
// bump a tensor's version counter so that autograd can refuse a backward pass through values that
// changed after they were saved; our steps write through raw pointers, so they bump the counters
// themselves (torch::autograd::impl::bump_version). optim_torch_gradients: each parameter's
// gradient as the address of the at::Tensor inside its autograd record (c10::TensorImpl::grad),
// without making a new tensor handle per parameter and step. optim_torch_cuda_stream: LibTorch's
// current CUDA stream (c10::cuda::getCurrentCUDAStream), for callers that order our steps with it.
#include "error.hpp"

#include <optim.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>

#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#endif

namespace optim {

namespace {

// torch::autograd::impl::bump_version(const at::Tensor&): a reference is passed as the address of
// the at::Tensor, which is what a LibTorchSharp tensor handle is.
using BumpVersionFn = void (*)(const void* tensor);
constexpr const char* kBumpVersionSymbol = "_ZN5torch8autograd4impl12bump_versionERKN2at6TensorE";

// const at::Tensor& c10::TensorImpl::grad() const: `this` is the TensorImpl* (the first word of an
// at::Tensor); the reference comes back as the address of the gradient's at::Tensor (in the
// autograd record, or a static undefined tensor). An undefined at::Tensor points to
// UndefinedTensorImpl's singleton. Both live in libc10.
using GradFn = const void* (*)(const void* impl);
constexpr const char* kGradSymbol = "_ZNK3c1010TensorImpl4gradEv";
constexpr const char* kUndefinedSymbol = "_ZN3c1019UndefinedTensorImpl10_singletonE";

// c10::cuda::getCurrentCUDAStream(DeviceIndex) returns a c10::cuda::CUDAStream by value: a
// trivially copyable 16 bytes (device type, device index, stream id), so it comes back in two
// integer registers like TorchStream; CUDAStream::stream() const takes its address as `this`.
// DeviceIndex is int8_t in current LibTorch ('a'), int16_t in older ones ('s').
struct TorchStream {
    int64_t words[2];
};
using CurrentStream8Fn = TorchStream (*)(int8_t device);
using CurrentStream16Fn = TorchStream (*)(int16_t device);
using StreamHandleFn = void* (*)(const TorchStream* stream);
constexpr const char* kCurrentStream8Symbol = "_ZN3c104cuda20getCurrentCUDAStreamEa";
constexpr const char* kCurrentStream16Symbol = "_ZN3c104cuda20getCurrentCUDAStreamEs";
constexpr const char* kStreamHandleSymbol = "_ZNK3c104cuda10CUDAStream6streamEv";

#if defined(__linux__)
struct FoundLibrary {
    const char* prefix; // e.g. "libtorch_cpu."
    std::string path;
};

int find_library(struct dl_phdr_info* info, size_t, void* data)
{
    auto* found = static_cast<FoundLibrary*>(data);
    const char* name = info->dlpi_name;
    if (name && std::strstr(name, found->prefix) != nullptr) {
        found->path.assign(name);
        return 1;
    }
    return 0;
}
#endif

// The address of `symbol` in the loaded library whose path contains `prefix`, or null.
void* loaded_symbol(const char* prefix, const char* symbol)
{
    void* address = nullptr;
#if defined(__linux__)
    FoundLibrary found{prefix, {}};
    dl_iterate_phdr(find_library, &found);
    if (!found.path.empty()) {
        if (void* handle = dlopen(found.path.c_str(), RTLD_LAZY | RTLD_NOLOAD)) {
            address = dlsym(handle, symbol);
            dlclose(handle); // RTLD_NOLOAD took a reference; the library stays loaded by LibTorch
        }
    }
#else
    (void)prefix;
    (void)symbol;
#endif
    return address;
}

// Looked up until found (LibTorch may be loaded after our first call), then cached.
BumpVersionFn bump_version_function()
{
    static std::atomic<BumpVersionFn> cached{nullptr};
    static std::mutex mutex;
    BumpVersionFn fn = cached.load(std::memory_order_acquire);
    if (fn) return fn;
    std::lock_guard<std::mutex> lock(mutex);
    fn = cached.load(std::memory_order_relaxed);
    if (fn) return fn;
    fn = reinterpret_cast<BumpVersionFn>(loaded_symbol("libtorch_cpu.", kBumpVersionSymbol));
    if (fn) cached.store(fn, std::memory_order_release);
    return fn;
}

struct GradAccess {
    GradFn grad = nullptr;
    const void* undefined = nullptr; // UndefinedTensorImpl's singleton
};

// Looked up until both are found, then cached (the same rule as bump_version_function).
GradAccess grad_access()
{
    static std::atomic<GradFn> cached_grad{nullptr};
    static std::atomic<const void*> cached_undefined{nullptr};
    static std::mutex mutex;
    GradAccess a{cached_grad.load(std::memory_order_acquire), nullptr};
    if (a.grad) {
        a.undefined = cached_undefined.load(std::memory_order_relaxed);
        return a;
    }
    std::lock_guard<std::mutex> lock(mutex);
    a.grad = reinterpret_cast<GradFn>(loaded_symbol("libc10.", kGradSymbol));
    a.undefined = loaded_symbol("libc10.", kUndefinedSymbol);
    if (!a.grad || !a.undefined) return GradAccess{};
    cached_undefined.store(a.undefined, std::memory_order_relaxed);
    cached_grad.store(a.grad, std::memory_order_release);
    return a;
}

struct StreamAccess {
    CurrentStream8Fn current8 = nullptr;
    CurrentStream16Fn current16 = nullptr;
    StreamHandleFn handle = nullptr;
    bool found() const { return handle && (current8 || current16); }
};

// Looked up until found, then cached (the same rule as bump_version_function).
StreamAccess stream_access()
{
    static StreamAccess cached;
    static std::atomic<bool> done{false};
    static std::mutex mutex;
    if (done.load(std::memory_order_acquire)) return cached;
    std::lock_guard<std::mutex> lock(mutex);
    if (done.load(std::memory_order_relaxed)) return cached;
    StreamAccess a;
    a.current8 =
        reinterpret_cast<CurrentStream8Fn>(loaded_symbol("libc10_cuda.", kCurrentStream8Symbol));
    if (!a.current8)
        a.current16 = reinterpret_cast<CurrentStream16Fn>(
            loaded_symbol("libc10_cuda.", kCurrentStream16Symbol));
    a.handle = reinterpret_cast<StreamHandleFn>(loaded_symbol("libc10_cuda.", kStreamHandleSymbol));
    if (!a.found()) return StreamAccess{};
    cached = a;
    done.store(true, std::memory_order_release);
    return cached;
}

} // namespace

} // namespace optim

using namespace optim;

extern "C" OPTIM_API optim_status optim_torch_cuda_stream(int32_t device_index, void** stream)
{
    static const char* fn = "optim_torch_cuda_stream";
    return guard(fn, [&] {
        OPTIM_REQUIRE(device_index >= 0 && device_index < OPTIM_MAX_CUDA_DEVICES, fn,
                      "device_index must be in [0, " + std::to_string(OPTIM_MAX_CUDA_DEVICES) +
                          "), got " + std::to_string(device_index));
        OPTIM_REQUIRE(stream != nullptr, fn, "stream is NULL");
        const StreamAccess access = stream_access();
        if (!access.found())
            fail(OPTIM_STATUS_UNSUPPORTED,
                 std::string(fn) +
                     ": LibTorch's CUDA library (libc10_cuda) is not loaded in this process, or "
                     "does not export c10::cuda::getCurrentCUDAStream and CUDAStream::stream");
        try {
            const TorchStream current = access.current8
                                            ? access.current8(static_cast<int8_t>(device_index))
                                            : access.current16(static_cast<int16_t>(device_index));
            *stream = access.handle(&current);
        } catch (const std::exception& e) {
            fail(OPTIM_STATUS_INVALID_ARGUMENT, std::string(fn) + ": LibTorch refused device " +
                                                    std::to_string(device_index) + ": " + e.what());
        }
    });
}

extern "C" OPTIM_API optim_status optim_torch_bump_versions(void* const* tensors, int64_t count)
{
    static const char* fn = "optim_torch_bump_versions";
    return guard(fn, [&] {
        OPTIM_REQUIRE(count >= 0, fn, "count is negative (" + std::to_string(count) + ")");
        if (count == 0) return;
        OPTIM_REQUIRE(tensors != nullptr, fn, "tensors is NULL");
        const BumpVersionFn bump = bump_version_function();
        if (!bump)
            fail(OPTIM_STATUS_UNSUPPORTED,
                 std::string(fn) +
                     ": LibTorch (libtorch_cpu) is not loaded in this process, or does not export "
                     "torch::autograd::impl::bump_version");
        for (int64_t k = 0; k < count; ++k) {
            if (!tensors[k]) continue;
            try {
                bump(tensors[k]);
            } catch (const std::exception& e) {
                fail(OPTIM_STATUS_INVALID_ARGUMENT, std::string(fn) + ": tensor " +
                                                        std::to_string(k) +
                                                        ": LibTorch refused: " + e.what());
            }
        }
    });
}

extern "C" OPTIM_API optim_status optim_torch_gradients(const void* const* tensors, int64_t count,
                                                        const void** grads)
{
    static const char* fn = "optim_torch_gradients";
    return guard(fn, [&] {
        OPTIM_REQUIRE(count >= 0, fn, "count is negative (" + std::to_string(count) + ")");
        if (count == 0) return;
        OPTIM_REQUIRE(tensors != nullptr, fn, "tensors is NULL");
        OPTIM_REQUIRE(grads != nullptr, fn, "grads is NULL");
        const GradAccess access = grad_access();
        if (!access.grad)
            fail(OPTIM_STATUS_UNSUPPORTED,
                 std::string(fn) +
                     ": LibTorch (libc10) is not loaded in this process, or does not export "
                     "c10::TensorImpl::grad");
        for (int64_t k = 0; k < count; ++k) {
            const void* impl = tensors[k] ? *static_cast<const void* const*>(tensors[k]) : nullptr;
            const void* grad = impl ? access.grad(impl) : nullptr;
            const void* grad_impl = grad ? *static_cast<const void* const*>(grad) : nullptr;
            grads[k] = grad_impl && grad_impl != access.undefined ? grad : nullptr;
        }
    });
}
