// The stochastic line search's passes on the CPU against naive references written apart from the
// library (p = origin - eta * g in the element type; the squared norm summed in double in plain
// order), at sizes spanning many chunks and several thread counts; every bad argument is named and
// leaves memory untouched.
#include "reference.hpp"

#include <optim.h>

#include <gtest/gtest.h>

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

// Sizes spanning many 64 Ki chunks, with an empty and tiny tensors between large ones.
const std::vector<size_t> kSizes = {300000, 0, 3, 65536 * 3 + 7, 1, 140000};

template <typename T>
struct SlsModel {
    std::vector<std::vector<T>> params, origins, grads;
    std::vector<void*> p, o;
    std::vector<const void*> g;
    std::vector<int64_t> numels;

    SlsModel(const std::vector<size_t>& sizes, uint64_t seed)
    {
        std::mt19937_64 rng(seed);
        for (size_t n : sizes) {
            params.push_back(random_vector<T>(n, rng));
            origins.push_back(random_vector<T>(n, rng)); // garbage until saved
            grads.push_back(random_vector<T>(n, rng, 0.5));
        }
    }

    optim_sls_tensors list()
    {
        p.clear();
        o.clear();
        g.clear();
        numels.clear();
        for (size_t k = 0; k < params.size(); ++k) {
            p.push_back(params[k].empty() ? nullptr : params[k].data());
            o.push_back(origins[k].empty() ? nullptr : origins[k].data());
            g.push_back(grads[k].empty() ? nullptr : grads[k].data());
            numels.push_back(static_cast<int64_t>(params[k].size()));
        }
        return optim_sls_tensors{static_cast<int64_t>(params.size()), p.data(), o.data(), g.data(),
                                 numels.data()};
    }
};

template <typename T>
double reference_norm_sq(const std::vector<std::vector<T>>& grads)
{
    double s = 0.0;
    for (const auto& g : grads)
        for (T x : g) s += static_cast<double>(x) * static_cast<double>(x);
    return s;
}

// A line search's memory traffic: save, several trials at shrinking step sizes, a restore, a last
// trial; each compared with the reference after every call.
template <typename T>
void passes_match_reference()
{
    for (int threads : {1, 2, 3, 8}) {
        ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
        SlsModel<T> m(kSizes, 17);
        const auto theta = m.params;
        optim_sls_tensors t = m.list();
        const int32_t dt = dtype_of<T>();
        ASSERT_EQ(optim_sls_save(OPTIM_DEVICE_CPU, 0, dt, &t), OPTIM_STATUS_OK);
        for (size_t k = 0; k < kSizes.size(); ++k) ASSERT_TRUE(same_bits(m.origins[k], theta[k]));
        double eta = 2.0;
        for (int trial = 0; trial < 6; ++trial, eta *= 0.9) {
            ASSERT_EQ(optim_sls_trial(OPTIM_DEVICE_CPU, 0, dt, &t, eta), OPTIM_STATUS_OK);
            const T step = static_cast<T>(eta);
            for (size_t k = 0; k < kSizes.size(); ++k) {
                std::vector<T> expected(theta[k].size());
                for (size_t i = 0; i < expected.size(); ++i)
                    expected[i] = theta[k][i] - step * m.grads[k][i];
                ASSERT_TRUE(same_bits(m.params[k], expected))
                    << "tensor " << k << ", trial " << trial << ", " << threads << " threads";
                ASSERT_TRUE(same_bits(m.origins[k], theta[k])); // never written by a trial
            }
        }
        ASSERT_EQ(optim_sls_restore(OPTIM_DEVICE_CPU, 0, dt, &t), OPTIM_STATUS_OK);
        for (size_t k = 0; k < kSizes.size(); ++k) ASSERT_TRUE(same_bits(m.params[k], theta[k]));
    }
    optim_set_num_threads(0);
}

} // namespace

TEST(SlsCpu, SaveTrialRestoreMatchReferenceFloat32)
{
    passes_match_reference<float>();
}

TEST(SlsCpu, SaveTrialRestoreMatchReferenceFloat64)
{
    passes_match_reference<double>();
}

TEST(SlsCpu, GradNormSquaredMatchesReferenceAndIsThreadCountIndependent)
{
    SlsModel<float> m(kSizes, 23);
    optim_sls_tensors t = m.list();
    t.params = nullptr; // the norm reads only the gradients
    t.origins = nullptr;
    const double expected = reference_norm_sq(m.grads);
    double first = 0.0;
    for (int threads : {1, 2, 3, 8}) {
        ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
        double sum = -1.0;
        ASSERT_EQ(optim_sls_grad_norm_sq(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &t, &sum),
                  OPTIM_STATUS_OK);
        EXPECT_NEAR(sum, expected, 1e-12 * expected);
        if (threads == 1) first = sum;
        EXPECT_EQ(sum, first) << threads << " threads"; // bitwise: same partial order
    }
    optim_set_num_threads(0);

    SlsModel<double> d(kSizes, 29);
    optim_sls_tensors td = d.list();
    double sum = -1.0;
    ASSERT_EQ(optim_sls_grad_norm_sq(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT64, &td, &sum),
              OPTIM_STATUS_OK);
    EXPECT_NEAR(sum, reference_norm_sq(d.grads), 1e-12 * sum);
}

TEST(SlsCpu, GradNormOfANonFiniteGradientIsNotFinite)
{
    SlsModel<float> m({1000, 70000}, 3);
    m.grads[1][12345] = std::numeric_limits<float>::quiet_NaN();
    optim_sls_tensors t = m.list();
    double sum = 0.0;
    ASSERT_EQ(optim_sls_grad_norm_sq(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &t, &sum),
              OPTIM_STATUS_OK);
    EXPECT_FALSE(std::isfinite(sum));
}

TEST(SlsCpu, NoTensorsIsANoOpAndAZeroNorm)
{
    optim_sls_tensors t{0, nullptr, nullptr, nullptr, nullptr};
    EXPECT_EQ(optim_sls_save(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &t), OPTIM_STATUS_OK);
    EXPECT_EQ(optim_sls_trial(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &t, 1.0), OPTIM_STATUS_OK);
    EXPECT_EQ(optim_sls_restore(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &t), OPTIM_STATUS_OK);
    double sum = -1.0;
    EXPECT_EQ(optim_sls_grad_norm_sq(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &t, &sum),
              OPTIM_STATUS_OK);
    EXPECT_EQ(sum, 0.0);
}

namespace {

// Runs `call` on a fresh small model, expects `status` and a message naming `fn` and `what`, and
// that no array changed.
template <class Call>
void expect_rejected(const char* fn, optim_status status, const std::string& what, Call&& call)
{
    SlsModel<float> m({5, 70000}, 41);
    const auto params = m.params, origins = m.origins, grads = m.grads;
    optim_sls_tensors t = m.list();
    EXPECT_EQ(call(m, t), status) << what;
    const std::string message = optim_last_error();
    EXPECT_NE(message.find(fn), std::string::npos) << message;
    EXPECT_NE(message.find(what), std::string::npos) << message;
    for (size_t k = 0; k < params.size(); ++k) {
        EXPECT_TRUE(same_bits(m.params[k], params[k])) << what;
        EXPECT_TRUE(same_bits(m.origins[k], origins[k])) << what;
        EXPECT_TRUE(same_bits(m.grads[k], grads[k])) << what;
    }
}

using Model = SlsModel<float>;
constexpr int32_t kCpu = OPTIM_DEVICE_CPU;
constexpr int32_t kF32 = OPTIM_DTYPE_FLOAT32;

} // namespace

TEST(SlsValidation, EveryBadArgumentIsNamedAndNothingIsWritten)
{
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    for (double bad : {nan, inf, -1.0})
        expect_rejected(
            "optim_sls_trial", OPTIM_STATUS_INVALID_ARGUMENT, "invalid step size",
            [&](Model&, optim_sls_tensors& t) { return optim_sls_trial(kCpu, 0, kF32, &t, bad); });
    expect_rejected(
        "optim_sls_save", OPTIM_STATUS_INVALID_ARGUMENT, "tensors is NULL",
        [](Model&, optim_sls_tensors&) { return optim_sls_save(kCpu, 0, kF32, nullptr); });
    expect_rejected("optim_sls_restore", OPTIM_STATUS_INVALID_ARGUMENT, "count is negative",
                    [](Model&, optim_sls_tensors& t) {
                        t.count = -1;
                        return optim_sls_restore(kCpu, 0, kF32, &t);
                    });
    expect_rejected("optim_sls_save", OPTIM_STATUS_INVALID_ARGUMENT, "numels is NULL",
                    [](Model&, optim_sls_tensors& t) {
                        t.numels = nullptr;
                        return optim_sls_save(kCpu, 0, kF32, &t);
                    });
    expect_rejected("optim_sls_save", OPTIM_STATUS_INVALID_ARGUMENT, "origins must not be NULL",
                    [](Model&, optim_sls_tensors& t) {
                        t.origins = nullptr;
                        return optim_sls_save(kCpu, 0, kF32, &t);
                    });
    expect_rejected("optim_sls_trial", OPTIM_STATUS_INVALID_ARGUMENT, "grads is NULL",
                    [](Model&, optim_sls_tensors& t) {
                        t.grads = nullptr;
                        return optim_sls_trial(kCpu, 0, kF32, &t, 0.5);
                    });
    expect_rejected("optim_sls_trial", OPTIM_STATUS_INVALID_ARGUMENT,
                    "tensor 1: parameter pointer is NULL", [](Model& m, optim_sls_tensors& t) {
                        m.p[1] = nullptr;
                        return optim_sls_trial(kCpu, 0, kF32, &t, 0.5);
                    });
    expect_rejected("optim_sls_restore", OPTIM_STATUS_INVALID_ARGUMENT,
                    "tensor 1: origin pointer is NULL", [](Model& m, optim_sls_tensors& t) {
                        m.o[1] = nullptr;
                        return optim_sls_restore(kCpu, 0, kF32, &t);
                    });
    expect_rejected("optim_sls_grad_norm_sq", OPTIM_STATUS_INVALID_ARGUMENT,
                    "tensor 1: gradient pointer is NULL", [](Model& m, optim_sls_tensors& t) {
                        m.g[1] = nullptr;
                        double r = 0;
                        return optim_sls_grad_norm_sq(kCpu, 0, kF32, &t, &r);
                    });
    expect_rejected("optim_sls_trial", OPTIM_STATUS_INVALID_ARGUMENT, "numel is negative",
                    [](Model& m, optim_sls_tensors& t) {
                        m.numels[0] = -3;
                        return optim_sls_trial(kCpu, 0, kF32, &t, 0.5);
                    });
    expect_rejected("optim_sls_trial", OPTIM_STATUS_INVALID_ARGUMENT,
                    "the parameter and the origin are the same memory",
                    [](Model& m, optim_sls_tensors& t) {
                        m.o[1] = m.p[1];
                        return optim_sls_trial(kCpu, 0, kF32, &t, 0.5);
                    });
    expect_rejected("optim_sls_trial", OPTIM_STATUS_INVALID_ARGUMENT,
                    "the parameter and the gradient are the same memory",
                    [](Model& m, optim_sls_tensors& t) {
                        m.g[0] = m.p[0];
                        return optim_sls_trial(kCpu, 0, kF32, &t, 0.5);
                    });
    expect_rejected("optim_sls_grad_norm_sq", OPTIM_STATUS_INVALID_ARGUMENT, "result is NULL",
                    [](Model&, optim_sls_tensors& t) {
                        return optim_sls_grad_norm_sq(kCpu, 0, kF32, &t, nullptr);
                    });
    expect_rejected("optim_sls_save", OPTIM_STATUS_UNSUPPORTED, "unsupported dtype",
                    [](Model&, optim_sls_tensors& t) { return optim_sls_save(kCpu, 0, 7, &t); });
    expect_rejected("optim_sls_restore", OPTIM_STATUS_INVALID_ARGUMENT, "unknown device",
                    [](Model&, optim_sls_tensors& t) { return optim_sls_restore(9, 0, kF32, &t); });
}

TEST(SlsValidation, CudaRequestWithoutADeviceIsAClearError)
{
    int32_t devices = 0;
    ASSERT_EQ(optim_cuda_device_count(&devices), OPTIM_STATUS_OK);
    if (devices > 0) GTEST_SKIP() << "a CUDA device is present";
    expect_rejected("optim_sls_trial", OPTIM_STATUS_CUDA_UNAVAILABLE, "no CUDA",
                    [](Model&, optim_sls_tensors& t) {
                        return optim_sls_trial(OPTIM_DEVICE_CUDA, 0, kF32, &t, 0.5);
                    });
    expect_rejected("optim_sls_grad_norm_sq", OPTIM_STATUS_CUDA_UNAVAILABLE, "no CUDA",
                    [](Model&, optim_sls_tensors& t) {
                        double r = 0;
                        return optim_sls_grad_norm_sq(OPTIM_DEVICE_CUDA, 0, kF32, &t, &r);
                    });
}
