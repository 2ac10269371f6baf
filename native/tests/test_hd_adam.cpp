// Hypergradient Adam on the CPU against a naive reference (PyTorch's _single_tensor_adam spelled
// out in separate passes plus the Adam-HD rate rule, sums in double; no code shared with the
// library), over 50 steps, every scope and rule, Adam's options, two groups, sizes across chunks;
// with hypergrad_lr 0 it is optim_adam_step bit for bit; thread-count independence; a skipped step;
// step counts in memory; validation leaves memory untouched.
#include "reference.hpp"

#include <optim.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

using namespace optim_test;

namespace {

template <typename T>
constexpr int32_t dtype_of()
{
    return std::is_same_v<T, float> ? OPTIM_DTYPE_FLOAT32 : OPTIM_DTYPE_FLOAT64;
}

template <typename T>
struct HdAdamTensor {
    std::vector<T> param, grad, m, v, vmax, up, alpha;
    int64_t step = 0;
    double rate = 0; // the per-tensor scope's rate
};

struct Options {
    optim_hd_params hp;
    optim_hd_adam_group groups[2];
    double lr[2];
};

// The effective gradient of one tensor, in T: maximize, then coupled L2.
template <typename T>
std::vector<T> adam_grad(const HdAdamTensor<T>& s, const optim_hd_adam_group& o)
{
    std::vector<T> g(s.grad);
    if (o.maximize)
        for (auto& x : g) x = -x;
    if (o.weight_decay != 0)
        for (size_t i = 0; i < g.size(); ++i)
            g[i] = g[i] + static_cast<T>(o.weight_decay) * s.param[i];
    return g;
}

template <typename R>
R hd_rule(R alpha, double h, double scale, const optim_hd_params& hp)
{
    if (hp.first_step || !std::isfinite(h)) return alpha;
    R next = hp.rule == OPTIM_HD_RULE_NORMALIZED
                 ? alpha * (R(1) + static_cast<R>(hp.hypergrad_lr) * static_cast<R>(h) /
                                       (static_cast<R>(scale) + static_cast<R>(hp.eps)))
                 : alpha + static_cast<R>(hp.hypergrad_lr) * static_cast<R>(h);
    next = std::max(next, static_cast<R>(hp.lr_min));
    return std::min(next, static_cast<R>(hp.lr_max));
}

// Adam's step of one tensor with its step size given (lr / (1 - beta1^t), or per element).
template <typename T, class StepSize>
void reference_adam(HdAdamTensor<T>& s, const optim_hd_adam_group& o, StepSize step_size)
{
    const size_t n = s.param.size();
    const std::vector<T> g = adam_grad(s, o);
    double bc1 = 0;
    const std::vector<T> denom = reference_adam_moments(s.m, s.v, s.vmax, g, o.beta1, o.beta2,
                                                        o.eps, o.amsgrad != 0, s.step, bc1);
    for (size_t i = 0; i < n; ++i) s.up[i] = s.m[i] / static_cast<T>(bc1) / denom[i];
    for (size_t i = 0; i < n; ++i) s.param[i] = s.param[i] - step_size(i, bc1) * s.m[i] / denom[i];
}

template <typename T>
struct Model {
    std::vector<HdAdamTensor<T>> tensors;
    std::vector<int32_t> group_of;
    std::vector<double> rates; // scalar scopes
    bool first = true;
    std::vector<void*> params, ms, vs, vmaxs, ups, alphas;
    std::vector<const void*> grads;
    std::vector<int64_t> numels, steps;

    Model(const std::vector<size_t>& sizes, const std::vector<int32_t>& groups, uint64_t seed,
          const Options& o)
        : group_of(groups)
    {
        std::mt19937_64 rng(seed);
        for (size_t k = 0; k < sizes.size(); ++k) {
            HdAdamTensor<T> s;
            s.param = random_vector<T>(sizes[k], rng);
            s.grad = s.m = s.v = s.vmax = s.up = std::vector<T>(sizes[k], T(0));
            s.alpha = std::vector<T>(sizes[k], static_cast<T>(o.lr[groups[k]]));
            tensors.push_back(std::move(s));
        }
        const int64_t slots =
            optim_hd_rate_count(o.hp.scope, 2, static_cast<int64_t>(sizes.size()));
        for (int64_t s = 0; s < slots; ++s)
            rates.push_back(o.hp.scope == OPTIM_HD_SCOPE_PER_PARAMETER ? 0.0
                            : o.hp.scope == OPTIM_HD_SCOPE_PER_TENSOR  ? o.lr[groups[s]]
                                                                       : o.lr[s]);
    }

    // The call's tensors; an inactive tensor takes part with no elements (it has no gradient).
    optim_hd_adam_tensors list(const std::vector<bool>& active)
    {
        params.clear(), grads.clear(), ms.clear(), vs.clear(), vmaxs.clear(), ups.clear();
        alphas.clear(), numels.clear(), steps.clear();
        for (size_t k = 0; k < tensors.size(); ++k) {
            auto& s = tensors[k];
            const bool on = active[k];
            params.push_back(on ? s.param.data() : nullptr);
            grads.push_back(on ? s.grad.data() : nullptr);
            ms.push_back(on ? s.m.data() : nullptr);
            vs.push_back(on ? s.v.data() : nullptr);
            vmaxs.push_back(on ? s.vmax.data() : nullptr);
            ups.push_back(on ? s.up.data() : nullptr);
            alphas.push_back(on ? s.alpha.data() : nullptr);
            numels.push_back(on ? static_cast<int64_t>(s.param.size()) : 0);
            steps.push_back(s.step + 1);
        }
        return optim_hd_adam_tensors{static_cast<int64_t>(params.size()),
                                     params.data(),
                                     grads.data(),
                                     ms.data(),
                                     vs.data(),
                                     vmaxs.data(),
                                     ups.data(),
                                     alphas.data(),
                                     numels.data(),
                                     steps.data(),
                                     group_of.data(),
                                     nullptr};
    }

    optim_status step(const std::vector<bool>& active, Options o, const optim_grad_clip* clip)
    {
        o.hp.first_step = first ? 1 : 0;
        optim_hd_adam_tensors t = list(active);
        int64_t skipped = -1;
        const optim_status st =
            clip ? optim_hd_adam_step_clipped(OPTIM_DEVICE_CPU, 0, dtype_of<T>(), &t, 2, o.groups,
                                              &o.hp, rates.data(), &skipped, clip)
                 : optim_hd_adam_step(OPTIM_DEVICE_CPU, 0, dtype_of<T>(), &t, 2, o.groups, &o.hp,
                                      rates.data(), &skipped);
        if (st == OPTIM_STATUS_OK && skipped == 0) {
            first = false;
            for (size_t k = 0; k < tensors.size(); ++k)
                if (active[k]) tensors[k].step += 1;
        }
        return st;
    }
};

// The reference step of every tensor: the scope's sums in double, the rates, then Adam's steps.
// clip_coef: the clipping coefficient (1 without clipping), applied to each raw gradient.
template <typename T>
void reference_step(Model<T>& r, const std::vector<bool>& active, Options o, T clip_coef)
{
    o.hp.first_step = r.first ? 1 : 0;
    const int32_t scope = o.hp.scope;
    std::vector<double> h(r.rates.size()), gg(r.rates.size()), uu(r.rates.size());
    for (size_t k = 0; k < r.tensors.size(); ++k) {
        if (!active[k]) continue;
        auto& s = r.tensors[k];
        for (auto& x : s.grad) x = x * clip_coef;
        if (scope == OPTIM_HD_SCOPE_PER_PARAMETER) continue;
        const size_t slot = scope == OPTIM_HD_SCOPE_GLOBAL      ? 0
                            : scope == OPTIM_HD_SCOPE_PER_GROUP ? static_cast<size_t>(r.group_of[k])
                                                                : k;
        const std::vector<T> g = adam_grad(s, o.groups[r.group_of[k]]);
        for (size_t i = 0; i < g.size(); ++i) {
            h[slot] += static_cast<double>(g[i]) * static_cast<double>(s.up[i]);
            gg[slot] += static_cast<double>(g[i]) * static_cast<double>(g[i]);
            uu[slot] += static_cast<double>(s.up[i]) * static_cast<double>(s.up[i]);
        }
    }
    for (size_t s = 0; s < r.rates.size(); ++s)
        r.rates[s] = hd_rule<double>(r.rates[s], h[s], std::sqrt(gg[s]) * std::sqrt(uu[s]), o.hp);
    for (size_t k = 0; k < r.tensors.size(); ++k) {
        if (!active[k]) continue;
        auto& s = r.tensors[k];
        const optim_hd_adam_group& grp = o.groups[r.group_of[k]];
        s.step += 1;
        if (scope == OPTIM_HD_SCOPE_PER_PARAMETER) {
            const std::vector<T> g = adam_grad(s, grp);
            for (size_t i = 0; i < g.size(); ++i)
                s.alpha[i] =
                    hd_rule<T>(s.alpha[i], static_cast<double>(g[i] * s.up[i]),
                               static_cast<double>(std::fabs(g[i]) * std::fabs(s.up[i])), o.hp);
            reference_adam(s, grp, [&](size_t i, double bc1) {
                return static_cast<T>(static_cast<double>(s.alpha[i]) / bc1);
            });
        } else {
            const size_t slot = scope == OPTIM_HD_SCOPE_GLOBAL ? 0
                                : scope == OPTIM_HD_SCOPE_PER_GROUP
                                    ? static_cast<size_t>(r.group_of[k])
                                    : k;
            const double rate = r.rates[slot];
            reference_adam(s, grp, [&](size_t, double bc1) { return static_cast<T>(rate / bc1); });
        }
    }
    r.first = false;
}

template <typename T>
::testing::AssertionResult close(const std::vector<T>& got, const std::vector<T>& want,
                                 const char* what, double tol)
{
    for (size_t i = 0; i < got.size(); ++i) {
        const double a = got[i], b = want[i];
        if (!(std::fabs(a - b) <= tol * (1 + std::fabs(b))))
            return ::testing::AssertionFailure()
                   << what << "[" << i << "]: got " << a << ", reference " << b;
    }
    return ::testing::AssertionSuccess();
}

// Sizes crossing the 64 Ki chunk boundaries, with empty and tiny tensors; two groups.
const std::vector<size_t> kSizes = {1, 0, 7, 1000, 65536 + 3, 2 * 65536 - 5, 33};
const std::vector<int32_t> kGroups = {0, 0, 0, 0, 1, 1, 1};

Options make_options(int32_t scope, int32_t rule, int amsgrad, int maximize, double wd)
{
    Options o;
    o.hp = optim_hd_params{
        rule == OPTIM_HD_RULE_NORMALIZED ? 0.02 : 1e-4, 1e-5, 0.05, 1e-12, scope, rule, 0, 0, 0};
    o.groups[0] = optim_hd_adam_group{0.9, 0.999, 1e-8, wd, amsgrad, maximize};
    o.groups[1] = optim_hd_adam_group{0.5, 0.9, 1e-6, wd, 1 - amsgrad, maximize}; // lerp's branch
    o.lr[0] = 0.01;
    o.lr[1] = 0.003;
    return o;
}

// 50 steps against the reference; tensor 2 gets its first gradient at step 10.
template <typename T>
void check_against_reference(const Options& o, bool clipped)
{
    Model<T> model(kSizes, kGroups, 7, o);
    Model<T> ref(kSizes, kGroups, 7, o);
    std::mt19937_64 rng(11);
    // Gradients that keep their direction for a while, so that the rates move both ways.
    std::vector<std::vector<T>> drift;
    for (size_t n : kSizes) drift.push_back(random_vector<T>(n, rng, 0.5));
    const double tol = std::is_same_v<T, float> ? 2e-4 : 1e-9;
    double total_norm = 0;
    const optim_grad_clip clip{0.5, &total_norm, 0};
    for (int step = 0; step < 50; ++step) {
        std::vector<bool> active(kSizes.size(), true);
        active[2] = step >= 10;
        for (size_t k = 0; k < kSizes.size(); ++k) {
            std::vector<T> noise = random_vector<T>(kSizes[k], rng, 0.3);
            for (size_t i = 0; i < noise.size(); ++i) noise[i] += drift[k][i];
            model.tensors[k].grad = noise;
            ref.tensors[k].grad = noise;
        }
        T coef = T(1);
        if (clipped) {
            double sq = 0;
            for (size_t k = 0; k < kSizes.size(); ++k)
                if (active[k])
                    for (T x : ref.tensors[k].grad) sq += static_cast<double>(x) * x;
            coef = std::min(T(1), static_cast<T>(clip.max_norm) /
                                      (static_cast<T>(std::sqrt(sq)) + static_cast<T>(1e-6)));
        }
        ASSERT_EQ(model.step(active, o, clipped ? &clip : nullptr), OPTIM_STATUS_OK)
            << optim_last_error();
        reference_step(ref, active, o, coef);
        for (size_t s = 0; s < ref.rates.size(); ++s)
            ASSERT_NEAR(model.rates[s], ref.rates[s], tol * ref.rates[s])
                << "rate " << s << " at step " << step;
    }
    for (size_t k = 0; k < kSizes.size(); ++k) {
        const auto& a = model.tensors[k];
        const auto& b = ref.tensors[k];
        EXPECT_EQ(a.step, b.step);
        EXPECT_TRUE(close(a.param, b.param, "param", tol)) << "tensor " << k;
        EXPECT_TRUE(close(a.m, b.m, "exp_avg", tol)) << "tensor " << k;
        EXPECT_TRUE(close(a.v, b.v, "exp_avg_sq", tol)) << "tensor " << k;
        EXPECT_TRUE(close(a.up, b.up, "u_prev", tol)) << "tensor " << k;
        if (o.groups[kGroups[k]].amsgrad) {
            EXPECT_TRUE(close(a.vmax, b.vmax, "max_exp_avg_sq", tol)) << "tensor " << k;
        }
        if (o.hp.scope == OPTIM_HD_SCOPE_PER_PARAMETER) {
            EXPECT_TRUE(close(a.alpha, b.alpha, "rate", tol)) << "tensor " << k;
        }
    }
    // The rates moved (the test would otherwise not test the rule).
    if (o.hp.scope != OPTIM_HD_SCOPE_PER_PARAMETER) {
        EXPECT_NE(model.rates[0], o.lr[0]);
    } else {
        EXPECT_NE(model.tensors[3].alpha[0], static_cast<T>(o.lr[0]));
    }
}

// Every scope and rule, each with four of Adam's option sets (plain; amsgrad, maximize and weight
// decay; maximize and weight decay; amsgrad), or the first two (sets). The second group flips
// amsgrad.
template <typename T>
void every_scope_rule_and_option(bool clipped, size_t sets_used = 4)
{
    struct Set {
        int amsgrad, maximize;
        double wd;
    };
    const Set sets[] = {{0, 0, 0.0}, {1, 1, 0.05}, {0, 1, 0.05}, {1, 0, 0.0}};
    for (int32_t scope = OPTIM_HD_SCOPE_GLOBAL; scope <= OPTIM_HD_SCOPE_PER_PARAMETER; ++scope)
        for (int32_t rule : {OPTIM_HD_RULE_ADDITIVE, OPTIM_HD_RULE_NORMALIZED})
            for (size_t i = 0; i < sets_used; ++i) {
                const Set& set = sets[i];
                if (clipped && set.amsgrad) continue;
                SCOPED_TRACE("scope " + std::to_string(scope) + " rule " + std::to_string(rule) +
                             " amsgrad " + std::to_string(set.amsgrad) + " maximize " +
                             std::to_string(set.maximize) + " wd " + std::to_string(set.wd));
                check_against_reference<T>(
                    make_options(scope, rule, set.amsgrad, set.maximize, set.wd), clipped);
            }
}

} // namespace

TEST(HdAdamCpu, MatchesReferenceFloat32)
{
    every_scope_rule_and_option<float>(false);
}

TEST(HdAdamCpu, MatchesReferenceFloat64)
{
    every_scope_rule_and_option<double>(false, 2);
}

TEST(HdAdamCpu, ClippedMatchesClipGradNormThenTheReference)
{
    every_scope_rule_and_option<double>(true, 2);
    every_scope_rule_and_option<float>(true);
}

// With hypergrad_lr 0 every scope is optim_adam_step bit for bit (lr exact in float).
template <typename T>
void zero_hypergrad_lr_is_fused_adam()
{
    const std::vector<size_t> sizes = {5, 65536 + 9, 1000};
    const std::vector<int32_t> groups = {0, 0, 1};
    for (int32_t scope = OPTIM_HD_SCOPE_GLOBAL; scope <= OPTIM_HD_SCOPE_PER_PARAMETER; ++scope) {
        Options o = make_options(scope, OPTIM_HD_RULE_ADDITIVE, 1, 0, 0.01);
        o.hp.hypergrad_lr = 0;
        o.hp.lr_min = 0;
        o.hp.lr_max = 1;
        o.lr[0] = o.lr[1] = 1.0 / 1024; // exact in float, so per-parameter rates hold it exactly
        Model<T> hd(sizes, groups, 3, o);
        Model<T> adam(sizes, groups, 3, o);
        std::mt19937_64 rng(4);
        const std::vector<bool> active(sizes.size(), true);
        for (int step = 0; step < 20; ++step) {
            for (size_t k = 0; k < sizes.size(); ++k)
                hd.tensors[k].grad = adam.tensors[k].grad = random_vector<T>(sizes[k], rng);
            ASSERT_EQ(hd.step(active, o, nullptr), OPTIM_STATUS_OK) << optim_last_error();
            optim_adam_params a[2];
            for (int g = 0; g < 2; ++g)
                a[g] = optim_adam_params{o.lr[g],
                                         o.groups[g].beta1,
                                         o.groups[g].beta2,
                                         o.groups[g].eps,
                                         o.groups[g].weight_decay,
                                         o.groups[g].amsgrad,
                                         0,
                                         0};
            optim_hd_adam_tensors t = adam.list(active);
            optim_adam_tensors at{
                t.count,           t.params, t.grads, t.exp_avgs,    t.exp_avg_sqs,
                t.max_exp_avg_sqs, t.numels, t.steps, t.group_index, nullptr};
            ASSERT_EQ(optim_adam_step(OPTIM_DEVICE_CPU, 0, dtype_of<T>(), &at, 2, a),
                      OPTIM_STATUS_OK);
            for (auto& s : adam.tensors) s.step += 1;
        }
        for (size_t k = 0; k < sizes.size(); ++k) {
            EXPECT_TRUE(same_bits(hd.tensors[k].param, adam.tensors[k].param))
                << "scope " << scope << " tensor " << k;
            EXPECT_TRUE(same_bits(hd.tensors[k].m, adam.tensors[k].m));
            EXPECT_TRUE(same_bits(hd.tensors[k].v, adam.tensors[k].v));
            EXPECT_TRUE(same_bits(hd.tensors[k].vmax, adam.tensors[k].vmax));
        }
    }
}

TEST(HdAdamCpu, ZeroHypergradLrIsFusedAdamBitForBit)
{
    zero_hypergrad_lr_is_fused_adam<float>();
    zero_hypergrad_lr_is_fused_adam<double>();
}

TEST(HdAdamCpu, ResultsAreBitwiseIdenticalForAnyNumberOfThreads)
{
    const std::vector<size_t> sizes = {500000, 3, 65536 * 4 + 1, 0, 300000, 12345, 200000};
    const std::vector<int32_t> groups = {0, 0, 0, 0, 1, 1, 1};
    for (int32_t scope :
         {OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_SCOPE_PER_TENSOR, OPTIM_HD_SCOPE_PER_PARAMETER}) {
        const Options o = make_options(scope, OPTIM_HD_RULE_NORMALIZED, 1, 0, 0.01);
        std::vector<Model<float>> runs;
        for (int threads : {1, 2, 3}) {
            ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
            Model<float> m(sizes, groups, 99, o);
            std::mt19937_64 rng(5);
            const std::vector<bool> active(sizes.size(), true);
            for (int step = 0; step < 4; ++step) {
                for (auto& t : m.tensors) t.grad = random_vector<float>(t.param.size(), rng, 0.5);
                ASSERT_EQ(m.step(active, o, nullptr), OPTIM_STATUS_OK);
            }
            runs.push_back(std::move(m));
        }
        optim_set_num_threads(0);
        for (size_t r = 1; r < runs.size(); ++r) {
            EXPECT_EQ(runs[0].rates, runs[r].rates) << "scope " << scope;
            for (size_t k = 0; k < sizes.size(); ++k) {
                const auto& a = runs[0].tensors[k];
                const auto& b = runs[r].tensors[k];
                EXPECT_TRUE(same_bits(a.param, b.param) && same_bits(a.m, b.m) &&
                            same_bits(a.v, b.v) && same_bits(a.up, b.up) &&
                            same_bits(a.alpha, b.alpha))
                    << "scope " << scope << " tensor " << k << " differs between thread counts";
            }
        }
    }
}

TEST(HdAdamCpu, NonFiniteGradientSkipsTheWholeStep)
{
    for (int32_t scope = OPTIM_HD_SCOPE_GLOBAL; scope <= OPTIM_HD_SCOPE_PER_PARAMETER; ++scope) {
        const Options o = make_options(scope, OPTIM_HD_RULE_ADDITIVE, 1, 0, 0.01);
        Model<float> m(kSizes, kGroups, 5, o);
        std::mt19937_64 rng(6);
        const std::vector<bool> active(kSizes.size(), true);
        for (int step = 0; step < 3; ++step) {
            for (auto& t : m.tensors) t.grad = random_vector<float>(t.param.size(), rng, 0.5);
            ASSERT_EQ(m.step(active, o, nullptr), OPTIM_STATUS_OK);
        }
        const Model<float> before = m;
        m.tensors[5].grad[70000] = std::numeric_limits<float>::quiet_NaN();
        Options oo = o;
        oo.hp.first_step = 0;
        optim_hd_adam_tensors t = m.list(active);
        int64_t skipped = 0;
        ASSERT_EQ(optim_hd_adam_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &t, 2, oo.groups,
                                     &oo.hp, m.rates.data(), &skipped),
                  OPTIM_STATUS_OK);
        EXPECT_EQ(skipped, 1);
        EXPECT_EQ(m.rates, before.rates);
        for (size_t k = 0; k < kSizes.size(); ++k) {
            const auto& a = m.tensors[k];
            const auto& b = before.tensors[k];
            EXPECT_TRUE(same_bits(a.param, b.param) && same_bits(a.m, b.m) && same_bits(a.v, b.v) &&
                        same_bits(a.vmax, b.vmax) && same_bits(a.up, b.up) &&
                        same_bits(a.alpha, b.alpha))
                << "scope " << scope << ": tensor " << k << " was written by a skipped step";
        }
    }
}

// Step counts in memory (step_counts) instead of step numbers: the same step bit for bit, each
// count the steps its tensor took (none while it has no gradient, an entry without elements; none
// on a skipped step); 1 and 3 threads.
TEST(HdAdamCpu, StepCountsInMemoryAreTheStepNumbersPath)
{
    for (int threads : {1, 3}) {
        ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
        for (int32_t scope = OPTIM_HD_SCOPE_GLOBAL; scope <= OPTIM_HD_SCOPE_PER_PARAMETER;
             ++scope) {
            SCOPED_TRACE("scope " + std::to_string(scope) + ", threads " + std::to_string(threads));
            const Options o = make_options(scope, OPTIM_HD_RULE_NORMALIZED, 1, 0, 0.01);
            Model<float> numbers(kSizes, kGroups, 11, o), counted(kSizes, kGroups, 11, o);
            std::vector<int64_t> counts(kSizes.size(), 0);
            std::vector<int64_t*> count_ptrs;
            for (auto& c : counts) count_ptrs.push_back(&c);
            std::mt19937_64 rng(12);
            int64_t taken = 0;
            for (int step = 0; step < 9; ++step) {
                std::vector<bool> active(kSizes.size(), true);
                active[4] = step >= 3; // its first gradient comes at the fourth step
                for (size_t k = 0; k < kSizes.size(); ++k) {
                    numbers.tensors[k].grad = random_vector<float>(kSizes[k], rng, 0.5);
                    counted.tensors[k].grad = numbers.tensors[k].grad;
                }
                const bool bad = step == 5;
                if (bad) {
                    numbers.tensors[3].grad[9] = std::numeric_limits<float>::quiet_NaN();
                    counted.tensors[3].grad[9] = numbers.tensors[3].grad[9];
                }
                ASSERT_EQ(numbers.step(active, o, nullptr), OPTIM_STATUS_OK);
                Options oc = o;
                oc.hp.first_step = counted.first ? 1 : 0;
                optim_hd_adam_tensors t = counted.list(active);
                t.steps = nullptr;
                t.step_counts = count_ptrs.data();
                int64_t skipped = -1;
                ASSERT_EQ(optim_hd_adam_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &t, 2,
                                             oc.groups, &oc.hp, counted.rates.data(), &skipped),
                          OPTIM_STATUS_OK)
                    << optim_last_error();
                EXPECT_EQ(skipped, bad ? 1 : 0);
                if (!bad) counted.first = false, ++taken;
                for (size_t k = 0; k < kSizes.size(); ++k)
                    EXPECT_EQ(counts[k], kSizes[k] > 0 ? numbers.tensors[k].step : 0)
                        << "step " << step << " tensor " << k;
                EXPECT_EQ(counts[3], taken);
                EXPECT_EQ(numbers.rates, counted.rates) << "step " << step;
                for (size_t k = 0; k < kSizes.size(); ++k) {
                    const auto& a = numbers.tensors[k];
                    const auto& b = counted.tensors[k];
                    EXPECT_TRUE(same_bits(a.param, b.param) && same_bits(a.m, b.m) &&
                                same_bits(a.v, b.v) && same_bits(a.vmax, b.vmax) &&
                                same_bits(a.up, b.up) && same_bits(a.alpha, b.alpha))
                        << "step " << step << ": tensor " << k << " differs";
                }
            }
        }
    }
    optim_set_num_threads(0);
}

// ---- Validation: every bad argument is reported, and nothing is written ----------------------

namespace {
struct Fixture {
    std::vector<float> p = {1, 2, 3}, g = {0.1f, 0.2f, 0.3f}, m = {4, 5, 6}, v = {7, 8, 9},
                       w = {10, 11, 12}, u = {13, 14, 15}, a = {16, 17, 18};
    void* ps[1] = {p.data()};
    const void* gs[1] = {g.data()};
    void* mss[1] = {m.data()};
    void* vss[1] = {v.data()};
    void* wss[1] = {w.data()};
    void* uss[1] = {u.data()};
    void* ass[1] = {a.data()};
    int64_t ns[1] = {3};
    int64_t steps[1] = {2};
    int32_t gi[1] = {0};
    int64_t count = 1;
    int64_t* counts[1] = {&count};
    optim_hd_adam_tensors list{1, ps, gs, mss, vss, wss, uss, ass, ns, steps, gi, nullptr};
    optim_hd_adam_group group{0.9, 0.999, 1e-8, 0.0, 1, 0};
    optim_hd_params hp{1e-3, 0.0, 1.0, 1e-12, OPTIM_HD_SCOPE_PER_PARAMETER, OPTIM_HD_RULE_ADDITIVE,
                       0,    0,   0};
    double rate = 0.01;
    void expect_failure(optim_status expected, const std::string& fragment,
                        int32_t device = OPTIM_DEVICE_CPU, int32_t dtype = OPTIM_DTYPE_FLOAT32,
                        const optim_grad_clip* clip = nullptr)
    {
        int64_t skipped = 7;
        const double rate_before = rate;
        const int64_t count_before = count;
        const optim_status st =
            clip ? optim_hd_adam_step_clipped(device, 0, dtype, &list, 1, &group, &hp, &rate,
                                              &skipped, clip)
                 : optim_hd_adam_step(device, 0, dtype, &list, 1, &group, &hp, &rate, &skipped);
        EXPECT_EQ(st, expected);
        const std::string message = optim_last_error();
        EXPECT_NE(message.find(fragment), std::string::npos)
            << "message '" << message << "' lacks '" << fragment << "'";
        EXPECT_EQ(p, (std::vector<float>{1, 2, 3})) << "parameters were modified";
        EXPECT_EQ(m, (std::vector<float>{4, 5, 6})) << "exp_avg was modified";
        EXPECT_EQ(v, (std::vector<float>{7, 8, 9})) << "exp_avg_sq was modified";
        EXPECT_EQ(w, (std::vector<float>{10, 11, 12})) << "max_exp_avg_sq was modified";
        EXPECT_EQ(u, (std::vector<float>{13, 14, 15})) << "u_prev was modified";
        EXPECT_EQ(a, (std::vector<float>{16, 17, 18})) << "rates were modified";
        EXPECT_EQ(rate, rate_before) << "the scalar rate was modified";
        EXPECT_EQ(skipped, 7) << "the skip report was written";
        EXPECT_EQ(count, count_before) << "the step count was written";
    }
};
} // namespace

TEST(HdAdamValidation, EveryBadArgumentIsNamed)
{
    const auto bad = [](auto change, optim_status st, const std::string& fragment) {
        Fixture f;
        change(f);
        SCOPED_TRACE(fragment);
        f.expect_failure(st, fragment);
    };
    const optim_status inv = OPTIM_STATUS_INVALID_ARGUMENT;
    bad([](Fixture& f) { f.group.beta1 = 1.0; }, inv, "invalid beta parameter at index 0");
    bad([](Fixture& f) { f.group.beta2 = -0.1; }, inv, "invalid beta parameter at index 1");
    bad([](Fixture& f) { f.group.eps = -1; }, inv, "invalid epsilon value");
    bad([](Fixture& f) { f.group.weight_decay = NAN; }, inv, "invalid weight_decay value");
    bad([](Fixture& f) { f.group.amsgrad = 2; }, inv, "amsgrad must be 0 or 1");
    bad([](Fixture& f) { f.group.maximize = 3; }, inv, "maximize must be 0 or 1");
    bad([](Fixture& f) { f.hp.hypergrad_lr = -1; }, inv, "invalid hypergrad_lr");
    bad([](Fixture& f) { f.hp.lr_max = -1; }, inv, "is greater than lr_max");
    bad([](Fixture& f) { f.hp.scope = 9; }, inv, "unknown scope");
    bad([](Fixture& f) { f.hp.rule = 4; }, inv, "unknown rule");
    bad([](Fixture& f) { f.steps[0] = 0; }, inv, "step must be >= 1");
    bad([](Fixture& f) { f.list.step_counts = f.counts; }, inv,
        "steps and step_counts are both given");
    bad([](Fixture& f) { f.list.steps = nullptr; }, inv, "steps and step_counts are both NULL");
    bad(
        [](Fixture& f) {
            f.list.steps = nullptr, f.list.step_counts = f.counts;
            f.count = -1;
        },
        inv, "step count must be >= 0");
    bad(
        [](Fixture& f) {
            f.list.steps = nullptr, f.list.step_counts = f.counts;
            f.counts[0] = nullptr;
        },
        inv, "step count pointer is NULL");
    bad([](Fixture& f) { f.uss[0] = nullptr; }, inv, "prev_updates pointer is NULL");
    bad([](Fixture& f) { f.ass[0] = nullptr; }, inv, "param_rates pointer is NULL");
    bad([](Fixture& f) { f.wss[0] = nullptr; }, inv, "max_exp_avg_sq pointer is NULL");
    bad([](Fixture& f) { f.uss[0] = f.p.data(); }, inv, "are the same memory");
    bad([](Fixture& f) { f.gi[0] = 1; }, inv, "out of range");
    bad([](Fixture& f) { f.list.prev_updates = nullptr; }, inv, "must not be NULL");
    bad(
        [](Fixture& f) {
            f.hp.scope = OPTIM_HD_SCOPE_GLOBAL;
            f.rate = -1;
        },
        inv, "rate 0 is invalid");
}

TEST(HdAdamValidation, BadDeviceDtypeAndClip)
{
    {
        Fixture f;
        f.expect_failure(OPTIM_STATUS_UNSUPPORTED, "unsupported dtype", OPTIM_DEVICE_CPU, 99);
    }
    {
        Fixture f;
        f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "unknown device", 7);
    }
    {
        Fixture f;
        double norm = 0;
        const optim_grad_clip clip{-1.0, &norm, 0};
        f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "invalid max_norm", OPTIM_DEVICE_CPU,
                         OPTIM_DTYPE_FLOAT32, &clip);
    }
    if (optim_cuda_compiled() == 0) {
        Fixture f;
        f.expect_failure(OPTIM_STATUS_CUDA_UNAVAILABLE, "optim_hd_adam_step", OPTIM_DEVICE_CUDA);
    }
}
