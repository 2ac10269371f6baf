// The CUDA path of hypergradient descent (cpu/hd_cpu.cpp is the CPU twin; optim.h states the
// semantics). Three kernels on the legacy default stream, with no host round trip:
//   reduce  one block per chunk (multi_tensor.cuh): the chunk's partial sums in double (h = sum
//           g~ u_prev, |g~|^2, |u_prev|^2, non-finite raw gradients), reduced in a fixed tree and
//           written to the chunk's record in a per-device scratch array (no atomics);
//   finish  one block: the non-finite total (fixed tree) decides whether the step is skipped (a
//           device flag, and the caller's skip counter); otherwise each rate slot sums its records
//           in record order and gets its new rate from hd_rate<double>;
//   update  the multi-tensor launcher with the skip flag as its no-op flag: the update with the new
//           rates (hd_update_element), or for the per-parameter scope hd_per_parameter_element.
// Tensors of different param groups share a launch, so each tensor's Meta carries its flags and
// coefficients and the functors switch on the flags (uniform per block). Every per-element
// operation is hd_math.hpp's / sgd_math.hpp's. With clipping the reduction also sums the squared
// norm (and the weight-decay terms apart, HdPartial), the finishing kernel writes the norm and
// forms h from the clipped gradient, and the update reads the norm (grad_norm.cuh). With a gradient
// scaler every kernel reads inv_scale * grad, and the finishing kernel also skips the step when the
// scaler's flag is set or a gradient is not finite (setting the flag). Compiled in CI;
// see docs/design.md for what has run on a GPU.
#include "../hd_math.hpp"
#include "block_sum.cuh"
#include "device_scratch.cuh"
#include "grad_norm.cuh"
#include "multi_tensor.cuh"

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace optim::cuda {

namespace {

constexpr int kFinishThreads = 256;

// One chunk's partial sums (reduce output, finish input). slot: the chunk's rate slot.
struct HdRecord {
    HdPartial sums;
    int64_t slot;
};

// Per tensor: its group's coefficients and flags, its rate slot (scalar scopes) and whether its
// momentum buffer has no history yet.
template <typename T>
struct HdMeta {
    SgdCoeffs<T> coeffs;
    int64_t slot;
    unsigned flags;
    unsigned char fresh;
};
// parameter, gradient, momentum buffer (momentum, else null), prev_updates (no heavy-ball momentum,
// else null), per-parameter rates (that scope, else null)
enum HdList { kParam, kGrad, kBuf, kPrev, kRates, kHdLists };
template <typename T>
using HdTables = TensorTables<kHdLists, HdMeta<T>>;

// ---- Reduce ------------------------------------------------------------------------------------

enum ReduceMode : int {
    kOnlyFiniteness = 0, // per-parameter scope
    kDotOnly = 1,        // additive rule: h only
    kNorms = 2,          // normalized rule: h, |g~|^2, |u_prev|^2
};

template <typename T>
__device__ __forceinline__ HdPartial count_nonfinite(const T* __restrict g, int64_t begin,
                                                     int64_t end)
{
    HdPartial r;
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads)
        r.nonfinite += is_finite(g[i]) ? 0.0 : 1.0;
    return r;
}

// Partial sums of this thread's elements of one chunk, in the CPU's arithmetic: g~ in the element
// type, then products and squares in double. up == nullptr: heavy ball on a fresh buffer, u_prev is
// zero and only |g~|^2 contributes (as on the CPU, h and |u_prev|^2 stay exactly 0). Clip: the
// signed raw gradient in place of g~ and the decay term apart (HdPartial).
template <typename T, unsigned Flags, bool Norms, bool Clip>
__device__ __forceinline__ HdPartial reduce_elements(const T* __restrict p, const T* __restrict g,
                                                     const T* __restrict up, int64_t begin,
                                                     int64_t end, const SgdCoeffs<T>& c, T inv)
{
    HdPartial r;
    constexpr unsigned GradFlags = Clip ? Flags & kSgdMaximize : Flags;
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
        const T gi = g[i];
        r.nonfinite += is_finite(gi) ? 0.0 : 1.0; // the raw gradient, as a scaler checks it
        if (up == nullptr && !Norms && !Clip) continue;
        const double gt = sgd_effective_grad<T, GradFlags>(p[i], gi * inv, c);
        const double u = up != nullptr ? static_cast<double>(up[i]) : 0.0;
        if (up != nullptr) r.h += gt * u;
        if (Norms || Clip) r.gg += gt * gt;
        if (Norms && up != nullptr) r.uu += u * u;
        if (Clip && (Flags & kSgdWeightDecay)) {
            const double d = c.weight_decay * p[i];
            r.hd += d * u;
            r.sd += gt * d;
            r.dd += d * d;
        }
    }
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

template <typename T, int Mode, bool Clip>
struct HdReduceFunctor {
    HdRecord* records;
    const float* inv_scale; // a gradient scaler's, in device memory, else null

    __device__ void operator()(const typename HdTables<T>::Table& table, const Chunk& ch) const
    {
        const HdMeta<T>& m = table.meta[ch.t];
        const T* p = static_cast<const T*>(table.ptr[kParam][ch.t]);
        const T* g = static_cast<const T*>(table.ptr[kGrad][ch.t]);
        const T* buf = m.fresh ? nullptr : static_cast<const T*>(table.ptr[kBuf][ch.t]);
        const T* prev = static_cast<const T*>(table.ptr[kPrev][ch.t]);
        const T inv = scale_factor<T>(inv_scale);
        HdPartial r;
        if constexpr (Mode == kOnlyFiniteness && !Clip) {
            r = count_nonfinite<T>(g, ch.begin, ch.end);
        } else {
            // The per-parameter scope with clipping sums only the norm (no u_prev).
            constexpr bool scalar = Mode != kOnlyFiniteness;
            switch (m.flags) {
#define OPTIM_HD_CASE(F)                                                                           \
    case (F):                                                                                      \
        r = reduce_elements<T, (F), Mode == kNorms, Clip>(p, g,                                    \
                                                          !scalar             ? nullptr            \
                                                          : sgd_heavy_ball(F) ? buf                \
                                                                              : prev,              \
                                                          ch.begin, ch.end, m.coeffs, inv);        \
        break;
                OPTIM_SGD_FLAG_LIST(OPTIM_HD_CASE)
#undef OPTIM_HD_CASE
            default:
                break;
            }
        }
        r = block_sum_all(r);
        if (threadIdx.x == 0) records[ch.index] = HdRecord{r, m.slot};
    }
};

// ---- Finish ------------------------------------------------------------------------------------

// One block. Records are in tensor order and slots are non-decreasing in tensor order (group_index
// is validated to be non-decreasing), so the records of one slot are contiguous: each thread finds
// its slots' ranges by binary search and sums them in record order, like the CPU's piece order. A
// slot without records (only empty tensors) gets zero sums, as on the CPU. With clipping (norm not
// null) the squared norm is summed in the same fixed tree, the norm written before the skip
// decision (a skipped step reports it too), and each slot's sums are those of the clipped gradient.
template <typename T>
__global__ void __launch_bounds__(kFinishThreads)
    hd_finish_kernel(const HdRecord* records, int64_t n_records, int64_t slots, double* rates,
                     int64_t* skipped, int* skip_flag, HdCoeffs<double> hc, int check, double* norm,
                     double max_norm, float* found_inf)
{
    // A scaler's flag as it was on entry, read by every thread before thread 0 may write it (the
    // barriers below separate the two).
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
        // The scaler's skip: reported through its flag alone, not counted in skipped.
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

// ---- Update ------------------------------------------------------------------------------------

template <typename T, unsigned Flags, bool PerParameter>
__device__ __forceinline__ void
update_elements(T* __restrict p, const T* __restrict g, T* __restrict buf, T* __restrict up,
                T* __restrict alpha, int64_t begin, int64_t end, bool fresh, const SgdCoeffs<T>& c,
                T lr, const HdCoeffs<T>& hc, T inv, T clip)
{
    constexpr bool heavy_ball = sgd_heavy_ball(Flags);
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
        T pi = p[i];
        // A fresh buffer is never read (it may hold anything); u_prev is read only by the
        // per-parameter rule, hd_update_element only writes it.
        T bi = ((Flags & kSgdMomentum) && !fresh) ? buf[i] : T(0);
        T ui = (PerParameter && !heavy_ball) ? up[i] : T(0);
        if constexpr (PerParameter) {
            T ai = alpha[i];
            hd_per_parameter_element<T, Flags>(pi, g[i] * inv * clip, bi, ui, ai, fresh, c, hc);
            alpha[i] = ai;
        } else {
            hd_update_element<T, Flags>(pi, g[i] * inv * clip, bi, ui, fresh, c, lr);
        }
        if (Flags & kSgdMomentum) buf[i] = bi;
        if (!heavy_ball) up[i] = ui;
        p[i] = pi;
    }
}

template <typename T, bool PerParameter>
struct HdUpdateFunctor {
    const double* rates; // device memory: the scalar scopes' rates, after the finish kernel
    HdCoeffs<T> hc;
    const double* norm; // clipping: the gradients' norm in device memory, else null
    double max_norm;
    const float* inv_scale; // a gradient scaler's, in device memory, else null

    __device__ void operator()(const typename HdTables<T>::Table& table, const Chunk& ch) const
    {
        const HdMeta<T>& m = table.meta[ch.t];
        const T inv = scale_factor<T>(inv_scale);
        const T clip = clip_factor<T>(norm, max_norm);
        T* p = static_cast<T*>(table.ptr[kParam][ch.t]);
        const T* g = static_cast<const T*>(table.ptr[kGrad][ch.t]);
        T* buf = static_cast<T*>(table.ptr[kBuf][ch.t]);
        T* up = static_cast<T*>(table.ptr[kPrev][ch.t]);
        T* alpha = static_cast<T*>(table.ptr[kRates][ch.t]);
        const bool fresh = m.fresh != 0;
        const T lr = PerParameter ? T(0) : static_cast<T>(rates[m.slot]);
        switch (m.flags) {
#define OPTIM_HD_CASE(F)                                                                           \
    case (F):                                                                                      \
        update_elements<T, (F), PerParameter>(p, g, buf, up, alpha, ch.begin, ch.end, fresh,       \
                                              m.coeffs, lr, hc, inv, clip);                        \
        break;
            OPTIM_SGD_FLAG_LIST(OPTIM_HD_CASE)
#undef OPTIM_HD_CASE
        default:
            break;
        }
    }
};

// ---- Host side ---------------------------------------------------------------------------------

// The skip flag lives at offset 0 of the step's scratch (device_scratch.cuh), the records after it.
constexpr size_t kRecordsOffset = 256;

// The reduction launch of a mode (ReduceMode), with or without the clipping sums.
template <typename T>
void launch_reduce(const HdTables<T>& tables, HdRecord* recs, int mode, bool clip, const float* inv,
                   const char* fn)
{
    static const char* what = "reduction kernel launch";
    auto go = [&](auto functor) { tables.launch(functor, nullptr, fn, what); };
    if (mode == kOnlyFiniteness)
        clip ? go(HdReduceFunctor<T, kOnlyFiniteness, true>{recs, inv})
             : go(HdReduceFunctor<T, kOnlyFiniteness, false>{recs, inv});
    else if (mode == kNorms)
        clip ? go(HdReduceFunctor<T, kNorms, true>{recs, inv})
             : go(HdReduceFunctor<T, kNorms, false>{recs, inv});
    else
        clip ? go(HdReduceFunctor<T, kDotOnly, true>{recs, inv})
             : go(HdReduceFunctor<T, kDotOnly, false>{recs, inv});
}

template <typename T>
void hd_typed(int device_index, const HdCall& call, const char* fn)
{
    const optim_hd_tensors& t = *call.tensors;
    const optim_hd_params& hp = *call.params;
    const bool per_parameter = hp.scope == OPTIM_HD_SCOPE_PER_PARAMETER;
    const bool norms = hp.rule == OPTIM_HD_RULE_NORMALIZED;

    // Each group's coefficients, rounded to the element type once, and flags.
    thread_local std::vector<HdMeta<T>> groups;
    groups.clear();
    for (int32_t i = 0; i < call.n_groups; ++i) {
        const SgdGroup<T> g = sgd_group<T>(call.groups[i], fn);
        groups.push_back(HdMeta<T>{g.c, 0, g.flags, 0});
    }

    // The chunk tables; chunks (and so records) are numbered in tensor order, then chunk order.
    HdTables<T>& tables = HdTables<T>::for_this_thread();
    for (int64_t k = 0; k < t.count; ++k) {
        if (t.numels[k] == 0) continue; // its pointers may be null
        HdMeta<T> m = groups[static_cast<size_t>(t.group_index[k])];
        const bool momentum = (m.flags & kSgdMomentum) != 0;
        m.slot = hd_rate_slot(hp.scope, t, k);
        m.fresh = (momentum && t.buffer_fresh != nullptr && t.buffer_fresh[k] != 0) ? 1 : 0;
        void* const ptrs[kHdLists] = {t.params[k], const_cast<void*>(t.grads[k]),
                                      momentum ? t.momentum_buffers[k] : nullptr,
                                      sgd_heavy_ball(m.flags) ? nullptr : t.prev_updates[k],
                                      per_parameter ? t.param_rates[k] : nullptr};
        tables.add(ptrs, t.numels[k], m);
    }

    const int64_t slots = hd_slot_count(hp.scope, call.n_groups, t.count);
    const HdCoeffs<double> hc{hp.hypergrad_lr, hp.lr_min, hp.lr_max,
                              hp.eps,          norms,     hp.first_step == 0};
    const HdCoeffs<T> hc_t{static_cast<T>(hp.hypergrad_lr),
                           static_cast<T>(hp.lr_min),
                           static_cast<T>(hp.lr_max),
                           static_cast<T>(hp.eps),
                           norms,
                           hp.first_step == 0};

    Scratch& s = scratch_for<kHdScratch>(device_index);
    std::lock_guard<std::mutex> lock(s.mutex);
    reserve(s, kRecordsOffset + sizeof(HdRecord) * static_cast<size_t>(tables.chunks()), fn);
    int* skip_flag = static_cast<int*>(s.data);
    HdRecord* recs = reinterpret_cast<HdRecord*>(static_cast<char*>(s.data) + kRecordsOffset);

    // The caller vouches for the gradients (assume_finite): the per-parameter scope then needs no
    // reduction at all, and the finishing kernel, given no records, only clears the skip flag.
    // A gradient scaler always checks (its flag reports the skip).
    const bool check_finite = hp.assume_finite == 0 || call.scale != nullptr;
    const bool clip = call.clip != nullptr;
    const bool reduce = check_finite || !per_parameter || clip;
    const int mode = per_parameter ? kOnlyFiniteness : norms ? kNorms : kDotOnly;
    const float* inv = call.scale ? call.scale->inv_scale : nullptr;
    float* found_inf = call.scale ? call.scale->found_inf : nullptr;
    if (reduce) launch_reduce<T>(tables, recs, mode, clip, inv, fn);
    double* norm = clip ? call.clip->total_norm : nullptr;
    const double max_norm = clip ? call.clip->max_norm : 0.0;
    hd_finish_kernel<T><<<1, kFinishThreads, 0, 0>>>(
        recs, reduce ? tables.chunks() : 0, slots, call.rates, call.skipped, skip_flag, hc,
        check_finite ? 1 : 0, norm, max_norm, found_inf);
    check(cudaGetLastError(), fn, "finishing kernel launch");
    if (per_parameter)
        tables.launch(HdUpdateFunctor<T, true>{call.rates, hc_t, norm, max_norm, inv}, skip_flag,
                      fn, "update kernel launch");
    else
        tables.launch(HdUpdateFunctor<T, false>{call.rates, hc_t, norm, max_norm, inv}, skip_flag,
                      fn, "update kernel launch");
}

} // namespace

void hd_step(int device_index, int32_t dtype, const HdCall& call)
{
    const char* fn = call.fn;
    require_device(device_index, fn);
    DeviceGuard guard(device_index, fn);
    if (dtype == OPTIM_DTYPE_FLOAT32)
        hd_typed<float>(device_index, call, fn);
    else
        hd_typed<double>(device_index, call, fn);
}

} // namespace optim::cuda
