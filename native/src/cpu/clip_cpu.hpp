// The CPU side of gradient clipping by global norm (optim_grad_clip) and of a fused gradient scaler
// (optim_grad_scale): the one read pass before an update that sums the squared (unscaled) gradients
// and finds non-finite elements, and the factors the update then applies. Hypergradient descent
// makes these sums inside its own reduction pass instead (hd_cpu.cpp) and uses only finish_clip()
// and the scale helpers.
#pragma once

#include "../clip_math.hpp"
#include "../cross_rank.hpp"
#include "../precision.hpp"
#include "work_plan.hpp"

#include <optim.h>

#include <cmath>
#include <vector>

namespace optim::cpu {

// Sum of g * g over one piece (of storage type S, read exactly as its compute type) in double, in
// kNormLanes independent lanes combined in lane order: a fixed order, so the result does not depend
// on the thread count, that still vectorizes.
constexpr int kNormLanes = 8;

template <typename S>
OPTIM_CPU_CLONES double squared_sum(const S* __restrict g, int64_t n)
{
    double lanes[kNormLanes] = {};
    const int64_t whole = n - n % kNormLanes;
    for (int64_t i = 0; i < whole; i += kNormLanes)
        for (int lane = 0; lane < kNormLanes; ++lane) {
            const double v = load_value(g[i + lane]);
            lanes[lane] += v * v;
        }
    for (int64_t i = whole; i < n; ++i) {
        const double v = load_value(g[i]);
        lanes[i - whole] += v * v;
    }
    double sum = 0;
    for (int lane = 0; lane < kNormLanes; ++lane) sum += lanes[lane];
    return sum;
}

// Writes the norm sqrt(squared) to clip.total_norm and returns the coefficient in T; 1 without
// clipping (clip == nullptr).
template <typename T>
T finish_clip(const optim_grad_clip* clip, double squared)
{
    if (clip == nullptr) return T(1);
    const double norm = std::sqrt(squared);
    *clip->total_norm = norm;
    return clip_coefficient<T>(norm, clip->max_norm);
}

// The gradient scaler's inverse scale in T (1 without a scaler: multiplying by it is exact).
template <typename T>
T inverse_scale(const optim_grad_scale* scale)
{
    return scale == nullptr ? T(1) : static_cast<T>(*scale->inv_scale);
}

// Whether a scaled step is skipped: the flag was set on entry or a gradient element was not finite
// (which sets it). Never skipped without a scaler.
inline bool scaled_skip(const optim_grad_scale* scale, bool nonfinite)
{
    if (scale == nullptr) return false;
    if (nonfinite) *scale->found_inf = 1.0f;
    return *scale->found_inf != 0.0f;
}

// One piece of the scaled read pass: the squared sum of the unscaled gradient (inv * g rounded to
// T, summed in double in kNormLanes lanes as squared_sum) when Norm, and whether an element of g
// itself was not finite.
template <typename S, bool Norm>
OPTIM_CPU_CLONES void scaled_piece(const S* __restrict g, int64_t n, compute_t<S> inv,
                                   double& squared, bool& nonfinite)
{
    using T = compute_t<S>;
    double lanes[kNormLanes] = {};
    T bad[kNormLanes] = {}; // sums of exact zeros or NaN (nonfinite_mark)
    const int64_t whole = n - n % kNormLanes;
    auto one = [&](int lane, int64_t i) {
        const T gi = load_value(g[i]);
        bad[lane] += nonfinite_mark(gi);
        if (Norm) {
            const double v = static_cast<T>(gi * inv);
            lanes[lane] += v * v;
        }
    };
    for (int64_t i = 0; i < whole; i += kNormLanes)
        for (int lane = 0; lane < kNormLanes; ++lane) one(lane, i + lane);
    for (int64_t i = whole; i < n; ++i) one(static_cast<int>(i - whole), i);
    double sum = 0;
    T flag = 0;
    for (int lane = 0; lane < kNormLanes; ++lane) {
        sum += lanes[lane];
        flag += bad[lane];
    }
    squared = sum;
    nonfinite = flag != T(0);
}

// What the update applies to each gradient element: g * inv * coef. skip: the scaler skips the
// step.
template <typename T>
struct GradFactors {
    T inv = T(1);
    T coef = T(1);
    bool skip = false;
};

// The read pass of a step over the tensors of `plan` (built; gradients of storage type S, read as
// its compute type T), before anything is written: the
// clipping norm (written to clip->total_norm) and, with a scaler, the non-finite check; per-piece
// results combined in piece order, then over every rank with clip->across_ranks. No pass when
// neither clips nor scales. fn names the entry point in messages.
template <typename S>
GradFactors<compute_t<S>> grad_pass(const char* fn, const WorkPlan& plan, const void* const* grads,
                                    const optim_grad_clip* clip, const optim_grad_scale* scale)
{
    using T = compute_t<S>;
    GradFactors<T> f;
    if (clip == nullptr && scale == nullptr) return f;
    f.inv = inverse_scale<T>(scale);
    struct Part {
        double squared;
        bool nonfinite;
    };
    // A reference: worker threads must see the caller's vector, not their own thread_local copy.
    thread_local std::vector<Part> partials_storage;
    std::vector<Part>& partials = partials_storage;
    partials.assign(static_cast<size_t>(plan.pieces()), Part{0.0, false});
    const T inv = f.inv;
    plan.parallel_for_pieces([&](const Piece& piece) {
        Part& part = partials[static_cast<size_t>(piece.index)];
        const S* g = piece.at<const S>(grads);
        if (scale == nullptr)
            part.squared = squared_sum<S>(g, piece.length);
        else if (clip != nullptr)
            scaled_piece<S, true>(g, piece.length, inv, part.squared, part.nonfinite);
        else
            scaled_piece<S, false>(g, piece.length, inv, part.squared, part.nonfinite);
    });
    double squared = 0;
    bool nonfinite = false;
    for (const Part& part : partials) {
        squared += part.squared;
        nonfinite = nonfinite || part.nonfinite;
    }
    if (clip != nullptr && clip->across_ranks) {
        double sums[2] = {squared, nonfinite ? 1.0 : 0.0};
        sum_across_ranks(fn, sums, 2);
        squared = sums[0];
        nonfinite = sums[1] > 0;
    }
    f.coef = finish_clip<T>(clip, squared);
    f.skip = scaled_skip(scale, nonfinite);
    return f;
}

} // namespace optim::cpu
