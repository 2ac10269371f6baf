// The CPU path of hypergradient Adam: hypergradient SGD's reduction pass and finish
// (hd_reduce.hpp: g~ is Adam's gradient, u_prev the previous Adam direction), then one update pass
// whose per-element math is hd_adam_math.hpp's. Global, per-group and per-tensor scopes move their
// rates in the finish; the per-parameter scope moves each element's rate in the update pass, after
// a finiteness pass (none when the caller vouches for the gradients and nothing is clipped).
// 16-bit parameters and gradients are read into float32 with float32 state, as hd_cpu.cpp's (in
// place, or through master copies). Bytes per element, scalar scope, no weight decay (reduction +
// update): float32 8 + 32, 16-bit in place 6 + 26, master weights 6 + 32 (docs/design.md).
#include "../hd_adam_math.hpp"
#include "hd_reduce.hpp"

#include <vector>

namespace optim::cpu {

namespace {

// What a tensor's pieces need: its group's flags, its coefficients at its own step (step_size
// holds rate / (1 - beta1^t) once the scalar rates are known) and 1 - beta1^t unrounded.
template <typename T>
struct HdAdamTensor {
    unsigned flags;
    AdamCoeffs<T> c;
    double bc1;
};

// P: the parameter's access (precision.hpp's ParamAccess), S the storage type, T the compute type.
template <typename S, unsigned Flags, class P, typename T = compute_t<S>>
OPTIM_CPU_CLONES void update_range(P p, const S* __restrict g, T* __restrict m, T* __restrict v,
                                   T* __restrict vmax, T* __restrict up, int64_t n,
                                   const AdamCoeffs<T>& c, T clip)
{
    T unused = T(0);
    for (int64_t i = 0; i < n; ++i) {
        T& w = (Flags & kAdamAmsgrad) ? vmax[i] : unused;
        T pi = p.load(i);
        hd_adam_element<T, Flags>(pi, load_value(g[i]) * clip, m[i], v[i], w, up[i], c);
        p.store(i, pi);
    }
}

// The rule is a template argument so that the additive rule's loop holds no division by the norms.
template <typename S, unsigned Flags, int Rule, class P, typename T = compute_t<S>>
OPTIM_CPU_CLONES void per_parameter_range(P p, const S* __restrict g, T* __restrict m,
                                          T* __restrict v, T* __restrict vmax, T* __restrict up,
                                          T* __restrict alpha, int64_t n, const AdamCoeffs<T>& c,
                                          double bc1, const HdCoeffs<T>& hc, T clip)
{
    T unused = T(0);
    for (int64_t i = 0; i < n; ++i) {
        T& w = (Flags & kAdamAmsgrad) ? vmax[i] : unused;
        T pi = p.load(i);
        hd_adam_per_parameter_element<T, Flags, Rule>(pi, load_value(g[i]) * clip, m[i], v[i], w,
                                                      up[i], alpha[i], c, bc1, hc);
        p.store(i, pi);
    }
}

template <typename S>
void hd_adam_step(const HdAdamCall& call)
{
    using T = compute_t<S>;
    const PrecisionCall precision(call.precision);
    static const char* fn = "optim_hd_adam_step";
    const optim_hd_adam_tensors& t = *call.tensors;
    const optim_hd_params& hp = *call.params;
    const bool per_parameter = hp.scope == OPTIM_HD_SCOPE_PER_PARAMETER;
    const bool norms = hp.rule == OPTIM_HD_RULE_NORMALIZED;
    // Per calling thread and reused, so a warm step allocates nothing; filled before any write.
    thread_local std::vector<HdAdamTensor<T>> tensors;
    tensors.resize(static_cast<size_t>(t.count));
    for (int64_t k = 0; k < t.count; ++k) {
        const optim_hd_adam_group& o = call.groups[t.group_index[k]];
        HdAdamTensor<T>& a = tensors[static_cast<size_t>(k)];
        a.flags = adam_flags(o.weight_decay, false, o.amsgrad != 0, o.maximize != 0);
        const int64_t step = t.steps ? t.steps[k] : *t.step_counts[k] + 1;
        a.c = adam_coeffs<T>(0.0, o.beta1, o.beta2, o.eps, o.weight_decay, step);
        a.bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
        if (!dispatch_adam_flags(a.flags, [](auto) {}))
            fail(OPTIM_STATUS_INTERNAL, std::string(fn) + ": unexpected flag combination");
    }
    HdAdamTensor<T>* A = tensors.data();

    WorkPlan& plan = WorkPlan::for_this_thread();
    plan.build(t.numels, t.count);
    // A reference: worker threads must see the caller's vector, not their own thread_local copy.
    thread_local std::vector<HdPartial> partials_storage;
    std::vector<HdPartial>& partials = partials_storage;
    partials.assign(static_cast<size_t>(plan.pieces()), HdPartial{});

    // Pass 1: hypergradient SGD's reduction with Adam's gradient and u_prev.
    const bool clip = call.clip != nullptr;
    if (hp.assume_finite == 0 || !per_parameter || clip)
        plan.parallel_for_pieces([&](const Piece& piece) {
            const HdAdamTensor<T>& a = A[piece.tensor];
            const SgdCoeffs<T> sc = hd_adam_grad_coeffs(a.c);
            dispatch_sgd_flags(hd_adam_grad_flags(a.flags), [&](auto F) {
                constexpr unsigned Flags = decltype(F)::value;
                const S* g = piece.at<const S>(t.grads);
                const T* up = piece.at<const T>(t.prev_updates);
                HdPartial& part = partials[static_cast<size_t>(piece.index)];
                // The parameter as the update reads it: the master copy, or the parameter.
                if (precision.master != nullptr)
                    part =
                        hd_reduce_piece<Flags>(piece.at<const T>(precision.master), g, up,
                                               piece.length, sc, T(1), norms, per_parameter, clip);
                else
                    part = hd_reduce_piece<Flags>(piece.at<const S>(t.params), g, up, piece.length,
                                                  sc, T(1), norms, per_parameter, clip);
            });
        });

    // Finish: skip, norm, and the scalar scopes' new rates.
    T coef = T(1);
    if (!hd_finish<T>(call.fn, plan, partials, hp, call.n_groups, t.group_index, call.rates,
                      call.skipped, call.clip, nullptr, &coef))
        return;
    if (!per_parameter)
        for (int64_t k = 0; k < t.count; ++k) {
            HdAdamTensor<T>& a = A[k];
            const double rate = call.rates[hd_rate_slot(hp.scope, t.group_index, k)];
            a.c.step_size = static_cast<T>(rate / a.bc1);
        }

    // Pass 2: the update.
    const HdCoeffs<T> hc = hd_coeffs<T>(hp);
    plan.parallel_for_pieces([&](const Piece& piece) {
        const HdAdamTensor<T>& a = A[piece.tensor];
        const S* g = piece.at<const S>(t.grads);
        T* m = piece.at<T>(t.exp_avgs);
        T* v = piece.at<T>(t.exp_avg_sqs);
        T* vmax = (a.flags & kAdamAmsgrad) ? piece.at<T>(t.max_exp_avg_sqs) : nullptr;
        T* up = piece.at<T>(t.prev_updates);
        const int64_t n = piece.length;
        dispatch_precision<S>(precision, [&](auto master, auto round) {
            constexpr bool Master = decltype(master)::value;
            constexpr int Round = decltype(round)::value;
            const ParamAccess<S, Master, Round> p{piece.at<S>(t.params),
                                                  Master ? piece.at<T>(precision.master) : nullptr,
                                                  precision.key(piece.tensor), piece.begin};
            dispatch_adam_flags(a.flags, [&](auto F) {
                constexpr unsigned Flags = decltype(F)::value;
                if (!per_parameter) {
                    update_range<S, Flags>(p, g, m, v, vmax, up, n, a.c, coef);
                    return;
                }
                T* alpha = piece.at<T>(t.param_rates);
                if (norms)
                    per_parameter_range<S, Flags, kHdNormalized>(p, g, m, v, vmax, up, alpha, n,
                                                                 a.c, a.bc1, hc, coef);
                else
                    per_parameter_range<S, Flags, kHdAdditive>(p, g, m, v, vmax, up, alpha, n, a.c,
                                                               a.bc1, hc, coef);
            });
        });
    });
    if (t.step_counts) // an entry without elements takes no step
        for (int64_t k = 0; k < t.count; ++k) *t.step_counts[k] += t.numels[k] > 0 ? 1 : 0;
}

} // namespace

void hd_adam_step_f32(const HdAdamCall& call)
{
    hd_adam_step<float>(call);
}
void hd_adam_step_f64(const HdAdamCall& call)
{
    hd_adam_step<double>(call);
}
void hd_adam_step_f16(const HdAdamCall& call)
{
    hd_adam_step<Half>(call);
}
void hd_adam_step_bf16(const HdAdamCall& call)
{
    hd_adam_step<BFloat16>(call);
}

} // namespace optim::cpu
