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
// operation is hd_math.hpp's / sgd_math.hpp's. Compiled in CI; see docs/design.md for what has run
// on a GPU.
#include "../hd_math.hpp"
#include "multi_tensor.cuh"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace optim::cuda {

namespace {

constexpr int kWarps = kThreads / 32;
constexpr int kFinishThreads = 256;

// One chunk's partial sums (reduce output, finish input). slot: the chunk's rate slot.
struct HdRecord {
    double h;
    double gg;
    double uu;
    double nonfinite;
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
// zero and only |g~|^2 contributes (as on the CPU, h and |u_prev|^2 stay exactly 0).
template <typename T, unsigned Flags, bool Norms>
__device__ __forceinline__ HdPartial reduce_elements(const T* __restrict p, const T* __restrict g,
                                                     const T* __restrict up, int64_t begin,
                                                     int64_t end, const SgdCoeffs<T>& c)
{
    HdPartial r;
    if (up != nullptr) {
        for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
            const T gi = g[i];
            r.nonfinite += is_finite(gi) ? 0.0 : 1.0;
            const double gt = sgd_effective_grad<T, Flags>(p[i], gi, c);
            const double u = up[i];
            r.h += gt * u;
            if (Norms) {
                r.gg += gt * gt;
                r.uu += u * u;
            }
        }
    } else {
        for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
            const T gi = g[i];
            r.nonfinite += is_finite(gi) ? 0.0 : 1.0;
            if (Norms) {
                const double gt = sgd_effective_grad<T, Flags>(p[i], gi, c);
                r.gg += gt * gt;
            }
        }
    }
    return r;
}

__device__ __forceinline__ double warp_sum(double v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

// Block sum in a fixed tree (lane tree inside each warp, then over the warps' results in shared
// memory): the same order on every run. The result is valid in thread 0.
__device__ __forceinline__ HdPartial block_sum(HdPartial r)
{
    __shared__ double partial[4][kWarps];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    r.h = warp_sum(r.h);
    r.gg = warp_sum(r.gg);
    r.uu = warp_sum(r.uu);
    r.nonfinite = warp_sum(r.nonfinite);
    if (lane == 0) {
        partial[0][warp] = r.h;
        partial[1][warp] = r.gg;
        partial[2][warp] = r.uu;
        partial[3][warp] = r.nonfinite;
    }
    __syncthreads();
    if (warp == 0) {
        r.h = warp_sum(lane < kWarps ? partial[0][lane] : 0.0);
        r.gg = warp_sum(lane < kWarps ? partial[1][lane] : 0.0);
        r.uu = warp_sum(lane < kWarps ? partial[2][lane] : 0.0);
        r.nonfinite = warp_sum(lane < kWarps ? partial[3][lane] : 0.0);
    }
    return r;
}

template <typename T, int Mode>
struct HdReduceFunctor {
    HdRecord* records;

    __device__ void operator()(const typename HdTables<T>::Table& table, const Chunk& ch) const
    {
        const HdMeta<T>& m = table.meta[ch.t];
        const T* p = static_cast<const T*>(table.ptr[kParam][ch.t]);
        const T* g = static_cast<const T*>(table.ptr[kGrad][ch.t]);
        const T* buf = m.fresh ? nullptr : static_cast<const T*>(table.ptr[kBuf][ch.t]);
        const T* prev = static_cast<const T*>(table.ptr[kPrev][ch.t]);
        HdPartial r;
        if constexpr (Mode == kOnlyFiniteness) {
            r = count_nonfinite<T>(g, ch.begin, ch.end);
        } else {
            switch (m.flags) {
#define OPTIM_HD_CASE(F)                                                                           \
    case (F):                                                                                      \
        r = reduce_elements<T, (F), Mode == kNorms>(p, g, sgd_heavy_ball(F) ? buf : prev,          \
                                                    ch.begin, ch.end, m.coeffs);                   \
        break;
                OPTIM_SGD_FLAG_LIST(OPTIM_HD_CASE)
#undef OPTIM_HD_CASE
            default:
                break;
            }
        }
        r = block_sum(r);
        if (threadIdx.x == 0) records[ch.index] = HdRecord{r.h, r.gg, r.uu, r.nonfinite, m.slot};
    }
};

// ---- Finish ------------------------------------------------------------------------------------

// One block. Records are in tensor order and slots are non-decreasing in tensor order (group_index
// is validated to be non-decreasing), so the records of one slot are contiguous: each thread finds
// its slots' ranges by binary search and sums them in record order, like the CPU's piece order. A
// slot without records (only empty tensors) gets zero sums, as on the CPU.
__global__ void __launch_bounds__(kFinishThreads)
    hd_finish_kernel(const HdRecord* records, int64_t n_records, int64_t slots, double* rates,
                     int64_t* skipped, int* skip_flag, HdCoeffs<double> hc, int check)
{
    __shared__ double bad[kFinishThreads];
    double b = 0;
    for (int64_t i = threadIdx.x; i < n_records; i += kFinishThreads) b += records[i].nonfinite;
    bad[threadIdx.x] = b;
    __syncthreads();
    for (int width = kFinishThreads / 2; width > 0; width >>= 1) {
        if (static_cast<int>(threadIdx.x) < width) bad[threadIdx.x] += bad[threadIdx.x + width];
        __syncthreads();
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
        double h = 0, gg = 0, uu = 0;
        for (int64_t i = lo; i < n_records && records[i].slot == s; ++i) {
            h += records[i].h;
            gg += records[i].gg;
            uu += records[i].uu;
        }
        rates[s] = hd_rate<double>(rates[s], h, sqrt(gg) * sqrt(uu), hc);
    }
}

// ---- Update ------------------------------------------------------------------------------------

template <typename T, unsigned Flags, bool PerParameter>
__device__ __forceinline__ void
update_elements(T* __restrict p, const T* __restrict g, T* __restrict buf, T* __restrict up,
                T* __restrict alpha, int64_t begin, int64_t end, bool fresh, const SgdCoeffs<T>& c,
                T lr, const HdCoeffs<T>& hc)
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
            hd_per_parameter_element<T, Flags>(pi, g[i], bi, ui, ai, fresh, c, hc);
            alpha[i] = ai;
        } else {
            hd_update_element<T, Flags>(pi, g[i], bi, ui, fresh, c, lr);
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

    __device__ void operator()(const typename HdTables<T>::Table& table, const Chunk& ch) const
    {
        const HdMeta<T>& m = table.meta[ch.t];
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
                                              m.coeffs, lr, hc);                                   \
        break;
            OPTIM_SGD_FLAG_LIST(OPTIM_HD_CASE)
#undef OPTIM_HD_CASE
        default:
            break;
        }
    }
};

// ---- Host side ---------------------------------------------------------------------------------

// Per-device scratch: the skip flag, then the records. Grown (never shrunk or freed per step) when
// a step has more chunks than it holds. The mutex is held for a whole step, from sizing the scratch
// to the last launch: two threads stepping on one device share this memory, and holding it makes
// each step's launches consecutive on the (shared) legacy default stream.
struct Scratch {
    std::mutex mutex;
    void* data = nullptr;
    size_t bytes = 0;
};
constexpr size_t kRecordsOffset = 256; // the skip flag lives at offset 0

Scratch& scratch_for(int device)
{
    static const int devices = device_count();
    static const std::unique_ptr<Scratch[]> all(new Scratch[devices > 0 ? devices : 1]);
    return all[device];
}

// Caller holds s.mutex and has made the device current.
void reserve(Scratch& s, int64_t records, const char* fn)
{
    const size_t need = kRecordsOffset + sizeof(HdRecord) * static_cast<size_t>(records);
    if (s.bytes >= need) return;
    const size_t bytes = need > 2 * s.bytes ? need : 2 * s.bytes;
    void* data = nullptr;
    const cudaError_t e = cudaMalloc(&data, bytes);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        fail(OPTIM_STATUS_OUT_OF_MEMORY, std::string(fn) + ": out of device memory (" +
                                             std::to_string(bytes) + " bytes of scratch)");
    }
    check(e, fn, "cudaMalloc (scratch)");
    if (s.data != nullptr) {
        // cudaFree waits for the device, so earlier steps' kernels are done with the old buffer.
        if (cudaFree(s.data) != cudaSuccess) cudaGetLastError();
    }
    s.data = data;
    s.bytes = bytes;
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

    Scratch& s = scratch_for(device_index);
    std::lock_guard<std::mutex> lock(s.mutex);
    reserve(s, tables.chunks(), fn);
    int* skip_flag = static_cast<int*>(s.data);
    HdRecord* recs = reinterpret_cast<HdRecord*>(static_cast<char*>(s.data) + kRecordsOffset);

    // The caller vouches for the gradients (assume_finite): the per-parameter scope then needs no
    // reduction at all, and the finishing kernel, given no records, only clears the skip flag.
    const bool check_finite = hp.assume_finite == 0;
    const bool reduce = check_finite || !per_parameter;
    static const char* reduce_launch = "reduction kernel launch";
    if (reduce && per_parameter)
        tables.launch(HdReduceFunctor<T, kOnlyFiniteness>{recs}, nullptr, fn, reduce_launch);
    else if (reduce && norms)
        tables.launch(HdReduceFunctor<T, kNorms>{recs}, nullptr, fn, reduce_launch);
    else if (reduce)
        tables.launch(HdReduceFunctor<T, kDotOnly>{recs}, nullptr, fn, reduce_launch);
    hd_finish_kernel<<<1, kFinishThreads, 0, 0>>>(recs, reduce ? tables.chunks() : 0, slots,
                                                  call.rates, call.skipped, skip_flag, hc,
                                                  check_finite ? 1 : 0);
    check(cudaGetLastError(), fn, "finishing kernel launch");
    if (per_parameter)
        tables.launch(HdUpdateFunctor<T, true>{call.rates, hc_t}, skip_flag, fn,
                      "update kernel launch");
    else
        tables.launch(HdUpdateFunctor<T, false>{call.rates, hc_t}, skip_flag, fn,
                      "update kernel launch");
}

} // namespace

void hd_step(int device_index, int32_t dtype, const HdCall& call)
{
    static const char* fn = "optim_hd_step";
    require_device(device_index, fn);
    DeviceGuard guard(device_index, fn);
    if (dtype == OPTIM_DTYPE_FLOAT32)
        hd_typed<float>(device_index, call, fn);
    else
        hd_typed<double>(device_index, call, fn);
}

} // namespace optim::cuda
