/*
 * optim_bench.h — the C ABI of libOptim.BenchNative, the benchmarks' instruments. Not part of the
 * Optim package: the benchmarks (bench/), the native interleaved bench, the tests and the fuzz
 * harness link it next to libOptim.Native, whose conventions (optim.h) hold here too. Its own
 * failures are described by optim_bench_last_error(), not optim_last_error().
 */
#ifndef OPTIM_BENCH_H
#define OPTIM_BENCH_H

#include <optim.h>

#define OPTIM_BENCH_API __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

/* The message of this library's last failing call on the calling thread (as optim_last_error). */
OPTIM_BENCH_API const char* optim_bench_last_error(void);

/* The most arrays of each kind one tensor of optim_stream_tensors may have. */
enum { OPTIM_STREAM_MAX_ARRAYS = 4 };

/* The arrays of one streaming pass (host memory; every array is dense and contiguous). Tensor k has
 * numels[k] elements in each of its n_read arrays, which are only read, and in each of its n_update
 * arrays, which are read and written in place. No two arrays may overlap.
 *
 * read:   count * n_read pointers; read[k * n_read + j] is the j-th read array of tensor k. May be
 *         NULL when n_read == 0.
 * update: count * n_update pointers, laid out the same way. May be NULL when n_update == 0.
 * numels: count element counts. A tensor with numel 0 is allowed (its pointers may be NULL). */
typedef struct optim_stream_tensors {
    int64_t count;
    int32_t n_read;   /* 0 .. OPTIM_STREAM_MAX_ARRAYS */
    int32_t n_update; /* 0 .. OPTIM_STREAM_MAX_ARRAYS; n_read + n_update >= 1 */
    const void* const* read;
    void* const* update;
    const int64_t* numels;
} optim_stream_tensors;

/* The benchmarks' memory-bandwidth reference: one pass that moves (n_read + 2 * n_update) element
 * sizes per element with the least arithmetic, on the same threads (LibTorch's OpenMP team when it
 * is loaded, else the worker pool) and over the same fixed chunks as optim_sgd_step, so an
 * optimizer step can be compared with the time this machine needs to move the same bytes the same
 * way. A step of several passes is matched by one call per pass. For element i of tensor k:
 *   r = read_0[i] + read_1[i] + ... + read_{n_read-1}[i]   (left to right; r = 0 when n_read == 0)
 *   n_update > 0:  u[i] = u[i] + scale * r   for every update array u of tensor k
 *   n_update == 0: *sum = the sum of r over every element of every tensor
 * Arithmetic is done in the element type; the sum is accumulated in 32 lanes of the element type
 * (element i to lane i % 32 within each piece of a 64 Ki-element chunk), then lanes and pieces are
 * combined in double, in order: results never depend on the number of threads. (The sum only keeps
 * the reads from being optimized away; it is not an accurate sum of large arrays.)
 *   dtype: OPTIM_DTYPE_FLOAT32 or OPTIM_DTYPE_FLOAT64.
 *   scale: finite.
 *   sum:   host memory; required when n_update == 0 (a pass that only reads returns its sum, so the
 *          reads cannot be optimised away), ignored otherwise.
 * CPU only. Validation (of every argument, before anything is written): counts, array counts, NULL
 * pointers, a finite scale. */
OPTIM_BENCH_API optim_status optim_stream_reference(int32_t dtype,
                                                    const optim_stream_tensors* tensors,
                                                    double scale, double* sum);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* OPTIM_BENCH_H */
