// The device's memory-bandwidth reference for the timings of optim_gpu_check (reference.cu). It is
// a benchmark tool, not part of the library's C ABI.
#pragma once

#include <cstdint>

namespace optim_gpu {

// One streaming pass over n elements on stream 0, with 16-byte loads and stores: every update
// array gets u[i] += scale * (r_0[i] + r_1[i] + ...); with no update array the reads are only
// summed (into *sink, device memory, if the sum ever equals a sentinel, so that they are not
// dropped). Moves (n_read + 2 * n_update) element sizes per element. Arrays are 16-byte aligned.
// Supported: 1 read and 1 to 3 updates, or 1 or 2 reads alone. dtype: OPTIM_DTYPE_*.
void stream_pass(int32_t dtype, const void* const* reads, int n_read, void* const* updates,
                 int n_update, int64_t n, double scale, double* sink);

// Sets n elements to `value` on stream 0.
void fill(int32_t dtype, void* data, int64_t n, double value);

} // namespace optim_gpu
