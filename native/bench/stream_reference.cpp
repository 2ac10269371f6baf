// The exported functions of libOptim.BenchNative (include/optim_bench.h): argument validation,
// the library's own last error, and the bandwidth reference on the thread count of libOptim.Native.
#include "../src/cpu/thread_pool.hpp"
#include "../src/error.hpp"
#include "../src/validation.hpp"
#include "bandwidth.hpp"

#include <optim_bench.h>

#include <cmath>
#include <cstdio>
#include <string>

namespace optim {

namespace {
// A fixed buffer: recording an error never allocates, so it cannot fail (longer messages are cut).
thread_local char t_last_error[4096];

// This library has its own pool (or designation of the OpenMP team); it runs on as many threads as
// libOptim.Native's steps would (optim_set_num_threads there, or the same default).
void follow_library_threads()
{
    const int n = optim_get_num_threads();
    cpu::ThreadPool& pool = cpu::ThreadPool::instance();
    if (pool.num_threads() != n) pool.set_num_threads(n);
}
} // namespace

void set_last_error(const char* first, const char* second, const char* third) noexcept
{
    std::snprintf(t_last_error, sizeof t_last_error, "%s%s%s", first, second, third);
}

} // namespace optim

using namespace optim;

extern "C" {

OPTIM_BENCH_API const char* optim_bench_last_error(void)
{
    return t_last_error;
}

OPTIM_BENCH_API optim_status optim_stream_reference(int32_t dtype,
                                                    const optim_stream_tensors* tensors,
                                                    double scale, double* sum)
{
    static const char* fn = "optim_stream_reference";
    return guard(fn, [&] {
        if (dtype != OPTIM_DTYPE_FLOAT32 && dtype != OPTIM_DTYPE_FLOAT64)
            fail(OPTIM_STATUS_UNSUPPORTED, std::string(fn) + ": unsupported dtype " +
                                               std::to_string(dtype) +
                                               " (only float32 and float64)");
        OPTIM_REQUIRE(tensors != nullptr, fn, "tensors is NULL");
        const optim_stream_tensors& t = *tensors;
        OPTIM_REQUIRE(t.n_read >= 0 && t.n_read <= OPTIM_STREAM_MAX_ARRAYS, fn,
                      "n_read must be in [0, " + std::to_string(OPTIM_STREAM_MAX_ARRAYS) +
                          "], got " + std::to_string(t.n_read));
        OPTIM_REQUIRE(t.n_update >= 0 && t.n_update <= OPTIM_STREAM_MAX_ARRAYS, fn,
                      "n_update must be in [0, " + std::to_string(OPTIM_STREAM_MAX_ARRAYS) +
                          "], got " + std::to_string(t.n_update));
        OPTIM_REQUIRE(t.n_read + t.n_update >= 1, fn, "n_read and n_update are both 0");
        OPTIM_REQUIRE(std::isfinite(scale), fn, "scale must be finite, got " + num(scale));
        OPTIM_REQUIRE(t.n_update > 0 || sum != nullptr, fn,
                      "sum is NULL but n_update is 0 (a pass that only reads returns its sum)");
        OPTIM_REQUIRE(t.count >= 0, fn,
                      "tensors->count is negative (" + std::to_string(t.count) + ")");
        if (t.count > 0) {
            OPTIM_REQUIRE(t.numels != nullptr, fn, "tensors->numels is NULL");
            OPTIM_REQUIRE(t.n_read == 0 || t.read != nullptr, fn,
                          "tensors->read is NULL but n_read is " + std::to_string(t.n_read));
            OPTIM_REQUIRE(t.n_update == 0 || t.update != nullptr, fn,
                          "tensors->update is NULL but n_update is " + std::to_string(t.n_update));
        }
        for (int64_t k = 0; k < t.count; ++k) {
            const int64_t n = t.numels[k];
            OPTIM_REQUIRE(n >= 0, fn, at(k) + ": numel is negative (" + std::to_string(n) + ")");
            if (n == 0) continue;
            for (int32_t j = 0; j < t.n_read; ++j)
                OPTIM_REQUIRE(t.read[k * t.n_read + j] != nullptr, fn,
                              at(k) + ": read array " + std::to_string(j) + " is NULL");
            for (int32_t j = 0; j < t.n_update; ++j)
                OPTIM_REQUIRE(t.update[k * t.n_update + j] != nullptr, fn,
                              at(k) + ": update array " + std::to_string(j) + " is NULL");
            static_assert(OPTIM_STREAM_MAX_ARRAYS == 4, "one name per array");
            static const char* const update_names[] = {"update array 0", "update array 1",
                                                       "update array 2", "update array 3"};
            static const char* const read_names[] = {"read array 0", "read array 1", "read array 2",
                                                     "read array 3"};
            Array arrays[2 * OPTIM_STREAM_MAX_ARRAYS];
            for (int32_t j = 0; j < t.n_update; ++j)
                arrays[j] = {t.update[k * t.n_update + j], update_names[j]};
            for (int32_t j = 0; j < t.n_read; ++j)
                arrays[t.n_update + j] = {t.read[k * t.n_read + j], read_names[j]};
            require_unaliased(fn, k, arrays, t.n_update + t.n_read, t.n_update);
        }
        follow_library_threads();
        if (dtype == OPTIM_DTYPE_FLOAT32)
            bench::stream_reference_f32(t, scale, sum);
        else
            bench::stream_reference_f64(t, scale, sum);
    });
}

} // extern "C"
