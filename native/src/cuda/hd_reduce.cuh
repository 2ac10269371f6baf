// The reduction pass and the finishing kernel of hypergradient descent on CUDA, shared by
// hypergradient SGD (hd_cuda.cu) and hypergradient Adam (hd_adam_cuda.cu): each optimizer's reduce
// functor hands its chunk to hd_reduce_chunk(), which writes the chunk's record; the finishing
// kernel decides a skip and moves the scalar rates. The CPU twin is cpu/hd_reduce.hpp. Elements are
// read in their compute type (precision.hpp): 16-bit gradients, and the 16-bit parameter or its
// float32 master copy, are summed as the float32 values they hold.
#pragma once

#include "../backend.hpp"
#include "../hd_math.hpp"
#include "../precision.hpp"
#include "block_sum.cuh"
#include "device_scratch.cuh"
#include "grad_norm.cuh"
#include "multi_tensor.cuh"

#include <cstddef>
#include <cstdint>
#include <mutex>

namespace optim::cuda {

constexpr int kFinishThreads = 256;

// One chunk's partial sums (reduce output, finish input). slot: the chunk's rate slot.
struct HdRecord {
    HdPartial sums;
    int64_t slot;
};

// ---- Reduce ------------------------------------------------------------------------------------

enum ReduceMode : int {
    kOnlyFiniteness = 0, // per-parameter scope
    kDotOnly = 1,        // additive rule: h only
    kNorms = 2,          // normalized rule: h, |g~|^2, |u_prev|^2
};

template <typename G>
__device__ __forceinline__ HdPartial count_nonfinite(const G* __restrict g, int64_t begin,
                                                     int64_t end)
{
    HdPartial r;
    for_each_element(
        begin, end, [&](int64_t i) { return load_value(g[i]); },
        [&](int64_t, auto gi) { r.nonfinite += is_finite(gi) ? 0.0 : 1.0; });
    return r;
}

// Partial sums of this thread's elements of one chunk, in the CPU's arithmetic: g~ in the element
// type, then products and squares in double. up == nullptr: heavy ball on a fresh buffer, u_prev is
// zero and only |g~|^2 contributes (as on the CPU, h and |u_prev|^2 stay exactly 0). Clip: the
// signed raw gradient in place of g~ and the decay term apart (HdPartial). P and G: how the
// parameter (storage type or float32 master copy) and the gradient are stored; T their compute
// type.
template <typename P, typename G, unsigned Flags, bool Norms, bool Clip, typename T>
__device__ __forceinline__ HdPartial reduce_elements(const P* __restrict p, const G* __restrict g,
                                                     const T* __restrict up, int64_t begin,
                                                     int64_t end, const SgdCoeffs<T>& c, T inv)
{
    HdPartial r;
    constexpr unsigned GradFlags = Clip ? Flags & kSgdMaximize : Flags;
    // Without u_prev, norms or clipping only the finiteness count needs the element.
    const bool sums = up != nullptr || Norms || Clip;
    struct Inputs {
        T g, p, u;
    };
    for_each_element(
        begin, end,
        [&](int64_t i) {
            return Inputs{load_value(g[i]), sums ? load_value(p[i]) : T(0),
                          up != nullptr ? up[i] : T(0)};
        },
        [&](int64_t, Inputs in) {
            r.nonfinite += is_finite(in.g) ? 0.0 : 1.0; // the raw gradient, as a scaler checks it
            if (!sums) return;
            const double gt = sgd_effective_grad<T, GradFlags>(in.p, in.g * inv, c);
            const double u = up != nullptr ? static_cast<double>(in.u) : 0.0;
            if (up != nullptr) r.h += gt * u;
            if (Norms || Clip) r.gg += gt * gt;
            if (Norms && up != nullptr) r.uu += u * u;
            if (Clip && (Flags & kSgdWeightDecay)) {
                const double d = c.weight_decay * in.p;
                r.hd += d * u;
                r.sd += gt * d;
                r.dd += d * d;
            }
        });
    return r;
}

// The block's sums of every field, in block_sum's fixed tree; valid in thread 0.
__device__ __forceinline__ HdPartial block_sum_all(const HdPartial& r)
{
    double v[7] = {r.h, r.gg, r.uu, r.nonfinite, r.hd, r.sd, r.dd};
    block_sum(v);
    HdPartial s;
    s.h = v[0];
    s.gg = v[1];
    s.uu = v[2];
    s.nonfinite = v[3];
    s.hd = v[4];
    s.sd = v[5];
    s.dd = v[6];
    return s;
}

// The partial sums of this thread's elements of one chunk under the SGD flags `flags` (uniform
// per block), of the gradient times inv (a gradient scaler's inverse scale, else 1), with u_prev at
// `up` (null: zero), summed over the block; valid in thread 0. p is the parameter as the update
// reads it (its storage type, or its float32 master copy), g the gradient in storage type G.
template <int Mode, bool Clip, typename P, typename G, typename T>
__device__ __forceinline__ HdPartial hd_reduce_chunk(unsigned flags, const P* p, const G* g,
                                                     const T* up, int64_t begin, int64_t end,
                                                     const SgdCoeffs<T>& c, T inv)
{
    HdPartial r;
    if constexpr (Mode == kOnlyFiniteness && !Clip) {
        r = count_nonfinite<G>(g, begin, end);
    } else {
        // The per-parameter scope with clipping sums only the norm (no u_prev).
        const T* u = Mode == kOnlyFiniteness ? nullptr : up;
        switch (flags) {
#define OPTIM_HD_CASE(F)                                                                           \
    case (F):                                                                                      \
        r = reduce_elements<P, G, (F), Mode == kNorms, Clip>(p, g, u, begin, end, c, inv);         \
        break;
            OPTIM_SGD_FLAG_LIST(OPTIM_HD_CASE)
#undef OPTIM_HD_CASE
        default:
            break;
        }
    }
    return block_sum_all(r);
}

// ---- Finish ------------------------------------------------------------------------------------

// One block. Records are in tensor order and slots are non-decreasing in tensor order (group_index
// is validated to be non-decreasing), so the records of one slot are contiguous: each thread finds
// its slots' ranges by binary search and sums them in record order, like the CPU's piece order. A
// slot without records (only empty tensors) gets zero sums, as on the CPU. With clipping (norm not
// null) the squared norm is summed in the same fixed tree, the norm written before the skip
// decision (a skipped step reports it too), and each slot's sums are those of the clipped gradient.
// With a gradient scaler (found_inf not null) the step is also skipped when its flag is set on
// entry, and a skip is reported through the flag alone (set), not counted in skipped.
template <typename T>
__global__ void __launch_bounds__(kFinishThreads)
    hd_finish_kernel(const HdRecord* records, int64_t n_records, int64_t slots, double* rates,
                     int64_t* skipped, int* skip_flag, HdCoeffs<double> hc, int check, double* norm,
                     double max_norm, float* found_inf)
{
    // The flag as it was on entry, read by every thread before thread 0 may write it (the barriers
    // below separate the two).
    const bool flagged = found_inf != nullptr && *found_inf != 0.0f;
    __shared__ double bad[kFinishThreads];
    __shared__ double squared[kFinishThreads];
    double b = 0, q = 0;
    for (int64_t i = threadIdx.x; i < n_records; i += kFinishThreads) {
        b += records[i].sums.nonfinite;
        q += records[i].sums.gg;
    }
    bad[threadIdx.x] = b;
    squared[threadIdx.x] = q;
    __syncthreads();
    for (int width = kFinishThreads / 2; width > 0; width >>= 1) {
        if (static_cast<int>(threadIdx.x) < width) {
            bad[threadIdx.x] += bad[threadIdx.x + width];
            squared[threadIdx.x] += squared[threadIdx.x + width];
        }
        __syncthreads();
    }
    const double total_norm = sqrt(squared[0]);
    if (norm != nullptr && threadIdx.x == 0) *norm = total_norm;
    const double coef = static_cast<double>(clip_coefficient<T>(total_norm, max_norm));
    if (found_inf != nullptr && (flagged || bad[0] > 0)) {
        if (threadIdx.x == 0) {
            *skip_flag = 1;
            *found_inf = 1.0f;
        }
        return;
    }
    if (check && bad[0] > 0) {
        if (threadIdx.x == 0) {
            *skip_flag = 1;
            if (skipped != nullptr) *skipped += 1;
        }
        return;
    }
    if (threadIdx.x == 0) *skip_flag = 0;
    for (int64_t s = threadIdx.x; s < slots; s += kFinishThreads) {
        int64_t lo = 0, hi = n_records;
        while (lo < hi) {
            const int64_t mid = lo + (hi - lo) / 2;
            if (records[mid].slot < s)
                lo = mid + 1;
            else
                hi = mid;
        }
        HdPartial sum;
        for (int64_t i = lo; i < n_records && records[i].slot == s; ++i) {
            const HdPartial& r = records[i].sums;
            sum.h += r.h;
            sum.gg += r.gg;
            sum.uu += r.uu;
            sum.hd += r.hd;
            sum.sd += r.sd;
            sum.dd += r.dd;
        }
        if (norm != nullptr) sum = hd_clipped(sum, coef);
        rates[s] = hd_rate<double>(rates[s], sum.h, sqrt(sum.gg) * sqrt(sum.uu), hc);
    }
}

// The skip flag lives at offset 0 of the step's scratch (device_scratch.cuh), the records after it.
constexpr size_t kRecordsOffset = 256;

// The HD scratch of the current device for one step, held (locked) while this lives: the skip
// flag, then one record per chunk.
class HdWorkspace {
  public:
    HdWorkspace(int device_index, int64_t chunks, const char* fn)
        : scratch_(scratch_for<kHdScratch>(device_index)), lock_(scratch_.mutex)
    {
        reserve(scratch_, kRecordsOffset + sizeof(HdRecord) * static_cast<size_t>(chunks), fn);
        skip_flag = static_cast<int*>(scratch_.data);
        recs = reinterpret_cast<HdRecord*>(static_cast<char*>(scratch_.data) + kRecordsOffset);
    }

    int* skip_flag = nullptr;
    HdRecord* recs = nullptr;

  private:
    Scratch& scratch_;
    std::lock_guard<std::mutex> lock_;
};

} // namespace optim::cuda
