// The optim_mpi_* entry points of optim.h: argument checks, then the call forwarded to the MPI
// plugin (mpi_plugin.h), loaded from this library's directory at the first call. Built with or
// without MPI: without it (OPTIM_MPI_PLUGIN_BUILT 0) every call reports OPTIM_STATUS_UNSUPPORTED.
#include "../cross_rank.hpp"
#include "../error.hpp"
#include "mpi_plugin.h"

#include <dlfcn.h>

#include <climits>
#include <mutex>
#include <string>

namespace {

constexpr int64_t kMessageCapacity = 1024;

// Loads the plugin once; afterwards returns it, or fails with why it could not be loaded.
const optim_mpi_plugin& plugin(const char* function)
{
#if OPTIM_MPI_PLUGIN_BUILT
    static std::mutex mutex;
    static const optim_mpi_plugin* loaded = nullptr;
    static std::string problem;
    std::lock_guard<std::mutex> lock(mutex);
    if (loaded == nullptr && problem.empty()) {
        Dl_info self{};
        std::string path = "libOptim.Native.Mpi.so";
        if (dladdr(reinterpret_cast<void*>(&optim_mpi_compiled), &self) != 0 &&
            self.dli_fname != nullptr) {
            std::string library = self.dli_fname;
            const size_t slash = library.rfind('/');
            if (slash != std::string::npos) path = library.substr(0, slash + 1) + path;
        }
        // RTLD_GLOBAL: Open MPI's own components, loaded by libmpi, resolve against libmpi.
        void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
        if (handle == nullptr) {
            const char* why = dlerror();
            problem = "cannot load the MPI plugin " + path + ": " + (why ? why : "unknown") +
                      " (is Open MPI installed? Debian: apt-get install libopenmpi3)";
        } else if (auto entry = reinterpret_cast<optim_mpi_plugin_entry>(
                       dlsym(handle, OPTIM_MPI_PLUGIN_ENTRY));
                   entry == nullptr) {
            problem = path + " has no " OPTIM_MPI_PLUGIN_ENTRY;
        } else if (entry()->version != OPTIM_MPI_PLUGIN_VERSION) {
            problem = path + " is from another build (plugin version " +
                      std::to_string(entry()->version) + ", expected " +
                      std::to_string(OPTIM_MPI_PLUGIN_VERSION) + ")";
        } else {
            loaded = entry();
        }
    }
    if (loaded == nullptr)
        optim::fail(OPTIM_STATUS_UNSUPPORTED, std::string(function) + ": " + problem);
    return *loaded;
#else
    optim::fail(OPTIM_STATUS_UNSUPPORTED,
                std::string(function) +
                    ": this build has no MPI support (CMake found no MPI when the library was "
                    "built; install libopenmpi-dev and rebuild)");
#endif
}

// Runs a plugin call and turns a failing status into an optim::Error carrying its message.
template <class Call>
void forward(const char* function, Call&& call)
{
    char message[kMessageCapacity] = {0};
    const optim_status status = call(message, kMessageCapacity);
    if (status != OPTIM_STATUS_OK)
        optim::fail(status, message[0] != '\0'
                                ? std::string(message)
                                : std::string(function) + ": " + optim_status_name(status));
}

void check_tensors(const char* function, int32_t device, int32_t dtype,
                   const optim_comm_tensors* tensors, int64_t bucket_bytes)
{
    OPTIM_REQUIRE(device == OPTIM_DEVICE_CPU || device == OPTIM_DEVICE_CUDA, function,
                  "unknown device " + std::to_string(device));
    if (device == OPTIM_DEVICE_CUDA)
        optim::fail(OPTIM_STATUS_UNSUPPORTED,
                    std::string(function) +
                        ": CUDA tensors are not supported (no CUDA-aware MPI path yet); "
                        "pass host memory");
    OPTIM_REQUIRE(dtype == OPTIM_DTYPE_FLOAT32 || dtype == OPTIM_DTYPE_FLOAT64, function,
                  "unknown dtype " + std::to_string(dtype));
    OPTIM_REQUIRE(tensors != nullptr, function, "tensors is NULL");
    OPTIM_REQUIRE(tensors->count >= 0, function,
                  "negative tensor count " + std::to_string(tensors->count));
    OPTIM_REQUIRE(bucket_bytes >= 8, function,
                  "bucket_bytes " + std::to_string(bucket_bytes) + " is below 8");
    if (tensors->count == 0) return;
    OPTIM_REQUIRE(tensors->data != nullptr && tensors->numels != nullptr, function,
                  "tensors->data or tensors->numels is NULL");
    for (int64_t k = 0; k < tensors->count; ++k) {
        OPTIM_REQUIRE(tensors->numels[k] >= 0, function,
                      "tensor " + std::to_string(k) + " has a negative numel");
        OPTIM_REQUIRE(tensors->numels[k] == 0 || tensors->data[k] != nullptr, function,
                      "tensor " + std::to_string(k) + " has NULL data");
    }
}

void check_op(const char* function, int32_t op)
{
    OPTIM_REQUIRE(op >= OPTIM_REDUCE_SUM && op <= OPTIM_REDUCE_MIN, function,
                  "unknown reduction " + std::to_string(op));
}

// The owners of a sharded list: one per tensor, not negative (the plugin checks them against the
// job's size, which it alone knows).
void check_owners(const char* function, const optim_comm_tensors* tensors, const int32_t* owners)
{
    if (tensors->count == 0) return;
    OPTIM_REQUIRE(owners != nullptr, function, "owners is NULL");
    for (int64_t k = 0; k < tensors->count; ++k)
        OPTIM_REQUIRE(owners[k] >= 0, function,
                      "tensor " + std::to_string(k) + " has a negative owner " +
                          std::to_string(owners[k]));
}

} // namespace

OPTIM_API int32_t optim_mpi_compiled(void)
{
    return OPTIM_MPI_PLUGIN_BUILT ? 1 : 0;
}

OPTIM_API optim_status optim_mpi_init(int32_t* rank, int32_t* size)
{
    constexpr const char* function = "optim_mpi_init";
    return optim::guard(function, [&] {
        OPTIM_REQUIRE(rank != nullptr && size != nullptr, function, "rank or size is NULL");
        const auto& mpi = plugin(function);
        forward(function, [&](char* m, int64_t c) { return mpi.init(rank, size, m, c); });
    });
}

OPTIM_API optim_status optim_mpi_finalize(void)
{
    constexpr const char* function = "optim_mpi_finalize";
    return optim::guard(function, [&] {
        const auto& mpi = plugin(function);
        forward(function, [&](char* m, int64_t c) { return mpi.finalize(m, c); });
    });
}

OPTIM_API optim_status optim_mpi_broadcast(int32_t device, int32_t dtype,
                                           const optim_comm_tensors* tensors, int32_t root,
                                           int64_t bucket_bytes)
{
    constexpr const char* function = "optim_mpi_broadcast";
    return optim::guard(function, [&] {
        check_tensors(function, device, dtype, tensors, bucket_bytes);
        OPTIM_REQUIRE(root >= 0, function, "negative root " + std::to_string(root));
        const auto& mpi = plugin(function);
        forward(function, [&](char* m, int64_t c) {
            return mpi.broadcast(dtype, tensors, root, bucket_bytes, m, c);
        });
    });
}

OPTIM_API optim_status optim_mpi_allreduce(int32_t device, int32_t dtype,
                                           const optim_comm_tensors* tensors, int32_t op,
                                           int64_t bucket_bytes)
{
    constexpr const char* function = "optim_mpi_allreduce";
    return optim::guard(function, [&] {
        check_tensors(function, device, dtype, tensors, bucket_bytes);
        check_op(function, op);
        const auto& mpi = plugin(function);
        forward(function, [&](char* m, int64_t c) {
            return mpi.allreduce(dtype, tensors, op, bucket_bytes, m, c);
        });
    });
}

void optim::sum_across_ranks(const char* fn, double* values, int64_t count)
{
    const auto& mpi = plugin(fn);
    char message[kMessageCapacity] = {0};
    const optim_status status =
        mpi.allreduce_scalars(values, count, OPTIM_REDUCE_SUM, message, kMessageCapacity);
    if (status != OPTIM_STATUS_OK)
        optim::fail(status, std::string(fn) + ": the sum across ranks failed: " + message);
}

OPTIM_API optim_status optim_mpi_allreduce_scalars(double* values, int64_t count, int32_t op)
{
    constexpr const char* function = "optim_mpi_allreduce_scalars";
    return optim::guard(function, [&] {
        OPTIM_REQUIRE(count >= 0 && count <= INT_MAX, function,
                      "count " + std::to_string(count) + " is outside [0, 2^31)");
        OPTIM_REQUIRE(count == 0 || values != nullptr, function, "values is NULL");
        check_op(function, op);
        const auto& mpi = plugin(function);
        forward(function,
                [&](char* m, int64_t c) { return mpi.allreduce_scalars(values, count, op, m, c); });
    });
}

OPTIM_API optim_status optim_mpi_reduce_scatter(int32_t device, int32_t dtype,
                                                const optim_comm_tensors* tensors,
                                                const int32_t* owners, int32_t op,
                                                int64_t bucket_bytes)
{
    constexpr const char* function = "optim_mpi_reduce_scatter";
    return optim::guard(function, [&] {
        check_tensors(function, device, dtype, tensors, bucket_bytes);
        check_owners(function, tensors, owners);
        check_op(function, op);
        const auto& mpi = plugin(function);
        forward(function, [&](char* m, int64_t c) {
            return mpi.reduce_scatter(dtype, tensors, owners, op, bucket_bytes, m, c);
        });
    });
}

OPTIM_API optim_status optim_mpi_allgather(int32_t device, int32_t dtype,
                                           const optim_comm_tensors* tensors, const int32_t* owners,
                                           int64_t bucket_bytes)
{
    constexpr const char* function = "optim_mpi_allgather";
    return optim::guard(function, [&] {
        check_tensors(function, device, dtype, tensors, bucket_bytes);
        check_owners(function, tensors, owners);
        const auto& mpi = plugin(function);
        forward(function, [&](char* m, int64_t c) {
            return mpi.allgather(dtype, tensors, owners, bucket_bytes, m, c);
        });
    });
}

OPTIM_API optim_status optim_mpi_set_timeout(double seconds)
{
    constexpr const char* function = "optim_mpi_set_timeout";
    return optim::guard(function, [&] {
        OPTIM_REQUIRE(seconds > 0, function,
                      "timeout " + std::to_string(seconds) +
                          " s is not positive (+infinity waits for ever)");
        const auto& mpi = plugin(function);
        forward(function, [&](char* m, int64_t c) { return mpi.set_timeout(seconds, m, c); });
    });
}

OPTIM_API optim_status optim_mpi_get_timeout(double* seconds)
{
    constexpr const char* function = "optim_mpi_get_timeout";
    return optim::guard(function, [&] {
        OPTIM_REQUIRE(seconds != nullptr, function, "seconds is NULL");
        const auto& mpi = plugin(function);
        forward(function, [&](char* m, int64_t c) { return mpi.get_timeout(seconds, m, c); });
    });
}

OPTIM_API optim_status optim_mpi_abort(int32_t error_code)
{
    constexpr const char* function = "optim_mpi_abort";
    return optim::guard(function, [&] {
        const auto& mpi = plugin(function);
        forward(function, [&](char* m, int64_t c) { return mpi.abort_job(error_code, m, c); });
    });
}
