// The CUDA path of hypergradient descent (cpu/hd_cpu.cpp is the CPU twin; optim.h states the
// semantics). Three kernel kinds on the legacy default stream, with no host round trip:
//   pass 1  one block per piece (a tensor's chunk of kChunk elements): the piece's partial sums in
//           double (h = sum g~ u_prev, |g~|^2, |u_prev|^2, non-finite raw gradients), reduced in a
//           fixed tree and written to one record of a per-device scratch array (no atomics);
//   finish  one block: the non-finite total (fixed tree) decides whether the step is skipped (a
//           device flag, and the caller's skip counter); otherwise each rate slot sums its records
//           in record order and gets its new rate from hd_rate<double>;
//   pass 2  returns at once when the flag is set, else the update with the new rates
//           (hd_update_element), or for the per-parameter scope hd_per_parameter_element.
// Many tensors per launch, as in sgd_cuda.cu: a kernel-argument table of tensors and a block ->
// (tensor, chunk) map. Tensors of different param groups share a launch, so the table carries each
// tensor's flags and coefficients and the kernels switch on the flags (uniform per block). Every
// per-element operation is hd_math.hpp's / sgd_math.hpp's. Compiled in CI; see docs/design.md for
// what has run on a GPU.
#include "../hd_math.hpp"
#include "cuda_util.cuh"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace optim::cuda {

namespace {

constexpr int kMaxTensors = 24;
constexpr int kMaxBlocks = 320;
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kFinishThreads = 256;
constexpr int64_t kChunk = 64 * 1024; // elements per piece (one block)

// hd_heavy_ball<Flags>() is a host-only constexpr function, which device code may not call without
// --expt-relaxed-constexpr; this is the same predicate for the kernels, checked against it below.
template <unsigned Flags>
constexpr bool kHeavyBall = (Flags & kSgdMomentum) && !(Flags & kSgdNesterov);

constexpr bool heavy_ball(unsigned flags)
{
    return (flags & kSgdMomentum) && !(flags & kSgdNesterov);
}

// The 12 reachable flag combinations (Nesterov implies momentum), as dispatch_sgd_flags lists them.
#define OPTIM_HD_FLAG_CASES(X)                                                                     \
    X(0)                                                                                           \
    X(kSgdMomentum)                                                                                \
    X(kSgdMomentum | kSgdNesterov)                                                                 \
    X(kSgdWeightDecay)                                                                             \
    X(kSgdMomentum | kSgdWeightDecay)                                                              \
    X(kSgdMomentum | kSgdNesterov | kSgdWeightDecay)                                               \
    X(kSgdMaximize)                                                                                \
    X(kSgdMomentum | kSgdMaximize)                                                                 \
    X(kSgdMomentum | kSgdNesterov | kSgdMaximize)                                                  \
    X(kSgdWeightDecay | kSgdMaximize)                                                              \
    X(kSgdMomentum | kSgdWeightDecay | kSgdMaximize)                                               \
    X(kSgdMomentum | kSgdNesterov | kSgdWeightDecay | kSgdMaximize)

#define OPTIM_HD_CHECK_HEAVY_BALL(F)                                                               \
    static_assert(kHeavyBall<(F)> == hd_heavy_ball<(F)>() && heavy_ball(F) == kHeavyBall<(F)>,     \
                  "heavy-ball predicate differs from hd_math.hpp's");
OPTIM_HD_FLAG_CASES(OPTIM_HD_CHECK_HEAVY_BALL)
#undef OPTIM_HD_CHECK_HEAVY_BALL

// One piece's partial sums (pass 1 output, finish input). slot: the piece's rate slot.
struct HdRecord {
    double h;
    double gg;
    double uu;
    double nonfinite;
    int64_t slot;
};

// Kernel-argument table: the tensors of one launch and which tensor/chunk each block handles.
template <typename T>
struct HdTable {
    void* params[kMaxTensors];
    const void* grads[kMaxTensors];
    void* bufs[kMaxTensors];        // momentum buffer (momentum), else null
    void* prev[kMaxTensors];        // prev_updates (no heavy-ball momentum), else null
    void* param_rates[kMaxTensors]; // per-parameter scope, else null
    int64_t numels[kMaxTensors];
    int64_t slot[kMaxTensors]; // rate slot (scalar scopes)
    SgdCoeffs<T> coeffs[kMaxTensors];
    unsigned flags[kMaxTensors];
    unsigned char fresh[kMaxTensors]; // momentum buffer without history
    unsigned char block_tensor[kMaxBlocks];
    int32_t block_chunk[kMaxBlocks];
    int64_t first_record; // record index of block 0 (pieces are numbered across launches)
    int32_t tensors;      // host bookkeeping
    int32_t blocks;
};
// Kernel arguments are limited to 4 KiB (CUDA 11); the other arguments take < 100 bytes.
static_assert(sizeof(HdTable<double>) <= 3900, "kernel arguments are limited to 4 KiB");

// ---- Pass 1 ------------------------------------------------------------------------------------

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
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
        const T gi = g[i];
        r.nonfinite += (gi - gi == T(0)) ? 0.0 : 1.0;
    }
    return r;
}

// Partial sums of this thread's elements of one piece, in the CPU's arithmetic: g~ in the element
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
            r.nonfinite += (gi - gi == T(0)) ? 0.0 : 1.0;
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
            r.nonfinite += (gi - gi == T(0)) ? 0.0 : 1.0;
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
__global__ void __launch_bounds__(kThreads) hd_reduce_kernel(HdTable<T> table, HdRecord* records)
{
    const int t = table.block_tensor[blockIdx.x];
    const int64_t begin = static_cast<int64_t>(table.block_chunk[blockIdx.x]) * kChunk;
    const int64_t n = table.numels[t];
    const int64_t end = begin + kChunk < n ? begin + kChunk : n;
    const T* p = static_cast<const T*>(table.params[t]);
    const T* g = static_cast<const T*>(table.grads[t]);
    const T* buf = table.fresh[t] ? nullptr : static_cast<const T*>(table.bufs[t]);
    const T* prev = static_cast<const T*>(table.prev[t]);
    const SgdCoeffs<T> c = table.coeffs[t];
    HdPartial r;
    if constexpr (Mode == kOnlyFiniteness) {
        r = count_nonfinite<T>(g, begin, end);
    } else {
        switch (table.flags[t]) {
#define OPTIM_HD_CASE(F)                                                                           \
    case (F):                                                                                      \
        r = reduce_elements<T, (F), Mode == kNorms>(p, g, kHeavyBall<(F)> ? buf : prev, begin,     \
                                                    end, c);                                       \
        break;
            OPTIM_HD_FLAG_CASES(OPTIM_HD_CASE)
#undef OPTIM_HD_CASE
        default:
            break;
        }
    }
    r = block_sum(r);
    if (threadIdx.x == 0)
        records[table.first_record + blockIdx.x] =
            HdRecord{r.h, r.gg, r.uu, r.nonfinite, table.slot[t]};
}

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

// ---- Pass 2 ------------------------------------------------------------------------------------

template <typename T, unsigned Flags, bool PerParameter>
__device__ __forceinline__ void
update_elements(T* __restrict p, const T* __restrict g, T* __restrict buf, T* __restrict up,
                T* __restrict alpha, int64_t begin, int64_t end, bool fresh, const SgdCoeffs<T>& c,
                T lr, const HdCoeffs<T>& hc)
{
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
        T pi = p[i];
        // A fresh buffer is never read (it may hold anything); u_prev is read only by the
        // per-parameter rule, hd_update_element only writes it.
        T bi = ((Flags & kSgdMomentum) && !fresh) ? buf[i] : T(0);
        T ui = (PerParameter && !kHeavyBall<Flags>) ? up[i] : T(0);
        if constexpr (PerParameter) {
            T ai = alpha[i];
            hd_per_parameter_element<T, Flags>(pi, g[i], bi, ui, ai, fresh, c, hc);
            alpha[i] = ai;
        } else {
            hd_update_element<T, Flags>(pi, g[i], bi, ui, fresh, c, lr);
        }
        if (Flags & kSgdMomentum) buf[i] = bi;
        if (!kHeavyBall<Flags>) up[i] = ui;
        p[i] = pi;
    }
}

template <typename T, bool PerParameter>
__global__ void __launch_bounds__(kThreads)
    hd_update_kernel(HdTable<T> table, const double* rates, const int* skip_flag, HdCoeffs<T> hc)
{
    if (*skip_flag != 0) return;
    const int t = table.block_tensor[blockIdx.x];
    const int64_t begin = static_cast<int64_t>(table.block_chunk[blockIdx.x]) * kChunk;
    const int64_t n = table.numels[t];
    const int64_t end = begin + kChunk < n ? begin + kChunk : n;
    T* p = static_cast<T*>(table.params[t]);
    const T* g = static_cast<const T*>(table.grads[t]);
    T* buf = static_cast<T*>(table.bufs[t]);
    T* up = static_cast<T*>(table.prev[t]);
    T* alpha = static_cast<T*>(table.param_rates[t]);
    const bool fresh = table.fresh[t] != 0;
    const SgdCoeffs<T> c = table.coeffs[t];
    const T lr = PerParameter ? T(0) : static_cast<T>(rates[table.slot[t]]);
    switch (table.flags[t]) {
#define OPTIM_HD_CASE(F)                                                                           \
    case (F):                                                                                      \
        update_elements<T, (F), PerParameter>(p, g, buf, up, alpha, begin, end, fresh, c, lr, hc); \
        break;
        OPTIM_HD_FLAG_CASES(OPTIM_HD_CASE)
#undef OPTIM_HD_CASE
    default:
        break;
    }
}

// ---- Host side ---------------------------------------------------------------------------------

// Per-device scratch: the skip flag, then the records. Grown (never shrunk or freed per step) when
// a step has more pieces than it holds. The mutex is held for a whole step, from sizing the scratch
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
    thread_local std::vector<SgdCoeffs<T>> coeffs;
    thread_local std::vector<unsigned> flags;
    coeffs.clear();
    flags.clear();
    for (int32_t i = 0; i < call.n_groups; ++i) {
        const optim_hd_group& g = call.groups[i];
        coeffs.push_back(SgdCoeffs<T>{static_cast<T>(g.momentum), static_cast<T>(1.0 - g.dampening),
                                      static_cast<T>(g.weight_decay)});
        const unsigned f = sgd_flags(g.momentum, g.weight_decay, g.nesterov != 0, g.maximize != 0);
        if (!dispatch_sgd_flags(f, [](auto) {}))
            fail(OPTIM_STATUS_INTERNAL, std::string(fn) + ": unexpected flag combination");
        flags.push_back(f);
    }

    // The launch tables; pieces are numbered in tensor order, then chunk order.
    thread_local std::vector<HdTable<T>> tables;
    tables.clear();
    int64_t records = 0;
    for (int64_t k = 0; k < t.count; ++k) {
        const int64_t n = t.numels[k];
        if (n == 0) continue;
        const auto gi = static_cast<size_t>(t.group_index[k]);
        const unsigned f = flags[gi];
        const int64_t chunks = (n + kChunk - 1) / kChunk;
        for (int64_t ch = 0; ch < chunks; ++ch) {
            if (tables.empty() || tables.back().blocks == kMaxBlocks ||
                (ch == 0 && tables.back().tensors == kMaxTensors)) {
                tables.emplace_back(); // zero-initialised
                tables.back().first_record = records;
            }
            HdTable<T>& tb = tables.back();
            // The tensor enters the table on its first chunk, and again in a new table.
            if (ch == 0 || tb.tensors == 0) {
                const int j = tb.tensors++;
                tb.params[j] = t.params[k];
                tb.grads[j] = t.grads[k];
                tb.bufs[j] = (f & kSgdMomentum) ? t.momentum_buffers[k] : nullptr;
                tb.prev[j] = heavy_ball(f) ? nullptr : t.prev_updates[k];
                tb.param_rates[j] = per_parameter ? t.param_rates[k] : nullptr;
                tb.numels[j] = n;
                tb.slot[j] = per_parameter ? 0 : hd_rate_slot(hp.scope, t, k);
                tb.coeffs[j] = coeffs[gi];
                tb.flags[j] = f;
                tb.fresh[j] =
                    ((f & kSgdMomentum) && t.buffer_fresh != nullptr && t.buffer_fresh[k] != 0) ? 1
                                                                                                : 0;
            }
            tb.block_tensor[tb.blocks] = static_cast<unsigned char>(tb.tensors - 1);
            tb.block_chunk[tb.blocks] = static_cast<int32_t>(ch);
            ++tb.blocks;
            ++records;
        }
    }

    const int64_t slots = per_parameter                          ? 0
                          : hp.scope == OPTIM_HD_SCOPE_GLOBAL    ? 1
                          : hp.scope == OPTIM_HD_SCOPE_PER_GROUP ? call.n_groups
                                                                 : t.count;
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
    reserve(s, records, fn);
    int* skip_flag = static_cast<int*>(s.data);
    HdRecord* recs = reinterpret_cast<HdRecord*>(static_cast<char*>(s.data) + kRecordsOffset);

    // The caller vouches for the gradients (assume_finite): the per-parameter scope then needs no
    // reduction at all, and the finishing kernel, given no records, only clears the skip flag.
    const bool check_finite = hp.assume_finite == 0;
    const bool reduce = check_finite || !per_parameter;
    for (const HdTable<T>& tb : tables) {
        if (!reduce) break;
        if (per_parameter)
            hd_reduce_kernel<T, kOnlyFiniteness><<<tb.blocks, kThreads, 0, 0>>>(tb, recs);
        else if (norms)
            hd_reduce_kernel<T, kNorms><<<tb.blocks, kThreads, 0, 0>>>(tb, recs);
        else
            hd_reduce_kernel<T, kDotOnly><<<tb.blocks, kThreads, 0, 0>>>(tb, recs);
        check(cudaGetLastError(), fn, "reduction kernel launch");
    }
    hd_finish_kernel<<<1, kFinishThreads, 0, 0>>>(recs, reduce ? records : 0, slots, call.rates,
                                                  call.skipped, skip_flag, hc,
                                                  check_finite ? 1 : 0);
    check(cudaGetLastError(), fn, "finishing kernel launch");
    for (const HdTable<T>& tb : tables) {
        if (per_parameter)
            hd_update_kernel<T, true>
                <<<tb.blocks, kThreads, 0, 0>>>(tb, call.rates, skip_flag, hc_t);
        else
            hd_update_kernel<T, false>
                <<<tb.blocks, kThreads, 0, 0>>>(tb, call.rates, skip_flag, hc_t);
        check(cudaGetLastError(), fn, "update kernel launch");
    }
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
