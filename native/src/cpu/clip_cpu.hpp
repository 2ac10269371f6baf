// The CPU side of gradient clipping by global norm (optim_grad_clip): the read pass that sums the
// squared gradients, and the coefficient the update then applies. Hypergradient descent sums the
// norm inside its own reduction pass instead (hd_cpu.cpp) and uses only finish_clip().
#pragma once

#include "../clip_math.hpp"
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

// The clipping coefficient of a step over the tensors of `plan` (built), in the compute type of the
// gradients' storage type S: one read pass over the gradients, per-piece sums combined in piece
// order. 1 without clipping (no pass).
template <typename S>
compute_t<S> clip_pass(const WorkPlan& plan, const void* const* grads, const optim_grad_clip* clip)
{
    using T = compute_t<S>;
    if (clip == nullptr) return T(1);
    // A reference: worker threads must see the caller's vector, not their own thread_local copy.
    thread_local std::vector<double> partials_storage;
    std::vector<double>& partials = partials_storage;
    partials.assign(static_cast<size_t>(plan.pieces()), 0.0);
    plan.parallel_for_pieces([&](const Piece& piece) {
        partials[static_cast<size_t>(piece.index)] =
            squared_sum<S>(piece.at<const S>(grads), piece.length);
    });
    double squared = 0;
    for (const double part : partials) squared += part;
    return finish_clip<T>(clip, squared);
}

} // namespace optim::cpu
