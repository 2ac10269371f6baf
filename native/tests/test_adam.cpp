// Fused Adam/AdamW on the CPU against a naive reference (PyTorch's _single_tensor_adam spelled out
// in separate passes, sharing no code with the library), over many steps, every flag combination,
// several groups and per-tensor step counts; thread-count independence; validation leaves memory
// untouched.
#include "reference.hpp"

#include <optim.h>

#include <gtest/gtest.h>

#include <cmath>
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
struct AdamTensor {
    std::vector<T> param, grad, m, v, vmax;
    int64_t step = 0;
};

// PyTorch's _single_tensor_adam for one tensor, one operation per pass.
template <typename T>
void reference_adam_step(AdamTensor<T>& s, const optim_adam_params& o)
{
    const size_t n = s.param.size();
    s.step += 1;
    if (o.decoupled)
        for (auto& p : s.param) p = p * static_cast<T>(1 - o.lr * o.weight_decay);
    std::vector<T> g(s.grad);
    if (o.maximize)
        for (auto& x : g) x = -x;
    if (!o.decoupled && o.weight_decay != 0)
        for (size_t i = 0; i < n; ++i) g[i] = g[i] + static_cast<T>(o.weight_decay) * s.param[i];
    double bc1 = 0;
    const std::vector<T> denom = reference_adam_moments(s.m, s.v, s.vmax, g, o.beta1, o.beta2,
                                                        o.eps, o.amsgrad != 0, s.step, bc1);
    const T step_size = static_cast<T>(o.lr / bc1);
    for (size_t i = 0; i < n; ++i) s.param[i] = s.param[i] - step_size * s.m[i] / denom[i];
}

template <typename T>
struct AdamModel {
    std::vector<AdamTensor<T>> tensors;
    std::vector<void*> params, ms, vs, vmaxs;
    std::vector<const void*> grads;
    std::vector<int64_t> numels, steps;
    std::vector<int32_t> groups;

    AdamModel(const std::vector<size_t>& sizes, uint64_t seed)
    {
        std::mt19937_64 rng(seed);
        for (size_t n : sizes) {
            AdamTensor<T> s;
            s.param = random_vector<T>(n, rng);
            s.grad = std::vector<T>(n);
            s.m = s.v = s.vmax = std::vector<T>(n, T(0));
            tensors.push_back(std::move(s));
        }
    }

    // The tensors with a gradient this step (active), in order; group_of[k] is tensor k's group.
    optim_adam_tensors list(const std::vector<bool>& active, const std::vector<int32_t>& group_of)
    {
        params.clear(), grads.clear(), ms.clear(), vs.clear(), vmaxs.clear();
        numels.clear(), steps.clear(), groups.clear();
        for (size_t k = 0; k < tensors.size(); ++k) {
            if (!active[k]) continue;
            auto& s = tensors[k];
            params.push_back(s.param.data());
            grads.push_back(s.grad.data());
            ms.push_back(s.m.data());
            vs.push_back(s.v.data());
            vmaxs.push_back(s.vmax.data());
            numels.push_back(static_cast<int64_t>(s.param.size()));
            steps.push_back(s.step + 1);
            groups.push_back(group_of[k]);
        }
        return optim_adam_tensors{static_cast<int64_t>(params.size()),
                                  params.data(),
                                  grads.data(),
                                  ms.data(),
                                  vs.data(),
                                  vmaxs.data(),
                                  numels.data(),
                                  steps.data(),
                                  groups.data(),
                                  nullptr};
    }
};

template <typename T>
::testing::AssertionResult close(const std::vector<T>& got, const std::vector<T>& want,
                                 const char* what)
{
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    for (size_t i = 0; i < got.size(); ++i) {
        const double a = got[i], b = want[i];
        if (!(std::fabs(a - b) <= tol * (1 + std::fabs(b))))
            return ::testing::AssertionFailure()
                   << what << "[" << i << "]: got " << a << ", reference " << b;
    }
    return ::testing::AssertionSuccess();
}

// Sizes crossing the 64 Ki chunk boundaries, with empty and tiny tensors.
const std::vector<size_t> kSizes = {1, 0, 7, 1000, 65536 + 3, 3 * 65536 - 5, 33};

// Two groups (tensors 0-3 and 4-6) with different options; tensor 2 gets its first gradient at
// step 10 (its bias corrections start there), tensor 5 skips every third step.
template <typename T>
void check_against_reference(const optim_adam_params& first, const optim_adam_params& second)
{
    AdamModel<T> model(kSizes, 7);
    AdamModel<T> ref(kSizes, 7);
    const std::vector<int32_t> group_of = {0, 0, 0, 0, 1, 1, 1};
    const optim_adam_params groups[2] = {first, second};
    std::mt19937_64 rng(11);
    for (int step = 0; step < 60; ++step) {
        std::vector<bool> active(kSizes.size(), true);
        active[2] = step >= 10;
        active[5] = step % 3 != 2;
        for (size_t k = 0; k < kSizes.size(); ++k) {
            model.tensors[k].grad = random_vector<T>(kSizes[k], rng, 0.5);
            ref.tensors[k].grad = model.tensors[k].grad;
        }
        optim_adam_tensors list = model.list(active, group_of);
        ASSERT_EQ(optim_adam_step(OPTIM_DEVICE_CPU, 0, dtype_of<T>(), &list, 2, groups),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        for (size_t k = 0; k < kSizes.size(); ++k) {
            if (!active[k]) continue;
            model.tensors[k].step += 1;
            reference_adam_step(ref.tensors[k], groups[group_of[k]]);
        }
    }
    for (size_t k = 0; k < kSizes.size(); ++k) {
        const auto& a = model.tensors[k];
        const auto& b = ref.tensors[k];
        EXPECT_EQ(a.step, b.step);
        EXPECT_TRUE(close(a.param, b.param, "param")) << "tensor " << k;
        EXPECT_TRUE(close(a.m, b.m, "exp_avg")) << "tensor " << k;
        EXPECT_TRUE(close(a.v, b.v, "exp_avg_sq")) << "tensor " << k;
        if (groups[group_of[k]].amsgrad) {
            EXPECT_TRUE(close(a.vmax, b.vmax, "max_exp_avg_sq")) << "tensor " << k;
        }
    }
}

template <typename T>
void all_combinations()
{
    for (int decoupled = 0; decoupled < 2; ++decoupled)
        for (int amsgrad = 0; amsgrad < 2; ++amsgrad)
            for (int maximize = 0; maximize < 2; ++maximize)
                for (double wd : {0.0, 0.05}) {
                    optim_adam_params a;
                    optim_adam_params_default(&a);
                    a.lr = 0.01;
                    a.weight_decay = wd;
                    a.amsgrad = amsgrad;
                    a.maximize = maximize;
                    a.decoupled = decoupled;
                    optim_adam_params b = a;
                    b.lr = 0.003;
                    b.beta1 = 0.5; // lerp's other branch
                    b.beta2 = 0.9;
                    b.eps = 1e-6;
                    b.amsgrad = 1 - amsgrad;
                    SCOPED_TRACE("decoupled " + std::to_string(decoupled) + " amsgrad " +
                                 std::to_string(amsgrad) + " maximize " + std::to_string(maximize) +
                                 " wd " + std::to_string(wd));
                    check_against_reference<T>(a, b);
                }
}

} // namespace

TEST(FusedAdamCpu, MatchesReferenceFloat32AllCombinations)
{
    all_combinations<float>();
}

TEST(FusedAdamCpu, MatchesReferenceFloat64AllCombinations)
{
    all_combinations<double>();
}

TEST(FusedAdamCpu, ResultsAreBitwiseIdenticalForAnyNumberOfThreads)
{
    const std::vector<size_t> sizes = {500000, 3, 65536 * 4 + 1, 0, 300000, 12345, 200000};
    const std::vector<int32_t> group_of(sizes.size(), 0);
    optim_adam_params o;
    optim_adam_params_default(&o);
    o.weight_decay = 0.01;
    o.decoupled = 1;
    o.amsgrad = 1;
    std::vector<AdamModel<float>> runs;
    for (int threads : {1, 2, 3, 8}) {
        ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
        AdamModel<float> m(sizes, 99);
        std::mt19937_64 rng(5);
        std::vector<bool> active(sizes.size(), true);
        for (int step = 0; step < 4; ++step) {
            for (auto& t : m.tensors) t.grad = random_vector<float>(t.param.size(), rng, 0.5);
            optim_adam_tensors list = m.list(active, group_of);
            ASSERT_EQ(optim_adam_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &o),
                      OPTIM_STATUS_OK);
            for (auto& t : m.tensors) t.step += 1;
        }
        runs.push_back(std::move(m));
    }
    optim_set_num_threads(0);
    for (size_t r = 1; r < runs.size(); ++r)
        for (size_t k = 0; k < sizes.size(); ++k) {
            const auto& a = runs[0].tensors[k];
            const auto& b = runs[r].tensors[k];
            EXPECT_TRUE(same_bits(a.param, b.param) && same_bits(a.m, b.m) && same_bits(a.v, b.v) &&
                        same_bits(a.vmax, b.vmax))
                << "tensor " << k << " differs between thread counts";
        }
}

// ---- Validation: every bad argument is reported, and nothing is written ----------------------

namespace {
struct AdamFixture {
    std::vector<float> p = {1, 2, 3}, g = {0.1f, 0.2f, 0.3f}, m = {4, 5, 6}, v = {7, 8, 9},
                       w = {10, 11, 12};
    void* ps[1] = {p.data()};
    const void* gs[1] = {g.data()};
    void* mss[1] = {m.data()};
    void* vss[1] = {v.data()};
    void* wss[1] = {w.data()};
    int64_t ns[1] = {3};
    int64_t steps[1] = {1};
    optim_adam_tensors list{1, ps, gs, mss, vss, wss, ns, steps, nullptr, nullptr};
    optim_adam_params params;
    AdamFixture()
    {
        optim_adam_params_default(&params);
        params.amsgrad = 1;
    }
    void expect_failure(optim_status expected, const std::string& fragment,
                        int32_t device = OPTIM_DEVICE_CPU, int32_t dtype = OPTIM_DTYPE_FLOAT32)
    {
        EXPECT_EQ(optim_adam_step(device, 0, dtype, &list, 1, &params), expected);
        const std::string message = optim_last_error();
        EXPECT_NE(message.find(fragment), std::string::npos)
            << "message '" << message << "' lacks '" << fragment << "'";
        EXPECT_EQ(p, (std::vector<float>{1, 2, 3})) << "parameters were modified";
        EXPECT_EQ(m, (std::vector<float>{4, 5, 6})) << "exp_avg was modified";
        EXPECT_EQ(v, (std::vector<float>{7, 8, 9})) << "exp_avg_sq was modified";
        EXPECT_EQ(w, (std::vector<float>{10, 11, 12})) << "max_exp_avg_sq was modified";
    }
};
} // namespace

TEST(FusedAdamValidation, DefaultsArePyTorchs)
{
    optim_adam_params p;
    optim_adam_params_default(&p);
    EXPECT_EQ(p.lr, 1e-3);
    EXPECT_EQ(p.beta1, 0.9);
    EXPECT_EQ(p.beta2, 0.999);
    EXPECT_EQ(p.eps, 1e-8);
    EXPECT_EQ(p.weight_decay, 0.0);
    EXPECT_EQ(p.amsgrad + p.maximize + p.decoupled, 0);
    optim_adam_params_default(nullptr);
}

TEST(FusedAdamValidation, EveryBadHyperparameterIsNamed)
{
    const auto bad = [](auto set, const char* fragment) {
        AdamFixture f;
        set(f.params);
        f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, fragment);
    };
    bad([](optim_adam_params& p) { p.lr = -1; }, "invalid learning rate: -1");
    bad([](optim_adam_params& p) { p.lr = NAN; }, "invalid learning rate");
    bad([](optim_adam_params& p) { p.eps = -1e-8; }, "invalid epsilon value");
    bad([](optim_adam_params& p) { p.eps = INFINITY; }, "invalid epsilon value");
    bad([](optim_adam_params& p) { p.beta1 = 1.0; }, "invalid beta parameter at index 0: 1");
    bad([](optim_adam_params& p) { p.beta1 = -0.1; }, "invalid beta parameter at index 0");
    bad([](optim_adam_params& p) { p.beta2 = NAN; }, "invalid beta parameter at index 1");
    bad([](optim_adam_params& p) { p.weight_decay = -1; }, "invalid weight_decay value");
    bad([](optim_adam_params& p) { p.amsgrad = 2; }, "amsgrad must be 0 or 1");
    bad([](optim_adam_params& p) { p.maximize = -1; }, "maximize must be 0 or 1");
    bad([](optim_adam_params& p) { p.decoupled = 3; }, "decoupled must be 0 or 1");
}

TEST(FusedAdamValidation, EveryBadTensorIsNamed)
{
    {
        AdamFixture f;
        f.steps[0] = 0;
        f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "tensor 0: step must be >= 1");
    }
    {
        AdamFixture f;
        f.list.max_exp_avg_sqs = nullptr;
        f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "max_exp_avg_sq pointer is NULL");
    }
    {
        AdamFixture f;
        f.mss[0] = nullptr;
        f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "exp_avg pointer is NULL");
    }
    {
        AdamFixture f;
        f.list.steps = nullptr;
        f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "must not be NULL");
    }
    {
        AdamFixture f;
        f.vss[0] = f.mss[0];
        f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT,
                         "the exp_avg and the exp_avg_sq are the same memory");
    }
    {
        AdamFixture f;
        f.gs[0] = f.ps[0];
        f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "same memory");
    }
    {
        AdamFixture f;
        f.ns[0] = -1;
        f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "numel is negative");
    }
    {
        AdamFixture f;
        f.expect_failure(OPTIM_STATUS_UNSUPPORTED, "unsupported dtype", OPTIM_DEVICE_CPU, 7);
    }
    {
        AdamFixture f;
        f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "unknown device", 5);
    }
}

TEST(FusedAdamValidation, WithoutAmsgradTheMaxArrayIsNotNeeded)
{
    AdamFixture f;
    f.params.amsgrad = 0;
    f.list.max_exp_avg_sqs = nullptr;
    EXPECT_EQ(optim_adam_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &f.list, 1, &f.params),
              OPTIM_STATUS_OK);
    EXPECT_EQ(f.w, (std::vector<float>{10, 11, 12}));
}

TEST(FusedAdamValidation, AFailingLaterGroupChangesNoGroup)
{
    std::vector<float> p0 = {1, 2}, g0 = {1, 1}, m0 = {0, 0}, v0 = {0, 0};
    std::vector<float> p1 = {3, 4}, g1 = {1, 1}, m1 = {0, 0}, v1 = {0, 0};
    void* ps[2] = {p0.data(), p1.data()};
    const void* gs[2] = {g0.data(), g1.data()};
    void* ms[2] = {m0.data(), m1.data()};
    void* vs[2] = {v0.data(), v1.data()};
    int64_t ns[2] = {2, 2}, steps[2] = {1, 1};
    int32_t gi[2] = {0, 1};
    optim_adam_tensors list{2, ps, gs, ms, vs, nullptr, ns, steps, gi, nullptr};
    optim_adam_params groups[2];
    optim_adam_params_default(&groups[0]);
    optim_adam_params_default(&groups[1]);
    groups[1].amsgrad = 1; // no max_exp_avg_sqs given
    EXPECT_EQ(optim_adam_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, groups),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("tensor 1"), std::string::npos);
    EXPECT_EQ(p0, (std::vector<float>{1, 2}));
    EXPECT_EQ(m0, (std::vector<float>{0, 0}));
    gi[1] = 2;
    groups[1].amsgrad = 0;
    EXPECT_EQ(optim_adam_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, groups),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("out of range"), std::string::npos);
    gi[0] = 1;
    gi[1] = 0;
    EXPECT_EQ(optim_adam_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, groups),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("param-group order"), std::string::npos);
    EXPECT_EQ(p0, (std::vector<float>{1, 2}));
    EXPECT_EQ(p1, (std::vector<float>{3, 4}));
}

TEST(FusedAdamValidation, CudaRequestWithoutADeviceIsAClearError)
{
    int32_t devices = 0;
    ASSERT_EQ(optim_cuda_device_count(&devices), OPTIM_STATUS_OK);
    if (devices > 0) GTEST_SKIP() << "a CUDA device is present";
    AdamFixture f;
    f.expect_failure(OPTIM_STATUS_CUDA_UNAVAILABLE, "optim_adam_step", OPTIM_DEVICE_CUDA);
}
