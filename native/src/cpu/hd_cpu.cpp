// The CPU path of hypergradient descent. Global, per-group and per-tensor scopes: a reduction pass
// (per-piece partial sums in double; fp32 sums short blocks in float first), a serial finish that
// combines them in piece order and updates the rates, then the update pass with the new rates.
// Per-parameter scope: a finiteness pass over the gradients, then one elementwise pass. With
// clipping the reduction pass also sums the squared norm (the per-parameter scope then always makes
// it). With a gradient scaler every pass reads inv_scale * grad and the gradients are always
// checked. The reduction pass and the finish are hd_reduce.hpp's (shared with hypergradient Adam);
// every per-element operation is hd_math.hpp's.
// 16-bit parameters and gradients (precision.hpp) are read into float32, with float32 state
// (momentum buffers, previous updates, per-parameter rates) and rates as for float32; the update
// writes the parameter back rounded (to nearest, or stochastically for bfloat16 in place), or with
// master weights reads and writes the float32 copy and writes the parameter as its rounding (the
// reduction then reads the copy too). Bytes per element with heavy-ball momentum, scalar scope, no
// weight decay (reduction + update): float32 8 + 20, 16-bit in place 6 + 14, master weights 6 + 20
// (docs/design.md, 2026-12-04).
#include "hd_reduce.hpp"

#include <vector>

namespace optim::cpu {

namespace {

// P: the parameter's access (precision.hpp's ParamAccess: in place, or through its master copy);
// S its storage type, T = compute_t<S> the type of the math and the state.
template <typename S, unsigned Flags, bool Fresh, class P, typename T = compute_t<S>>
OPTIM_CPU_CLONES void update_piece(P p, const S* __restrict g, T* __restrict buf, T* __restrict up,
                                   int64_t n, const SgdCoeffs<T>& c, T lr, T inv, T clip)
{
    T unused_b = T(0), unused_u = T(0);
    for (int64_t i = 0; i < n; ++i) {
        T& b = (Flags & kSgdMomentum) ? buf[i] : unused_b;
        T& u = sgd_heavy_ball(Flags) ? unused_u : up[i];
        T pi = p.load(i);
        hd_update_element<T, Flags>(pi, load_value(g[i]) * inv * clip, b, u, Fresh, c, lr);
        p.store(i, pi);
    }
}

// The rule is a template argument so that the additive rule's loop holds no division.
template <typename S, unsigned Flags, bool Fresh, int Rule, class P, typename T = compute_t<S>>
OPTIM_CPU_CLONES void per_parameter_loop(P p, const S* __restrict g, T* __restrict buf,
                                         T* __restrict up, T* __restrict alpha, int64_t n,
                                         const SgdCoeffs<T>& c, const HdCoeffs<T>& hc, T inv,
                                         T clip)
{
    T unused_b = T(0), unused_u = T(0);
    for (int64_t i = 0; i < n; ++i) {
        T& b = (Flags & kSgdMomentum) ? buf[i] : unused_b;
        T& u = sgd_heavy_ball(Flags) ? unused_u : up[i];
        T pi = p.load(i);
        hd_per_parameter_element<T, Flags, Rule>(pi, load_value(g[i]) * inv * clip, b, u, alpha[i],
                                                 Fresh, c, hc);
        p.store(i, pi);
    }
}

template <typename S, unsigned Flags, bool Fresh, class P, typename T = compute_t<S>>
void per_parameter_piece(P p, const S* g, T* buf, T* up, T* alpha, int64_t n, const SgdCoeffs<T>& c,
                         const HdCoeffs<T>& hc, T inv, T clip)
{
    if (hc.normalized)
        per_parameter_loop<S, Flags, Fresh, kHdNormalized>(p, g, buf, up, alpha, n, c, hc, inv,
                                                           clip);
    else
        per_parameter_loop<S, Flags, Fresh, kHdAdditive>(p, g, buf, up, alpha, n, c, hc, inv, clip);
}

template <typename S>
void hd_step(const HdCall& call)
{
    using T = compute_t<S>;
    const PrecisionCall precision(call.precision);
    const char* fn = call.fn;
    const optim_hd_tensors& t = *call.tensors;
    const optim_hd_params& hp = *call.params;
    const bool per_parameter = hp.scope == OPTIM_HD_SCOPE_PER_PARAMETER;
    const bool norms = hp.rule == OPTIM_HD_RULE_NORMALIZED;
    // Per calling thread and reused, so a warm step allocates nothing; filled before any write.
    thread_local std::vector<SgdGroup<T>> groups;
    groups.resize(static_cast<size_t>(call.n_groups));
    for (int32_t g = 0; g < call.n_groups; ++g)
        groups[static_cast<size_t>(g)] = sgd_group<T>(call.groups[g], fn);
    const SgdGroup<T>* G = groups.data();

    WorkPlan& plan = WorkPlan::for_this_thread();
    plan.build(t.numels, t.count);
    // A reference: worker threads must see the caller's vector, not their own thread_local copy.
    thread_local std::vector<HdPartial> partials_storage;
    std::vector<HdPartial>& partials = partials_storage;
    partials.assign(static_cast<size_t>(plan.pieces()), HdPartial{});

    auto fresh = [&](int64_t k) { return t.buffer_fresh != nullptr && t.buffer_fresh[k] != 0; };

    // Pass 1: partial sums (or only finiteness, for the per-parameter scope, which makes no pass
    // at all when the caller vouches for the gradients), and with clipping the squared norm.
    // A gradient scaler always checks (its flag reports the skip) and unscales as the passes read.
    const bool check = hp.assume_finite == 0 || call.scale != nullptr;
    const bool clip = call.clip != nullptr;
    const T inv = inverse_scale<T>(call.scale);
    if (check || !per_parameter || clip)
        plan.parallel_for_pieces([&](const Piece& piece) {
            const int64_t k = piece.tensor;
            const SgdGroup<T>& g = G[t.group_index[k]];
            dispatch_sgd_flags(g.flags, [&](auto F) {
                constexpr unsigned Flags = decltype(F)::value;
                const T* up = nullptr;
                if (sgd_heavy_ball(Flags)) {
                    if (!fresh(k)) up = piece.at<const T>(t.momentum_buffers);
                } else {
                    up = piece.at<const T>(t.prev_updates);
                }
                const S* gp = piece.at<const S>(t.grads);
                HdPartial& part = partials[static_cast<size_t>(piece.index)];
                // The parameter as the update reads it: the master copy, or the parameter.
                if (precision.master != nullptr)
                    part =
                        hd_reduce_piece<Flags>(piece.at<const T>(precision.master), gp, up,
                                               piece.length, g.c, inv, norms, per_parameter, clip);
                else
                    part = hd_reduce_piece<Flags>(piece.at<const S>(t.params), gp, up, piece.length,
                                                  g.c, inv, norms, per_parameter, clip);
            });
        });

    // Finish: skip, norm, and the scalar scopes' new rates.
    T coef = T(1);
    if (!hd_finish<T>(fn, plan, partials, hp, call.n_groups, t.group_index, call.rates,
                      call.skipped, call.clip, call.scale, &coef))
        return;

    // Pass 2: the update with the new rates.
    const HdCoeffs<T> hc_t = hd_coeffs<T>(hp);
    plan.parallel_for_pieces([&](const Piece& piece) {
        const int64_t k = piece.tensor;
        const SgdGroup<T>& g = G[t.group_index[k]];
        dispatch_precision<S>(precision, [&](auto master, auto round) {
            constexpr bool Master = decltype(master)::value;
            constexpr int Round = decltype(round)::value;
            const ParamAccess<S, Master, Round> p{piece.at<S>(t.params),
                                                  Master ? piece.at<T>(precision.master) : nullptr,
                                                  precision.key(k), piece.begin};
            dispatch_sgd_flags(g.flags, [&](auto F) {
                constexpr unsigned Flags = decltype(F)::value;
                const S* grad = piece.at<const S>(t.grads);
                T* b = (Flags & kSgdMomentum) ? piece.at<T>(t.momentum_buffers) : nullptr;
                T* up = sgd_heavy_ball(Flags) ? nullptr : piece.at<T>(t.prev_updates);
                const bool f = (Flags & kSgdMomentum) && fresh(k);
                const int64_t n = piece.length;
                if (per_parameter) {
                    T* a = piece.at<T>(t.param_rates);
                    if (f)
                        per_parameter_piece<S, Flags, true>(p, grad, b, up, a, n, g.c, hc_t, inv,
                                                            coef);
                    else
                        per_parameter_piece<S, Flags, false>(p, grad, b, up, a, n, g.c, hc_t, inv,
                                                             coef);
                } else {
                    const T lr =
                        static_cast<T>(call.rates[hd_rate_slot(hp.scope, t.group_index, k)]);
                    if (f)
                        update_piece<S, Flags, true>(p, grad, b, up, n, g.c, lr, inv, coef);
                    else
                        update_piece<S, Flags, false>(p, grad, b, up, n, g.c, lr, inv, coef);
                }
            });
        });
    });
}

} // namespace

void hd_step_f32(const HdCall& call)
{
    hd_step<float>(call);
}
void hd_step_f64(const HdCall& call)
{
    hd_step<double>(call);
}
void hd_step_f16(const HdCall& call)
{
    hd_step<Half>(call);
}
void hd_step_bf16(const HdCall& call)
{
    hd_step<BFloat16>(call);
}

} // namespace optim::cpu
