// The CUDA path of hypergradient Adam (cpu/hd_adam_cpu.cpp is the CPU twin; optim.h states the
// semantics). Hypergradient SGD's reduction pass and finishing kernel (hd_reduce.cuh), with Adam's
// gradient and u_prev the previous Adam direction, then one multi-tensor launch of the update
// (hd_adam_math.hpp) with the skip flag as its no-op flag. Each block reads its tensor's scalar
// rate from device memory and divides it by 1 - beta1^t, so no step waits for the host; with step
// counts in device memory a last launch advances them unless the step was skipped. 16-bit
// parameters are read into float32 with float32 state, in place or through master copies, as
// hd_cuda.cu's. Compiled in CI; see docs/design.md for what has run on a GPU.
#include "../hd_adam_math.hpp"
#include "hd_reduce.cuh"
#include "step_counts.cuh"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace optim::cuda {

namespace {

// Per tensor: its coefficients at its own step (step_size unused: it comes from the rate), 1 -
// beta1^t unrounded, its Adam flags, its rate slot (scalar scopes) and its stochastic rounding key;
// with step counts in device memory, where its count is and its group's betas, from which each
// block computes the step's coefficients.
template <typename T>
struct HdAdamMeta {
    AdamCoeffs<T> c;
    double bc1;
    int64_t slot;
    unsigned flags;
    uint64_t key;
    const int64_t* count; // the steps taken so far (step_counts), else null
    double beta1, beta2;
};
// parameter, gradient, exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad, else null), u_prev,
// per-parameter rates (that scope, else null), master copy (master weights, else null)
enum HdAdamList { kParam, kGrad, kAvg, kAvgSq, kMaxAvgSq, kPrev, kRates, kMaster, kLists };
template <typename T>
using HdAdamTables = TensorTables<kLists, HdAdamMeta<T>>;

// S: the parameters' storage type; Master: the reduction reads the master copy.
template <typename S, bool Master, int Mode, bool Clip>
struct HdAdamReduceFunctor {
    using T = compute_t<S>;
    HdRecord* records;

    __device__ void operator()(const typename HdAdamTables<T>::Table& table, const Chunk& ch) const
    {
        const HdAdamMeta<T>& m = table.meta[ch.t];
        const S* g = static_cast<const S*>(table.ptr[kGrad][ch.t]);
        const T* up = static_cast<const T*>(table.ptr[kPrev][ch.t]);
        const unsigned flags = hd_adam_grad_flags(m.flags);
        const SgdCoeffs<T> c = hd_adam_grad_coeffs(m.c);
        HdPartial r;
        if constexpr (Master)
            r = hd_reduce_chunk<Mode, Clip>(flags, static_cast<const T*>(table.ptr[kMaster][ch.t]),
                                            g, up, ch.begin, ch.end, c, T(1));
        else
            r = hd_reduce_chunk<Mode, Clip>(flags, static_cast<const S*>(table.ptr[kParam][ch.t]),
                                            g, up, ch.begin, ch.end, c, T(1));
        if (threadIdx.x == 0) records[ch.index] = HdRecord{r, m.slot};
    }
};

template <typename S, bool Master, int Round, unsigned Flags, bool PerParameter,
          typename T = compute_t<S>>
__device__ __forceinline__ void update_elements(const typename HdAdamTables<T>::Table& table,
                                                const Chunk& ch, const AdamCoeffs<T>& c, double bc1,
                                                const HdCoeffs<T>& hc, T clip, uint64_t key)
{
    const ParamAccess<S, Master, Round> p{static_cast<S*>(table.ptr[kParam][ch.t]),
                                          static_cast<T*>(table.ptr[kMaster][ch.t]), key, 0};
    const S* __restrict g = static_cast<const S*>(table.ptr[kGrad][ch.t]);
    T* __restrict m = static_cast<T*>(table.ptr[kAvg][ch.t]);
    T* __restrict v = static_cast<T*>(table.ptr[kAvgSq][ch.t]);
    T* __restrict vmax = static_cast<T*>(table.ptr[kMaxAvgSq][ch.t]);
    T* __restrict up = static_cast<T*>(table.ptr[kPrev][ch.t]);
    T* __restrict alpha = static_cast<T*>(table.ptr[kRates][ch.t]);
    struct Inputs {
        T p, g, m, v, w, u, a;
    };
    for_each_element(
        ch.begin, ch.end,
        [&](int64_t i) {
            // u_prev and the rate are read only by the per-parameter rule; hd_adam_element only
            // writes u.
            return Inputs{p.load(i),
                          load_value(g[i]),
                          m[i],
                          v[i],
                          (Flags & kAdamAmsgrad) ? vmax[i] : T(0),
                          PerParameter ? up[i] : T(0),
                          PerParameter ? alpha[i] : T(0)};
        },
        [&](int64_t i, Inputs in) {
            const T gi = in.g * clip;
            if constexpr (PerParameter) {
                hd_adam_per_parameter_element<T, Flags>(in.p, gi, in.m, in.v, in.w, in.u, in.a, c,
                                                        bc1, hc);
                alpha[i] = in.a;
            } else {
                hd_adam_element<T, Flags>(in.p, gi, in.m, in.v, in.w, in.u, c);
            }
            p.store(i, in.p);
            m[i] = in.m;
            v[i] = in.v;
            up[i] = in.u;
            if (Flags & kAdamAmsgrad) vmax[i] = in.w;
        });
}

template <typename S, bool Master, int Round, bool PerParameter>
struct HdAdamUpdateFunctor {
    using T = compute_t<S>;
    const double* rates; // device memory: the scalar scopes' rates, after the finish kernel
    HdCoeffs<T> hc;
    const double* norm; // clipping: the gradients' norm in device memory, else null
    double max_norm;

    __device__ void operator()(const typename HdAdamTables<T>::Table& table, const Chunk& ch) const
    {
        const HdAdamMeta<T>& m = table.meta[ch.t];
        const T clip = clip_factor<T>(norm, max_norm);
        AdamCoeffs<T> c = m.c;
        double bc1 = m.bc1;
        if (m.count != nullptr) {
            const int64_t step = *m.count + 1;
            adam_step_coeffs(c, 0.0, m.beta1, m.beta2, step);
            bc1 = 1.0 - pow(m.beta1, static_cast<double>(step));
        }
        if (!PerParameter) c.step_size = static_cast<T>(rates[m.slot] / bc1);
        switch (m.flags) {
#define OPTIM_HD_ADAM_CASE(F)                                                                      \
    case (F):                                                                                      \
        update_elements<S, Master, Round, (F), PerParameter>(table, ch, c, bc1, hc, clip, m.key);  \
        break;
            OPTIM_HD_ADAM_CASE(0)
            OPTIM_HD_ADAM_CASE(kAdamWeightDecay)
            OPTIM_HD_ADAM_CASE(kAdamAmsgrad)
            OPTIM_HD_ADAM_CASE(kAdamWeightDecay | kAdamAmsgrad)
            OPTIM_HD_ADAM_CASE(kAdamMaximize)
            OPTIM_HD_ADAM_CASE(kAdamWeightDecay | kAdamMaximize)
            OPTIM_HD_ADAM_CASE(kAdamAmsgrad | kAdamMaximize)
            OPTIM_HD_ADAM_CASE(kAdamWeightDecay | kAdamAmsgrad | kAdamMaximize)
#undef OPTIM_HD_ADAM_CASE
        default:
            break;
        }
    }
};

// The reduction launch of a mode (ReduceMode), with or without the clipping sums.
template <typename S, bool Master, typename T = compute_t<S>>
void launch_reduce(const HdAdamTables<T>& tables, HdRecord* recs, int mode, bool clip,
                   const char* fn)
{
    static const char* what = "reduction kernel launch";
    auto go = [&](auto functor) { tables.launch(functor, nullptr, fn, what); };
    if (mode == kOnlyFiniteness)
        clip ? go(HdAdamReduceFunctor<S, Master, kOnlyFiniteness, true>{recs})
             : go(HdAdamReduceFunctor<S, Master, kOnlyFiniteness, false>{recs});
    else if (mode == kNorms)
        clip ? go(HdAdamReduceFunctor<S, Master, kNorms, true>{recs})
             : go(HdAdamReduceFunctor<S, Master, kNorms, false>{recs});
    else
        clip ? go(HdAdamReduceFunctor<S, Master, kDotOnly, true>{recs})
             : go(HdAdamReduceFunctor<S, Master, kDotOnly, false>{recs});
}

template <typename S>
void hd_adam_typed(int device_index, const HdAdamCall& call, const char* fn)
{
    using T = compute_t<S>;
    const PrecisionCall precision(call.precision);
    const optim_hd_adam_tensors& t = *call.tensors;
    const optim_hd_params& hp = *call.params;
    const bool per_parameter = hp.scope == OPTIM_HD_SCOPE_PER_PARAMETER;
    const bool norms = hp.rule == OPTIM_HD_RULE_NORMALIZED;

    // The chunk tables; chunks (and so records) are numbered in tensor order, then chunk order.
    HdAdamTables<T>& tables = HdAdamTables<T>::for_this_thread();
    for (int64_t k = 0; k < t.count; ++k) {
        if (t.numels[k] == 0) continue; // its pointers may be null
        const optim_hd_adam_group& o = call.groups[t.group_index[k]];
        HdAdamMeta<T> m;
        m.flags = adam_flags(o.weight_decay, false, o.amsgrad != 0, o.maximize != 0);
        const int64_t step = t.steps ? t.steps[k] : 1; // with step_counts: set per block
        m.c = adam_coeffs<T>(0.0, o.beta1, o.beta2, o.eps, o.weight_decay, step);
        m.bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
        m.count = t.steps ? nullptr : t.step_counts[k];
        m.beta1 = o.beta1;
        m.beta2 = o.beta2;
        m.slot = hd_rate_slot(hp.scope, t.group_index, k);
        m.key = precision.key(k);
        if (!dispatch_adam_flags(m.flags, [](auto) {}))
            fail(OPTIM_STATUS_INTERNAL, std::string(fn) + ": unexpected flag combination");
        void* const ptrs[kLists] = {t.params[k],
                                    const_cast<void*>(t.grads[k]),
                                    t.exp_avgs[k],
                                    t.exp_avg_sqs[k],
                                    o.amsgrad ? t.max_exp_avg_sqs[k] : nullptr,
                                    t.prev_updates[k],
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

    const bool check_finite = hp.assume_finite == 0;
    const bool clip = call.clip != nullptr;
    const bool reduce = check_finite || !per_parameter || clip;
    const int mode = per_parameter ? kOnlyFiniteness : norms ? kNorms : kDotOnly;
    double* norm = clip ? call.clip->total_norm : nullptr;
    const double max_norm = clip ? call.clip->max_norm : 0.0;
    dispatch_precision<S>(precision, [&](auto master, auto round) {
        constexpr bool Master = decltype(master)::value;
        constexpr int Round = decltype(round)::value;
        if (reduce) launch_reduce<S, Master>(tables, recs, mode, clip, fn);
        hd_finish_kernel<T><<<1, kFinishThreads, 0, active_stream()>>>(
            recs, reduce ? tables.chunks() : 0, slots, call.rates, call.skipped, skip_flag, hc,
            check_finite ? 1 : 0, norm, max_norm, nullptr);
        check(cudaGetLastError(), fn, "finishing kernel launch");
        if (per_parameter)
            tables.launch(
                HdAdamUpdateFunctor<S, Master, Round, true>{call.rates, hc_t, norm, max_norm},
                skip_flag, fn, "update kernel launch");
        else
            tables.launch(
                HdAdamUpdateFunctor<S, Master, Round, false>{call.rates, hc_t, norm, max_norm},
                skip_flag, fn, "update kernel launch");
    });
    if (t.step_counts)
        advance_step_counts(t.step_counts, t.numels, t.count, nullptr, skip_flag, fn);
}

} // namespace

void hd_adam_step(int device_index, int32_t dtype, const HdAdamCall& call)
{
    on_device_storage(device_index, dtype, call.fn,
                      [&](auto s) { hd_adam_typed<decltype(s)>(device_index, call, call.fn); });
}

} // namespace optim::cuda
