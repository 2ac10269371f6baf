// GreedyLR's native state machine: the worked example of docs/greedylr.md, non-finite metrics,
// validation, corrupt state, and the guard the CUDA kernel shares with the CPU path.
#include "../src/greedylr_math.hpp"

#include <optim.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
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

TEST(GreedyLr, CorruptCountersAreRejectedAndChangeNothing)
{
    // A counter at its limit would overflow in the update (undefined behaviour); a negative one
    // never comes from a real run. Both are reported, and nothing is written.
    auto c = reference_config();
    c.smooth = 1;
    c.window_size = 3;
    Greedy g(c, {0.1}, 0.001, 1.0);
    ASSERT_EQ(g.step(1.0), OPTIM_STATUS_OK);
    const std::vector<int64_t optim_greedylr_state::*> counters = {
        &optim_greedylr_state::num_good,
        &optim_greedylr_state::num_bad,
        &optim_greedylr_state::steps,
        &optim_greedylr_state::resets,
        &optim_greedylr_state::cooldown_counter,
        &optim_greedylr_state::warmup_counter};
    for (auto field : counters)
        for (int64_t bad : {INT64_MAX, int64_t(-1)}) {
            if (bad == INT64_MAX && (field == &optim_greedylr_state::cooldown_counter ||
                                     field == &optim_greedylr_state::warmup_counter))
                continue; // these only count down
            const optim_greedylr_state saved = g.state;
            g.state.*field = bad;
            const optim_greedylr_state corrupt = g.state;
            const std::vector<double> rates = g.rates, window = g.window;
            EXPECT_EQ(g.step(2.0), OPTIM_STATUS_INVALID_ARGUMENT) << bad;
            EXPECT_NE(std::string(optim_last_error()).find("corrupt state"), std::string::npos)
                << optim_last_error();
            EXPECT_EQ(std::memcmp(&g.state, &corrupt, sizeof corrupt), 0) << "state was written";
            EXPECT_EQ(g.rates, rates);
            EXPECT_EQ(g.window, window);
            g.state = saved;
        }
    g.state.reset_budget = INT64_MIN; // resets off count the budget down below 0, never past this
    EXPECT_EQ(g.step(2.0), OPTIM_STATUS_INVALID_ARGUMENT);
    g.state.reset_budget = -3;
    EXPECT_EQ(g.step(2.0), OPTIM_STATUS_OK) << optim_last_error();
}

TEST(GreedyLr, TheKernelsGuardRejectsWhatTheUpdateMustNotRunOn)
{
    // greedy_check() is what the CUDA kernel runs before greedy_step(): on the host here, on every
    // problem it knows. A bad state or buffer makes the kernel write nothing.
    auto c = reference_config(2);
    c.window_size = 4;
    optim_greedylr_state s{};
    ASSERT_EQ(optim_greedylr_init(&c, &s), OPTIM_STATUS_OK);
    std::vector<double> rates = {0.1, 0.2}, initial = rates, lo = {0.01, 0.01}, hi = {1.0, 1.0};
    optim_greedylr_buffers b{rates.data(), initial.data(), lo.data(), hi.data(), nullptr};
    auto problem = [&](optim_greedylr_state st) { return optim::greedy_check(c, st, b); };
    EXPECT_EQ(problem(s).problem, optim::kGreedyOk);
    for (auto [count, next] : {std::pair<int64_t, int64_t>{-1, 0}, {5, 0}, {0, -1}, {0, 4}}) {
        auto st = s;
        st.window_count = count;
        st.window_next = next;
        EXPECT_EQ(problem(st).problem, optim::kGreedyWindowPosition) << count << " " << next;
    }
    auto st = s;
    st.steps = INT64_MAX;
    EXPECT_EQ(problem(st).problem, optim::kGreedyCounter);
    st = s;
    st.num_bad = -1;
    EXPECT_EQ(problem(st).problem, optim::kGreedyCounter);
    const double nan = std::nan("");
    struct Case {
        std::vector<double>* array;
        double value;
        optim::GreedyProblem expected;
    };
    for (const Case& k :
         {Case{&lo, -1.0, optim::kGreedyMinLr}, Case{&lo, HUGE_VAL, optim::kGreedyMinLr},
          Case{&hi, 0.001, optim::kGreedyBounds}, Case{&hi, nan, optim::kGreedyBounds},
          Case{&rates, nan, optim::kGreedyRate}, Case{&rates, -0.5, optim::kGreedyRate},
          Case{&initial, HUGE_VAL, optim::kGreedyInitialRate}}) {
        const double saved = (*k.array)[1];
        (*k.array)[1] = k.value;
        const optim::GreedyCheck check = problem(s);
        EXPECT_EQ(check.problem, k.expected) << k.value;
        EXPECT_EQ(check.group, 1);
        (*k.array)[1] = saved;
    }
}

TEST(GreedyLr, ACudaStepChecksWhatTheHostCanReadFirst)
{
    // Config, device and pointers are host memory on either device: they are checked before the
    // call reaches the CUDA path (which, without a device, would only say CUDA is unavailable).
    auto c = reference_config();
    Greedy g(c, {0.1}, 0.001, 1.0);
    optim_greedylr_buffers b{g.rates.data(), g.initial.data(), g.min_lr.data(), g.max_lr.data(),
                             g.window.data()};
    const double m = 0.5;
    auto bad = c;
    bad.factor = 2.0;
    EXPECT_EQ(
        optim_greedylr_step(OPTIM_DEVICE_CUDA, 0, &bad, &g.state, &b, &m, OPTIM_DTYPE_FLOAT64),
        OPTIM_STATUS_INVALID_ARGUMENT);
    optim_greedylr_buffers missing = b;
    missing.max_lr = nullptr;
    EXPECT_EQ(
        optim_greedylr_step(OPTIM_DEVICE_CUDA, 0, &c, &g.state, &missing, &m, OPTIM_DTYPE_FLOAT64),
        OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(optim_greedylr_step(OPTIM_DEVICE_CUDA, 0, &c, &g.state, &b, &m, 7),
              OPTIM_STATUS_INVALID_ARGUMENT);
}
