// The reduction pass of hypergradient descent on the CPU, shared by hypergradient SGD
// (hd_cpu.cpp) and hypergradient Adam (hd_adam_cpu.cpp): per-piece partial sums of g~ * u_prev (and
// the norms of the normalized rule, the finiteness of the raw gradient, with clipping the squared
// norm) in a fixed order, and the serial finish that decides a skip and moves the scalar rates.
// Every element is read in its compute type (precision.hpp's load_value): 16-bit gradients, and
// the 16-bit parameter or its float32 master copy, are summed as the float32 values they hold.
#pragma once

#include "../backend.hpp"
#include "../cross_rank.hpp"
#include "../hd_math.hpp"
#include "../precision.hpp"
#include "clip_cpu.hpp"
#include "work_plan.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace optim::cpu {

namespace hd_detail {

// Partial sums of one block of elements. u_prev is the momentum buffer (heavy ball; null when the
// buffer is fresh, meaning zero) or the separate buffer. Sums use Lanes independent accumulators of
// type Acc, element i going to lane i % Lanes, combined in double in lane order at the end: a fixed
// order (so results do not depend on the thread count) that the compiler can vectorize without
// reassociating floating-point sums. P and G are how the parameter (its storage type, or its
// float32 master copy) and the gradient are stored; T, their compute type, is that of u_prev.
template <typename Acc, int Lanes, typename P, typename G, unsigned Flags, bool HasUp, bool Norms,
          bool Clip, typename T = compute_t<G>>
OPTIM_CPU_CLONES HdPartial reduce_lanes(const P* __restrict p, const G* __restrict g,
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
        const T gi = load_value(g[i]);
        const T pi = load_value(p[i]);
        bad[lane] += nonfinite_mark(gi); // the raw gradient, as a scaler checks it
        const Acc gt = sgd_effective_grad<T, kGradFlags>(pi, gi * inv, c);
        const Acc u = HasUp ? static_cast<Acc>(up[i]) : Acc(0);
        h[lane] += gt * u;
        if (Norms || Clip) gg[lane] += gt * gt;
        if (Norms) uu[lane] += u * u;
        if (Clip && (Flags & kSgdWeightDecay)) {
            const Acc d = c.weight_decay * pi;
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

template <typename P, typename G, unsigned Flags, bool HasUp, bool Norms, bool Clip,
          typename T = compute_t<G>>
HdPartial reduce_blocks(const P* p, const G* g, const T* up, int64_t n, const SgdCoeffs<T>& c,
                        T inv)
{
    if constexpr (!std::is_same_v<T, float> || Clip) {
        return reduce_lanes<double, 8, P, G, Flags, HasUp, Norms, Clip>(p, g, up, n, c, inv);
    } else {
        HdPartial r;
        for (int64_t b = 0; b < n; b += kFloatBlock) {
            const int64_t len = std::min(kFloatBlock, n - b);
            const P* pb = p + b;
            const T* ub = HasUp ? up + b : up;
            HdPartial part = reduce_lanes<float, 16, P, G, Flags, HasUp, Norms, Clip>(pb, g + b, ub,
                                                                                      len, c, inv);
            if (!is_finite(part.h + part.gg + part.uu + part.hd + part.sd + part.dd))
                part = reduce_lanes<double, 8, P, G, Flags, HasUp, Norms, Clip>(pb, g + b, ub, len,
                                                                                c, inv);
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

template <typename G, typename T = compute_t<G>>
OPTIM_CPU_CLONES HdPartial count_nonfinite(const G* __restrict g, int64_t n)
{
    T bad[kFlagLanes] = {};
    const int64_t whole = n - n % kFlagLanes;
    for (int64_t i = 0; i < whole; i += kFlagLanes)
        for (int lane = 0; lane < kFlagLanes; ++lane)
            bad[lane] += nonfinite_mark(load_value(g[i + lane]));
    for (int64_t i = whole; i < n; ++i) bad[0] += nonfinite_mark(load_value(g[i]));
    T flag = 0;
    for (int lane = 0; lane < kFlagLanes; ++lane) flag += bad[lane];
    HdPartial r;
    r.nonfinite = flag == T(0) ? 0.0 : 1.0;
    return r;
}

template <unsigned Flags, bool Clip, typename P, typename G, typename T = compute_t<G>>
HdPartial reduce_piece_as(const P* p, const G* g, const T* up, int64_t n, const SgdCoeffs<T>& c,
                          T inv, bool norms, bool only_finiteness)
{
    if (only_finiteness && !Clip) return count_nonfinite<G>(g, n);
    if (only_finiteness)
        return reduce_blocks<P, G, Flags, false, false, true>(p, g, static_cast<const T*>(nullptr),
                                                              n, c, inv);
    if (up != nullptr)
        return norms ? reduce_blocks<P, G, Flags, true, true, Clip>(p, g, up, n, c, inv)
                     : reduce_blocks<P, G, Flags, true, false, Clip>(p, g, up, n, c, inv);
    return norms ? reduce_blocks<P, G, Flags, false, true, Clip>(p, g, up, n, c, inv)
                 : reduce_blocks<P, G, Flags, false, false, Clip>(p, g, up, n, c, inv);
}

} // namespace hd_detail

// The partial sums of one piece: g~ from sgd_effective_grad with Flags of inv * g (inv: a gradient
// scaler's inverse scale, else 1), u_prev at `up` (null: zero), the norms for the normalized rule;
// only_finiteness: the per-parameter scope's pass (with clipping it also sums the squared norm).
// p is the parameter as the update reads it: its storage type, or its float32 master copy; g the
// gradient in storage type G; u_prev and the sums in G's compute type T.
template <unsigned Flags, typename P, typename G, typename T = compute_t<G>>
HdPartial hd_reduce_piece(const P* p, const G* g, const T* up, int64_t n, const SgdCoeffs<T>& c,
                          T inv, bool norms, bool only_finiteness, bool clip)
{
    return clip ? hd_detail::reduce_piece_as<Flags, true>(p, g, up, n, c, inv, norms,
                                                          only_finiteness)
                : hd_detail::reduce_piece_as<Flags, false>(p, g, up, n, c, inv, norms,
                                                           only_finiteness);
}

namespace hd_detail {

// across_ranks: sums the non-finite count, the squared norm and `sums` (the slots every rank
// shares; empty for the per-tensor and per-parameter scopes) over every rank of the job, in one
// collective.
inline void sum_over_ranks(const char* fn, double& nonfinite, double& squared,
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

} // namespace hd_detail

// The finish of the reduction pass (serial, in piece order): each scalar scope's slot sums its
// pieces; with hp.across_ranks the sums, the non-finite count and the squared norm are summed over
// every rank; a non-finite gradient then skips the whole step (unless the caller vouched for the
// gradients: hp.assume_finite), reported in *skipped, or with a gradient scaler in its flag alone;
// with clipping the norm is written and its coefficient returned in *coef (else 1); otherwise the
// scalar rates move. Returns false for a skipped step. fn names the entry point in messages.
template <typename T>
bool hd_finish(const char* fn, const WorkPlan& plan, const std::vector<HdPartial>& partials,
               const optim_hd_params& hp, int32_t n_groups, const int32_t* group_index,
               double* rates, int64_t* skipped, const optim_grad_clip* clip,
               const optim_grad_scale* scale, T* coef)
{
    const bool check = hp.assume_finite == 0 || scale != nullptr;
    double nonfinite = 0, squared = 0;
    for (const HdPartial& part : partials) {
        nonfinite += check ? part.nonfinite : 0.0;
        squared += part.gg; // the squared norm, when clipping
    }
    const bool per_parameter = hp.scope == OPTIM_HD_SCOPE_PER_PARAMETER;
    thread_local std::vector<HdPartial> sums;
    sums.assign(
        static_cast<size_t>(per_parameter ? 0 : hd_slot_count(hp.scope, n_groups, plan.count())),
        HdPartial{});
    for (int64_t i = 0; i < plan.pieces() && !per_parameter; ++i) {
        const int64_t slot = hd_rate_slot(hp.scope, group_index, plan.piece_tensor(i));
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
        thread_local std::vector<HdPartial> none;
        const bool shared_slots =
            hp.scope == OPTIM_HD_SCOPE_GLOBAL || hp.scope == OPTIM_HD_SCOPE_PER_GROUP;
        hd_detail::sum_over_ranks(fn, nonfinite, squared, shared_slots ? sums : none);
    }
    *coef = finish_clip<T>(clip, squared);
    if (scale != nullptr) {
        if (skipped) *skipped = 0;
        if (scaled_skip(scale, nonfinite > 0)) return false;
    } else {
        if (skipped) *skipped = nonfinite > 0 ? 1 : 0;
        if (nonfinite > 0) return false;
    }
    const HdCoeffs<double> hc = hd_coeffs<double>(hp);
    for (size_t s = 0; s < sums.size(); ++s) {
        const HdPartial sum = clip ? hd_clipped(sums[s], static_cast<double>(*coef)) : sums[s];
        rates[s] = hd_rate<double>(rates[s], sum.h, std::sqrt(sum.gg) * std::sqrt(sum.uu), hc);
    }
    return true;
}

} // namespace optim::cpu
