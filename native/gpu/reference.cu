// The device's memory-bandwidth reference (reference.hpp): a grid-stride streaming kernel with
// 16-byte accesses and the least arithmetic, enough blocks to fill every SM several times over.
#include "device.hpp"
#include "reference.hpp"

#include <optim.h>

#include <stdexcept>
#include <string>

namespace optim_gpu {

namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 8;

template <typename T>
struct Vec;
template <>
struct Vec<float> {
    using type = float4;
};
template <>
struct Vec<double> {
    using type = double2;
};

template <typename T, int R, int U>
struct StreamArgs {
    const T* read[R];
    T* update[U > 0 ? U : 1];
    int64_t n;
    T scale;
    double* sink;
};

template <typename T, int R, int U>
__global__ void __launch_bounds__(kThreads) stream_kernel(StreamArgs<T, R, U> a)
{
    using V = typename Vec<T>::type;
    constexpr int W = sizeof(V) / sizeof(T);
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t vectors = a.n / W;
    T acc = T(0);
    for (int64_t i = first; i < vectors; i += stride) {
        T r[W] = {};
#pragma unroll
        for (int j = 0; j < R; ++j) {
            const V v = reinterpret_cast<const V*>(a.read[j])[i];
            const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
            for (int w = 0; w < W; ++w) r[w] += e[w];
        }
#pragma unroll
        for (int j = 0; j < U; ++j) {
            V v = reinterpret_cast<const V*>(a.update[j])[i];
            T* e = reinterpret_cast<T*>(&v);
#pragma unroll
            for (int w = 0; w < W; ++w) e[w] += a.scale * r[w];
            reinterpret_cast<V*>(a.update[j])[i] = v;
        }
        if (U == 0) {
#pragma unroll
            for (int w = 0; w < W; ++w) acc += r[w];
        }
    }
    for (int64_t i = vectors * W + first; i < a.n; i += stride) {
        T r = T(0);
        for (int j = 0; j < R; ++j) r += a.read[j][i];
        for (int j = 0; j < U; ++j) a.update[j][i] += a.scale * r;
        acc += r;
    }
    if (U == 0 && acc == T(-1234.5)) *a.sink = acc;
}

int blocks_for(int64_t vectors)
{
    static const int sms = [] {
        int device = 0, count = 0;
        cuda_ok(cudaGetDevice(&device), "cudaGetDevice");
        cuda_ok(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device),
                "cudaDeviceGetAttribute");
        return count;
    }();
    const int64_t needed = (vectors + kThreads - 1) / kThreads;
    const int64_t most = static_cast<int64_t>(sms) * kBlocksPerSm;
    return static_cast<int>(needed < 1 ? 1 : needed < most ? needed : most);
}

template <typename T, int R, int U>
void launch(const void* const* reads, void* const* updates, int64_t n, double scale, double* sink)
{
    StreamArgs<T, R, U> a{};
    for (int j = 0; j < R; ++j) a.read[j] = static_cast<const T*>(reads[j]);
    for (int j = 0; j < U; ++j) a.update[j] = static_cast<T*>(updates[j]);
    a.n = n;
    a.scale = static_cast<T>(scale);
    a.sink = sink;
    constexpr int W = sizeof(typename Vec<T>::type) / sizeof(T);
    stream_kernel<T, R, U><<<blocks_for(n / W), kThreads, 0, 0>>>(a);
    cuda_ok(cudaGetLastError(), "stream kernel launch");
}

template <typename T>
void stream_typed(const void* const* reads, int n_read, void* const* updates, int n_update,
                  int64_t n, double scale, double* sink)
{
    if (n_read == 1 && n_update == 1)
        launch<T, 1, 1>(reads, updates, n, scale, sink);
    else if (n_read == 1 && n_update == 2)
        launch<T, 1, 2>(reads, updates, n, scale, sink);
    else if (n_read == 1 && n_update == 3)
        launch<T, 1, 3>(reads, updates, n, scale, sink);
    else if (n_read == 1 && n_update == 0)
        launch<T, 1, 0>(reads, updates, n, scale, sink);
    else if (n_read == 2 && n_update == 0)
        launch<T, 2, 0>(reads, updates, n, scale, sink);
    else
        throw std::invalid_argument("stream_pass: unsupported pattern of " +
                                    std::to_string(n_read) + " reads and " +
                                    std::to_string(n_update) + " updates");
}

template <typename T>
__global__ void fill_kernel(T* data, int64_t n, T value)
{
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += stride)
        data[i] = value;
}

} // namespace

void stream_pass(int32_t dtype, const void* const* reads, int n_read, void* const* updates,
                 int n_update, int64_t n, double scale, double* sink)
{
    if (dtype == OPTIM_DTYPE_FLOAT32)
        stream_typed<float>(reads, n_read, updates, n_update, n, scale, sink);
    else
        stream_typed<double>(reads, n_read, updates, n_update, n, scale, sink);
}

void fill(int32_t dtype, void* data, int64_t n, double value)
{
    const int blocks = blocks_for(n);
    if (dtype == OPTIM_DTYPE_FLOAT32)
        fill_kernel<float>
            <<<blocks, kThreads, 0, 0>>>(static_cast<float*>(data), n, static_cast<float>(value));
    else
        fill_kernel<double><<<blocks, kThreads, 0, 0>>>(static_cast<double*>(data), n, value);
    cuda_ok(cudaGetLastError(), "fill kernel launch");
}

} // namespace optim_gpu
