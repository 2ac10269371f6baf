// The CPU path of hypergradient descent. Global, per-group and per-tensor scopes: a reduction pass
// (per-piece partial sums in double; fp32 sums short blocks in float first), a serial finish that
// combines them in piece order and updates the rates, then the update pass with the new rates.
// Per-parameter scope: a finiteness pass over the gradients, then one elementwise pass. With
// clipping the reduction pass also sums the squared norm (the per-parameter scope then always makes
// it). With a gradient scaler every pass reads inv_scale * grad and the gradients are always
// checked. Every per-element operation is hd_math.hpp's.
#include "../backend.hpp"
#include "../cross_rank.hpp"
#include "../hd_math.hpp"
#include "clip_cpu.hpp"
#include "work_plan.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace optim::cpu {

namespace {

// Partial sums of one block of elements. u_prev is the momentum buffer (heavy ball; null when the
// buffer is fresh, meaning zero) or the separate buffer. Sums use Lanes independent accumulators of
// type Acc, element i going to lane i % Lanes, combined in double in lane order at the end: a fixed
// order (so results do not depend on the thread count) that the compiler can vectorize without
// reassociating floating-point sums.
template <typename Acc, int Lanes, typename T, unsigned Flags, bool HasUp, bool Norms, bool Clip>
OPTIM_CPU_CLONES HdPartial reduce_lanes(const T* __restrict p, const T* __restrict g,
                                        const T* __restrict up, int64_t n, const SgdCoeffs<T>& c,
                                        T inv)
{
    // Clipping: the signed raw gradient s here, the decay term d below (HdPartial).
    constexpr unsigned kGradFlags = Clip ? Flags & kSgdMaximize : Flags;
    Acc h[Lanes] = {}, gg[Lanes] = {}, uu[Lanes] = {};
    Acc hd[Lanes] = {}, sd[Lanes] = {}, dd[Lanes] = {}; // clipping: HdPartial
    T bad[Lanes] = {}; // sums of exact zeros or NaN: exact in T, no conversion needed
    const int64_t whole = n - n % Lanes;
    // Summing nonfinite_mark() flags a non-finite element without a branch (a compare-and-branch
    // per element kept this loop scalar).
    auto one = [&](int lane, int64_t i) {
        bad[lane] += nonfinite_mark(g[i]); // the raw gradient, as a scaler checks it
        const Acc gt = sgd_effective_grad<T, kGradFlags>(p[i], g[i] * inv, c);
        const Acc u = HasUp ? static_cast<Acc>(up[i]) : Acc(0);
        h[lane] += gt * u;
        if (Norms || Clip) gg[lane] += gt * gt;
        if (Norms) uu[lane] += u * u;
        if (Clip && (Flags & kSgdWeightDecay)) {
            const Acc d = c.weight_decay * p[i];
            hd[lane] += d * u;
            sd[lane] += gt * d;
            dd[lane] += d * d;
        }
    };
    for (int64_t i = 0; i < whole; i += Lanes)
        for (int lane = 0; lane < Lanes; ++lane) one(lane, i + lane);
    for (int64_t i = whole; i < n; ++i) one(static_cast<int>(i - whole), i);
    HdPartial r;
    T flag = 0;
    for (int lane = 0; lane < Lanes; ++lane) {
        r.h += static_cast<double>(h[lane]);
        r.gg += static_cast<double>(gg[lane]);
        r.uu += static_cast<double>(uu[lane]);
        r.hd += static_cast<double>(hd[lane]);
        r.sd += static_cast<double>(sd[lane]);
        r.dd += static_cast<double>(dd[lane]);
        flag += bad[lane];
    }
    r.nonfinite = flag == T(0) ? 0.0 : 1.0; // NaN != 0: some element was not finite
    return r;
}

// Double elements sum a piece in 8 double lanes. Float elements sum blocks of kFloatBlock elements
// (counted from the piece's start, so fixed by the data) in 16 float lanes, each block's lanes
// added in double: float arithmetic keeps this pass at memory speed where double conversions did
// not, and a lane adds only kFloatBlock / 16 products in float (the error bound is in
// docs/design.md). A block whose float sums overflowed is summed again in double. With clipping
// every element type sums in double, so the clipped norm is the one FusedSGD and FusedAdam compute.
constexpr int64_t kFloatBlock = 512;

template <typename T, unsigned Flags, bool HasUp, bool Norms, bool Clip>
HdPartial reduce_blocks(const T* p, const T* g, const T* up, int64_t n, const SgdCoeffs<T>& c,
                        T inv)
{
    if constexpr (!std::is_same_v<T, float> || Clip) {
        return reduce_lanes<double, 8, T, Flags, HasUp, Norms, Clip>(p, g, up, n, c, inv);
    } else {
        HdPartial r;
        for (int64_t b = 0; b < n; b += kFloatBlock) {
            const int64_t len = std::min(kFloatBlock, n - b);
            const T* pb = p + b;
            const T* ub = HasUp ? up + b : up;
            HdPartial part =
                reduce_lanes<float, 16, T, Flags, HasUp, Norms, Clip>(pb, g + b, ub, len, c, inv);
            if (!is_finite(part.h + part.gg + part.uu + part.hd + part.sd + part.dd))
                part = reduce_lanes<double, 8, T, Flags, HasUp, Norms, Clip>(pb, g + b, ub, len, c,
                                                                             inv);
            r.h += part.h;
            r.gg += part.gg;
            r.uu += part.uu;
            r.hd += part.hd;
            r.sd += part.sd;
            r.dd += part.dd;
            r.nonfinite += part.nonfinite;
        }
        return r;
    }
}

// Only whether some gradient element is not finite (the per-parameter scope's first pass). The
// marks are exactly 0 or NaN, so the sum is exact in the element type, which with kFlagLanes lanes
// keeps this pass at memory speed (docs/design.md).
constexpr int kFlagLanes = 32;

template <typename T>
OPTIM_CPU_CLONES HdPartial count_nonfinite(const T* __restrict g, int64_t n)
{
    T bad[kFlagLanes] = {};
    const int64_t whole = n - n % kFlagLanes;
    for (int64_t i = 0; i < whole; i += kFlagLanes)
        for (int lane = 0; lane < kFlagLanes; ++lane) bad[lane] += nonfinite_mark(g[i + lane]);
    for (int64_t i = whole; i < n; ++i) bad[0] += nonfinite_mark(g[i]);
    T flag = 0;
    for (int lane = 0; lane < kFlagLanes; ++lane) flag += bad[lane];
    HdPartial r;
    r.nonfinite = flag == T(0) ? 0.0 : 1.0;
    return r;
}

template <typename T, unsigned Flags, bool Clip>
HdPartial reduce_piece(const T* p, const T* g, const T* up, int64_t n, const SgdCoeffs<T>& c, T inv,
                       bool norms, bool only_finiteness)
{
    if (only_finiteness && !Clip) return count_nonfinite<T>(g, n);
    if (only_finiteness)
        return reduce_blocks<T, Flags, false, false, true>(p, g, nullptr, n, c, inv);
    if (up != nullptr)
        return norms ? reduce_blocks<T, Flags, true, true, Clip>(p, g, up, n, c, inv)
                     : reduce_blocks<T, Flags, true, false, Clip>(p, g, up, n, c, inv);
    return norms ? reduce_blocks<T, Flags, false, true, Clip>(p, g, up, n, c, inv)
                 : reduce_blocks<T, Flags, false, false, Clip>(p, g, up, n, c, inv);
}

template <typename T, unsigned Flags, bool Fresh>
OPTIM_CPU_CLONES void update_piece(T* __restrict p, const T* __restrict g, T* __restrict buf,
                                   T* __restrict up, int64_t n, const SgdCoeffs<T>& c, T lr, T inv,
                                   T clip)
{
    T unused_b = T(0), unused_u = T(0);
    for (int64_t i = 0; i < n; ++i) {
        T& b = (Flags & kSgdMomentum) ? buf[i] : unused_b;
        T& u = sgd_heavy_ball(Flags) ? unused_u : up[i];
        hd_update_element<T, Flags>(p[i], g[i] * inv * clip, b, u, Fresh, c, lr);
    }
}

// The rule is a template argument so that the additive rule's loop holds no division.
template <typename T, unsigned Flags, bool Fresh, int Rule>
OPTIM_CPU_CLONES void per_parameter_loop(T* __restrict p, const T* __restrict g, T* __restrict buf,
                                         T* __restrict up, T* __restrict alpha, int64_t n,
                                         const SgdCoeffs<T>& c, const HdCoeffs<T>& hc, T inv,
                                         T clip)
{
    T unused_b = T(0), unused_u = T(0);
    for (int64_t i = 0; i < n; ++i) {
        T& b = (Flags & kSgdMomentum) ? buf[i] : unused_b;
        T& u = sgd_heavy_ball(Flags) ? unused_u : up[i];
        hd_per_parameter_element<T, Flags, Rule>(p[i], g[i] * inv * clip, b, u, alpha[i], Fresh, c,
                                                 hc);
    }
}

template <typename T, unsigned Flags, bool Fresh>
void per_parameter_piece(T* p, const T* g, T* buf, T* up, T* alpha, int64_t n,
                         const SgdCoeffs<T>& c, const HdCoeffs<T>& hc, T inv, T clip)
{
    if (hc.normalized)
        per_parameter_loop<T, Flags, Fresh, kHdNormalized>(p, g, buf, up, alpha, n, c, hc, inv,
                                                           clip);
    else
        per_parameter_loop<T, Flags, Fresh, kHdAdditive>(p, g, buf, up, alpha, n, c, hc, inv, clip);
}

std::vector<HdPartial>& no_sums()
{
    thread_local std::vector<HdPartial> none;
    return none;
}

// across_ranks: sums the non-finite count, the squared norm and `sums` (the slots every rank
// shares) over every rank of the job, in one collective.
void sum_over_ranks(const char* fn, double& nonfinite, double& squared,
                    std::vector<HdPartial>& sums)
{
    constexpr double HdPartial::*kFields[] = {&HdPartial::h,  &HdPartial::gg, &HdPartial::uu,
                                              &HdPartial::hd, &HdPartial::sd, &HdPartial::dd};
    constexpr size_t kCount = sizeof(kFields) / sizeof(kFields[0]);
    thread_local std::vector<double> values;
    values.resize(2 + kCount * sums.size());
    values[0] = nonfinite;
    values[1] = squared;
    for (size_t s = 0; s < sums.size(); ++s)
        for (size_t f = 0; f < kCount; ++f) values[2 + kCount * s + f] = sums[s].*kFields[f];
    sum_across_ranks(fn, values.data(), static_cast<int64_t>(values.size()));
    nonfinite = values[0];
    squared = values[1];
    for (size_t s = 0; s < sums.size(); ++s)
        for (size_t f = 0; f < kCount; ++f) sums[s].*kFields[f] = values[2 + kCount * s + f];
}

template <typename T>
void hd_step(const HdCall& call)
{
    static const char* fn = "optim_hd_step";
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
                const T* pp = piece.at<const T>(t.params);
                const T* gp = piece.at<const T>(t.grads);
                partials[static_cast<size_t>(piece.index)] =
                    clip ? reduce_piece<T, Flags, true>(pp, gp, up, piece.length, g.c, inv, norms,
                                                        per_parameter)
                         : reduce_piece<T, Flags, false>(pp, gp, up, piece.length, g.c, inv, norms,
                                                         per_parameter);
            });
        });

    // Finish: combine in piece order (each scalar rate's sums by its slot); with across_ranks, sum
    // over every rank; a non-finite gradient then skips the whole step (unless the caller vouched
    // for the gradients), else the rates move.
    double nonfinite = 0, squared = 0;
    for (const HdPartial& part : partials) {
        nonfinite += check ? part.nonfinite : 0.0;
        squared += part.gg; // the squared norm, when clipping
    }
    thread_local std::vector<HdPartial> sums;
    sums.assign(
        static_cast<size_t>(per_parameter ? 0 : hd_slot_count(hp.scope, call.n_groups, t.count)),
        HdPartial{});
    if (!per_parameter)
        for (int64_t i = 0; i < plan.pieces(); ++i) {
            const int64_t slot = hd_rate_slot(hp.scope, t, plan.piece_tensor(i));
            HdPartial& s = sums[static_cast<size_t>(slot)];
            const HdPartial& part = partials[static_cast<size_t>(i)];
            s.h += part.h;
            s.gg += part.gg;
            s.uu += part.uu;
            s.hd += part.hd;
            s.sd += part.sd;
            s.dd += part.dd;
        }
    if (hp.across_ranks) {
        const bool shared_slots =
            hp.scope == OPTIM_HD_SCOPE_GLOBAL || hp.scope == OPTIM_HD_SCOPE_PER_GROUP;
        sum_over_ranks(call.fn, nonfinite, squared, shared_slots ? sums : no_sums());
    }
    const T coef = finish_clip<T>(call.clip, squared);
    if (call.scale != nullptr) {
        // The scaler's skip is reported through its flag alone.
        if (call.skipped) *call.skipped = 0;
        if (scaled_skip(call.scale, nonfinite > 0)) return;
    } else {
        if (call.skipped) *call.skipped = nonfinite > 0 ? 1 : 0;
        if (nonfinite > 0) return;
    }

    if (!per_parameter) {
        const HdCoeffs<double> hc{hp.hypergrad_lr, hp.lr_min, hp.lr_max,
                                  hp.eps,          norms,     hp.first_step == 0};
        for (size_t s = 0; s < sums.size(); ++s) {
            const HdPartial sum = clip ? hd_clipped(sums[s], coef) : sums[s];
            call.rates[s] =
                hd_rate<double>(call.rates[s], sum.h, std::sqrt(sum.gg) * std::sqrt(sum.uu), hc);
        }
    }

    // Pass 2: the update with the new rates.
    const HdCoeffs<T> hc_t{static_cast<T>(hp.hypergrad_lr),
                           static_cast<T>(hp.lr_min),
                           static_cast<T>(hp.lr_max),
                           static_cast<T>(hp.eps),
                           norms,
                           hp.first_step == 0};
    plan.parallel_for_pieces([&](const Piece& piece) {
        const int64_t k = piece.tensor;
        const SgdGroup<T>& g = G[t.group_index[k]];
        dispatch_sgd_flags(g.flags, [&](auto F) {
            constexpr unsigned Flags = decltype(F)::value;
            T* p = piece.at<T>(t.params);
            const T* grad = piece.at<const T>(t.grads);
            T* b = (Flags & kSgdMomentum) ? piece.at<T>(t.momentum_buffers) : nullptr;
            T* up = sgd_heavy_ball(Flags) ? nullptr : piece.at<T>(t.prev_updates);
            const bool f = (Flags & kSgdMomentum) && fresh(k);
            const int64_t n = piece.length;
            if (per_parameter) {
                T* a = piece.at<T>(t.param_rates);
                if (f)
                    per_parameter_piece<T, Flags, true>(p, grad, b, up, a, n, g.c, hc_t, inv, coef);
                else
                    per_parameter_piece<T, Flags, false>(p, grad, b, up, a, n, g.c, hc_t, inv,
                                                         coef);
            } else {
                const T lr = static_cast<T>(call.rates[hd_rate_slot(hp.scope, t, k)]);
                if (f)
                    update_piece<T, Flags, true>(p, grad, b, up, n, g.c, lr, inv, coef);
                else
                    update_piece<T, Flags, false>(p, grad, b, up, n, g.c, lr, inv, coef);
            }
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

} // namespace optim::cpu
