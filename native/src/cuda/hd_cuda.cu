// The CUDA path of hypergradient descent (cpu/hd_cpu.cpp is the CPU twin; optim.h states the
// semantics). Three kernels on the caller's stream, with no host round trip:
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
// scaler's flag is set or a gradient is not finite (setting the flag). 16-bit parameters
// (precision.hpp) are read into float32 with float32 state, updated in place or through master
// copies (the reduction then reads the copy), as on the CPU. Compiled in CI; see docs/design.md for
// what has run on a GPU.
#include "../hd_math.hpp"
#include "hd_reduce.cuh"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace optim::cuda {

namespace {

// Per tensor: its group's coefficients and flags, its rate slot (scalar scopes), whether its
// momentum buffer has no history yet, and its stochastic rounding key.
template <typename T>
struct HdMeta {
    SgdCoeffs<T> coeffs;
    int64_t slot;
    unsigned flags;
    unsigned char fresh;
    uint64_t key;
};
// parameter, gradient, momentum buffer (momentum, else null), prev_updates (no heavy-ball momentum,
// else null), per-parameter rates (that scope, else null), master copy (master weights, else null)
enum HdList { kParam, kGrad, kBuf, kPrev, kRates, kMaster, kHdLists };
template <typename T>
using HdTables = TensorTables<kHdLists, HdMeta<T>>;

// S: the parameters' storage type; Master: the reduction reads the master copy.
template <typename S, bool Master, int Mode, bool Clip>
struct HdReduceFunctor {
    using T = compute_t<S>;
    HdRecord* records;
    const float* inv_scale; // a gradient scaler's, in device memory, else null

    __device__ void operator()(const typename HdTables<T>::Table& table, const Chunk& ch) const
    {
        const HdMeta<T>& m = table.meta[ch.t];
        const S* g = static_cast<const S*>(table.ptr[kGrad][ch.t]);
        const T* buf = m.fresh ? nullptr : static_cast<const T*>(table.ptr[kBuf][ch.t]);
        const T* prev = static_cast<const T*>(table.ptr[kPrev][ch.t]);
        const T* up = sgd_heavy_ball(m.flags) ? buf : prev;
        const T inv = scale_factor<T>(inv_scale);
        HdPartial r;
        if constexpr (Master)
            r = hd_reduce_chunk<Mode, Clip>(m.flags,
                                            static_cast<const T*>(table.ptr[kMaster][ch.t]), g, up,
                                            ch.begin, ch.end, m.coeffs, inv);
        else
            r = hd_reduce_chunk<Mode, Clip>(m.flags, static_cast<const S*>(table.ptr[kParam][ch.t]),
                                            g, up, ch.begin, ch.end, m.coeffs, inv);
        if (threadIdx.x == 0) records[ch.index] = HdRecord{r, m.slot};
    }
};

// ---- Update ------------------------------------------------------------------------------------

// P: the parameter's access (precision.hpp's ParamAccess), S its storage type, T the compute type.
template <typename S, unsigned Flags, bool PerParameter, class P, typename T = compute_t<S>>
__device__ __forceinline__ void
update_elements(P p, const S* __restrict g, T* __restrict buf, T* __restrict up,
                T* __restrict alpha, int64_t begin, int64_t end, bool fresh, const SgdCoeffs<T>& c,
                T lr, const HdCoeffs<T>& hc, T inv, T clip)
{
    constexpr bool heavy_ball = sgd_heavy_ball(Flags);
    struct Inputs {
        T p, g, b, u, a;
    };
    for_each_element(
        begin, end,
        [&](int64_t i) {
            // A fresh buffer is never read (it may hold anything); u_prev and the rate are read
            // only by the per-parameter rule, hd_update_element only writes u.
            return Inputs{
                p.load(i), load_value(g[i]), ((Flags & kSgdMomentum) && !fresh) ? buf[i] : T(0),
                (PerParameter && !heavy_ball) ? up[i] : T(0), PerParameter ? alpha[i] : T(0)};
        },
        [&](int64_t i, Inputs in) {
            const T gi = in.g * inv * clip;
            if constexpr (PerParameter) {
                hd_per_parameter_element<T, Flags>(in.p, gi, in.b, in.u, in.a, fresh, c, hc);
                alpha[i] = in.a;
            } else {
                hd_update_element<T, Flags>(in.p, gi, in.b, in.u, fresh, c, lr);
            }
            if (Flags & kSgdMomentum) buf[i] = in.b;
            if (!heavy_ball) up[i] = in.u;
            p.store(i, in.p);
        });
}

template <typename S, bool Master, int Round, bool PerParameter>
struct HdUpdateFunctor {
    using T = compute_t<S>;
    const double* rates; // device memory: the scalar scopes' rates, after the finish kernel
    HdCoeffs<T> hc;
    const double* norm; // clipping: the gradients' norm in device memory, else null
    double max_norm;
    const float* inv_scale; // a gradient scaler's, in device memory, else null

    __device__ void operator()(const typename HdTables<T>::Table& table, const Chunk& ch) const
    {
        const HdMeta<T>& m = table.meta[ch.t];
        const T clip = clip_factor<T>(norm, max_norm);
        const T inv = scale_factor<T>(inv_scale);
        const ParamAccess<S, Master, Round> p{static_cast<S*>(table.ptr[kParam][ch.t]),
                                              static_cast<T*>(table.ptr[kMaster][ch.t]), m.key, 0};
        const S* g = static_cast<const S*>(table.ptr[kGrad][ch.t]);
        T* buf = static_cast<T*>(table.ptr[kBuf][ch.t]);
        T* up = static_cast<T*>(table.ptr[kPrev][ch.t]);
        T* alpha = static_cast<T*>(table.ptr[kRates][ch.t]);
        const bool fresh = m.fresh != 0;
        const T lr = PerParameter ? T(0) : static_cast<T>(rates[m.slot]);
        switch (m.flags) {
#define OPTIM_HD_CASE(F)                                                                           \
    case (F):                                                                                      \
        update_elements<S, (F), PerParameter>(p, g, buf, up, alpha, ch.begin, ch.end, fresh,       \
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

// The reduction launch of a mode (ReduceMode), with or without the clipping sums.
template <typename S, bool Master, typename T = compute_t<S>>
void launch_reduce(const HdTables<T>& tables, HdRecord* recs, int mode, bool clip, const float* inv,
                   const char* fn)
{
    static const char* what = "reduction kernel launch";
    auto go = [&](auto functor) { tables.launch(functor, nullptr, fn, what); };
    if (mode == kOnlyFiniteness)
        clip ? go(HdReduceFunctor<S, Master, kOnlyFiniteness, true>{recs, inv})
             : go(HdReduceFunctor<S, Master, kOnlyFiniteness, false>{recs, inv});
    else if (mode == kNorms)
        clip ? go(HdReduceFunctor<S, Master, kNorms, true>{recs, inv})
             : go(HdReduceFunctor<S, Master, kNorms, false>{recs, inv});
    else
        clip ? go(HdReduceFunctor<S, Master, kDotOnly, true>{recs, inv})
             : go(HdReduceFunctor<S, Master, kDotOnly, false>{recs, inv});
}

template <typename S>
void hd_typed(int device_index, const HdCall& call, const char* fn)
{
    using T = compute_t<S>;
    const PrecisionCall precision(call.precision);
    const optim_hd_tensors& t = *call.tensors;
    const optim_hd_params& hp = *call.params;
    const bool per_parameter = hp.scope == OPTIM_HD_SCOPE_PER_PARAMETER;
    const bool norms = hp.rule == OPTIM_HD_RULE_NORMALIZED;

    // Each group's coefficients, rounded to the element type once, and flags.
    thread_local std::vector<HdMeta<T>> groups;
    groups.clear();
    for (int32_t i = 0; i < call.n_groups; ++i) {
        const SgdGroup<T> g = sgd_group<T>(call.groups[i], fn);
        groups.push_back(HdMeta<T>{g.c, 0, g.flags, 0, 0});
    }

    // The chunk tables; chunks (and so records) are numbered in tensor order, then chunk order.
    HdTables<T>& tables = HdTables<T>::for_this_thread();
    for (int64_t k = 0; k < t.count; ++k) {
        if (t.numels[k] == 0) continue; // its pointers may be null
        HdMeta<T> m = groups[static_cast<size_t>(t.group_index[k])];
        const bool momentum = (m.flags & kSgdMomentum) != 0;
        m.slot = hd_rate_slot(hp.scope, t.group_index, k);
        m.fresh = (momentum && t.buffer_fresh != nullptr && t.buffer_fresh[k] != 0) ? 1 : 0;
        m.key = precision.key(k);
        void* const ptrs[kHdLists] = {t.params[k],
                                      const_cast<void*>(t.grads[k]),
                                      momentum ? t.momentum_buffers[k] : nullptr,
                                      sgd_heavy_ball(m.flags) ? nullptr : t.prev_updates[k],
                                      per_parameter ? t.param_rates[k] : nullptr,
                                      precision.master ? precision.master[k] : nullptr};
        tables.add(ptrs, t.numels[k], m);
    }

    const int64_t slots = hd_slot_count(hp.scope, call.n_groups, t.count);
    const HdCoeffs<double> hc = hd_coeffs<double>(hp);
    const HdCoeffs<T> hc_t = hd_coeffs<T>(hp);

    const HdWorkspace work(device_index, tables.chunks(), fn);
    int* skip_flag = work.skip_flag;
    HdRecord* recs = work.recs;

    // The caller vouches for the gradients (assume_finite): the per-parameter scope then needs no
    // reduction at all, and the finishing kernel, given no records, only clears the skip flag.
    // A gradient scaler always checks (its flag reports the skip).
    const bool check_finite = hp.assume_finite == 0 || call.scale != nullptr;
    const bool clip = call.clip != nullptr;
    const bool reduce = check_finite || !per_parameter || clip;
    const int mode = per_parameter ? kOnlyFiniteness : norms ? kNorms : kDotOnly;
    const float* inv = call.scale ? call.scale->inv_scale : nullptr;
    float* found_inf = call.scale ? call.scale->found_inf : nullptr;
    double* norm = clip ? call.clip->total_norm : nullptr;
    const double max_norm = clip ? call.clip->max_norm : 0.0;
    dispatch_precision<S>(precision, [&](auto master, auto round) {
        constexpr bool Master = decltype(master)::value;
        constexpr int Round = decltype(round)::value;
        if (reduce) launch_reduce<S, Master>(tables, recs, mode, clip, inv, fn);
        hd_finish_kernel<T><<<1, kFinishThreads, 0, active_stream()>>>(
            recs, reduce ? tables.chunks() : 0, slots, call.rates, call.skipped, skip_flag, hc,
            check_finite ? 1 : 0, norm, max_norm, found_inf);
        check(cudaGetLastError(), fn, "finishing kernel launch");
        if (per_parameter)
            tables.launch(
                HdUpdateFunctor<S, Master, Round, true>{call.rates, hc_t, norm, max_norm, inv},
                skip_flag, fn, "update kernel launch");
        else
            tables.launch(
                HdUpdateFunctor<S, Master, Round, false>{call.rates, hc_t, norm, max_norm, inv},
                skip_flag, fn, "update kernel launch");
    });
}

} // namespace

void hd_step(int device_index, int32_t dtype, const HdCall& call)
{
    on_device_storage(device_index, dtype, call.fn,
                      [&](auto s) { hd_typed<decltype(s)>(device_index, call, call.fn); });
}

} // namespace optim::cuda
