// Float16 and bfloat16 parameters: the conversions of precision.hpp against the compiler's own
// _Float16 (libgcc's software conversions) and an independent nearest-value search, over every
// 16-bit pattern, every tie and its neighbours and a sweep of float32 patterns; stochastic rounding
// (deterministic, unbiased within a stated bound); and the SGD and Adam steps on 16-bit parameters
// against a float32 run over 60 steps, several groups, many chunks and thread counts 1 to 3.
#include "../src/precision.hpp"
#include "precision16.hpp"
#include "reference.hpp"

#include <optim.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

using namespace optim_test;
using optim::BFloat16;
using optim::Half;

namespace {

uint32_t bits_of(float x)
{
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
float float_of(uint32_t u)
{
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}
// The compiler's own float16 (libgcc's software conversions) is the reference; a compiler without
// _Float16 on this target (clang before 15 on x86-64) skips these two tests.
#if defined(__FLT16_MAX__)
uint16_t bits_of(_Float16 h)
{
    uint16_t u;
    std::memcpy(&u, &h, sizeof u);
    return u;
}
_Float16 half_of(uint16_t u)
{
    _Float16 h;
    std::memcpy(&h, &u, sizeof h);
    return h;
}

// The compiler's conversion (round to nearest even), NaNs compared as NaNs of the same sign.
::testing::AssertionResult half_matches(float x)
{
    const uint16_t got = optim::float_to_half(x).bits;
    const uint16_t want = bits_of(static_cast<_Float16>(x));
    const bool got_nan = (got & 0x7FFF) > 0x7C00, want_nan = (want & 0x7FFF) > 0x7C00;
    if (got == want || (got_nan && want_nan && (got & 0x8000) == (want & 0x8000)))
        return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "float bits 0x" << std::hex << bits_of(x) << ": got 0x" << got << ", want 0x" << want;
}

TEST(Precision, HalfToFloatIsExactForEveryPattern)
{
    for (uint32_t h = 0; h < 65536; ++h) {
        const float got = optim::half_to_float(Half{static_cast<uint16_t>(h)});
        const float want = static_cast<float>(half_of(static_cast<uint16_t>(h)));
        if (std::isnan(want)) {
            ASSERT_TRUE(std::isnan(got)) << std::hex << h;
            ASSERT_EQ(std::signbit(got), std::signbit(want)) << std::hex << h;
        } else {
            ASSERT_EQ(bits_of(got), bits_of(want)) << std::hex << h;
        }
    }
}

TEST(Precision, FloatToHalfRoundsToNearestEven)
{
    for (uint32_t h = 0; h < 65536; ++h) {
        const float x = optim::half_to_float(Half{static_cast<uint16_t>(h)});
        if (!std::isnan(x)) { // round trip
            ASSERT_EQ(optim::float_to_half(x).bits, h) << std::hex << h;
        }
        ASSERT_TRUE(half_matches(x));
        // The tie half way to the next pattern (exact in float32) and its two neighbours.
        if ((h & 0x7FFF) < 0x7C00) {
            const double next = optim::half_to_float(Half{static_cast<uint16_t>(h + 1)});
            const double here = x;
            const float mid = static_cast<float>((here + next) / 2);
            if ((h & 0x7FFF) == 0x7BFF) continue; // the next pattern is infinity: covered below
            ASSERT_TRUE(half_matches(mid));
            ASSERT_TRUE(half_matches(std::nextafter(mid, 0.0f)));
            ASSERT_TRUE(half_matches(std::nextafter(mid, mid * 2)));
        }
    }
    for (float x : {65504.0f, 65519.99f, 65520.0f, 65536.0f, 1e30f, INFINITY, -65520.0f, 5.96e-8f,
                    2.98e-8f, 2.9802322e-8f, 2.9802326e-8f, 1e-45f, -0.0f})
        ASSERT_TRUE(half_matches(x)) << x;
    for (uint64_t u = 0; u < (uint64_t(1) << 32); u += 4093) // a sweep of all float32 patterns
        ASSERT_TRUE(half_matches(float_of(static_cast<uint32_t>(u))));
}
#else
TEST(Precision, HalfToFloatIsExactForEveryPattern)
{
    GTEST_SKIP() << "this compiler has no _Float16 on this target";
}
TEST(Precision, FloatToHalfRoundsToNearestEven)
{
    GTEST_SKIP() << "this compiler has no _Float16 on this target";
}
#endif

// bfloat16 to float32, decoded from sign, exponent and mantissa in double.
double bfloat16_value(uint16_t b)
{
    const int e = (b >> 7) & 0xFF;
    const double sign = (b & 0x8000) ? -1.0 : 1.0;
    const int mantissa = b & 0x7F;
    if (e == 0) return sign * std::ldexp(mantissa, -133);
    if (e == 255) return mantissa ? NAN : sign * INFINITY;
    return sign * std::ldexp(128 + mantissa, e - 134);
}

// The nearest bfloat16 to x (ties to the even pattern), found by comparing the two candidates'
// distances in double; past the largest finite value the candidate above is 2^128 (infinity).
uint16_t nearest_bfloat16(float x)
{
    const uint32_t u = bits_of(x);
    if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x40);
    const uint16_t lo = static_cast<uint16_t>(u >> 16);
    if ((u & 0xFFFF) == 0 || std::isinf(x)) return lo;
    const uint16_t hi = static_cast<uint16_t>(lo + 1);
    const double a = std::fabs(bfloat16_value(lo));
    const double b = (hi & 0x7FFF) == 0x7F80 ? std::ldexp(1.0, 128) : std::fabs(bfloat16_value(hi));
    const double d = std::fabs(static_cast<double>(x));
    if (d - a < b - d) return lo;
    if (b - d < d - a) return hi;
    return (lo & 1) ? hi : lo;
}

TEST(Precision, BFloat16ConversionsForEveryPatternAndTie)
{
    for (uint32_t b = 0; b < 65536; ++b) {
        const float x = optim::bfloat16_to_float(BFloat16{static_cast<uint16_t>(b)});
        const double want = bfloat16_value(static_cast<uint16_t>(b));
        if (std::isnan(want)) {
            ASSERT_TRUE(std::isnan(x));
            ASSERT_TRUE(std::isnan(optim::bfloat16_to_float(optim::float_to_bfloat16(x))));
            continue;
        }
        ASSERT_EQ(static_cast<double>(x), want) << std::hex << b;
        ASSERT_EQ(optim::float_to_bfloat16(x).bits, b) << std::hex << b;
        for (uint32_t low : {0x7FFFu, 0x8000u, 0x8001u, 0x0001u, 0xFFFFu}) {
            const float y = float_of((b << 16) | low);
            if (std::isnan(y)) continue;
            ASSERT_EQ(optim::float_to_bfloat16(y).bits, nearest_bfloat16(y))
                << std::hex << bits_of(y);
        }
    }
    for (uint64_t u = 0; u < (uint64_t(1) << 32); u += 4093) {
        const float y = float_of(static_cast<uint32_t>(u));
        if (std::isnan(y))
            ASSERT_TRUE(std::isnan(optim::bfloat16_to_float(optim::float_to_bfloat16(y))));
        else
            ASSERT_EQ(optim::float_to_bfloat16(y).bits, nearest_bfloat16(y)) << std::hex << u;
    }
}

// Stochastic rounding picks one of the two neighbours, the same one for the same key and index,
// and its mean over 2^16 elements is the exact value: the standard deviation of the mean is at most
// ulp / (2 * 256), the bound is 6 of them (fixed seed: not a flaky test).
TEST(Precision, StochasticRoundingIsDeterministicAndUnbiased)
{
    const uint64_t key = optim::rounding_key(1234, 7, 3);
    EXPECT_NE(key, optim::rounding_key(1235, 7, 3));
    EXPECT_NE(key, optim::rounding_key(1234, 8, 3));
    EXPECT_NE(key, optim::rounding_key(1234, 7, 4));
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<double> pick(-3.0, 3.0);
    const int64_t n = int64_t(1) << 16;
    for (int trial = 0; trial < 50; ++trial) {
        const float x = static_cast<float>(std::ldexp(pick(rng), static_cast<int>(trial) - 25));
        const uint16_t down = static_cast<uint16_t>(bits_of(x) >> 16);
        const double lo = bfloat16_value(down),
                     hi = bfloat16_value(static_cast<uint16_t>(down + 1));
        const uint64_t k = optim::rounding_key(99, trial, 0);
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) {
            const uint16_t r =
                optim::float_to_bfloat16_stochastic(x, optim::rounding_noise(k, i)).bits;
            ASSERT_TRUE(r == down || r == down + 1) << x;
            ASSERT_EQ(r, optim::float_to_bfloat16_stochastic(x, optim::rounding_noise(k, i)).bits);
            sum += bfloat16_value(r);
        }
        const double ulp = std::fabs(hi - lo);
        EXPECT_LE(std::fabs(sum / static_cast<double>(n) - x), 6 * ulp / 512) << x;
    }
    // Exact values and non-finite ones are kept.
    for (float x : {1.0f, -2.5f, 0.0f, INFINITY, -INFINITY})
        EXPECT_EQ(optim::float_to_bfloat16_stochastic(x, 0xFFFF).bits, bits_of(x) >> 16);
    EXPECT_TRUE(std::isnan(optim::bfloat16_to_float(optim::float_to_bfloat16_stochastic(NAN, 7))));
}

// ---- Steps on 16-bit parameters against a float32 run ----

// One tensor in 16 bits (parameter, gradient, float32 state and master copy) and the float32 run
// it is checked against (its own parameter and state).
template <typename S>
struct MixedTensor {
    std::vector<S> param, grad;
    std::vector<float> master, m, v;
    std::vector<float> ref_param, ref_grad, ref_m, ref_v;
};

// Sizes crossing the 64 Ki chunk boundaries, with empty and tiny tensors; two groups.
const std::vector<size_t> kSizes = {1, 0, 7, 65536 + 3, 2 * 65536 - 5, 33};
const std::vector<int32_t> kGroups = {0, 0, 0, 1, 1, 1};

template <typename S>
std::vector<MixedTensor<S>> make_tensors(uint64_t seed)
{
    std::mt19937_64 rng(seed);
    std::vector<MixedTensor<S>> ts;
    for (size_t n : kSizes) {
        MixedTensor<S> t;
        for (float x : random_vector<float>(n, rng)) t.param.push_back(to_storage<S>(x));
        for (const S& p : t.param) t.master.push_back(optim::load_value(p));
        t.ref_param = t.master;
        t.grad.resize(n);
        t.m = t.v = t.ref_m = t.ref_v = std::vector<float>(n, 0.0f);
        ts.push_back(std::move(t));
    }
    return ts;
}

// Fresh 16-bit gradients, and the same values in float32 for the reference.
template <typename S>
void new_gradients(std::vector<MixedTensor<S>>& ts, std::mt19937_64& rng)
{
    for (auto& t : ts) {
        t.ref_grad.clear();
        for (size_t i = 0; i < t.grad.size(); ++i) {
            t.grad[i] =
                to_storage<S>(static_cast<float>(std::normal_distribution<double>(0, 1)(rng)));
            t.ref_grad.push_back(optim::load_value(t.grad[i]));
        }
    }
}

enum class Mode { InPlace, Master };

// 60 AdamW/Adam steps on 16-bit parameters against the float32 step on float32 copies: with master
// weights the master copy is the float32 run bit for bit and the parameter its rounding; in place,
// each step equals the float32 step of the rounded parameter, rounded (the moments bit for bit).
template <typename S>
void check_adam(Mode mode, int threads)
{
    ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
    auto ts = make_tensors<S>(3);
    optim_adam_params groups[2];
    optim_adam_params_default(&groups[0]);
    optim_adam_params_default(&groups[1]);
    groups[0].lr = 1e-2, groups[0].weight_decay = 0.1, groups[0].decoupled = 1;
    groups[1].lr = 3e-3, groups[1].weight_decay = 0.01, groups[1].beta1 = 0.8;
    std::mt19937_64 rng(17);
    const size_t n = ts.size();
    for (int64_t step = 1; step <= 60; ++step) {
        new_gradients(ts, rng);
        std::vector<void*> p(n), m(n), v(n), master(n), rp(n), rm(n), rv(n);
        std::vector<const void*> g(n), rg(n);
        std::vector<int64_t> numels(n), steps(n, step);
        for (size_t k = 0; k < n; ++k) {
            auto& t = ts[k];
            if (mode == Mode::InPlace) // the reference starts from the rounded parameter
                for (size_t i = 0; i < t.param.size(); ++i)
                    t.ref_param[i] = optim::load_value(t.param[i]);
            p[k] = t.param.data(), g[k] = t.grad.data(), m[k] = t.m.data(), v[k] = t.v.data();
            master[k] = t.master.data();
            rp[k] = t.ref_param.data(), rg[k] = t.ref_grad.data(), rm[k] = t.ref_m.data();
            rv[k] = t.ref_v.data();
            numels[k] = static_cast<int64_t>(t.param.size());
        }
        const optim_adam_tensors low{
            static_cast<int64_t>(n), p.data(),     g.data(),       m.data(), v.data(), nullptr,
            numels.data(),           steps.data(), kGroups.data(), nullptr};
        const optim_adam_tensors ref{
            static_cast<int64_t>(n), rp.data(),    rg.data(),      rm.data(), rv.data(), nullptr,
            numels.data(),           steps.data(), kGroups.data(), nullptr};
        optim_precision precision{mode == Mode::Master ? master.data() : nullptr, 0, 0,
                                  OPTIM_ROUNDING_NEAREST};
        ASSERT_EQ(optim_adam_step_mixed(OPTIM_DEVICE_CPU, 0, dtype_of<S>(), &low, 2, groups,
                                        nullptr, &precision),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        ASSERT_EQ(optim_adam_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &ref, 2, groups),
                  OPTIM_STATUS_OK);
        for (size_t k = 0; k < n; ++k) {
            auto& t = ts[k];
            ASSERT_TRUE(same_bits(t.m, t.ref_m)) << "tensor " << k << " step " << step;
            ASSERT_TRUE(same_bits(t.v, t.ref_v)) << "tensor " << k << " step " << step;
            if (mode == Mode::Master) {
                ASSERT_TRUE(same_bits(t.master, t.ref_param)) << k;
            }
            for (size_t i = 0; i < t.param.size(); ++i)
                ASSERT_EQ(t.param[i].bits, to_storage<S>(t.ref_param[i]).bits)
                    << "tensor " << k << "[" << i << "] step " << step;
        }
    }
    optim_set_num_threads(0);
}

TEST(MixedAdam, BFloat16InPlaceIsTheRoundedFloat32Step)
{
    for (int threads = 1; threads <= 3; ++threads) check_adam<BFloat16>(Mode::InPlace, threads);
}
TEST(MixedAdam, HalfInPlaceIsTheRoundedFloat32Step)
{
    for (int threads = 1; threads <= 3; ++threads) check_adam<Half>(Mode::InPlace, threads);
}
TEST(MixedAdam, BFloat16MasterWeightsAreTheFloat32Run)
{
    for (int threads = 1; threads <= 3; ++threads) check_adam<BFloat16>(Mode::Master, threads);
}
TEST(MixedAdam, HalfMasterWeightsAreTheFloat32Run)
{
    for (int threads = 1; threads <= 3; ++threads) check_adam<Half>(Mode::Master, threads);
}

// 60 SGD steps (momentum and weight decay in one group, Nesterov in the other) against the naive
// float32 reference of reference.hpp: with master weights the master copy follows it within float32
// rounding (the fused and the naive loops round differently) and the parameter is the copy's
// rounding, exactly.
template <typename S>
void check_sgd_master(int threads)
{
    ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
    auto ts = make_tensors<S>(5);
    optim_sgd_params groups[2];
    optim_sgd_params_default(&groups[0]);
    optim_sgd_params_default(&groups[1]);
    groups[0].lr = 0.05, groups[0].momentum = 0.9, groups[0].weight_decay = 1e-3;
    groups[1].lr = 0.02, groups[1].momentum = 0.8, groups[1].nesterov = 1;
    SgdConfig configs[2];
    configs[0].lr = 0.05, configs[0].momentum = 0.9, configs[0].weight_decay = 1e-3;
    configs[1].lr = 0.02, configs[1].momentum = 0.8, configs[1].nesterov = true;
    std::vector<TensorState<float>> ref(ts.size());
    for (size_t k = 0; k < ts.size(); ++k) ref[k].param = ts[k].master;
    std::mt19937_64 rng(23);
    const size_t n = ts.size();
    for (int step = 0; step < 60; ++step) {
        new_gradients(ts, rng);
        std::vector<void*> p(n), b(n), master(n);
        std::vector<const void*> g(n);
        std::vector<int64_t> numels(n);
        std::vector<uint8_t> fresh(n, step == 0 ? 1 : 0);
        for (size_t k = 0; k < n; ++k) {
            p[k] = ts[k].param.data(), g[k] = ts[k].grad.data(), b[k] = ts[k].m.data();
            master[k] = ts[k].master.data();
            numels[k] = static_cast<int64_t>(ts[k].param.size());
            ref[k].grad = ts[k].ref_grad;
            reference_sgd_step(ref[k], configs[kGroups[k]]);
        }
        const optim_tensor_list list{static_cast<int64_t>(n), p.data(),     g.data(),      b.data(),
                                     numels.data(),           fresh.data(), kGroups.data()};
        optim_precision precision{master.data(), 0, 0, OPTIM_ROUNDING_NEAREST};
        ASSERT_EQ(optim_sgd_step_mixed(OPTIM_DEVICE_CPU, 0, dtype_of<S>(), &list, 2, groups,
                                       nullptr, &precision),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        for (size_t k = 0; k < n; ++k)
            for (size_t i = 0; i < ts[k].param.size(); ++i) {
                const float got = ts[k].master[i], want = ref[k].param[i];
                ASSERT_LE(std::fabs(got - want), 1e-5f * (1 + std::fabs(want)))
                    << "tensor " << k << "[" << i << "] step " << step;
                ASSERT_EQ(ts[k].param[i].bits, to_storage<S>(got).bits);
            }
    }
    optim_set_num_threads(0);
}

TEST(MixedSgd, MasterWeightsFollowTheFloat32Reference)
{
    for (int threads = 1; threads <= 3; ++threads) {
        check_sgd_master<BFloat16>(threads);
        check_sgd_master<Half>(threads);
    }
}

// In place, SGD's step is the float32 step of the rounded parameter, rounded (momentum bit for bit
// against the library's float32 path on the same inputs).
TEST(MixedSgd, InPlaceIsTheRoundedFloat32Step)
{
    auto ts = make_tensors<BFloat16>(9);
    optim_sgd_params group;
    optim_sgd_params_default(&group);
    group.lr = 0.1, group.momentum = 0.9;
    std::mt19937_64 rng(29);
    const size_t n = ts.size();
    for (int step = 0; step < 50; ++step) {
        new_gradients(ts, rng);
        std::vector<void*> p(n), b(n), rp(n), rb(n);
        std::vector<const void*> g(n), rg(n);
        std::vector<int64_t> numels(n);
        std::vector<uint8_t> fresh(n, step == 0 ? 1 : 0);
        for (size_t k = 0; k < n; ++k) {
            auto& t = ts[k];
            for (size_t i = 0; i < t.param.size(); ++i)
                t.ref_param[i] = optim::load_value(t.param[i]);
            p[k] = t.param.data(), g[k] = t.grad.data(), b[k] = t.m.data();
            rp[k] = t.ref_param.data(), rg[k] = t.ref_grad.data(), rb[k] = t.ref_m.data();
            numels[k] = static_cast<int64_t>(t.param.size());
        }
        const optim_tensor_list low{static_cast<int64_t>(n), p.data(),     g.data(), b.data(),
                                    numels.data(),           fresh.data(), nullptr};
        const optim_tensor_list ref{static_cast<int64_t>(n), rp.data(),    rg.data(), rb.data(),
                                    numels.data(),           fresh.data(), nullptr};
        ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_BFLOAT16, &low, 1, &group),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &ref, 1, &group),
                  OPTIM_STATUS_OK);
        for (size_t k = 0; k < n; ++k) {
            ASSERT_TRUE(same_bits(ts[k].m, ts[k].ref_m)) << k;
            for (size_t i = 0; i < ts[k].param.size(); ++i)
                ASSERT_EQ(ts[k].param[i].bits, optim::float_to_bfloat16(ts[k].ref_param[i]).bits);
        }
    }
}

// Stochastic rounding in a step: the same seed and step give the same parameters; another seed or
// step gives others; and over many small updates (each below half a bfloat16 ulp, which
// round-to-nearest drops) it tracks the float32 run where round-to-nearest stalls.
TEST(MixedSgd, StochasticRoundingIsDeterministicAndTracksFloat32)
{
    const int64_t n = 200000;
    auto run = [&](int64_t seed, int32_t rounding, int steps, std::vector<float>* exact) {
        std::vector<BFloat16> p(static_cast<size_t>(n), optim::float_to_bfloat16(1.0f));
        std::vector<BFloat16> g(static_cast<size_t>(n), optim::float_to_bfloat16(-1.0f));
        exact->assign(static_cast<size_t>(n), 1.0f);
        optim_sgd_params group;
        optim_sgd_params_default(&group);
        group.lr = 1e-3; // 1 + 1e-3 per step: an ulp of bfloat16 at 1 is 2^-7
        void* params[1] = {p.data()};
        const void* grads[1] = {g.data()};
        const int64_t numels[1] = {n};
        const optim_tensor_list list{1, params, grads, nullptr, numels, nullptr, nullptr};
        for (int s = 0; s < steps; ++s) {
            optim_precision precision{nullptr, seed, s, rounding};
            EXPECT_EQ(optim_sgd_step_mixed(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_BFLOAT16, &list, 1,
                                           &group, nullptr, &precision),
                      OPTIM_STATUS_OK)
                << optim_last_error();
            for (float& x : *exact) x = x + 1e-3f;
        }
        std::vector<float> out;
        for (const BFloat16& b : p) out.push_back(optim::load_value(b));
        return out;
    };
    std::vector<float> exact;
    const auto a = run(42, OPTIM_ROUNDING_STOCHASTIC, 100, &exact);
    const auto b = run(42, OPTIM_ROUNDING_STOCHASTIC, 100, &exact);
    const auto c = run(43, OPTIM_ROUNDING_STOCHASTIC, 100, &exact);
    const auto nearest = run(42, OPTIM_ROUNDING_NEAREST, 100, &exact);
    EXPECT_TRUE(same_bits(a, b));
    EXPECT_FALSE(same_bits(a, c));
    double mean = 0;
    for (float x : a) mean += x;
    mean /= static_cast<double>(n);
    // Round-to-nearest never moves (1e-3 is under half of 2^-7): it stays at 1, 0.1 below the
    // float32 run. Stochastic rounding's mean is within 0.002 of the float32 run: its standard
    // deviation is at most 2^-7 / 2 * sqrt(100 steps) / sqrt(n) = 9e-5, so the bound is 20 of them.
    EXPECT_EQ(nearest[0], 1.0f);
    EXPECT_NEAR(mean, exact[0], 2e-3);
    EXPECT_GT(std::fabs(nearest[0] - exact[0]), 0.09);
}

// Bad mixed-precision options: a clear error, nothing written.
TEST(MixedPrecision, BadOptionsAreRejectedAndWriteNothing)
{
    std::vector<BFloat16> p(8, optim::float_to_bfloat16(1.0f)),
        g(8, optim::float_to_bfloat16(1.0f));
    std::vector<float> master(8, 1.0f), p32(8, 1.0f), g32(8, 1.0f);
    void* params[1] = {p.data()};
    const void* grads[1] = {g.data()};
    void* masters[1] = {master.data()};
    const int64_t numels[1] = {8};
    optim_sgd_params group;
    optim_sgd_params_default(&group);
    const optim_tensor_list list{1, params, grads, nullptr, numels, nullptr, nullptr};
    const auto expect_rejected = [&](int32_t dtype, const optim_tensor_list& l,
                                     const optim_precision* precision, const char* words) {
        EXPECT_EQ(
            optim_sgd_step_mixed(OPTIM_DEVICE_CPU, 0, dtype, &l, 1, &group, nullptr, precision),
            OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(std::string(optim_last_error()).find(words), std::string::npos)
            << optim_last_error();
    };
    expect_rejected(OPTIM_DTYPE_BFLOAT16, list, nullptr, "precision is NULL");
    optim_precision bad_rounding{nullptr, 0, 0, 5};
    expect_rejected(OPTIM_DTYPE_BFLOAT16, list, &bad_rounding, "unknown rounding");
    optim_precision stochastic_master{masters, 0, 0, OPTIM_ROUNDING_STOCHASTIC};
    expect_rejected(OPTIM_DTYPE_BFLOAT16, list, &stochastic_master, "stochastic rounding is for");
    optim_precision stochastic{nullptr, 0, 0, OPTIM_ROUNDING_STOCHASTIC};
    expect_rejected(OPTIM_DTYPE_FLOAT16, list, &stochastic, "needs bfloat16");
    void* params32[1] = {p32.data()};
    const void* grads32[1] = {g32.data()};
    const optim_tensor_list list32{1, params32, grads32, nullptr, numels, nullptr, nullptr};
    optim_precision master_f32{masters, 0, 0, OPTIM_ROUNDING_NEAREST};
    expect_rejected(OPTIM_DTYPE_FLOAT32, list32, &master_f32, "master weights need float16");
    void* null_master[1] = {nullptr};
    optim_precision missing{null_master, 0, 0, OPTIM_ROUNDING_NEAREST};
    expect_rejected(OPTIM_DTYPE_BFLOAT16, list, &missing, "master weight pointer is NULL");
    void* aliased[1] = {p.data()};
    optim_precision alias{aliased, 0, 0, OPTIM_ROUNDING_NEAREST};
    expect_rejected(OPTIM_DTYPE_BFLOAT16, list, &alias, "same memory");
    for (size_t i = 0; i < 8; ++i) {
        EXPECT_EQ(p[i].bits, optim::float_to_bfloat16(1.0f).bits);
        EXPECT_EQ(master[i], 1.0f);
        EXPECT_EQ(p32[i], 1.0f);
    }
    // The steps without 16-bit support name it.
    EXPECT_EQ(optim_sls_save(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_BFLOAT16, nullptr),
              OPTIM_STATUS_UNSUPPORTED);
    EXPECT_NE(std::string(optim_last_error()).find("SGD, Adam and hypergradient steps only"),
              std::string::npos);
}

} // namespace

namespace {

// Clipping with 16-bit gradients: the norm is the float32 path's norm of the same values (summed in
// double from the exact float32 values), and the clipped step is its clipped step, rounded.
TEST(MixedAdam, ClippedBFloat16IsTheClippedFloat32Step)
{
    auto ts = make_tensors<BFloat16>(31);
    std::mt19937_64 rng(37);
    new_gradients(ts, rng);
    const size_t n = ts.size();
    std::vector<void*> p(n), m(n), v(n), rp(n), rm(n), rv(n);
    std::vector<const void*> g(n), rg(n);
    std::vector<int64_t> numels(n), steps(n, 1);
    for (size_t k = 0; k < n; ++k) {
        auto& t = ts[k];
        p[k] = t.param.data(), g[k] = t.grad.data(), m[k] = t.m.data(), v[k] = t.v.data();
        rp[k] = t.ref_param.data(), rg[k] = t.ref_grad.data(), rm[k] = t.ref_m.data();
        rv[k] = t.ref_v.data();
        numels[k] = static_cast<int64_t>(t.param.size());
    }
    optim_adam_params group;
    optim_adam_params_default(&group);
    group.decoupled = 1, group.weight_decay = 0.01;
    const optim_adam_tensors low{
        static_cast<int64_t>(n), p.data(),     g.data(), m.data(), v.data(), nullptr,
        numels.data(),           steps.data(), nullptr,  nullptr};
    const optim_adam_tensors ref{
        static_cast<int64_t>(n), rp.data(),    rg.data(), rm.data(), rv.data(), nullptr,
        numels.data(),           steps.data(), nullptr,   nullptr};
    double norm = 0, ref_norm = 0;
    const optim_grad_clip clip{1.0, &norm, 0}, ref_clip{1.0, &ref_norm, 0};
    ASSERT_EQ(
        optim_adam_step_clipped(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_BFLOAT16, &low, 1, &group, &clip),
        OPTIM_STATUS_OK)
        << optim_last_error();
    ASSERT_EQ(optim_adam_step_clipped(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &ref, 1, &group,
                                      &ref_clip),
              OPTIM_STATUS_OK);
    EXPECT_EQ(norm, ref_norm);
    EXPECT_GT(norm, 1.0); // the clip is active
    for (size_t k = 0; k < n; ++k) {
        ASSERT_TRUE(same_bits(ts[k].m, ts[k].ref_m)) << k;
        for (size_t i = 0; i < ts[k].param.size(); ++i)
            ASSERT_EQ(ts[k].param[i].bits, optim::float_to_bfloat16(ts[k].ref_param[i]).bits);
    }
}

} // namespace

namespace {

// ---- The scaled mixed steps (optim_sgd_step_mixed_scaled, optim_adam_step_mixed_scaled) ----

enum class MixedKind { Sgd, Adam };

// One step of `kind` over ts with master weights: through the _mixed_scaled entry point when scale
// is not null, else through _mixed. steps: Adam's per-tensor count after this step.
template <typename S>
optim_status mixed_step(MixedKind kind, std::vector<MixedTensor<S>>& ts, bool fresh,
                        int64_t adam_step, const optim_grad_scale* scale)
{
    const size_t n = ts.size();
    std::vector<void*> p(n), m(n), v(n), master(n);
    std::vector<const void*> g(n);
    std::vector<int64_t> numels(n), steps(n, adam_step);
    std::vector<uint8_t> fresh_flags(n, fresh ? 1 : 0);
    for (size_t k = 0; k < n; ++k) {
        p[k] = ts[k].param.data(), g[k] = ts[k].grad.data(), m[k] = ts[k].m.data();
        v[k] = ts[k].v.data(), master[k] = ts[k].master.data();
        numels[k] = static_cast<int64_t>(ts[k].param.size());
    }
    const optim_precision precision{master.data(), 0, 0, OPTIM_ROUNDING_NEAREST};
    if (kind == MixedKind::Sgd) {
        optim_sgd_params groups[2];
        optim_sgd_params_default(&groups[0]);
        optim_sgd_params_default(&groups[1]);
        groups[0].lr = 0.05, groups[0].momentum = 0.9, groups[0].weight_decay = 1e-3;
        groups[1].lr = 0.02, groups[1].momentum = 0.8, groups[1].nesterov = 1;
        const optim_tensor_list list{
            static_cast<int64_t>(n), p.data(),           g.data(),      m.data(),
            numels.data(),           fresh_flags.data(), kGroups.data()};
        return scale ? optim_sgd_step_mixed_scaled(OPTIM_DEVICE_CPU, 0, dtype_of<S>(), &list, 2,
                                                   groups, nullptr, scale, &precision)
                     : optim_sgd_step_mixed(OPTIM_DEVICE_CPU, 0, dtype_of<S>(), &list, 2, groups,
                                            nullptr, &precision);
    }
    optim_adam_params groups[2];
    optim_adam_params_default(&groups[0]);
    optim_adam_params_default(&groups[1]);
    groups[0].decoupled = 1, groups[0].weight_decay = 0.01;
    groups[1].lr = 3e-3, groups[1].eps = 1e-4;
    const optim_adam_tensors list{
        static_cast<int64_t>(n), p.data(),     g.data(),       m.data(), v.data(), nullptr,
        numels.data(),           steps.data(), kGroups.data(), nullptr};
    return scale ? optim_adam_step_mixed_scaled(OPTIM_DEVICE_CPU, 0, dtype_of<S>(), &list, 2,
                                                groups, nullptr, scale, &precision)
                 : optim_adam_step_mixed(OPTIM_DEVICE_CPU, 0, dtype_of<S>(), &list, 2, groups,
                                         nullptr, &precision);
}

// 50 steps of gradients scaled by 1024 through _mixed_scaled (inverse scale 2^-10) against the same
// gradients unscaled through _mixed, with an infinity or a NaN injected on some steps: a skipped
// step sets the flag and writes nothing (parameters, master copies, state), and every other step is
// bitwise the unscaled one.
template <typename S>
void check_mixed_scaled(MixedKind kind, int threads)
{
    ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
    auto ours = make_tensors<S>(41), theirs = make_tensors<S>(41);
    std::mt19937_64 rng(43);
    const float inv = 1.0f / 1024;
    int64_t taken = 0;
    for (int step = 0; step < 50; ++step) {
        new_gradients(theirs, rng);
        const bool bad = step % 7 == 3 || step % 11 == 5;
        for (size_t k = 0; k < ours.size(); ++k)
            for (size_t i = 0; i < ours[k].grad.size(); ++i)
                ours[k].grad[i] = to_storage<S>(optim::load_value(theirs[k].grad[i]) * 1024);
        if (bad) ours[3].grad[777] = to_storage<S>(step % 7 == 3 ? INFINITY : NAN);
        float found = 0.0f;
        const optim_grad_scale scale{&inv, &found};
        ASSERT_EQ(mixed_step(kind, ours, taken == 0, taken + 1, &scale), OPTIM_STATUS_OK)
            << optim_last_error();
        EXPECT_EQ(found, bad ? 1.0f : 0.0f) << "step " << step;
        if (!bad) {
            ASSERT_EQ(mixed_step(kind, theirs, taken == 0, taken + 1, nullptr), OPTIM_STATUS_OK)
                << optim_last_error();
            ++taken;
        }
        for (size_t k = 0; k < ours.size(); ++k) {
            ASSERT_TRUE(same_bits(ours[k].master, theirs[k].master)) << k << " step " << step;
            ASSERT_TRUE(same_bits(ours[k].m, theirs[k].m)) << k << " step " << step;
            ASSERT_TRUE(same_bits(ours[k].v, theirs[k].v)) << k << " step " << step;
            for (size_t i = 0; i < ours[k].param.size(); ++i)
                ASSERT_EQ(ours[k].param[i].bits, theirs[k].param[i].bits) << k << " step " << step;
        }
    }
    EXPECT_EQ(taken, 50 - 11); // steps 3, 5, 10, 16, 17, 24, 27, 31, 38, 45 and 49 skipped
    optim_set_num_threads(0);
}

TEST(MixedScaled, SkippedStepsWriteNothingAndTheOthersAreTheUnscaledSteps)
{
    for (MixedKind kind : {MixedKind::Sgd, MixedKind::Adam})
        for (int threads = 1; threads <= 3; threads += 2) {
            check_mixed_scaled<BFloat16>(kind, threads);
            check_mixed_scaled<Half>(kind, threads);
        }
}

// A _mixed_scaled step without its scale or its precision names the missing one and writes nothing.
TEST(MixedScaled, MissingScaleOrPrecisionIsNamed)
{
    for (MixedKind kind : {MixedKind::Sgd, MixedKind::Adam}) {
        auto ts = make_tensors<BFloat16>(47);
        std::mt19937_64 rng(53);
        new_gradients(ts, rng);
        const auto before = ts;
        const char* fn =
            kind == MixedKind::Sgd ? "optim_sgd_step_mixed_scaled" : "optim_adam_step_mixed_scaled";
        EXPECT_EQ(mixed_step(kind, ts, true, 1, nullptr), OPTIM_STATUS_OK); // the valid call
        ts = before;
        // No scale.
        const size_t n = ts.size();
        std::vector<void*> p(n), m(n), v(n), master(n);
        std::vector<const void*> g(n);
        std::vector<int64_t> numels(n), steps(n, 1);
        for (size_t k = 0; k < n; ++k) {
            p[k] = ts[k].param.data(), g[k] = ts[k].grad.data(), m[k] = ts[k].m.data();
            v[k] = ts[k].v.data(), master[k] = ts[k].master.data();
            numels[k] = static_cast<int64_t>(ts[k].param.size());
        }
        const optim_precision precision{master.data(), 0, 0, OPTIM_ROUNDING_NEAREST};
        const float inv = 1.0f;
        float found = 0.0f;
        const optim_grad_scale scale{&inv, &found};
        const auto call = [&](const optim_grad_scale* s, const optim_precision* pr) {
            if (kind == MixedKind::Sgd) {
                optim_sgd_params group;
                optim_sgd_params_default(&group);
                const optim_tensor_list list{static_cast<int64_t>(n), p.data(), g.data(), nullptr,
                                             numels.data(),           nullptr,  nullptr};
                return optim_sgd_step_mixed_scaled(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_BFLOAT16, &list,
                                                   1, &group, nullptr, s, pr);
            }
            optim_adam_params group;
            optim_adam_params_default(&group);
            const optim_adam_tensors list{
                static_cast<int64_t>(n), p.data(),     g.data(), m.data(), v.data(), nullptr,
                numels.data(),           steps.data(), nullptr,  nullptr};
            return optim_adam_step_mixed_scaled(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_BFLOAT16, &list, 1,
                                                &group, nullptr, s, pr);
        };
        EXPECT_EQ(call(nullptr, &precision), OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(std::string(optim_last_error()).find(std::string(fn) + ": scale is NULL"),
                  std::string::npos)
            << optim_last_error();
        EXPECT_EQ(call(&scale, nullptr), OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(std::string(optim_last_error()).find(std::string(fn) + ": precision is NULL"),
                  std::string::npos)
            << optim_last_error();
        EXPECT_EQ(found, 0.0f);
        for (size_t k = 0; k < n; ++k) {
            ASSERT_TRUE(same_bits(ts[k].master, before[k].master)) << k;
            ASSERT_TRUE(same_bits(ts[k].m, before[k].m)) << k;
            for (size_t i = 0; i < ts[k].param.size(); ++i)
                ASSERT_EQ(ts[k].param[i].bits, before[k].param[i].bits) << k;
        }
    }
}

} // namespace
