// Fused SGD on the CPU against the naive reference, over many steps and every flag combination;
// thread-count independence; validation leaves memory untouched.
#include "reference.hpp"

#include <optim.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>

using namespace optim_test;

namespace {

template <typename T>
constexpr int32_t dtype_of()
{
    return std::is_same_v<T, float> ? OPTIM_DTYPE_FLOAT32 : OPTIM_DTYPE_FLOAT64;
}

// Sizes chosen to cross the library's 64 Ki chunk boundaries and to include empty and tiny tensors.
const std::vector<size_t> kSizes = {1, 0, 7, 1000, 65536 + 3, 3 * 65536 - 5, 33};

template <typename T>
struct Model {
    std::vector<TensorState<T>> tensors;
    std::vector<void*> params, bufs;
    std::vector<const void*> grads;
    std::vector<int64_t> numels;
    std::vector<uint8_t> fresh;

    Model(const std::vector<size_t>& sizes, uint64_t seed)
    {
        std::mt19937_64 rng(seed);
        for (size_t n : sizes) {
            TensorState<T> s;
            s.param = random_vector<T>(n, rng);
            s.grad = std::vector<T>(n);
            s.buf = std::vector<T>(n, T(0));
            tensors.push_back(std::move(s));
        }
    }

    void new_gradients(std::mt19937_64& rng)
    {
        for (auto& s : tensors) s.grad = random_vector<T>(s.param.size(), rng, 0.5);
    }

    optim_tensor_list list(const std::vector<bool>& active)
    {
        params.clear();
        grads.clear();
        bufs.clear();
        numels.clear();
        fresh.clear();
        for (size_t k = 0; k < tensors.size(); ++k) {
            if (!active[k]) continue;
            auto& s = tensors[k];
            params.push_back(s.param.data());
            grads.push_back(s.grad.data());
            bufs.push_back(s.buf.data());
            numels.push_back(static_cast<int64_t>(s.param.size()));
            fresh.push_back(s.has_buf ? 0 : 1);
        }
        return optim_tensor_list{static_cast<int64_t>(params.size()),
                                 params.data(),
                                 grads.data(),
                                 bufs.data(),
                                 numels.data(),
                                 fresh.data(),
                                 nullptr};
    }
};

optim_sgd_params to_params(const SgdConfig& c)
{
    optim_sgd_params p;
    optim_sgd_params_default(&p);
    p.lr = c.lr;
    p.momentum = c.momentum;
    p.dampening = c.dampening;
    p.weight_decay = c.weight_decay;
    p.nesterov = c.nesterov ? 1 : 0;
    p.maximize = c.maximize ? 1 : 0;
    return p;
}

template <typename T>
void expect_close(const std::vector<T>& actual, const std::vector<T>& expected, const char* what,
                  int step, size_t tensor)
{
    // The library and the reference perform the same operations in the same order; they may differ
    // only where a compiler contracts a multiply-add, hence a small tolerance rather than bitwise.
    const double rtol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
    const double atol = std::is_same_v<T, float> ? 1e-7 : 1e-15;
    int reported = 0;
    for (size_t i = 0; i < actual.size() && reported < 5; ++i) {
        const double a = actual[i], e = expected[i];
        if (!(std::fabs(a - e) <= atol + rtol * std::fabs(e))) {
            ADD_FAILURE() << what << " mismatch at step " << step << ", tensor " << tensor
                          << ", element " << i << ": got " << a << ", expected " << e;
            ++reported;
        }
    }
}

struct Combo {
    double momentum, dampening, weight_decay;
    bool nesterov, maximize;
};

std::vector<Combo> all_combos()
{
    std::vector<Combo> out;
    for (double m : {0.0, 0.9})
        for (double d : {0.0, 0.25})
            for (double wd : {0.0, 1e-2})
                for (bool nest : {false, true})
                    for (bool max : {false, true}) {
                        if (nest && (m == 0.0 || d != 0.0)) continue;
                        if (m == 0.0 && d != 0.0) continue; // dampening is inert without momentum
                        out.push_back({m, d, wd, nest, max});
                    }
    return out;
}

std::string combo_name(const Combo& c)
{
    return "m" + std::to_string(c.momentum) + "_d" + std::to_string(c.dampening) + "_wd" +
           std::to_string(c.weight_decay) + (c.nesterov ? "_nesterov" : "") +
           (c.maximize ? "_maximize" : "");
}

template <typename T>
void run_against_reference(const Combo& combo, int steps)
{
    SCOPED_TRACE(combo_name(combo));
    SgdConfig cfg{0.05,           combo.momentum, combo.dampening, combo.weight_decay,
                  combo.nesterov, combo.maximize};
    Model<T> fused(kSizes, 42);
    Model<T> ref(kSizes, 42);
    std::mt19937_64 rng(7);
    const optim_sgd_params params = to_params(cfg);
    for (int step = 1; step <= steps; ++step) {
        fused.new_gradients(rng);
        for (size_t k = 0; k < kSizes.size(); ++k) ref.tensors[k].grad = fused.tensors[k].grad;
        // Tensor 2 joins late (a parameter that had no gradient for the first steps): its momentum
        // buffer must start fresh at its own first step.
        std::vector<bool> active(kSizes.size(), true);
        active[2] = step > 10;
        optim_tensor_list list = fused.list(active);
        ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, dtype_of<T>(), &list, 1, &params),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        for (size_t k = 0; k < kSizes.size(); ++k) {
            if (!active[k]) continue;
            if (cfg.momentum != 0) fused.tensors[k].has_buf = true;
            reference_sgd_step(ref.tensors[k], cfg);
        }
        for (size_t k = 0; k < kSizes.size(); ++k) {
            expect_close(fused.tensors[k].param, ref.tensors[k].param, "param", step, k);
            if (cfg.momentum != 0)
                expect_close(fused.tensors[k].buf, ref.tensors[k].buf, "momentum buffer", step, k);
        }
        if (::testing::Test::HasFailure()) return;
    }
}

} // namespace

TEST(FusedSgdCpu, MatchesReferenceFloat32AllCombinations)
{
    for (const Combo& c : all_combos()) run_against_reference<float>(c, 50);
}

TEST(FusedSgdCpu, MatchesReferenceFloat64AllCombinations)
{
    for (const Combo& c : all_combos()) run_against_reference<double>(c, 50);
}

TEST(FusedSgdCpu, FirstStepCopiesTheGradientIntoTheBuffer)
{
    // PyTorch: on a parameter's first step the buffer is the (decayed) gradient itself, not
    // (1 - dampening) * gradient.
    std::vector<float> p = {1.0f, -2.0f}, g = {0.5f, 0.25f}, b = {123.0f, 456.0f};
    void* ps[] = {p.data()};
    const void* gs[] = {g.data()};
    void* bs[] = {b.data()};
    int64_t ns[] = {2};
    uint8_t fresh[] = {1};
    optim_tensor_list list{1, ps, gs, bs, ns, fresh, nullptr};
    optim_sgd_params params;
    optim_sgd_params_default(&params);
    params.lr = 0.1;
    params.momentum = 0.9;
    params.dampening = 0.5;
    ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &params),
              OPTIM_STATUS_OK);
    EXPECT_FLOAT_EQ(b[0], 0.5f);
    EXPECT_FLOAT_EQ(b[1], 0.25f);
    EXPECT_FLOAT_EQ(p[0], 1.0f - 0.1f * 0.5f);
    EXPECT_FLOAT_EQ(p[1], -2.0f - 0.1f * 0.25f);
    // Second step blends: buf = 0.9 * buf + 0.5 * g.
    fresh[0] = 0;
    ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &params),
              OPTIM_STATUS_OK);
    EXPECT_FLOAT_EQ(b[0], 0.9f * 0.5f + 0.5f * 0.5f);
}

TEST(FusedSgdCpu, LearningRateThroughPointer)
{
    std::vector<double> p = {1.0}, g = {2.0};
    void* ps[] = {p.data()};
    const void* gs[] = {g.data()};
    int64_t ns[] = {1};
    optim_tensor_list list{1, ps, gs, nullptr, ns, nullptr, nullptr};
    optim_sgd_params params;
    optim_sgd_params_default(&params);
    params.lr = 1000.0; // ignored
    double rate = 0.25;
    params.lr_ptr = &rate;
    ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT64, &list, 1, &params),
              OPTIM_STATUS_OK);
    EXPECT_DOUBLE_EQ(p[0], 0.5);
}

class ThreadCount : public ::testing::Test {
  protected:
    void TearDown() override { optim_set_num_threads(0); }
};

TEST_F(ThreadCount, ResultsAreBitwiseIdenticalForAnyNumberOfThreads)
{
    // Large enough that the pool is used: about 1.3M elements over 7 tensors.
    const std::vector<size_t> sizes = {500000, 3, 65536 * 4 + 1, 0, 300000, 12345, 200000};
    SgdConfig cfg{0.01, 0.9, 0.1, 1e-3, false, false};
    const optim_sgd_params params = to_params(cfg);
    std::vector<Model<float>> runs;
    for (int threads : {1, 2, 3, 8}) {
        ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
        ASSERT_EQ(optim_get_num_threads(), threads);
        Model<float> m(sizes, 99);
        std::mt19937_64 rng(5);
        std::vector<bool> active(sizes.size(), true);
        for (int step = 0; step < 5; ++step) {
            m.new_gradients(rng);
            optim_tensor_list list = m.list(active);
            ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &params),
                      OPTIM_STATUS_OK);
            for (auto& t : m.tensors) t.has_buf = true;
        }
        runs.push_back(std::move(m));
    }
    for (size_t r = 1; r < runs.size(); ++r)
        for (size_t k = 0; k < sizes.size(); ++k) {
            const auto& a = runs[0].tensors[k];
            const auto& b = runs[r].tensors[k];
            EXPECT_TRUE(same_bits(a.param, b.param))
                << "params of tensor " << k << " differ between thread counts";
            EXPECT_TRUE(same_bits(a.buf, b.buf))
                << "buffers of tensor " << k << " differ between thread counts";
        }
}

TEST(ThreadCountSetting, RejectsOutOfRange)
{
    EXPECT_EQ(optim_set_num_threads(-1), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("optim_set_num_threads"), std::string::npos);
    EXPECT_EQ(optim_set_num_threads(5000), OPTIM_STATUS_INVALID_ARGUMENT);
}

// ---- Validation: every bad argument is reported, and nothing is written
// ----------------------------

namespace {
struct Fixture {
    std::vector<float> p = {1, 2, 3}, g = {0.1f, 0.2f, 0.3f}, b = {7, 8, 9};
    void* ps[1] = {p.data()};
    const void* gs[1] = {g.data()};
    void* bs[1] = {b.data()};
    int64_t ns[1] = {3};
    optim_tensor_list list{1, ps, gs, bs, ns, nullptr, nullptr};
    optim_sgd_params params;
    Fixture()
    {
        optim_sgd_params_default(&params);
        params.momentum = 0.9;
    }
    void expect_failure(optim_status expected, const std::string& fragment,
                        int32_t device = OPTIM_DEVICE_CPU, int32_t dtype = OPTIM_DTYPE_FLOAT32)
    {
        EXPECT_EQ(optim_sgd_step(device, 0, dtype, &list, 1, &params), expected);
        const std::string message = optim_last_error();
        EXPECT_NE(message.find(fragment), std::string::npos)
            << "message '" << message << "' lacks '" << fragment << "'";
        EXPECT_EQ(p, (std::vector<float>{1, 2, 3})) << "parameters were modified";
        EXPECT_EQ(b, (std::vector<float>{7, 8, 9})) << "buffers were modified";
    }
};
} // namespace

TEST(FusedSgdValidation, NegativeLearningRate)
{
    Fixture f;
    f.params.lr = -0.1;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "invalid learning rate");
}

TEST(FusedSgdValidation, NaNLearningRateThroughPointer)
{
    Fixture f;
    double rate = std::nan("");
    f.params.lr_ptr = &rate;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "invalid learning rate");
}

TEST(FusedSgdValidation, NegativeMomentum)
{
    Fixture f;
    f.params.momentum = -0.5;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "invalid momentum");
}

TEST(FusedSgdValidation, NegativeWeightDecay)
{
    Fixture f;
    f.params.weight_decay = -1;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "invalid weight_decay");
}

TEST(FusedSgdValidation, InfiniteDampening)
{
    Fixture f;
    f.params.dampening = INFINITY;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "invalid dampening");
}

TEST(FusedSgdValidation, NesterovWithoutMomentum)
{
    Fixture f;
    f.params.momentum = 0;
    f.params.nesterov = 1;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "Nesterov momentum requires");
}

TEST(FusedSgdValidation, NesterovWithDampening)
{
    Fixture f;
    f.params.nesterov = 1;
    f.params.dampening = 0.1;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "Nesterov momentum requires");
}

TEST(FusedSgdValidation, MissingMomentumBuffers)
{
    Fixture f;
    f.list.momentum_buffers = nullptr;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "tensor 0: momentum buffer pointer is NULL");
}

TEST(FusedSgdValidation, NullGradientPointer)
{
    Fixture f;
    f.gs[0] = nullptr;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "tensor 0: gradient pointer is NULL");
}

TEST(FusedSgdValidation, NegativeNumel)
{
    Fixture f;
    f.ns[0] = -3;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "numel is negative");
}

TEST(FusedSgdValidation, NegativeCount)
{
    Fixture f;
    f.list.count = -1;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "count is negative");
}

TEST(FusedSgdValidation, NullListAndParams)
{
    Fixture f;
    EXPECT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, nullptr, 1, &f.params),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &f.list, 1, nullptr),
              OPTIM_STATUS_INVALID_ARGUMENT);
}

TEST(FusedSgdValidation, UnsupportedDtype)
{
    Fixture f;
    f.expect_failure(OPTIM_STATUS_UNSUPPORTED, "unsupported dtype", OPTIM_DEVICE_CPU, 7);
}

TEST(FusedSgdValidation, UnknownDevice)
{
    Fixture f;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "unknown device", 9);
}

TEST(FusedSgdValidation, CudaRequestWithoutCudaIsAClearError)
{
    int32_t devices = -1;
    ASSERT_EQ(optim_cuda_device_count(&devices), OPTIM_STATUS_OK);
    if (devices > 0) GTEST_SKIP() << "a CUDA device is present; covered by optim_gpu_check";
    Fixture f;
    f.expect_failure(OPTIM_STATUS_CUDA_UNAVAILABLE,
                     optim_cuda_compiled() ? "no CUDA device is present" : "no CUDA support",
                     OPTIM_DEVICE_CUDA);
}

// ---- Several param groups in one call
// ---------------------------------------------------------

namespace {

// Every flag combination as its own param group, in float32 and float64, with tensors that cross
// chunk boundaries (so chunks span groups), on 1, 2 and 3 threads, against the reference.
template <typename T>
void run_groups_against_reference(int threads)
{
    SCOPED_TRACE("threads " + std::to_string(threads));
    ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
    const std::vector<Combo> combos = all_combos();
    std::vector<size_t> sizes;
    std::vector<int32_t> group;
    std::vector<SgdConfig> configs;
    std::vector<optim_sgd_params> params;
    for (size_t g = 0; g < combos.size(); ++g) {
        const Combo& c = combos[g];
        configs.push_back({0.01 * static_cast<double>(g + 1), c.momentum, c.dampening,
                           c.weight_decay, c.nesterov, c.maximize});
        params.push_back(to_params(configs.back()));
        for (size_t n : {size_t(40000), size_t(0), size_t(70001), size_t(5)}) {
            sizes.push_back(n);
            group.push_back(static_cast<int32_t>(g));
        }
    }
    Model<T> fused(sizes, 3), ref(sizes, 3);
    std::mt19937_64 rng(8);
    const std::vector<bool> active(sizes.size(), true);
    for (int step = 1; step <= 6; ++step) {
        fused.new_gradients(rng);
        for (size_t k = 0; k < sizes.size(); ++k) ref.tensors[k].grad = fused.tensors[k].grad;
        optim_tensor_list list = fused.list(active);
        list.group_index = group.data();
        ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, dtype_of<T>(), &list,
                                 static_cast<int32_t>(params.size()), params.data()),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        for (size_t k = 0; k < sizes.size(); ++k) {
            const SgdConfig& cfg = configs[static_cast<size_t>(group[k])];
            if (cfg.momentum != 0) fused.tensors[k].has_buf = true;
            reference_sgd_step(ref.tensors[k], cfg);
            expect_close(fused.tensors[k].param, ref.tensors[k].param, "param", step, k);
            if (cfg.momentum != 0)
                expect_close(fused.tensors[k].buf, ref.tensors[k].buf, "momentum buffer", step, k);
        }
        if (::testing::Test::HasFailure()) return;
    }
}

} // namespace

TEST_F(ThreadCount, EveryGroupMatchesTheReferenceInOneCall)
{
    for (int threads : {1, 2, 3}) {
        run_groups_against_reference<float>(threads);
        run_groups_against_reference<double>(threads);
    }
}

// A bad later group must leave the earlier groups untouched: every group is checked first.
TEST(FusedSgdValidation, AFailingLaterGroupChangesNoGroup)
{
    std::vector<float> p0 = {1, 2}, g0 = {0.5f, 0.5f}, b0 = {3, 4};
    std::vector<float> p1 = {5, 6}, g1 = {0.5f, 0.5f};
    void* ps[] = {p0.data(), p1.data()};
    const void* gs[] = {g0.data(), g1.data()};
    void* bs[] = {b0.data(), nullptr};
    int64_t ns[] = {2, 2};
    int32_t group[] = {0, 1};
    optim_tensor_list list{2, ps, gs, bs, ns, nullptr, group};
    optim_sgd_params params[2];
    optim_sgd_params_default(&params[0]);
    optim_sgd_params_default(&params[1]);
    params[0].momentum = 0.9;

    params[1].lr = -1; // an invalid option of the second group
    EXPECT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, params),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("(group 1)"), std::string::npos)
        << optim_last_error();
    params[1].lr = 0.1;
    params[1].momentum = 0.9; // the second group's tensor has no momentum buffer
    EXPECT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, params),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("tensor 1: momentum buffer"), std::string::npos)
        << optim_last_error();
    EXPECT_EQ(p0, (std::vector<float>{1, 2}));
    EXPECT_EQ(b0, (std::vector<float>{3, 4}));
    EXPECT_EQ(p1, (std::vector<float>{5, 6}));

    params[1].momentum = 0;
    ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, params),
              OPTIM_STATUS_OK)
        << optim_last_error();
    EXPECT_NE(p0, (std::vector<float>{1, 2}));
    EXPECT_NE(p1, (std::vector<float>{5, 6}));
}

TEST(FusedSgdValidation, GroupIndicesAreChecked)
{
    Fixture f;
    int32_t group[] = {1};
    f.list.group_index = group;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "group index 1 is out of range");
    f.list.group_index = nullptr;
    optim_sgd_params two[2] = {f.params, f.params};
    EXPECT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &f.list, 2, two),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("group_index is NULL"), std::string::npos);
    EXPECT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &f.list, 0, two),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("n_groups must be >= 1"), std::string::npos);
}

TEST(FusedSgdValidation, TensorsOutOfGroupOrderAreRejected)
{
    std::vector<float> p = {1, 2}, g = {1, 1};
    void* ps[] = {p.data(), p.data() + 1};
    const void* gs[] = {g.data(), g.data() + 1};
    int64_t ns[] = {1, 1};
    int32_t group[] = {1, 0};
    optim_tensor_list list{2, ps, gs, nullptr, ns, nullptr, group};
    optim_sgd_params params[2];
    optim_sgd_params_default(&params[0]);
    optim_sgd_params_default(&params[1]);
    EXPECT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 2, params),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("param-group order"), std::string::npos);
    EXPECT_EQ(p, (std::vector<float>{1, 2}));
}

TEST(FusedSgdValidation, AnArrayTheStepWritesMayNotBeAnotherOfTheSameTensor)
{
    Fixture f;
    f.gs[0] = f.p.data(); // the parameter as its own gradient
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT,
                     "tensor 0: the parameter and the gradient are the same memory");
    f.gs[0] = f.g.data();
    f.bs[0] = f.p.data();
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT,
                     "tensor 0: the parameter and the momentum buffer are the same memory");
    f.bs[0] = f.g.data();
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT,
                     "tensor 0: the momentum buffer and the gradient are the same memory");
    // Without momentum the buffer is not used, so it is not compared.
    f.params.momentum = 0;
    EXPECT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &f.list, 1, &f.params),
              OPTIM_STATUS_OK)
        << optim_last_error();
}
