// The memory-bandwidth reference of the benchmarks (optim_stream_reference): one streaming pass
// with the least arithmetic, on the same work plan (fixed 64 Ki-element chunks, one contiguous run
// of chunks per thread) and the same threads as the SGD and HD steps, so that a step's time can be
// put next to the time the machine needs to move the same bytes the same way (docs/design.md).
#include "bandwidth.hpp"

#include "../src/cpu/work_plan.hpp"

#include <type_traits>
#include <vector>

namespace optim::bench {

using cpu::Piece;
using cpu::WorkPlan;

namespace {

// Up to four read and four update arrays, each its own __restrict parameter so that the loops
// vectorize without runtime alias checks; the counts are compile-time, unused pointers are null.
template <typename T>
struct Arrays {
    const T* r[OPTIM_STREAM_MAX_ARRAYS];
    T* u[OPTIM_STREAM_MAX_ARRAYS];
};

template <typename T, int NR>
inline __attribute__((always_inline)) T read_sum(const T* __restrict r0, const T* __restrict r1,
                                                 const T* __restrict r2, const T* __restrict r3,
                                                 int64_t i)
{
    if constexpr (NR == 0) {
        return T(0);
    } else {
        T r = r0[i];
        if constexpr (NR >= 2) r = r + r1[i];
        if constexpr (NR >= 3) r = r + r2[i];
        if constexpr (NR >= 4) r = r + r3[i];
        return r;
    }
}

template <typename T, int NR, int NU>
OPTIM_CPU_CLONES void update_range(const T* __restrict r0, const T* __restrict r1,
                                   const T* __restrict r2, const T* __restrict r3, T* __restrict u0,
                                   T* __restrict u1, T* __restrict u2, T* __restrict u3, int64_t n,
                                   T scale)
{
    for (int64_t i = 0; i < n; ++i) {
        const T d = scale * read_sum<T, NR>(r0, r1, r2, r3, i);
        if constexpr (NU >= 1) u0[i] = u0[i] + d;
        if constexpr (NU >= 2) u1[i] = u1[i] + d;
        if constexpr (NU >= 3) u2[i] = u2[i] + d;
        if constexpr (NU >= 4) u3[i] = u3[i] + d;
    }
}

// kLanes accumulators in the element type, element i to lane i % kLanes, the lanes combined in
// double in lane order: a fixed order (the sum does not depend on the thread count) that the
// compiler vectorizes, and that keeps a pass that only reads at memory speed (docs/design.md).
constexpr int kLanes = 32;

template <typename T, int NR>
OPTIM_CPU_CLONES double sum_range(const T* __restrict r0, const T* __restrict r1,
                                  const T* __restrict r2, const T* __restrict r3, int64_t n)
{
    T acc[kLanes] = {};
    const int64_t whole = n - n % kLanes;
    for (int64_t i = 0; i < whole; i += kLanes)
        for (int lane = 0; lane < kLanes; ++lane)
            acc[lane] += read_sum<T, NR>(r0, r1, r2, r3, i + lane);
    for (int64_t i = whole; i < n; ++i) acc[i - whole] += read_sum<T, NR>(r0, r1, r2, r3, i);
    double s = 0;
    for (int lane = 0; lane < kLanes; ++lane) s += static_cast<double>(acc[lane]);
    return s;
}

// Calls fn(std::integral_constant<int, n>{}) for n in [0, Max].
template <int Max, class Fn>
void with_count(int n, Fn&& fn)
{
    if (n == Max) {
        fn(std::integral_constant<int, Max>{});
    } else if constexpr (Max > 0) {
        with_count<Max - 1>(n, fn);
    }
}

template <typename T, int NR, int NU>
void run(const optim_stream_tensors& t, T scale, double* sum)
{
    WorkPlan& plan = WorkPlan::for_this_thread();
    plan.build(t.numels, t.count);
    auto arrays = [&](int64_t k, int64_t begin) {
        Arrays<T> a{};
        for (int j = 0; j < NR; ++j) a.r[j] = static_cast<const T*>(t.read[k * NR + j]) + begin;
        for (int j = 0; j < NU; ++j) a.u[j] = static_cast<T*>(t.update[k * NU + j]) + begin;
        return a;
    };
    if constexpr (NU > 0) {
        plan.parallel_for_pieces([&](const Piece& piece) {
            const Arrays<T> a = arrays(piece.tensor, piece.begin);
            update_range<T, NR, NU>(a.r[0], a.r[1], a.r[2], a.r[3], a.u[0], a.u[1], a.u[2], a.u[3],
                                    piece.length, scale);
        });
    } else {
        // One partial sum per piece, combined in piece order. A reference: the worker threads must
        // see the caller's vector, not their own thread_local one.
        thread_local std::vector<double> partials_storage;
        std::vector<double>& partials = partials_storage;
        partials.assign(static_cast<size_t>(plan.pieces()), 0.0);
        plan.parallel_for_pieces([&](const Piece& piece) {
            const Arrays<T> a = arrays(piece.tensor, piece.begin);
            partials[static_cast<size_t>(piece.index)] =
                sum_range<T, NR>(a.r[0], a.r[1], a.r[2], a.r[3], piece.length);
        });
        double total = 0;
        for (double s : partials) total += s;
        *sum = total;
    }
}

template <typename T>
void stream_reference(const optim_stream_tensors& t, double scale, double* sum)
{
    with_count<OPTIM_STREAM_MAX_ARRAYS>(t.n_read, [&](auto R) {
        with_count<OPTIM_STREAM_MAX_ARRAYS>(t.n_update, [&](auto U) {
            constexpr int NR = decltype(R)::value;
            constexpr int NU = decltype(U)::value;
            if constexpr (NR + NU > 0) run<T, NR, NU>(t, static_cast<T>(scale), sum);
        });
    });
}

} // namespace

void stream_reference_f32(const optim_stream_tensors& tensors, double scale, double* sum)
{
    stream_reference<float>(tensors, scale, sum);
}
void stream_reference_f64(const optim_stream_tensors& tensors, double scale, double* sum)
{
    stream_reference<double>(tensors, scale, sum);
}

} // namespace optim::bench
