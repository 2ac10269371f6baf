// A gradient scaler fused into the SGD, Adam and hypergradient steps (optim_grad_scale) on the CPU:
// a scaled step on loss-scaled gradients is bitwise the unscaled step on gradients unscaled
// beforehand the way PyTorch's unscale_ does (each element times the float32 inverse scale, in the
// element type), with and without clipping, on 1 to 3 threads; a non-finite gradient, or a flag set
// on entry, skips the step and writes nothing but the flag; bad scales are named and write nothing.
// The managed suite compares the fused GradScaler path with its unfused path over many steps
// (GradScalerTests.cs).
#include "reference.hpp"

#include <optim.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

using namespace optim_test;

namespace {

// Several tensors spanning many 64 Ki chunks, one of them empty; two param groups.
const std::vector<size_t> kSizes = {300000, 7, 0, 65536 * 2 + 3, 150000};
constexpr float kScale = 4096.0f;

template <typename T>
struct Model {
    std::vector<std::vector<T>> param, grad, buf, prev, exp_avg_sq;
    std::vector<void*> ps, bs, us, vs;
    std::vector<const void*> gs;
    std::vector<int64_t> numels, steps;
    std::vector<int32_t> groups;
    std::vector<uint8_t> fresh;

    explicit Model(uint64_t seed)
    {
        std::mt19937_64 rng(seed);
        for (size_t n : kSizes) {
            param.push_back(random_vector<T>(n, rng));
            grad.emplace_back(n, T(0));
            buf.emplace_back(n, T(0));
            prev.emplace_back(n, T(0));
            exp_avg_sq.emplace_back(n, T(0));
        }
        for (size_t k = 0; k < kSizes.size(); ++k) {
            numels.push_back(static_cast<int64_t>(kSizes[k]));
            groups.push_back(k < 2 ? 0 : 1);
        }
        steps.assign(kSizes.size(), 1);
        fresh.assign(kSizes.size(), 1);
    }
    void pointers()
    {
        ps.clear();
        gs.clear();
        bs.clear();
        us.clear();
        vs.clear();
        for (size_t k = 0; k < kSizes.size(); ++k) {
            ps.push_back(param[k].data());
            gs.push_back(grad[k].data());
            bs.push_back(buf[k].data());
            us.push_back(prev[k].data());
            vs.push_back(exp_avg_sq[k].data());
        }
    }
    optim_tensor_list sgd()
    {
        pointers();
        return optim_tensor_list{static_cast<int64_t>(kSizes.size()),
                                 ps.data(),
                                 gs.data(),
                                 bs.data(),
                                 numels.data(),
                                 fresh.data(),
                                 groups.data()};
    }
    optim_adam_tensors adam()
    {
        pointers();
        return optim_adam_tensors{static_cast<int64_t>(kSizes.size()),
                                  ps.data(),
                                  gs.data(),
                                  bs.data(),
                                  vs.data(),
                                  nullptr,
                                  numels.data(),
                                  steps.data(),
                                  groups.data(),
                                  nullptr};
    }
    optim_hd_tensors hd(bool per_parameter)
    {
        pointers();
        return optim_hd_tensors{static_cast<int64_t>(kSizes.size()),
                                ps.data(),
                                gs.data(),
                                bs.data(),
                                us.data(),
                                per_parameter ? vs.data() : nullptr,
                                numels.data(),
                                groups.data(),
                                fresh.data()};
    }
    std::vector<std::vector<T>> everything() const
    {
        std::vector<std::vector<T>> all = param;
        for (const auto* part : {&buf, &prev, &exp_avg_sq})
            all.insert(all.end(), part->begin(), part->end());
        return all;
    }
};

// Loss-scaled gradients for the fused model, and the same unscaled as PyTorch's unscale_ does
// (times the float32 inverse, rounded to T) for the reference.
template <typename T>
void fill_gradients(Model<T>& fused, Model<T>& ref, std::mt19937_64& rng, float inv)
{
    for (size_t k = 0; k < kSizes.size(); ++k) {
        fused.grad[k] = random_vector<T>(kSizes[k], rng, 0.01 * kScale);
        ref.grad[k] = fused.grad[k];
        for (T& v : ref.grad[k]) v = v * static_cast<T>(inv);
    }
}

template <typename T>
void expect_same(const Model<T>& a, const Model<T>& b, const char* what)
{
    const auto x = a.everything(), y = b.everything();
    for (size_t k = 0; k < x.size(); ++k)
        ASSERT_TRUE(same_bits(x[k], y[k])) << what << ", array " << k;
}

enum class Kind { Sgd, Adam, HdGlobal, HdPerParameter };

// One step of `kind` on `m`: scaled when scale is not null, clipped when max_norm > 0.
template <typename T>
optim_status step(Kind kind, Model<T>& m, int n, const optim_grad_scale* scale, double max_norm,
                  double* rates, int64_t* skipped)
{
    constexpr int32_t dtype = std::is_same_v<T, float> ? OPTIM_DTYPE_FLOAT32 : OPTIM_DTYPE_FLOAT64;
    double norm = 0;
    const optim_grad_clip clip{max_norm, &norm, 0};
    const optim_grad_clip* c = max_norm > 0 ? &clip : nullptr;
    for (auto& s : m.steps) s = n;
    for (auto& f : m.fresh) f = n == 1 ? 1 : 0;
    if (kind == Kind::Sgd) {
        optim_sgd_params groups[2];
        optim_sgd_params_default(&groups[0]);
        optim_sgd_params_default(&groups[1]);
        groups[0].momentum = 0.9;
        groups[1].weight_decay = 0.01;
        optim_tensor_list list = m.sgd();
        if (scale)
            return optim_sgd_step_scaled(OPTIM_DEVICE_CPU, 0, dtype, &list, 2, groups, c, scale);
        return c ? optim_sgd_step_clipped(OPTIM_DEVICE_CPU, 0, dtype, &list, 2, groups, c)
                 : optim_sgd_step(OPTIM_DEVICE_CPU, 0, dtype, &list, 2, groups);
    }
    if (kind == Kind::Adam) {
        optim_adam_params groups[2];
        optim_adam_params_default(&groups[0]);
        optim_adam_params_default(&groups[1]);
        groups[1].weight_decay = 0.1;
        groups[1].decoupled = 1;
        optim_adam_tensors list = m.adam();
        if (scale)
            return optim_adam_step_scaled(OPTIM_DEVICE_CPU, 0, dtype, &list, 2, groups, c, scale);
        return c ? optim_adam_step_clipped(OPTIM_DEVICE_CPU, 0, dtype, &list, 2, groups, c)
                 : optim_adam_step(OPTIM_DEVICE_CPU, 0, dtype, &list, 2, groups);
    }
    const bool per_parameter = kind == Kind::HdPerParameter;
    optim_hd_group groups[2] = {{0.9, 0, 0.01, 0, 0}, {0, 0, 0, 0, 0}};
    optim_hd_params hp{per_parameter ? 1e-3 : 1e-7,
                       0,
                       1,
                       1e-8,
                       per_parameter ? OPTIM_HD_SCOPE_PER_PARAMETER : OPTIM_HD_SCOPE_GLOBAL,
                       OPTIM_HD_RULE_ADDITIVE,
                       n == 1 ? 1 : 0,
                       0,
                       0};
    optim_hd_tensors list = m.hd(per_parameter);
    if (scale)
        return optim_hd_step_scaled(OPTIM_DEVICE_CPU, 0, dtype, &list, 2, groups, &hp, rates,
                                    skipped, c, scale);
    return c ? optim_hd_step_clipped(OPTIM_DEVICE_CPU, 0, dtype, &list, 2, groups, &hp, rates,
                                     skipped, c)
             : optim_hd_step(OPTIM_DEVICE_CPU, 0, dtype, &list, 2, groups, &hp, rates, skipped);
}

template <typename T>
void scaled_equals_unscale_then_step(Kind kind, double max_norm)
{
    for (int threads : {1, 2, 3}) {
        ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
        Model<T> fused(11), ref(11);
        if (kind == Kind::HdPerParameter)
            for (size_t k = 0; k < kSizes.size(); ++k)
                fused.exp_avg_sq[k] = ref.exp_avg_sq[k] = std::vector<T>(kSizes[k], T(0.01));
        double rate_f = 0.01, rate_r = 0.01;
        const float inv = static_cast<float>(1.0 / static_cast<double>(kScale));
        std::mt19937_64 rng(12);
        for (int n = 1; n <= 4; ++n) {
            fill_gradients(fused, ref, rng, inv);
            float found = 0.0f;
            const optim_grad_scale scale{&inv, &found};
            int64_t skipped = -1;
            ASSERT_EQ(step(kind, fused, n, &scale, max_norm, &rate_f, &skipped), OPTIM_STATUS_OK)
                << optim_last_error();
            ASSERT_EQ(step(kind, ref, n, nullptr, max_norm, &rate_r, nullptr), OPTIM_STATUS_OK)
                << optim_last_error();
            EXPECT_EQ(found, 0.0f);
            if (kind == Kind::HdGlobal || kind == Kind::HdPerParameter) {
                EXPECT_EQ(skipped, 0);
            }
            EXPECT_EQ(std::memcmp(&rate_f, &rate_r, sizeof(double)), 0) << "rate, step " << n;
            expect_same(fused, ref, "state");
        }
    }
    optim_set_num_threads(0);
}

template <typename T>
void non_finite_skips_and_writes_nothing(Kind kind)
{
    Model<T> m(21), unused(21);
    const float inv = 0.5f;
    std::mt19937_64 rng(22);
    fill_gradients(m, unused, rng, inv);
    double rate = 0.01;
    ASSERT_EQ(step(kind, m, 1, nullptr, 0, &rate, nullptr), OPTIM_STATUS_OK); // some history
    for (T bad : {std::numeric_limits<T>::infinity(), std::numeric_limits<T>::quiet_NaN()}) {
        for (bool flagged : {false, true}) {
            fill_gradients(m, unused, rng, inv);
            if (!flagged) m.grad[4][149999] = bad; // the last element of the last tensor
            const auto before = m.everything();
            const double rate_before = rate;
            float found = flagged ? 1.0f : 0.0f;
            const optim_grad_scale scale{&inv, &found};
            int64_t skipped = -1;
            ASSERT_EQ(step(kind, m, 2, &scale, 1.0, &rate, &skipped), OPTIM_STATUS_OK)
                << optim_last_error();
            EXPECT_EQ(found, 1.0f);
            if (kind == Kind::HdGlobal || kind == Kind::HdPerParameter) {
                EXPECT_EQ(skipped, 0);
            }
            EXPECT_EQ(std::memcmp(&rate, &rate_before, sizeof(double)), 0);
            const auto after = m.everything();
            for (size_t k = 0; k < after.size(); ++k)
                ASSERT_TRUE(same_bits(after[k], before[k])) << "array " << k;
        }
    }
}

} // namespace

TEST(GradScaleCpu, SgdScaledEqualsUnscaleThenStep)
{
    scaled_equals_unscale_then_step<float>(Kind::Sgd, 0);
    scaled_equals_unscale_then_step<float>(Kind::Sgd, 0.5);
    scaled_equals_unscale_then_step<double>(Kind::Sgd, 0.5);
}

TEST(GradScaleCpu, AdamScaledEqualsUnscaleThenStep)
{
    scaled_equals_unscale_then_step<float>(Kind::Adam, 0);
    scaled_equals_unscale_then_step<float>(Kind::Adam, 0.5);
    scaled_equals_unscale_then_step<double>(Kind::Adam, 0);
}

TEST(GradScaleCpu, HypergradientScaledEqualsUnscaleThenStep)
{
    for (Kind kind : {Kind::HdGlobal, Kind::HdPerParameter}) {
        scaled_equals_unscale_then_step<float>(kind, 0);
        scaled_equals_unscale_then_step<float>(kind, 0.5);
        scaled_equals_unscale_then_step<double>(kind, 0.5);
    }
}

TEST(GradScaleCpu, NonFiniteGradientOrSetFlagSkipsEverything)
{
    for (Kind kind : {Kind::Sgd, Kind::Adam, Kind::HdGlobal, Kind::HdPerParameter}) {
        non_finite_skips_and_writes_nothing<float>(kind);
        non_finite_skips_and_writes_nothing<double>(kind);
    }
}

TEST(GradScaleValidation, BadScaleIsNamedAndWritesNothing)
{
    Model<float> m(31), unused(31);
    std::mt19937_64 rng(32);
    fill_gradients(m, unused, rng, 1.0f);
    const auto before = m.everything();
    float found = 0.0f;
    const float zero = 0.0f, inf = INFINITY, nan = NAN, negative = -1.0f, one = 1.0f;
    struct Case {
        optim_grad_scale scale;
        const char* fragment;
    };
    const Case cases[] = {{{nullptr, &found}, "scale->inv_scale is NULL"},
                          {{&one, nullptr}, "scale->found_inf is NULL"},
                          {{&zero, &found}, "invalid inverse scale"},
                          {{&inf, &found}, "invalid inverse scale"},
                          {{&nan, &found}, "invalid inverse scale"},
                          {{&negative, &found}, "invalid inverse scale"}};
    for (Kind kind : {Kind::Sgd, Kind::Adam, Kind::HdGlobal}) {
        double rate = 0.01;
        for (const Case& c : cases) {
            EXPECT_EQ(step(kind, m, 2, &c.scale, 0, &rate, nullptr), OPTIM_STATUS_INVALID_ARGUMENT);
            EXPECT_NE(std::string(optim_last_error()).find(c.fragment), std::string::npos)
                << optim_last_error();
            EXPECT_NE(std::string(optim_last_error()).find("_step_scaled: "), std::string::npos)
                << optim_last_error();
        }
        EXPECT_EQ(rate, 0.01);
    }
    optim_sgd_params g;
    optim_sgd_params_default(&g);
    optim_tensor_list list = m.sgd();
    EXPECT_EQ(optim_sgd_step_scaled(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &g, nullptr,
                                    nullptr),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("optim_sgd_step_scaled: scale is NULL"),
              std::string::npos)
        << optim_last_error();
    EXPECT_EQ(found, 0.0f);
    const auto after = m.everything();
    for (size_t k = 0; k < after.size(); ++k) ASSERT_TRUE(same_bits(after[k], before[k]));
}

// Adam's step counts in memory (step_counts, PyTorch's "capturable" form) against the step numbers
// given: bitwise the same state over 50 scaled steps of which every seventh has an infinity in a
// gradient, which the scaler skips, leaving every count as it was; 1 and 3 threads.
TEST(GradScaleCpu, AdamStepCountsInMemoryEqualGivenStepNumbersAndSkipWithTheStep)
{
    for (int threads : {1, 3}) {
        ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
        Model<float> counted(31), numbered(31);
        std::vector<int64_t> counts(kSizes.size(), 0);
        std::vector<int64_t*> count_ptrs;
        for (int64_t& c : counts) count_ptrs.push_back(&c);
        optim_adam_params groups[2];
        optim_adam_params_default(&groups[0]);
        optim_adam_params_default(&groups[1]);
        groups[1].weight_decay = 0.1;
        groups[1].decoupled = 1;
        const float inv = 1.0f / kScale;
        std::mt19937_64 rng(32);
        int64_t taken = 0;
        for (int n = 1; n <= 50; ++n) {
            fill_gradients(counted, numbered, rng, inv);
            numbered.grad = counted.grad;
            const bool bad = n % 7 == 0;
            if (bad)
                counted.grad[3][5] = numbered.grad[3][5] = std::numeric_limits<float>::infinity();
            float found_c = 0.0f, found_n = 0.0f;
            const optim_grad_scale scale_c{&inv, &found_c}, scale_n{&inv, &found_n};
            numbered.steps.assign(kSizes.size(), taken + 1);
            optim_adam_tensors given = numbered.adam();
            optim_adam_tensors in_memory = counted.adam();
            in_memory.steps = nullptr;
            in_memory.step_counts = count_ptrs.data();
            ASSERT_EQ(optim_adam_step_scaled(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &given, 2,
                                             groups, nullptr, &scale_n),
                      OPTIM_STATUS_OK)
                << optim_last_error();
            ASSERT_EQ(optim_adam_step_scaled(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &in_memory,
                                             2, groups, nullptr, &scale_c),
                      OPTIM_STATUS_OK)
                << optim_last_error();
            EXPECT_EQ(found_c, bad ? 1.0f : 0.0f) << "step " << n;
            EXPECT_EQ(found_n, found_c) << "step " << n;
            if (!bad) ++taken;
            // The empty tensor takes no step, so its count stays.
            for (size_t k = 0; k < kSizes.size(); ++k)
                ASSERT_EQ(counts[k], kSizes[k] > 0 ? taken : 0) << "step " << n << " tensor " << k;
            expect_same(counted, numbered, "state");
        }
        EXPECT_EQ(taken, 50 - 50 / 7);
    }
    optim_set_num_threads(0);
}

TEST(GradScaleValidation, AdamStepCountsAreCheckedAndABadCallWritesNothing)
{
    Model<float> m(41), unused(41);
    std::mt19937_64 rng(42);
    fill_gradients(m, unused, rng, 1.0f);
    std::vector<int64_t> counts(kSizes.size(), 3);
    std::vector<int64_t*> count_ptrs;
    for (int64_t& c : counts) count_ptrs.push_back(&c);
    optim_adam_params g;
    optim_adam_params_default(&g);
    g.weight_decay = 0;
    const auto before = m.everything();
    struct Case {
        bool steps;
        int64_t* null_entry_at; // the entry of count_ptrs set to NULL, or none
        int64_t first_count;
        const char* fragment;
    };
    const Case cases[] = {
        {true, nullptr, 3, "tensors->steps and step_counts are both given"},
        {false, nullptr, -1, "step count must be >= 0 (the steps taken so far), got -1"},
        {false, &counts[2], 3, "tensor 2: step count pointer is NULL"},
    };
    for (const Case& c : cases) {
        optim_adam_tensors list = m.adam();
        list.group_index = nullptr;
        if (!c.steps) list.steps = nullptr;
        std::vector<int64_t*> ptrs = count_ptrs;
        if (c.null_entry_at) ptrs[static_cast<size_t>(c.null_entry_at - counts.data())] = nullptr;
        list.step_counts = ptrs.data();
        counts.assign(kSizes.size(), 3);
        counts[0] = c.first_count;
        EXPECT_EQ(optim_adam_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &g),
                  OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(std::string(optim_last_error()).find(c.fragment), std::string::npos)
            << optim_last_error();
        EXPECT_EQ(counts[0], c.first_count);
        EXPECT_EQ(counts[1], 3);
    }
    optim_adam_tensors neither = m.adam();
    neither.group_index = nullptr;
    neither.steps = nullptr;
    EXPECT_EQ(optim_adam_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &neither, 1, &g),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("both NULL"), std::string::npos)
        << optim_last_error();
    const auto after = m.everything();
    for (size_t k = 0; k < after.size(); ++k) ASSERT_TRUE(same_bits(after[k], before[k]));
}
