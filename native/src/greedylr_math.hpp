// GreedyLR's state machine (docs/greedylr.md), one step, written once for the CPU path (api.cpp)
// and the one-thread CUDA kernel (cuda/greedylr_cuda.cu), with the check of what a step reads.
// Plain data only, no allocation.
#pragma once

#include <optim.h>

#include "sgd_math.hpp" // OPTIM_HOST_DEVICE

#include <math.h>
#include <stdint.h>

namespace optim {

OPTIM_HOST_DEVICE bool greedy_is_finite(double v)
{
    return v - v == 0.0;
}

OPTIM_HOST_DEVICE bool greedy_is_better(const optim_greedylr_config& c, double v, double best)
{
    if (!greedy_is_finite(v)) return false; // NaN and +-inf never count as an improvement
    if (c.mode == OPTIM_GREEDY_MODE_MIN)
        return c.threshold_mode == OPTIM_GREEDY_THRESHOLD_REL ? v < best * (1.0 - c.threshold)
                                                              : v < best - c.threshold;
    return c.threshold_mode == OPTIM_GREEDY_THRESHOLD_REL ? v > best * (1.0 + c.threshold)
                                                          : v > best + c.threshold;
}

// Every group: lr / factor, capped at its max_lr; written only when it moves by more than eps.
OPTIM_HOST_DEVICE void greedy_increase(const optim_greedylr_config& c,
                                       const optim_greedylr_buffers& b)
{
    for (int32_t g = 0; g < c.groups; ++g) {
        const double lr = b.rates[g];
        double next = lr / c.factor;
        if (next > b.max_lr[g]) next = b.max_lr[g];
        if (next - lr > c.eps) b.rates[g] = next;
    }
}

// Every group: lr * factor, floored at its min_lr; written only when it moves by more than eps.
OPTIM_HOST_DEVICE void greedy_decrease(const optim_greedylr_config& c,
                                       const optim_greedylr_buffers& b)
{
    for (int32_t g = 0; g < c.groups; ++g) {
        const double lr = b.rates[g];
        double next = lr * c.factor;
        if (next < b.min_lr[g]) next = b.min_lr[g];
        if (lr - next > c.eps) b.rates[g] = next;
    }
}

OPTIM_HOST_DEVICE double greedy_initial_best(const optim_greedylr_config& c)
{
    return c.mode == OPTIM_GREEDY_MODE_MIN ? HUGE_VAL : -HUGE_VAL;
}

OPTIM_HOST_DEVICE void greedy_init(const optim_greedylr_config& c, optim_greedylr_state& s)
{
    s.best = greedy_initial_best(c);
    s.num_good = 0;
    s.num_bad = 0;
    s.cooldown_counter = 0;
    s.warmup_counter = 0;
    s.reset_budget = c.reset_start;
    s.window_count = 0;
    s.window_next = 0;
    s.steps = 0;
    s.resets = 0;
}

// What greedy_check() found wrong, if anything (group: the offending group, else -1).
enum GreedyProblem : int32_t {
    kGreedyOk = 0,
    kGreedyWindowPosition, // window_count or window_next outside the window
    kGreedyCounter,        // a counter negative, or one step from overflowing
    kGreedyMinLr,          // min_lr[group] not finite or negative
    kGreedyBounds,         // min_lr[group] > max_lr[group] (or max_lr NaN)
    kGreedyRate,           // rates[group] not finite or negative
    kGreedyInitialRate,    // initial_rates[group] not finite or negative
};
struct GreedyCheck {
    int32_t problem;
    int32_t group;
};

// Whether greedy_step() may run on this state and these buffers: every index it forms stays inside
// the window, no counter can overflow, and the bounds and rates are usable. The config must have
// passed the entry point's checks. The CPU entry point reports a problem as an error; the CUDA
// kernel, which cannot report, then writes nothing (the host sees that `steps` did not advance).
OPTIM_HOST_DEVICE GreedyCheck greedy_check(const optim_greedylr_config& c,
                                           const optim_greedylr_state& s,
                                           const optim_greedylr_buffers& b)
{
    if (s.window_count < 0 || s.window_count > c.window_size || s.window_next < 0 ||
        s.window_next >= c.window_size)
        return {kGreedyWindowPosition, -1};
    // No counter goes below 0 in a real run (reset_budget does when resets are off), and one at its
    // limit would overflow on the next count.
    const int64_t top = INT64_MAX;
    if (s.num_good < 0 || s.num_good == top || s.num_bad < 0 || s.num_bad == top ||
        s.cooldown_counter < 0 || s.warmup_counter < 0 || s.steps < 0 || s.steps == top ||
        s.resets < 0 || s.resets == top || s.reset_budget == INT64_MIN)
        return {kGreedyCounter, -1};
    for (int32_t g = 0; g < c.groups; ++g) {
        if (!greedy_is_finite(b.min_lr[g]) || b.min_lr[g] < 0.0) return {kGreedyMinLr, g};
        if (!(b.max_lr[g] >= b.min_lr[g])) return {kGreedyBounds, g};
        if (!greedy_is_finite(b.rates[g]) || b.rates[g] < 0.0) return {kGreedyRate, g};
        if (!greedy_is_finite(b.initial_rates[g]) || b.initial_rates[g] < 0.0)
            return {kGreedyInitialRate, g};
    }
    return {kGreedyOk, -1};
}

// One evaluation, on a state and buffers that passed greedy_check(). As docs/greedylr.md
// describes it, plus: a non-finite metric is never better and never enters the smoothing window;
// trend mode applies one more increase (decrease) per warmup (cooldown) evaluation, within the
// bounds.
OPTIM_HOST_DEVICE void greedy_step(const optim_greedylr_config& c, optim_greedylr_state& s,
                                   const optim_greedylr_buffers& b, double metric)
{
    s.steps += 1;
    const bool finite = greedy_is_finite(metric);
    double v = metric;
    if (c.smooth) {
        if (finite) {
            b.window[s.window_next] = metric;
            s.window_next = (s.window_next + 1) % c.window_size;
            if (s.window_count < c.window_size) s.window_count += 1;
        }
        if (finite && s.window_count > 0) {
            // Mean of the values seen so far (oldest first), the whole window once full.
            const int64_t start = (s.window_next - s.window_count + c.window_size) % c.window_size;
            double sum = 0.0;
            for (int64_t i = 0; i < s.window_count; ++i)
                sum += b.window[(start + i) % c.window_size];
            v = sum / static_cast<double>(s.window_count);
        }
    }

    if (s.cooldown_counter > 0) {
        s.cooldown_counter -= 1;
        s.num_good = 0;
        s.num_bad = 0;
        if (c.trend) greedy_decrease(c, b);
    } else if (s.warmup_counter > 0) {
        s.warmup_counter -= 1;
        s.num_good = 0;
        s.num_bad = 0;
        if (c.trend) greedy_increase(c, b);
    } else {
        if (finite && greedy_is_better(c, v, s.best)) {
            s.best = v;
            s.num_bad = 0;
            s.num_good += 1;
        } else {
            s.num_bad += 1;
            s.num_good = 0;
        }
        if (s.num_good > c.patience) {
            greedy_increase(c, b);
            s.warmup_counter = c.warmup;
            s.num_good = 0;
            s.reset_budget = c.reset_start;
        } else if (s.num_bad > c.patience) {
            greedy_decrease(c, b);
            bool at_floor = true;
            for (int32_t g = 0; g < c.groups; ++g)
                if (!(b.rates[g] <= b.min_lr[g])) at_floor = false;
            if (at_floor) {
                s.reset_budget -= 1;
                if (s.reset_budget == 0) {
                    for (int32_t g = 0; g < c.groups; ++g) b.rates[g] = b.initial_rates[g];
                    s.best = greedy_initial_best(c);
                    s.num_good = 0;
                    s.num_bad = 0;
                    s.warmup_counter = 0;
                    s.reset_budget = c.reset_start;
                    s.window_count = 0;
                    s.window_next = 0;
                    s.resets += 1;
                }
            }
            s.cooldown_counter = c.cooldown;
            s.num_bad = 0;
        }
    }
}

} // namespace optim
