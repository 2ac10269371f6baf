// Hypergradient descent on the CPU: a naive reference for the global scope, the error bound of the
// fp32 reduction, thread-count independence for every scope and rule, the non-finite skip,
// validation.
#include "reference.hpp"

#include <optim.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

using namespace optim_test;

namespace {

struct HdModel {
    std::vector<std::vector<float>> p, g, b, u, r;
    std::vector<void*> pp, bp, up, rp;
    std::vector<const void*> gp;
    std::vector<int64_t> n;
    std::vector<int32_t> group;
    std::vector<uint8_t> fresh;
    std::vector<double> rates;

    HdModel(const std::vector<size_t>& sizes, uint64_t seed, double lr)
    {
        std::mt19937_64 rng(seed);
        for (size_t k = 0; k < sizes.size(); ++k) {
            p.push_back(random_vector<float>(sizes[k], rng));
            g.emplace_back(sizes[k]);
            b.emplace_back(sizes[k], 0.0f);
            u.emplace_back(sizes[k], 0.0f);
            r.emplace_back(sizes[k], static_cast<float>(lr));
            n.push_back(static_cast<int64_t>(sizes[k]));
            group.push_back(k < sizes.size() / 2 ? 0 : 1);
            fresh.push_back(1);
        }
        rates.assign(sizes.size(), lr);
    }
    void grads(std::mt19937_64& rng)
    {
        for (auto& v : g) v = random_vector<float>(v.size(), rng, 0.5);
    }
    optim_hd_tensors list()
    {
        pp.clear();
        gp.clear();
        bp.clear();
        up.clear();
        rp.clear();
        for (size_t k = 0; k < p.size(); ++k) {
            pp.push_back(p[k].data());
            gp.push_back(g[k].data());
            bp.push_back(b[k].data());
            up.push_back(u[k].data());
            rp.push_back(r[k].data());
        }
        return optim_hd_tensors{static_cast<int64_t>(p.size()),
                                pp.data(),
                                gp.data(),
                                bp.data(),
                                up.data(),
                                rp.data(),
                                n.data(),
                                group.data(),
                                fresh.data()};
    }
};

optim_hd_params hd_params(int scope, int rule, bool first)
{
    return optim_hd_params{1e-3, 0.0, 1.0, 1e-12, scope, rule, first ? 1 : 0, 0, 0};
}

// The bound on the error of an fp32 reduction sum(x_i) stated in docs/design.md: each lane adds at
// most 32 products in float (blocks of 512 elements in 16 lanes), so |error| <= 33 u sum|x_i| with
// u = 2^-24 (the double additions after that add far less than one more u).
double fp32_sum_bound(double sum_abs)
{
    return 33.0 * std::ldexp(1.0, -24) * sum_abs;
}

} // namespace

TEST(HdCpu, GlobalAdditiveMatchesANaiveReferenceWithoutMomentum)
{
    // Plain SGD with one global rate: alpha += beta * sum(g_t * g_{t-1}).
    const std::vector<size_t> sizes = {7, 300000, 65536 + 1};
    HdModel m(sizes, 1, 0.05);
    std::vector<std::vector<float>> rp = m.p, prev(sizes.size());
    for (size_t k = 0; k < sizes.size(); ++k) prev[k].assign(sizes[k], 0.0f);
    double alpha = 0.05;
    double tolerance = 0; // the rate's error: the reduction's bound, accumulated over the steps
    const optim_hd_group groups[2] = {{0, 0, 0, 0, 0}, {0, 0, 0, 0, 0}};
    std::mt19937_64 rng(2);
    for (int step = 0; step < 20; ++step) {
        m.grads(rng);
        double h = 0, h_abs = 0;
        for (size_t k = 0; k < sizes.size(); ++k)
            for (size_t i = 0; i < sizes[k]; ++i) {
                h += static_cast<double>(m.g[k][i]) * prev[k][i];
                h_abs += std::abs(static_cast<double>(m.g[k][i]) * prev[k][i]);
            }
        if (step > 0) {
            alpha = std::max(0.0, alpha + 1e-3 * h);
            tolerance += 1e-3 * fp32_sum_bound(h_abs);
        }
        for (size_t k = 0; k < sizes.size(); ++k)
            for (size_t i = 0; i < sizes[k]; ++i) {
                prev[k][i] = m.g[k][i];
                rp[k][i] = rp[k][i] - static_cast<float>(alpha) * m.g[k][i];
            }
        auto list = m.list();
        auto params = hd_params(OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_RULE_ADDITIVE, step == 0);
        int64_t skipped = -1;
        ASSERT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, groups, &params,
                                m.rates.data(), &skipped),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        EXPECT_EQ(skipped, 0);
        ASSERT_NEAR(m.rates[0], alpha, tolerance + 1e-14) << "step " << step;
    }
    for (size_t k = 0; k < sizes.size(); ++k)
        for (size_t i = 0; i < sizes[k]; i += 997) ASSERT_NEAR(m.p[k][i], rp[k][i], 1e-5);
}

// One step of the global additive rule with beta = 1 from rate 1 (no momentum, previous updates
// given), so that the new rate is 1 + sum(g * u_prev): the reduction's sum itself.
double global_hypergradient(const std::vector<float>& g, const std::vector<float>& u_prev)
{
    HdModel m({g.size()}, 1, 1.0);
    m.g[0] = g;
    m.u[0] = u_prev;
    m.group[0] = 0;
    const optim_hd_group plain[1] = {{0, 0, 0, 0, 0}};
    optim_hd_params params{1.0, 0.0, 1e300, 1e-12, OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_RULE_ADDITIVE,
                           0,   0,   0};
    auto list = m.list();
    EXPECT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, plain, &params,
                            m.rates.data(), nullptr),
              OPTIM_STATUS_OK)
        << optim_last_error();
    return m.rates[0] - 1.0;
}

TEST(HdCpu, TheFp32ReductionKeepsItsErrorBound)
{
    // Each of the first 16 products is 1, the other 65520 are 2^-25: in float, 1 + 2^-25 rounds
    // back to 1, so a lane that carried its sum over more than a short block would lose all of
    // its small terms (about 2e-3 here, 60 times the bound); a block lane loses at most 31 of them.
    const size_t n = 65536;
    std::vector<float> g(n, std::ldexp(1.0f, -25)), u(n, 1.0f);
    std::fill(g.begin(), g.begin() + 16, 1.0f);
    double exact = 0, sum_abs = 0;
    for (size_t i = 0; i < n; ++i) {
        exact += static_cast<double>(g[i]) * u[i]; // exact: every partial sum fits in a double
        sum_abs += std::abs(static_cast<double>(g[i]) * u[i]);
    }
    const double h = global_hypergradient(g, u);
    EXPECT_NEAR(h, exact, fp32_sum_bound(sum_abs));
}

TEST(HdCpu, AReductionBlockThatOverflowsInFloatIsSummedInDouble)
{
    // 1e20 * 1e20 overflows float but not double: the hypergradient stays finite (1e40 * 4), so
    // the rate moves; an infinite h would have left it unchanged.
    std::vector<float> g(1000, 0.0f), u(1000, 0.0f);
    for (size_t i : {3, 500, 511, 999}) {
        g[i] = 1e20f;
        u[i] = 1e20f;
    }
    const double expected = 4.0 * static_cast<double>(1e20f) * static_cast<double>(1e20f);
    const double h = global_hypergradient(g, u);
    EXPECT_TRUE(std::isfinite(h));
    EXPECT_NEAR(h, expected, 1e-15 * expected);
}

class HdThreads : public ::testing::TestWithParam<std::tuple<int, int>> {
  protected:
    void TearDown() override { optim_set_num_threads(0); }
};

TEST_P(HdThreads, BitwiseIdenticalForAnyThreadCount)
{
    const auto [scope, rule] = GetParam();
    const std::vector<size_t> sizes = {400000, 3, 65536 * 3 + 7, 0, 250000, 1000};
    const optim_hd_group groups[2] = {{0.9, 0.0, 1e-3, 0, 0}, {0.9, 0.0, 0.0, 1, 1}};
    std::vector<HdModel> runs;
    for (int threads : {1, 2, 3}) {
        ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
        HdModel m(sizes, 3, 0.01);
        std::mt19937_64 rng(4);
        for (int step = 0; step < 4; ++step) {
            m.grads(rng);
            auto list = m.list();
            auto params = hd_params(scope, rule, step == 0);
            ASSERT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, groups,
                                    &params, m.rates.data(), nullptr),
                      OPTIM_STATUS_OK)
                << optim_last_error();
            std::fill(m.fresh.begin(), m.fresh.end(), 0);
        }
        runs.push_back(std::move(m));
    }
    for (size_t r = 1; r < runs.size(); ++r) {
        EXPECT_EQ(runs[r].rates, runs[0].rates);
        for (size_t k = 0; k < sizes.size(); ++k) {
            EXPECT_EQ(runs[r].p[k], runs[0].p[k]) << "params of tensor " << k;
            EXPECT_EQ(runs[r].b[k], runs[0].b[k]) << "buffers of tensor " << k;
            EXPECT_EQ(runs[r].u[k], runs[0].u[k]) << "previous updates of tensor " << k;
            EXPECT_EQ(runs[r].r[k], runs[0].r[k]) << "per-parameter rates of tensor " << k;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(
    AllScopesAndRules, HdThreads,
    ::testing::Combine(::testing::Values(OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_SCOPE_PER_GROUP,
                                         OPTIM_HD_SCOPE_PER_TENSOR, OPTIM_HD_SCOPE_PER_PARAMETER),
                       ::testing::Values(OPTIM_HD_RULE_ADDITIVE, OPTIM_HD_RULE_NORMALIZED)));

TEST(HdCpu, NonFiniteGradientSkipsTheWholeStep)
{
    for (int scope : {OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_SCOPE_PER_PARAMETER}) {
        HdModel m({1000, 200000}, 5, 0.02);
        const optim_hd_group groups[2] = {{0.9, 0, 0, 0, 0}, {0, 0, 0, 0, 0}};
        std::mt19937_64 rng(6);
        m.grads(rng);
        auto list = m.list();
        auto params = hd_params(scope, OPTIM_HD_RULE_ADDITIVE, true);
        ASSERT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, groups, &params,
                                m.rates.data(), nullptr),
                  OPTIM_STATUS_OK);
        m.grads(rng);
        m.g[1][123456] = std::nanf("");
        const HdModel before = m;
        int64_t skipped = 0;
        params.first_step = 0;
        list = m.list();
        ASSERT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, groups, &params,
                                m.rates.data(), &skipped),
                  OPTIM_STATUS_OK);
        EXPECT_EQ(skipped, 1);
        EXPECT_EQ(m.p, before.p);
        EXPECT_EQ(m.b, before.b);
        EXPECT_EQ(m.u, before.u);
        EXPECT_EQ(m.r, before.r);
        EXPECT_EQ(m.rates, before.rates);
    }
}

TEST(HdCpu, AssumeFiniteGivesTheSameStepsOnFiniteGradients)
{
    const std::vector<size_t> sizes = {70000, 5, 200000};
    const optim_hd_group groups[2] = {{0.9, 0.0, 1e-3, 0, 0}, {0.9, 0.0, 0.0, 1, 0}};
    for (int scope : {OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_SCOPE_PER_GROUP, OPTIM_HD_SCOPE_PER_TENSOR,
                      OPTIM_HD_SCOPE_PER_PARAMETER})
        for (int rule : {OPTIM_HD_RULE_ADDITIVE, OPTIM_HD_RULE_NORMALIZED}) {
            std::vector<HdModel> runs;
            for (int assume : {0, 1}) {
                HdModel m(sizes, 11, 0.01);
                std::mt19937_64 rng(12);
                for (int step = 0; step < 4; ++step) {
                    m.grads(rng);
                    auto list = m.list();
                    auto params = hd_params(scope, rule, step == 0);
                    params.assume_finite = assume;
                    int64_t skipped = -1;
                    ASSERT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2,
                                            groups, &params, m.rates.data(), &skipped),
                              OPTIM_STATUS_OK)
                        << optim_last_error();
                    EXPECT_EQ(skipped, 0);
                    std::fill(m.fresh.begin(), m.fresh.end(), 0);
                }
                runs.push_back(std::move(m));
            }
            const std::string what =
                "scope " + std::to_string(scope) + " rule " + std::to_string(rule);
            EXPECT_EQ(runs[1].rates, runs[0].rates) << what;
            EXPECT_EQ(runs[1].p, runs[0].p) << what;
            EXPECT_EQ(runs[1].b, runs[0].b) << what;
            EXPECT_EQ(runs[1].u, runs[0].u) << what;
            EXPECT_EQ(runs[1].r, runs[0].r) << what;
        }
}

TEST(HdCpu, AssumeFiniteNeverSkipsAndANonFiniteElementStaysLocal)
{
    const optim_hd_group groups[2] = {{0.9, 0, 0, 0, 0}, {0, 0, 0, 0, 0}};
    const size_t bad = 123456;
    // Per parameter: the step with a NaN gradient element equals the step with a zero there, except
    // that element's parameter and buffer (NaN); its rate is left unchanged (its h is NaN).
    for (int scope : {OPTIM_HD_SCOPE_PER_PARAMETER, OPTIM_HD_SCOPE_GLOBAL}) {
        std::vector<HdModel> runs;
        std::vector<double> rates_before;
        for (float value : {std::nanf(""), 0.0f}) {
            HdModel m({1000, 200000}, 5, 0.02);
            std::mt19937_64 rng(6);
            for (int step = 0; step < 2; ++step) {
                m.grads(rng);
                if (step == 1) {
                    m.g[1][bad] = value;
                    rates_before = m.rates;
                }
                auto list = m.list();
                auto params = hd_params(scope, OPTIM_HD_RULE_ADDITIVE, step == 0);
                params.assume_finite = 1;
                int64_t skipped = -1;
                ASSERT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, groups,
                                        &params, m.rates.data(), &skipped),
                          OPTIM_STATUS_OK)
                    << optim_last_error();
                EXPECT_EQ(skipped, 0);
                std::fill(m.fresh.begin(), m.fresh.end(), 0);
            }
            runs.push_back(std::move(m));
        }
        HdModel& nan_run = runs[0];
        HdModel& zero_run = runs[1];
        EXPECT_TRUE(std::isnan(nan_run.p[1][bad])) << "scope " << scope;
        if (scope == OPTIM_HD_SCOPE_PER_PARAMETER) {
            EXPECT_EQ(nan_run.r[1][bad], 0.02f) << "its rate is left unchanged";
            nan_run.p[1][bad] = zero_run.p[1][bad];
            nan_run.u[1][bad] = zero_run.u[1][bad];
            nan_run.r[1][bad] = zero_run.r[1][bad];
            EXPECT_EQ(nan_run.p, zero_run.p);
            EXPECT_EQ(nan_run.b, zero_run.b);
            EXPECT_EQ(nan_run.u, zero_run.u);
            EXPECT_EQ(nan_run.r, zero_run.r);
        } else {
            EXPECT_EQ(nan_run.rates, rates_before)
                << "a NaN hypergradient leaves the rate unchanged";
            EXPECT_NE(zero_run.rates, rates_before);
        }
    }
}

TEST(HdCpu, ValidationNamesTheProblem)
{
    HdModel m({10}, 7, 0.1);
    auto list = m.list();
    m.group[0] = 0;
    const optim_hd_group good[1] = {{0, 0, 0, 0, 0}};
    auto expect = [&](optim_hd_params params, const optim_hd_group* groups,
                      const std::string& what) {
        EXPECT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, groups, &params,
                                m.rates.data(), nullptr),
                  OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(std::string(optim_last_error()).find(what), std::string::npos)
            << optim_last_error();
    };
    auto p = hd_params(OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_RULE_ADDITIVE, false);
    p.hypergrad_lr = -1;
    expect(p, good, "invalid hypergrad_lr");
    p = hd_params(OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_RULE_ADDITIVE, false);
    p.lr_min = 2;
    expect(p, good, "is greater than lr_max");
    const optim_hd_group nesterov[1] = {{0, 0, 0, 1, 0}};
    expect(hd_params(OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_RULE_ADDITIVE, false), nesterov,
           "Nesterov momentum requires");
    expect(hd_params(9, OPTIM_HD_RULE_ADDITIVE, false), good, "unknown scope");
    p = hd_params(OPTIM_HD_SCOPE_PER_PARAMETER, OPTIM_HD_RULE_ADDITIVE, false);
    p.assume_finite = 2;
    expect(p, good, "assume_finite must be 0 or 1");
    p.assume_finite = 0;
    p.across_ranks = 2;
    expect(p, good, "across_ranks must be 0 or 1");
    EXPECT_EQ(m.p[0][0], HdModel({10}, 7, 0.1).p[0][0]) << "nothing may change";
}

// across_ranks needs a job (optim_mpi_init): without one the step fails with the reason, after its
// read pass and before anything is written.
TEST(HdCpu, AcrossRanksWithoutAJobFailsAndChangesNothing)
{
    HdModel m({300, 70000}, 11, 0.1);
    std::mt19937_64 rng(5);
    m.grads(rng);
    const HdModel before = m;
    auto list = m.list();
    const optim_hd_group groups[2] = {{0.9, 0, 0, 0, 0}, {0.9, 0, 0, 0, 0}};
    for (int32_t scope : {OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_SCOPE_PER_TENSOR}) {
        auto params = hd_params(scope, OPTIM_HD_RULE_ADDITIVE, false);
        params.across_ranks = 1;
        EXPECT_NE(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, groups, &params,
                                m.rates.data(), nullptr),
                  OPTIM_STATUS_OK);
        EXPECT_NE(std::string(optim_last_error()).find("optim_hd_step"), std::string::npos)
            << optim_last_error();
        EXPECT_EQ(m.p, before.p) << "nothing may change";
        EXPECT_EQ(m.b, before.b) << "nothing may change";
        EXPECT_EQ(m.rates, before.rates) << "nothing may change";
    }
    auto params = hd_params(OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_RULE_ADDITIVE, false);
    params.across_ranks = 1;
    EXPECT_EQ(optim_hd_step(OPTIM_DEVICE_CUDA, 0, OPTIM_DTYPE_FLOAT32, &list, 2, groups, &params,
                            m.rates.data(), nullptr),
              OPTIM_STATUS_UNSUPPORTED);
    EXPECT_NE(std::string(optim_last_error()).find("across_ranks is CPU only"), std::string::npos)
        << optim_last_error();
}

TEST(HdCpu, AnArrayTheStepWritesMayNotBeAnotherOfTheSameTensor)
{
    HdModel m({10}, 7, 0.1);
    m.group[0] = 0;
    const HdModel before({10}, 7, 0.1);
    const optim_hd_group plain[1] = {{0, 0, 0, 0, 0}};
    const optim_hd_group heavy_ball[1] = {{0.9, 0, 0, 0, 0}};
    auto expect = [&](optim_hd_tensors list, int scope, const optim_hd_group* groups,
                      const std::string& what) {
        auto params = hd_params(scope, OPTIM_HD_RULE_ADDITIVE, false);
        EXPECT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, groups, &params,
                                m.rates.data(), nullptr),
                  OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(std::string(optim_last_error()).find(what), std::string::npos)
            << optim_last_error();
        EXPECT_EQ(m.p[0], before.p[0]) << "nothing may change";
        EXPECT_EQ(m.u[0], before.u[0]) << "nothing may change";
    };
    auto list = m.list();
    m.gp[0] = m.p[0].data();
    expect(list, OPTIM_HD_SCOPE_GLOBAL, plain, "the parameter and the gradient are the same");
    list = m.list();
    m.up[0] = m.p[0].data();
    expect(list, OPTIM_HD_SCOPE_GLOBAL, plain, "the parameter and the previous update are");
    list = m.list();
    m.rp[0] = m.u[0].data();
    expect(list, OPTIM_HD_SCOPE_PER_PARAMETER, plain,
           "the previous update and the parameter rates are");
    list = m.list();
    m.bp[0] = m.g[0].data();
    expect(list, OPTIM_HD_SCOPE_PER_TENSOR, heavy_ball,
           "the momentum buffer and the gradient are the same");
    // Heavy-ball momentum keeps no separate previous update: that array is not compared.
    list = m.list();
    m.up[0] = m.p[0].data();
    auto params = hd_params(OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_RULE_ADDITIVE, false);
    EXPECT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, heavy_ball, &params,
                            m.rates.data(), nullptr),
              OPTIM_STATUS_OK)
        << optim_last_error();
}

TEST(HdRateCount, OneRulePerScope)
{
    EXPECT_EQ(optim_hd_rate_count(OPTIM_HD_SCOPE_GLOBAL, 3, 7), 1);
    EXPECT_EQ(optim_hd_rate_count(OPTIM_HD_SCOPE_PER_GROUP, 3, 7), 3);
    EXPECT_EQ(optim_hd_rate_count(OPTIM_HD_SCOPE_PER_TENSOR, 3, 7), 7);
    EXPECT_EQ(optim_hd_rate_count(OPTIM_HD_SCOPE_PER_PARAMETER, 3, 7), 0);
    EXPECT_EQ(optim_hd_rate_count(4, 3, 7), -1);
    EXPECT_EQ(optim_hd_rate_count(-1, 3, 7), -1);
    EXPECT_EQ(optim_hd_rate_count(OPTIM_HD_SCOPE_GLOBAL, -1, 7), -1);
    EXPECT_EQ(optim_hd_rate_count(OPTIM_HD_SCOPE_GLOBAL, 3, -7), -1);
}
