// The CUDA path of the stochastic line search (cpu/sls_cpu.cpp is the CPU twin; optim.h states the
// semantics). The save, trial and restore passes are one multi-tensor launch each
// (multi_tensor.cuh) applying sls_element() of sls_math.hpp; the squared gradient norm is a
// reduce launch (one block per chunk: a fixed tree in double, one record per chunk, no atomics), a
// one-thread finishing kernel that adds the records in chunk order, and a copy to the host.
// Compiled in CI; see docs/design.md for what has run on a GPU.
#include "../sls_math.hpp"
#include "block_sum.cuh"
#include "device_scratch.cuh"
#include "multi_tensor.cuh"

#include <cstddef>
#include <mutex>

namespace optim::cuda {

namespace {

struct NoMeta {};
// parameter, origin, gradient
enum SlsList { kParam, kOrigin, kGrad, kSlsLists };
using SlsTables = TensorTables<kSlsLists, NoMeta>;

template <typename T, int Op>
struct SlsPassFunctor {
    T step_size;

    __device__ void operator()(const SlsTables::Table& table, const Chunk& ch) const
    {
        T* __restrict p = static_cast<T*>(table.ptr[kParam][ch.t]);
        T* __restrict o = static_cast<T*>(table.ptr[kOrigin][ch.t]);
        const T* __restrict g = static_cast<const T*>(table.ptr[kGrad][ch.t]);
        struct Inputs {
            T p, o, g;
        };
        for_each_element(
            ch.begin, ch.end,
            [&](int64_t i) {
                return Inputs{Op == kSlsSave ? p[i] : T(0), Op == kSlsSave ? T(0) : o[i],
                              Op == kSlsTrial ? g[i] : T(0)};
            },
            [&](int64_t i, Inputs in) {
                sls_element<T, Op>(in.p, in.o, in.g, step_size);
                if (Op == kSlsSave)
                    o[i] = in.o;
                else
                    p[i] = in.p;
            });
    }
};

// One chunk's sum of squares in a fixed tree (lanes, then warps), written to its record.
template <typename T>
struct SlsNormFunctor {
    double* records;

    __device__ void operator()(const SlsTables::Table& table, const Chunk& ch) const
    {
        const T* __restrict g = static_cast<const T*>(table.ptr[kGrad][ch.t]);
        double s[1] = {0.0};
        for_each_element(
            ch.begin, ch.end, [&](int64_t i) { return g[i]; },
            [&](int64_t, T gi) { s[0] += sls_square(gi); });
        block_sum(s);
        if (threadIdx.x == 0) records[ch.index] = s[0];
    }
};

// The records in chunk order, by one thread: the same order on every run.
__global__ void sls_finish_kernel(double* records, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += records[i];
    records[n] = s;
}

SlsTables& tables_of(const optim_sls_tensors& t, bool moves, bool grads)
{
    SlsTables& tables = SlsTables::for_this_thread();
    for (int64_t k = 0; k < t.count; ++k) {
        if (t.numels[k] == 0) continue; // its pointers may be null
        void* const ptrs[kSlsLists] = {moves ? t.params[k] : nullptr,
                                       moves ? t.origins[k] : nullptr,
                                       grads ? const_cast<void*>(t.grads[k]) : nullptr};
        tables.add(ptrs, t.numels[k], NoMeta{});
    }
    return tables;
}

template <typename T>
void pass_typed(const SlsCall& call)
{
    const SlsTables& tables = tables_of(*call.tensors, true, call.op == kSlsTrial);
    const T step = static_cast<T>(call.step_size);
    const char* fn = call.fn;
    if (call.op == kSlsSave)
        tables.launch(SlsPassFunctor<T, kSlsSave>{step}, nullptr, fn, "save launch");
    else if (call.op == kSlsTrial)
        tables.launch(SlsPassFunctor<T, kSlsTrial>{step}, nullptr, fn, "trial launch");
    else
        tables.launch(SlsPassFunctor<T, kSlsRestore>{step}, nullptr, fn, "restore launch");
}

template <typename T>
double norm_typed(int device_index, const optim_sls_tensors& t)
{
    static const char* fn = "optim_sls_grad_norm_sq";
    const SlsTables& tables = tables_of(t, false, true);
    if (tables.chunks() == 0) return 0.0;
    Scratch& s = scratch_for<kSlsScratch>(device_index);
    std::lock_guard<std::mutex> lock(s.mutex);
    reserve(s, sizeof(double) * (static_cast<size_t>(tables.chunks()) + 1), fn);
    double* partial = static_cast<double*>(s.data);
    tables.launch(SlsNormFunctor<T>{partial}, nullptr, fn, "reduce launch");
    sls_finish_kernel<<<1, 1, 0, active_stream()>>>(partial, tables.chunks());
    check(cudaGetLastError(), fn, "finish launch");
    double sum = 0.0;
    check(cudaMemcpyAsync(&sum, partial + tables.chunks(), sizeof(double), cudaMemcpyDeviceToHost,
                          active_stream()),
          fn, "copy of the result");
    check(cudaStreamSynchronize(active_stream()), fn, "wait for the result");
    return sum;
}

} // namespace

void sls_pass(int device_index, int32_t dtype, const SlsCall& call)
{
    on_device_typed(device_index, dtype, call.fn, [&](auto t) { pass_typed<decltype(t)>(call); });
}

double sls_grad_norm_sq(int device_index, int32_t dtype, const optim_sls_tensors& tensors)
{
    double sum = 0.0;
    on_device_typed(device_index, dtype, "optim_sls_grad_norm_sq",
                    [&](auto t) { sum = norm_typed<decltype(t)>(device_index, tensors); });
    return sum;
}

} // namespace optim::cuda
