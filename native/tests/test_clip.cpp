// Gradient clipping fused into the SGD, Adam and hypergradient steps (optim_grad_clip) on the CPU:
// a clipped step equals the unclipped step on gradients clipped beforehand by an independent
// reference (clip_grad_norm_ spelled out: the norm summed serially in double, the coefficient in
// the element type); the norm and every result are bitwise independent of the thread count; a bad
// clip is reported and writes nothing. The managed suite compares with TorchSharp's own
// clip_grad_norm_ over many steps (ClipTests.cs).
#include "reference.hpp"

#include <optim.h>

#include <gtest/gtest.h>

#include <cmath>
#include <string>

using namespace optim_test;

namespace {

// Several tensors spanning many 64 Ki chunks, one of them empty.
const std::vector<size_t> kSizes = {300000, 7, 0, 65536 * 2 + 3, 150000};

template <typename T>
struct Model {
    std::vector<std::vector<T>> param, grad, buf, prev;
    std::vector<void*> ps, bs, us;
    std::vector<const void*> gs;
    std::vector<int64_t> numels;
    std::vector<int32_t> groups;

    explicit Model(uint64_t seed)
    {
        std::mt19937_64 rng(seed);
        for (size_t n : kSizes) {
            param.push_back(random_vector<T>(n, rng));
            grad.push_back(random_vector<T>(n, rng, 0.01));
            buf.emplace_back(n, T(0));
            prev.emplace_back(n, T(0));
        }
        for (size_t k = 0; k < kSizes.size(); ++k) {
            numels.push_back(static_cast<int64_t>(kSizes[k]));
            groups.push_back(k < 2 ? 0 : 1);
        }
        pointers();
    }
    // The data pointers, taken again before each call (the tests replace the gradient vectors).
    void pointers()
    {
        ps.clear();
        gs.clear();
        bs.clear();
        us.clear();
        for (size_t k = 0; k < kSizes.size(); ++k) {
            ps.push_back(param[k].data());
            gs.push_back(grad[k].data());
            bs.push_back(buf[k].data());
            us.push_back(prev[k].data());
        }
    }
    optim_tensor_list list(const std::vector<uint8_t>& fresh)
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
    optim_hd_tensors hd_list(const std::vector<uint8_t>& fresh)
    {
        pointers();
        return optim_hd_tensors{static_cast<int64_t>(kSizes.size()),
                                ps.data(),
                                gs.data(),
                                bs.data(),
                                us.data(),
                                nullptr,
                                numels.data(),
                                groups.data(),
                                fresh.data()};
    }
};

// clip_grad_norm_ as its definition reads: the norm summed serially in double, then the
// coefficient in T; the gradients are scaled in place. Returns the norm.
template <typename T>
double reference_clip(std::vector<std::vector<T>>& grads, double max_norm)
{
    double squared = 0;
    for (const auto& g : grads)
        for (T v : g) squared += static_cast<double>(v) * static_cast<double>(v);
    const double norm = std::sqrt(squared);
    T coef = static_cast<T>(max_norm) / (static_cast<T>(norm) + static_cast<T>(1e-6));
    if (coef > T(1)) coef = T(1);
    for (auto& g : grads)
        for (T& v : g) v = v * coef;
    return norm;
}

template <typename T>
void expect_close(const std::vector<std::vector<T>>& a, const std::vector<std::vector<T>>& b,
                  const char* what)
{
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    for (size_t k = 0; k < a.size(); ++k)
        for (size_t i = 0; i < a[k].size(); ++i)
            ASSERT_NEAR(a[k][i], b[k][i], tol * (1 + std::fabs(b[k][i])))
                << what << ", tensor " << k << " element " << i;
}

constexpr int32_t kFloat = OPTIM_DTYPE_FLOAT32;

// SGD with momentum and weight decay, two groups, 6 steps; max_norm small (clip active) or large
// (inactive).
void sgd_matches_reference(double max_norm)
{
    Model<float> fused(1), ref(1);
    optim_sgd_params groups[2];
    optim_sgd_params_default(&groups[0]);
    groups[0].momentum = 0.9;
    groups[0].weight_decay = 0.01;
    optim_sgd_params_default(&groups[1]);
    groups[1].lr = 0.05;
    std::mt19937_64 rng(7);
    for (int step = 0; step < 6; ++step) {
        for (size_t k = 0; k < kSizes.size(); ++k)
            fused.grad[k] = ref.grad[k] = random_vector<float>(kSizes[k], rng, 0.01 * (step + 1));
        const std::vector<uint8_t> fresh(kSizes.size(), step == 0 ? 1 : 0);
        double norm = -1;
        const optim_grad_clip clip{max_norm, &norm, 0};
        optim_tensor_list a = fused.list(fresh);
        ASSERT_EQ(optim_sgd_step_clipped(OPTIM_DEVICE_CPU, 0, kFloat, &a, 2, groups, &clip),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        const double expected = reference_clip(ref.grad, max_norm);
        EXPECT_NEAR(norm, expected, 1e-12 * expected);
        optim_tensor_list b = ref.list(fresh);
        ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, kFloat, &b, 2, groups), OPTIM_STATUS_OK);
        expect_close(fused.param, ref.param, "parameter");
        expect_close(fused.buf, ref.buf, "momentum buffer");
    }
}

} // namespace

TEST(GradClipCpu, SgdMatchesClipThenStepWhenActive)
{
    sgd_matches_reference(0.5);
}

TEST(GradClipCpu, SgdMatchesClipThenStepWhenInactive)
{
    sgd_matches_reference(1e6);
}

TEST(GradClipCpu, AdamMatchesClipThenStep)
{
    Model<double> fused(2), ref(2);
    optim_adam_params o;
    optim_adam_params_default(&o);
    o.weight_decay = 0.1;
    o.decoupled = 1;
    std::mt19937_64 rng(8);
    std::vector<std::vector<double>> vf, vr, wf, wr;
    for (size_t n : kSizes) {
        vf.emplace_back(n, 0.0);
        vr.emplace_back(n, 0.0);
    }
    auto list = [&](Model<double>& m, std::vector<std::vector<double>>& v, std::vector<void*>& vs,
                    std::vector<int64_t>& steps) {
        vs.clear();
        for (auto& x : v) vs.push_back(x.data());
        m.pointers();
        return optim_adam_tensors{static_cast<int64_t>(kSizes.size()),
                                  m.ps.data(),
                                  m.gs.data(),
                                  m.bs.data(),
                                  vs.data(),
                                  nullptr,
                                  m.numels.data(),
                                  steps.data(),
                                  nullptr,
                                  nullptr};
    };
    std::vector<void*> vsf, vsr;
    for (int step = 1; step <= 5; ++step) {
        for (size_t k = 0; k < kSizes.size(); ++k)
            fused.grad[k] = ref.grad[k] = random_vector<double>(kSizes[k], rng, 0.02);
        std::vector<int64_t> steps(kSizes.size(), step);
        double norm = 0;
        const optim_grad_clip clip{1.0, &norm, 0};
        optim_adam_tensors a = list(fused, vf, vsf, steps);
        ASSERT_EQ(
            optim_adam_step_clipped(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT64, &a, 1, &o, &clip),
            OPTIM_STATUS_OK)
            << optim_last_error();
        EXPECT_NEAR(norm, reference_clip(ref.grad, 1.0), 1e-12 * norm);
        optim_adam_tensors b = list(ref, vr, vsr, steps);
        ASSERT_EQ(optim_adam_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT64, &b, 1, &o),
                  OPTIM_STATUS_OK);
        expect_close(fused.param, ref.param, "parameter");
        expect_close(vf, vr, "exp_avg_sq");
    }
}

TEST(GradClipCpu, HypergradientUsesTheClippedGradient)
{
    for (int32_t rule : {OPTIM_HD_RULE_ADDITIVE, OPTIM_HD_RULE_NORMALIZED}) {
        Model<double> fused(3), ref(3);
        optim_hd_group groups[2] = {{0.9, 0, 0.01, 0, 0}, {0, 0, 0.02, 0, 1}};
        optim_hd_params hp{0.5, 0, 1, 1e-8, OPTIM_HD_SCOPE_PER_GROUP, rule, 1, 0, 0};
        double rates_f[2] = {0.01, 0.02}, rates_r[2] = {0.01, 0.02};
        std::mt19937_64 rng(9);
        for (int step = 0; step < 5; ++step) {
            hp.first_step = step == 0 ? 1 : 0;
            for (size_t k = 0; k < kSizes.size(); ++k)
                fused.grad[k] = ref.grad[k] = random_vector<double>(kSizes[k], rng, 0.05);
            const std::vector<uint8_t> fresh(kSizes.size(), step == 0 ? 1 : 0);
            double norm = 0;
            const optim_grad_clip clip{0.3, &norm, 0};
            optim_hd_tensors a = fused.hd_list(fresh);
            ASSERT_EQ(optim_hd_step_clipped(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT64, &a, 2, groups,
                                            &hp, rates_f, nullptr, &clip),
                      OPTIM_STATUS_OK)
                << optim_last_error();
            EXPECT_NEAR(norm, reference_clip(ref.grad, 0.3), 1e-12 * norm);
            optim_hd_tensors b = ref.hd_list(fresh);
            ASSERT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT64, &b, 2, groups, &hp,
                                    rates_r, nullptr),
                      OPTIM_STATUS_OK);
            for (int g = 0; g < 2; ++g) EXPECT_NEAR(rates_f[g], rates_r[g], 1e-12) << "rate " << g;
            expect_close(fused.param, ref.param, "parameter");
            expect_close(fused.prev, ref.prev, "previous update");
        }
    }
}

TEST(GradClipCpu, NormAndResultsAreBitwiseIdenticalForAnyNumberOfThreads)
{
    std::vector<Model<float>> runs;
    std::vector<double> norms;
    optim_sgd_params groups[2];
    optim_sgd_params_default(&groups[0]);
    optim_sgd_params_default(&groups[1]);
    groups[0].momentum = 0.5;
    for (int threads : {1, 2, 3}) {
        ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
        Model<float> m(4);
        const std::vector<uint8_t> fresh(kSizes.size(), 1);
        double norm = 0;
        const optim_grad_clip clip{0.1, &norm, 0};
        optim_tensor_list list = m.list(fresh);
        ASSERT_EQ(optim_sgd_step_clipped(OPTIM_DEVICE_CPU, 0, kFloat, &list, 2, groups, &clip),
                  OPTIM_STATUS_OK);
        norms.push_back(norm);
        runs.push_back(std::move(m));
    }
    optim_set_num_threads(0);
    for (size_t r = 1; r < runs.size(); ++r) {
        EXPECT_EQ(std::memcmp(&norms[0], &norms[r], sizeof(double)), 0);
        for (size_t k = 0; k < kSizes.size(); ++k)
            EXPECT_TRUE(same_bits(runs[0].param[k], runs[r].param[k])) << "tensor " << k;
    }
}

TEST(GradClipValidation, BadClipIsNamedAndWritesNothing)
{
    Model<float> m(5);
    const auto before = m.param;
    optim_sgd_params groups[2];
    optim_sgd_params_default(&groups[0]);
    optim_sgd_params_default(&groups[1]);
    const std::vector<uint8_t> fresh(kSizes.size(), 1);
    optim_tensor_list list = m.list(fresh);
    double norm = 42;
    struct Case {
        optim_grad_clip clip;
        const char* fragment;
    };
    const Case cases[] = {{{0.0, &norm, 0}, "invalid max_norm"},
                          {{-1.0, &norm, 0}, "invalid max_norm"},
                          {{NAN, &norm, 0}, "invalid max_norm"},
                          {{INFINITY, &norm, 0}, "invalid max_norm"},
                          {{1.0, nullptr, 0}, "total_norm is NULL"},
                          {{1.0, &norm, 2}, "clip->across_ranks must be 0 or 1"}};
    for (const Case& c : cases) {
        EXPECT_EQ(optim_sgd_step_clipped(OPTIM_DEVICE_CPU, 0, kFloat, &list, 2, groups, &c.clip),
                  OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(std::string(optim_last_error()).find(c.fragment), std::string::npos)
            << optim_last_error();
    }
    // across_ranks without a job (optim_mpi_init): the norm pass runs, the sum across ranks fails.
    const optim_grad_clip across{1.0, &norm, 1};
    EXPECT_NE(optim_sgd_step_clipped(OPTIM_DEVICE_CPU, 0, kFloat, &list, 2, groups, &across),
              OPTIM_STATUS_OK);
    EXPECT_NE(std::string(optim_last_error()).find("optim_sgd_step_clipped"), std::string::npos)
        << optim_last_error();
    EXPECT_EQ(optim_sgd_step_clipped(OPTIM_DEVICE_CPU, 0, kFloat, &list, 2, groups, nullptr),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("optim_sgd_step_clipped: clip is NULL"),
              std::string::npos)
        << optim_last_error();
    optim_adam_params o;
    optim_adam_params_default(&o);
    optim_adam_tensors none{0,       nullptr, nullptr, nullptr, nullptr,
                            nullptr, nullptr, nullptr, nullptr, nullptr};
    EXPECT_EQ(optim_adam_step_clipped(OPTIM_DEVICE_CPU, 0, kFloat, &none, 1, &o, nullptr),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(norm, 42);
    EXPECT_EQ(m.param, before);
}

TEST(GradClipValidation, CudaRequestWithoutADeviceNamesTheClippedEntryPoint)
{
    int32_t devices = 0;
    ASSERT_EQ(optim_cuda_device_count(&devices), OPTIM_STATUS_OK);
    if (devices > 0) GTEST_SKIP() << "a CUDA device is present";
    Model<float> m(6);
    optim_sgd_params groups[2];
    optim_sgd_params_default(&groups[0]);
    optim_sgd_params_default(&groups[1]);
    const std::vector<uint8_t> fresh(kSizes.size(), 1);
    optim_tensor_list list = m.list(fresh);
    double norm = 0;
    const optim_grad_clip clip{1.0, &norm, 0};
    EXPECT_EQ(optim_sgd_step_clipped(OPTIM_DEVICE_CUDA, 0, kFloat, &list, 2, groups, &clip),
              OPTIM_STATUS_CUDA_UNAVAILABLE);
    EXPECT_NE(std::string(optim_last_error()).find("optim_sgd_step_clipped: "), std::string::npos)
        << optim_last_error();
}
