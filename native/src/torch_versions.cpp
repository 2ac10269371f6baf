// optim_torch_bump_versions: LibTorch's in-place operations bump a tensor's version counter so that
// autograd can refuse a backward pass through values that changed after they were saved. Our steps
// write through raw pointers, so they bump the counters themselves, through LibTorch's exported
// torch::autograd::impl::bump_version, found in the process at run time (never linked).
#include "error.hpp"

#include <optim.h>

#include <atomic>
#include <cstring>
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

#if defined(__linux__)
int find_libtorch_cpu(struct dl_phdr_info* info, size_t, void* data)
{
    const char* name = info->dlpi_name;
    if (name && std::strstr(name, "libtorch_cpu.") != nullptr) {
        static_cast<std::string*>(data)->assign(name);
        return 1;
    }
    return 0;
}
#endif

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
#if defined(__linux__)
    std::string path;
    dl_iterate_phdr(find_libtorch_cpu, &path);
    if (!path.empty()) {
        if (void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD)) {
            fn = reinterpret_cast<BumpVersionFn>(dlsym(handle, kBumpVersionSymbol));
            dlclose(handle); // RTLD_NOLOAD took a reference; the library stays loaded by LibTorch
        }
    }
#endif
    if (fn) cached.store(fn, std::memory_order_release);
    return fn;
}

} // namespace

} // namespace optim

using namespace optim;

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
