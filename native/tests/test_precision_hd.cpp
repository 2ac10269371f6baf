// Hypergradient SGD and hypergradient Adam on float16 and bfloat16 parameters (optim_hd_step_mixed,
// optim_hd_adam_step_mixed, and the plain entry points in place), against the library's float32
// step of the same values: every scope and both rules, 55 steps, every state buffer and rate
// compared bit for bit.
#include "../src/precision.hpp"
#include "precision16.hpp"
#include "reference.hpp"

#include <optim.h>

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using optim::BFloat16;
using optim::Half;
using optim_test::dtype_of;
using optim_test::same_bits;
using optim_test::to_storage;

enum class Opt { Sgd, Adam };
// InPlace: the plain (or _clipped) entry point on 16-bit parameters, rounded to nearest. Master:
// _mixed with master weights. Stochastic: _mixed, bfloat16 in place, stochastic rounding.
enum class Mode { InPlace, Master, Stochastic };

// Sizes crossing the 64 Ki chunk boundary, with an empty and tiny tensors; two groups.
const std::vector<size_t> kSizes = {1, 0, 7, 65536 + 3, 1000, 33};
const std::vector<int32_t> kGroups = {0, 0, 0, 1, 1, 1};
const int64_t kSeed = 1234;

// The float32 arrays of one tensor: its parameter (the master copy on the 16-bit side), its state.
struct Floats {
    std::vector<float> param, buf, prev, m, v, vmax, alpha;
};

template <typename S>
struct HdRun {
    Opt opt;
    Mode mode;
    int32_t scope, rule;
    bool clip;
    std::vector<std::vector<S>> param, grad; // the 16-bit side
    std::vector<Floats> low;                 // its float32 state (and master copies)
    std::vector<Floats> ref;                 // the float32 run
    std::vector<std::vector<float>> grad32;  // the same gradients in float32
    std::vector<double> rates, ref_rates;
    double norm = 0, ref_norm = 0;

    HdRun(Opt o, Mode md, int32_t sc, int32_t ru, bool cl)
        : opt(o), mode(md), scope(sc), rule(ru), clip(cl)
    {
        std::mt19937_64 rng(7);
        for (size_t n : kSizes) {
            std::vector<S> p;
            for (float x : optim_test::random_vector<float>(n, rng)) p.push_back(to_storage<S>(x));
            Floats f;
            for (const S& x : p) f.param.push_back(optim::load_value(x));
            f.buf = f.prev = f.m = f.v = f.vmax = std::vector<float>(n, 0.0f);
            f.alpha = std::vector<float>(n, opt == Opt::Sgd ? 0.01f : 1e-3f);
            param.push_back(p);
            grad.emplace_back(n);
            grad32.emplace_back(n);
            low.push_back(f);
            ref.push_back(f);
        }
        const int64_t slots = optim_hd_rate_count(scope, 2, static_cast<int64_t>(kSizes.size()));
        rates = ref_rates = std::vector<double>(static_cast<size_t>(slots > 0 ? slots : 1),
                                                opt == Opt::Sgd ? 0.01 : 1e-3);
    }

    void new_gradients(std::mt19937_64& rng)
    {
        for (size_t k = 0; k < grad.size(); ++k)
            for (size_t i = 0; i < grad[k].size(); ++i) {
                grad[k][i] =
                    to_storage<S>(static_cast<float>(std::normal_distribution<double>(0, 1)(rng)));
                grad32[k][i] = optim::load_value(grad[k][i]);
            }
    }

    optim_hd_params params(int64_t step) const
    {
        optim_hd_params hp{};
        const bool additive = rule == OPTIM_HD_RULE_ADDITIVE;
        hp.hypergrad_lr = additive ? (opt == Opt::Sgd ? 1e-5 : 1e-7) : 0.02;
        hp.lr_min = 0.0;
        hp.lr_max = 1.0;
        hp.eps = 1e-8;
        hp.scope = scope;
        hp.rule = rule;
        hp.first_step = step == 1 ? 1 : 0;
        return hp;
    }

    // One step of one side: the 16-bit side (low) or the float32 run.
    optim_status step(bool low_side, int64_t step_number)
    {
        const size_t n = kSizes.size();
        std::vector<Floats>& f = low_side ? low : ref;
        std::vector<void*> p(n), b(n), up(n), m(n), v(n), w(n), a(n), master(n);
        std::vector<const void*> g(n);
        std::vector<int64_t> numels(n), steps(n, step_number);
        std::vector<uint8_t> fresh(n, step_number == 1 ? 1 : 0);
        for (size_t k = 0; k < n; ++k) {
            p[k] = low_side ? static_cast<void*>(param[k].data()) : f[k].param.data();
            g[k] = low_side ? static_cast<const void*>(grad[k].data()) : grad32[k].data();
            master[k] = low[k].param.data();
            b[k] = f[k].buf.data(), up[k] = f[k].prev.data(), m[k] = f[k].m.data();
            v[k] = f[k].v.data(), w[k] = f[k].vmax.data(), a[k] = f[k].alpha.data();
            numels[k] = static_cast<int64_t>(kSizes[k]);
        }
        const int32_t dtype = low_side ? dtype_of<S>() : OPTIM_DTYPE_FLOAT32;
        const optim_hd_params hp = params(step_number);
        double* r = low_side ? rates.data() : ref_rates.data();
        int64_t skipped = -1;
        optim_grad_clip c{};
        c.max_norm = 40.0; // below the gradients' norm (~280): every step clips
        c.total_norm = low_side ? &norm : &ref_norm;
        const optim_grad_clip* cp = clip ? &c : nullptr;
        const bool mixed = low_side && mode != Mode::InPlace;
        const optim_precision precision{
            mode == Mode::Master ? master.data() : nullptr, kSeed, step_number,
            mode == Mode::Stochastic ? OPTIM_ROUNDING_STOCHASTIC : OPTIM_ROUNDING_NEAREST};
        optim_status status;
        if (opt == Opt::Sgd) {
            const optim_hd_group groups[2] = {{0.9, 0.0, 1e-3, 0, 0}, {0.8, 0.0, 0.0, 1, 0}};
            const optim_hd_tensors t{
                static_cast<int64_t>(n), p.data(),       g.data(),    b.data(), up.data(), a.data(),
                numels.data(),           kGroups.data(), fresh.data()};
            status =
                mixed  ? optim_hd_step_mixed(OPTIM_DEVICE_CPU, 0, dtype, &t, 2, groups, &hp, r,
                                             &skipped, cp, &precision)
                : clip ? optim_hd_step_clipped(OPTIM_DEVICE_CPU, 0, dtype, &t, 2, groups, &hp, r,
                                               &skipped, cp)
                       : optim_hd_step(OPTIM_DEVICE_CPU, 0, dtype, &t, 2, groups, &hp, r, &skipped);
        } else {
            const optim_hd_adam_group groups[2] = {{0.9, 0.999, 1e-8, 1e-2, 1, 0},
                                                   {0.8, 0.99, 1e-6, 0.0, 0, 1}};
            const optim_hd_adam_tensors t{static_cast<int64_t>(n),
                                          p.data(),
                                          g.data(),
                                          m.data(),
                                          v.data(),
                                          w.data(),
                                          up.data(),
                                          a.data(),
                                          numels.data(),
                                          steps.data(),
                                          kGroups.data(),
                                          nullptr};
            status = mixed  ? optim_hd_adam_step_mixed(OPTIM_DEVICE_CPU, 0, dtype, &t, 2, groups,
                                                       &hp, r, &skipped, cp, &precision)
                     : clip ? optim_hd_adam_step_clipped(OPTIM_DEVICE_CPU, 0, dtype, &t, 2, groups,
                                                         &hp, r, &skipped, cp)
                            : optim_hd_adam_step(OPTIM_DEVICE_CPU, 0, dtype, &t, 2, groups, &hp, r,
                                                 &skipped);
        }
        if (status == OPTIM_STATUS_OK && skipped != 0) ADD_FAILURE() << "a finite step skipped";
        return status;
    }
};

template <typename S>
std::string describe(const HdRun<S>& r, int64_t step)
{
    return std::string(r.opt == Opt::Sgd ? "HD-SGD" : "HD-Adam") +
           (std::is_same_v<S, Half> ? " float16" : " bfloat16") + " mode " +
           std::to_string(static_cast<int>(r.mode)) + " scope " + std::to_string(r.scope) +
           " rule " + std::to_string(r.rule) + (r.clip ? " clipped" : "") + " step " +
           std::to_string(step);
}

// 55 steps. Master: the master copy is the float32 run bit for bit (the reduction reads it and the
// gradients' exact float32 values, in the same order), the parameter its rounding to nearest.
// In place: each step is the float32 step of the rounded parameter, rounded, with the state and the
// rates bit for bit (the float32 run restarts from the 16-bit parameter each step; over many steps
// the two runs part by the roundings, which only this per-step form pins exactly). Stochastic: the
// parameter is precision.hpp's stochastic rounding of the float32 step with the bits of (seed,
// step, tensor, element).
template <typename S>
void check(Opt opt, Mode mode, int32_t scope, int32_t rule, bool clip)
{
    HdRun<S> r(opt, mode, scope, rule, clip);
    std::mt19937_64 rng(11);
    for (int64_t step = 1; step <= 55; ++step) {
        r.new_gradients(rng);
        if (mode != Mode::Master)
            for (size_t k = 0; k < kSizes.size(); ++k)
                for (size_t i = 0; i < kSizes[k]; ++i)
                    r.ref[k].param[i] = optim::load_value(r.param[k][i]);
        ASSERT_EQ(r.step(true, step), OPTIM_STATUS_OK) << describe(r, step) << optim_last_error();
        ASSERT_EQ(r.step(false, step), OPTIM_STATUS_OK) << describe(r, step) << optim_last_error();
        const std::string at = describe(r, step);
        ASSERT_TRUE(same_bits(r.rates, r.ref_rates)) << at << ": rates";
        if (clip) {
            ASSERT_EQ(r.norm, r.ref_norm) << at << ": norm";
        }
        for (size_t k = 0; k < kSizes.size(); ++k) {
            const Floats &a = r.low[k], &b = r.ref[k];
            ASSERT_TRUE(same_bits(a.buf, b.buf)) << at << " tensor " << k << ": buffer";
            ASSERT_TRUE(same_bits(a.prev, b.prev)) << at << " tensor " << k << ": prev";
            ASSERT_TRUE(same_bits(a.m, b.m)) << at << " tensor " << k << ": exp_avg";
            ASSERT_TRUE(same_bits(a.v, b.v)) << at << " tensor " << k << ": exp_avg_sq";
            ASSERT_TRUE(same_bits(a.vmax, b.vmax)) << at << " tensor " << k << ": max_exp_avg_sq";
            ASSERT_TRUE(same_bits(a.alpha, b.alpha)) << at << " tensor " << k << ": rates";
            if (mode == Mode::Master) {
                ASSERT_TRUE(same_bits(a.param, b.param)) << at << " tensor " << k << ": master";
            }
            const uint64_t key = optim::rounding_key(kSeed, step, static_cast<int64_t>(k));
            for (size_t i = 0; i < kSizes[k]; ++i) {
                const float want = b.param[i];
                const uint16_t bits =
                    mode == Mode::Stochastic
                        ? optim::float_to_bfloat16_stochastic(
                              want, optim::rounding_noise(key, static_cast<int64_t>(i)))
                              .bits
                        : to_storage<S>(want).bits;
                ASSERT_EQ(r.param[k][i].bits, bits) << at << " tensor " << k << "[" << i << "]";
            }
        }
    }
    // The rates moved (else the rule went untested).
    if (scope == OPTIM_HD_SCOPE_PER_PARAMETER)
        EXPECT_NE(r.low[3].alpha[0], r.opt == Opt::Sgd ? 0.01f : 1e-3f) << describe(r, 55);
    else
        EXPECT_NE(r.rates[0], r.opt == Opt::Sgd ? 0.01 : 1e-3) << describe(r, 55);
}

const int32_t kScopes[] = {OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_SCOPE_PER_GROUP,
                           OPTIM_HD_SCOPE_PER_TENSOR, OPTIM_HD_SCOPE_PER_PARAMETER};
const int32_t kRules[] = {OPTIM_HD_RULE_ADDITIVE, OPTIM_HD_RULE_NORMALIZED};

void check_all(Opt opt)
{
    ASSERT_EQ(optim_set_num_threads(2), OPTIM_STATUS_OK);
    for (int32_t scope : kScopes)
        for (int32_t rule : kRules) {
            check<BFloat16>(opt, Mode::Master, scope, rule, false);
            check<Half>(opt, Mode::Master, scope, rule, false);
            check<BFloat16>(opt, Mode::InPlace, scope, rule, false);
            check<Half>(opt, Mode::InPlace, scope, rule, false);
            check<BFloat16>(opt, Mode::Stochastic, scope, rule, false);
        }
    // Clipped, one rule per scope.
    for (int32_t scope : kScopes) {
        check<BFloat16>(opt, Mode::Master, scope, OPTIM_HD_RULE_NORMALIZED, true);
        check<Half>(opt, Mode::InPlace, scope, OPTIM_HD_RULE_ADDITIVE, true);
    }
    optim_set_num_threads(0);
}

TEST(MixedHd, EveryScopeAndRuleIsTheFloat32Step)
{
    check_all(Opt::Sgd);
}
TEST(MixedHdAdam, EveryScopeAndRuleIsTheFloat32Step)
{
    check_all(Opt::Adam);
}

// The same seed gives the same bits on every thread count; another seed others.
TEST(MixedHd, StochasticRoundingIsDeterministicPerSeed)
{
    auto run = [](int64_t seed, int threads) {
        EXPECT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
        HdRun<BFloat16> r(Opt::Adam, Mode::Stochastic, OPTIM_HD_SCOPE_PER_GROUP,
                          OPTIM_HD_RULE_NORMALIZED, false);
        std::mt19937_64 rng(3);
        std::vector<BFloat16> out;
        for (int64_t step = 1; step <= 5; ++step) {
            r.new_gradients(rng);
            const size_t n = kSizes.size();
            std::vector<void*> p(n), m(n), v(n), w(n), up(n), a(n);
            std::vector<const void*> g(n);
            std::vector<int64_t> numels(n), steps(n, step);
            for (size_t k = 0; k < n; ++k) {
                p[k] = r.param[k].data(), g[k] = r.grad[k].data(), m[k] = r.low[k].m.data();
                v[k] = r.low[k].v.data(), w[k] = r.low[k].vmax.data();
                up[k] = r.low[k].prev.data(), a[k] = r.low[k].alpha.data();
                numels[k] = static_cast<int64_t>(kSizes[k]);
            }
            const optim_hd_adam_group groups[2] = {{0.9, 0.999, 1e-8, 0.0, 0, 0},
                                                   {0.9, 0.999, 1e-8, 0.0, 0, 0}};
            const optim_hd_adam_tensors t{static_cast<int64_t>(n),
                                          p.data(),
                                          g.data(),
                                          m.data(),
                                          v.data(),
                                          w.data(),
                                          up.data(),
                                          a.data(),
                                          numels.data(),
                                          steps.data(),
                                          kGroups.data(),
                                          nullptr};
            const optim_hd_params hp = r.params(step);
            const optim_precision precision{nullptr, seed, step, OPTIM_ROUNDING_STOCHASTIC};
            EXPECT_EQ(optim_hd_adam_step_mixed(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_BFLOAT16, &t, 2,
                                               groups, &hp, r.rates.data(), nullptr, nullptr,
                                               &precision),
                      OPTIM_STATUS_OK)
                << optim_last_error();
        }
        for (const auto& p : r.param) out.insert(out.end(), p.begin(), p.end());
        return out;
    };
    auto bits = [](const std::vector<BFloat16>& x) {
        std::vector<uint16_t> b;
        for (const BFloat16& e : x) b.push_back(e.bits);
        return b;
    };
    const auto a = bits(run(5, 1)), b = bits(run(5, 3)), c = bits(run(6, 2));
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
    optim_set_num_threads(0);
}

// Bad precision options: a clear error naming the problem, and nothing written (parameters, master
// copies, state, rates, the skip report). A non-finite gradient skips the step whole, master copies
// included.
TEST(MixedHd, BadOptionsAreRejectedAndWriteNothing)
{
    const int64_t n = 8;
    std::vector<BFloat16> p(n, to_storage<BFloat16>(1.0f)), g(n, to_storage<BFloat16>(0.5f));
    std::vector<float> master(n, 1.0f), buf(n, 0.25f), prev(n, 0.125f), m(n, 0.5f), v(n, 0.5f),
        alpha(n, 0.01f);
    void* params[1] = {p.data()};
    const void* grads[1] = {g.data()};
    void* masters[1] = {master.data()};
    void* bufs[1] = {buf.data()};
    void* prevs[1] = {prev.data()};
    void* ms[1] = {m.data()};
    void* vs[1] = {v.data()};
    void* alphas[1] = {alpha.data()};
    const int64_t numels[1] = {n};
    const int64_t steps[1] = {2};
    const int32_t group_index[1] = {0};
    const optim_hd_group sgd_group{0.9, 0.0, 0.0, 0, 0};
    const optim_hd_adam_group adam_group{0.9, 0.999, 1e-8, 0.0, 0, 0};
    const optim_hd_tensors st{1, params, grads, bufs, prevs, alphas, numels, group_index, nullptr};
    const optim_hd_adam_tensors at{1,     params, grads,  ms,    vs,          nullptr,
                                   prevs, alphas, numels, steps, group_index, nullptr};
    optim_hd_params hp{};
    hp.hypergrad_lr = 1e-3, hp.lr_max = 1.0, hp.eps = 1e-8;
    double rate = 0.01;
    int64_t skipped = 7;
    const auto expect_rejected = [&](int32_t dtype, const optim_precision* precision,
                                     const char* words) {
        EXPECT_EQ(optim_hd_step_mixed(OPTIM_DEVICE_CPU, 0, dtype, &st, 1, &sgd_group, &hp, &rate,
                                      &skipped, nullptr, precision),
                  OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(std::string(optim_last_error()).find(words), std::string::npos)
            << optim_last_error();
        EXPECT_NE(std::string(optim_last_error()).find("optim_hd_step_mixed"), std::string::npos);
        EXPECT_EQ(optim_hd_adam_step_mixed(OPTIM_DEVICE_CPU, 0, dtype, &at, 1, &adam_group, &hp,
                                           &rate, &skipped, nullptr, precision),
                  OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(std::string(optim_last_error()).find(words), std::string::npos)
            << optim_last_error();
        EXPECT_NE(std::string(optim_last_error()).find("optim_hd_adam_step_mixed"),
                  std::string::npos);
    };
    expect_rejected(OPTIM_DTYPE_BFLOAT16, nullptr, "precision is NULL");
    const optim_precision stochastic{nullptr, 0, 0, OPTIM_ROUNDING_STOCHASTIC};
    expect_rejected(OPTIM_DTYPE_FLOAT16, &stochastic, "stochastic rounding needs bfloat16");
    const optim_precision stochastic_master{masters, 0, 0, OPTIM_ROUNDING_STOCHASTIC};
    expect_rejected(OPTIM_DTYPE_BFLOAT16, &stochastic_master, "stochastic rounding is for");
    const optim_precision bad_rounding{nullptr, 0, 0, 9};
    expect_rejected(OPTIM_DTYPE_BFLOAT16, &bad_rounding, "unknown rounding");
    const optim_precision with_master{masters, 0, 0, OPTIM_ROUNDING_NEAREST};
    expect_rejected(OPTIM_DTYPE_FLOAT32, &with_master, "master weights need float16");
    void* aliased[1] = {p.data()};
    const optim_precision alias{aliased, 0, 0, OPTIM_ROUNDING_NEAREST};
    expect_rejected(OPTIM_DTYPE_BFLOAT16, &alias, "same memory");
    void* none[1] = {nullptr};
    const optim_precision missing{none, 0, 0, OPTIM_ROUNDING_NEAREST};
    expect_rejected(OPTIM_DTYPE_BFLOAT16, &missing, "master weight pointer is NULL");

    EXPECT_EQ(skipped, 7);

    // A non-finite gradient: skipped, nothing written.
    g[3] = to_storage<BFloat16>(NAN);
    EXPECT_EQ(optim_hd_step_mixed(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_BFLOAT16, &st, 1, &sgd_group,
                                  &hp, &rate, &skipped, nullptr, &with_master),
              OPTIM_STATUS_OK);
    EXPECT_EQ(skipped, 1);
    skipped = 7;
    EXPECT_EQ(optim_hd_adam_step_mixed(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_BFLOAT16, &at, 1,
                                       &adam_group, &hp, &rate, &skipped, nullptr, &with_master),
              OPTIM_STATUS_OK);
    EXPECT_EQ(skipped, 1);
    skipped = 7;

    EXPECT_EQ(rate, 0.01);
    for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(p[i].bits, to_storage<BFloat16>(1.0f).bits);
        EXPECT_EQ(master[i], 1.0f);
        EXPECT_EQ(buf[i], 0.25f);
        EXPECT_EQ(prev[i], 0.125f);
        EXPECT_EQ(m[i], 0.5f);
        EXPECT_EQ(v[i], 0.5f);
        EXPECT_EQ(alpha[i], 0.01f);
    }
}

} // namespace
