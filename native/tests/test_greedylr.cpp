// GreedyLR's native state machine: the worked example of docs/greedylr.md, non-finite metrics,
// validation.
#include <optim.h>

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace {

optim_greedylr_config reference_config(int groups = 1)
{
    optim_greedylr_config c{};
    c.factor = 0.95;
    c.threshold = 1e-6;
    c.eps = 1e-8;
    c.mode = OPTIM_GREEDY_MODE_MIN;
    c.threshold_mode = OPTIM_GREEDY_THRESHOLD_ABS;
    c.patience = 10;
    c.window_size = 50;
    c.reset_start = 500;
    c.groups = groups;
    return c;
}

struct Greedy {
    optim_greedylr_config config;
    optim_greedylr_state state{};
    std::vector<double> rates, initial, min_lr, max_lr, window;

    Greedy(optim_greedylr_config c, std::vector<double> lr0, double lo, double hi)
        : config(c), rates(lr0), initial(lr0), min_lr(lr0.size(), lo), max_lr(lr0.size(), hi),
          window(static_cast<size_t>(c.window_size))
    {
        EXPECT_EQ(optim_greedylr_init(&config, &state), OPTIM_STATUS_OK) << optim_last_error();
    }

    optim_status step(double metric)
    {
        optim_greedylr_buffers b{rates.data(), initial.data(), min_lr.data(), max_lr.data(),
                                 window.data()};
        return optim_greedylr_step(OPTIM_DEVICE_CPU, 0, &config, &state, &b, &metric,
                                   OPTIM_DTYPE_FLOAT64);
    }
};

} // namespace

TEST(GreedyLr, WorkedExampleOfTheSpec)
{
    auto c = reference_config();
    c.factor = 0.5;
    c.patience = 1;
    Greedy g(c, {0.1}, 0.01, 0.3);
    const double losses[] = {1.0, 0.9, 0.8, 0.7, 0.6, 0.65, 0.62, 0.61, 0.7, 0.55, 0.5};
    const double expected[] = {0.1, 0.2, 0.2, 0.3, 0.3, 0.3, 0.15, 0.15, 0.075, 0.075, 0.15};
    for (int i = 0; i < 11; ++i) {
        ASSERT_EQ(g.step(losses[i]), OPTIM_STATUS_OK) << optim_last_error();
        EXPECT_DOUBLE_EQ(g.rates[0], expected[i]) << "after loss " << i << " = " << losses[i];
    }
    EXPECT_DOUBLE_EQ(g.state.best, 0.5);
    EXPECT_EQ(g.state.steps, 11);
}

TEST(GreedyLr, NonFiniteMetricsAreNeverBetterAndNeverEnterTheWindow)
{
    auto c = reference_config();
    c.patience = 0;
    c.factor = 0.5;
    c.smooth = 1;
    c.window_size = 3;
    Greedy g(c, {0.1}, 0.001, 1.0);
    ASSERT_EQ(g.step(1.0), OPTIM_STATUS_OK); // better: increase
    EXPECT_DOUBLE_EQ(g.rates[0], 0.2);
    for (double bad : {std::nan(""), -HUGE_VAL, HUGE_VAL}) {
        const double before = g.rates[0];
        ASSERT_EQ(g.step(bad), OPTIM_STATUS_OK);
        EXPECT_DOUBLE_EQ(g.rates[0], before * 0.5) << bad << " must count as not better";
        EXPECT_DOUBLE_EQ(g.state.best, 1.0);
        EXPECT_EQ(g.state.window_count, 1);
    }
}

TEST(GreedyLr, ValidationNamesTheProblemAndChangesNothing)
{
    auto c = reference_config();
    Greedy g(c, {0.1}, 0.001, 1.0);
    const optim_greedylr_state before = g.state;
    auto expect = [&](optim_greedylr_config bad, const std::string& fragment) {
        optim_greedylr_buffers b{g.rates.data(), g.initial.data(), g.min_lr.data(), g.max_lr.data(),
                                 g.window.data()};
        double m = 0.5;
        EXPECT_EQ(
            optim_greedylr_step(OPTIM_DEVICE_CPU, 0, &bad, &g.state, &b, &m, OPTIM_DTYPE_FLOAT64),
            OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(std::string(optim_last_error()).find(fragment), std::string::npos)
            << optim_last_error();
        EXPECT_EQ(g.state.steps, before.steps);
        EXPECT_DOUBLE_EQ(g.rates[0], 0.1);
    };
    auto bad = c;
    bad.factor = 1.0;
    expect(bad, "factor must be in (0, 1)");
    bad = c;
    bad.patience = -1;
    expect(bad, "patience must be >= 0");
    bad = c;
    bad.window_size = 0;
    expect(bad, "window_size must be >= 1");
    bad = c;
    bad.mode = 7;
    expect(bad, "unknown mode");
    g.min_lr[0] = 2.0;
    expect(c, "is greater than max_lr[0]");
}
