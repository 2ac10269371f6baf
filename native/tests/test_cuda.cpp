// The CUDA kernels against the CPU path (which the reference tests cover), over many steps, every
// flag combination, many tensors per launch and a device-resident rate. Skips when no device is
// present.
#include "reference.hpp"

#include <optim.h>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

using namespace optim_test;

namespace {

bool have_device()
{
    int32_t n = 0;
    return optim_cuda_device_count(&n) == OPTIM_STATUS_OK && n > 0;
}

#define CUDA_OK(x) ASSERT_EQ((x), cudaSuccess) << #x << ": " << cudaGetErrorString(x)

template <typename T>
void compare_with_cpu(double momentum, double dampening, double wd, bool nesterov, bool maximize)
{
    // 40 tensors (more than one launch's table) of mixed sizes, one spanning many blocks.
    std::vector<size_t> sizes;
    for (int k = 0; k < 40; ++k) sizes.push_back(static_cast<size_t>(1 + k * 997));
    sizes.push_back(3 * 1000 * 1000 + 17);
    std::mt19937_64 rng(11);
    const size_t K = sizes.size();
    std::vector<std::vector<T>> hp(K), hg(K), hb(K, std::vector<T>());
    std::vector<T*> dp(K), dg(K), db(K);
    for (size_t k = 0; k < K; ++k) {
        hp[k] = random_vector<T>(sizes[k], rng);
        hb[k].assign(sizes[k], T(0));
        CUDA_OK(cudaMalloc(&dp[k], sizes[k] * sizeof(T)));
        CUDA_OK(cudaMalloc(&dg[k], sizes[k] * sizeof(T)));
        CUDA_OK(cudaMalloc(&db[k], sizes[k] * sizeof(T)));
        CUDA_OK(cudaMemcpy(dp[k], hp[k].data(), sizes[k] * sizeof(T), cudaMemcpyHostToDevice));
    }
    double* d_lr = nullptr;
    CUDA_OK(cudaMalloc(&d_lr, sizeof(double)));
    const double lr = 0.03;
    CUDA_OK(cudaMemcpy(d_lr, &lr, sizeof(double), cudaMemcpyHostToDevice));

    optim_sgd_params params;
    optim_sgd_params_default(&params);
    params.lr = lr;
    params.momentum = momentum;
    params.dampening = dampening;
    params.weight_decay = wd;
    params.nesterov = nesterov;
    params.maximize = maximize;
    const int32_t dtype = sizeof(T) == 4 ? OPTIM_DTYPE_FLOAT32 : OPTIM_DTYPE_FLOAT64;
    std::vector<int64_t> numels(sizes.begin(), sizes.end());
    for (int step = 0; step < 20; ++step) {
        std::vector<uint8_t> fresh(K, step == 0 ? 1 : 0);
        std::vector<void*> cp(K), cb(K), gp(K), gb(K);
        std::vector<const void*> cg(K), gg(K);
        for (size_t k = 0; k < K; ++k) {
            hg[k] = random_vector<T>(sizes[k], rng, 0.5);
            CUDA_OK(cudaMemcpy(dg[k], hg[k].data(), sizes[k] * sizeof(T), cudaMemcpyHostToDevice));
            cp[k] = hp[k].data();
            cg[k] = hg[k].data();
            cb[k] = hb[k].data();
            gp[k] = dp[k];
            gg[k] = dg[k];
            gb[k] = db[k];
        }
        optim_tensor_list host{static_cast<int64_t>(K), cp.data(),    cg.data(), cb.data(),
                               numels.data(),           fresh.data(), nullptr};
        optim_tensor_list dev{static_cast<int64_t>(K), gp.data(),    gg.data(), gb.data(),
                              numels.data(),           fresh.data(), nullptr};
        params.lr_ptr = nullptr;
        ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, dtype, &host, 1, &params), OPTIM_STATUS_OK)
            << optim_last_error();
        params.lr_ptr =
            (step % 2) ? d_lr : nullptr; // alternate host-value and device-resident rate
        ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CUDA, 0, dtype, &dev, 1, &params), OPTIM_STATUS_OK)
            << optim_last_error();
        CUDA_OK(cudaDeviceSynchronize());
    }
    const double rtol = sizeof(T) == 4 ? 1e-5 : 1e-12, atol = sizeof(T) == 4 ? 1e-6 : 1e-14;
    for (size_t k = 0; k < K; ++k) {
        std::vector<T> gpu_p(sizes[k]), gpu_b(sizes[k]);
        CUDA_OK(cudaMemcpy(gpu_p.data(), dp[k], sizes[k] * sizeof(T), cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(gpu_b.data(), db[k], sizes[k] * sizeof(T), cudaMemcpyDeviceToHost));
        int bad = 0;
        for (size_t i = 0; i < sizes[k] && bad < 5; ++i) {
            if (!(std::fabs(gpu_p[i] - hp[k][i]) <= atol + rtol * std::fabs(hp[k][i]))) {
                ADD_FAILURE() << "param tensor " << k << " element " << i << ": gpu " << gpu_p[i]
                              << " cpu " << hp[k][i];
                ++bad;
            }
            if (momentum != 0 &&
                !(std::fabs(gpu_b[i] - hb[k][i]) <= atol + rtol * std::fabs(hb[k][i]))) {
                ADD_FAILURE() << "buffer tensor " << k << " element " << i << ": gpu " << gpu_b[i]
                              << " cpu " << hb[k][i];
                ++bad;
            }
        }
        cudaFree(dp[k]);
        cudaFree(dg[k]);
        cudaFree(db[k]);
    }
    cudaFree(d_lr);
}

} // namespace

TEST(FusedSgdCuda, MatchesCpuFloat32)
{
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    compare_with_cpu<float>(0, 0, 0, false, false);
    compare_with_cpu<float>(0.9, 0, 0, false, false);
    compare_with_cpu<float>(0.9, 0, 1e-2, true, false);
    compare_with_cpu<float>(0.9, 0.3, 1e-2, false, true);
    compare_with_cpu<float>(0, 0, 1e-2, false, true);
}

TEST(FusedSgdCuda, MatchesCpuFloat64)
{
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    compare_with_cpu<double>(0.9, 0.1, 1e-3, false, false);
    compare_with_cpu<double>(0.9, 0, 1e-3, true, true);
}

TEST(FusedSgdCuda, BadDeviceIndexIsRejected)
{
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    float dummy = 0;
    void* ps[] = {&dummy};
    const void* gs[] = {&dummy};
    int64_t ns[] = {1};
    optim_tensor_list list{1, ps, gs, nullptr, ns, nullptr, nullptr};
    optim_sgd_params params;
    optim_sgd_params_default(&params);
    EXPECT_EQ(optim_sgd_step(OPTIM_DEVICE_CUDA, 999, OPTIM_DTYPE_FLOAT32, &list, 1, &params),
              OPTIM_STATUS_INVALID_ARGUMENT);
}

TEST(GreedyLrCuda, DeviceStepsMatchTheCpuPath)
{
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    optim_greedylr_config c{};
    c.factor = 0.7;
    c.threshold = 1e-4;
    c.eps = 1e-12;
    c.mode = OPTIM_GREEDY_MODE_MIN;
    c.threshold_mode = OPTIM_GREEDY_THRESHOLD_REL;
    c.patience = 2;
    c.cooldown = 1;
    c.warmup = 1;
    c.window_size = 4;
    c.reset_start = 3;
    c.smooth = 1;
    c.trend = 1;
    c.groups = 2;
    optim_greedylr_state host{};
    ASSERT_EQ(optim_greedylr_init(&c, &host), OPTIM_STATUS_OK);
    std::vector<double> rates = {0.1, 0.02}, initial = rates, lo = {1e-3, 1e-4}, hi = {1.0, 0.5},
                        window(4, 0.0);
    optim_greedylr_state* d_state = nullptr;
    double *d_rates, *d_initial, *d_lo, *d_hi, *d_window;
    float* d_metric;
    CUDA_OK(cudaMalloc(&d_state, sizeof(host)));
    CUDA_OK(cudaMemcpy(d_state, &host, sizeof(host), cudaMemcpyHostToDevice));
    for (auto [dst, src] :
         {std::pair{&d_rates, &rates}, std::pair{&d_initial, &initial}, std::pair{&d_lo, &lo},
          std::pair{&d_hi, &hi}, std::pair{&d_window, &window}}) {
        CUDA_OK(cudaMalloc(dst, src->size() * sizeof(double)));
        CUDA_OK(
            cudaMemcpy(*dst, src->data(), src->size() * sizeof(double), cudaMemcpyHostToDevice));
    }
    CUDA_OK(cudaMalloc(&d_metric, sizeof(float)));
    optim_greedylr_buffers hb{rates.data(), initial.data(), lo.data(), hi.data(), window.data()};
    optim_greedylr_buffers db{d_rates, d_initial, d_lo, d_hi, d_window};
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<float> u(0.5f, 1.5f);
    for (int i = 0; i < 200; ++i) {
        const float m = u(rng) / static_cast<float>(1 + i % 17);
        CUDA_OK(cudaMemcpy(d_metric, &m, sizeof(float), cudaMemcpyHostToDevice));
        ASSERT_EQ(optim_greedylr_step(OPTIM_DEVICE_CPU, 0, &c, &host, &hb, &m, OPTIM_DTYPE_FLOAT32),
                  OPTIM_STATUS_OK);
        ASSERT_EQ(optim_greedylr_step(OPTIM_DEVICE_CUDA, 0, &c, d_state, &db, d_metric,
                                      OPTIM_DTYPE_FLOAT32),
                  OPTIM_STATUS_OK)
            << optim_last_error();
    }
    optim_greedylr_state dev{};
    std::vector<double> dev_rates(2);
    CUDA_OK(cudaMemcpy(&dev, d_state, sizeof(dev), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(dev_rates.data(), d_rates, 2 * sizeof(double), cudaMemcpyDeviceToHost));
    EXPECT_EQ(dev_rates, rates);
    EXPECT_EQ(dev.best, host.best);
    EXPECT_EQ(dev.steps, host.steps);
    EXPECT_EQ(dev.resets, host.resets);
    EXPECT_EQ(dev.num_bad, host.num_bad);
    for (void* p :
         {static_cast<void*>(d_state), static_cast<void*>(d_rates), static_cast<void*>(d_initial),
          static_cast<void*>(d_lo), static_cast<void*>(d_hi), static_cast<void*>(d_window),
          static_cast<void*>(d_metric)})
        cudaFree(p);
}

TEST(GreedyLrCuda, ACorruptStateIsLeftAsItIs)
{
    // The host cannot read a device-resident state: the kernel checks it (greedy_check) and, with
    // the window position outside the window, writes nothing at all.
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    optim_greedylr_config c{};
    c.factor = 0.5;
    c.mode = OPTIM_GREEDY_MODE_MIN;
    c.threshold_mode = OPTIM_GREEDY_THRESHOLD_ABS;
    c.window_size = 2;
    c.smooth = 1;
    c.groups = 1;
    optim_greedylr_state host{};
    ASSERT_EQ(optim_greedylr_init(&c, &host), OPTIM_STATUS_OK);
    host.window_next = 1000; // far outside the two-value window
    const double rate = 0.1, lo = 0.01, hi = 1.0, metric = 0.5;
    const double window[2] = {7.0, 8.0};
    optim_greedylr_state* d_state = nullptr;
    double *d_rates, *d_initial, *d_lo, *d_hi, *d_window, *d_metric;
    CUDA_OK(cudaMalloc(&d_state, sizeof(host)));
    CUDA_OK(cudaMemcpy(d_state, &host, sizeof(host), cudaMemcpyHostToDevice));
    for (auto [dst, src, n] :
         {std::tuple{&d_rates, &rate, 1}, std::tuple{&d_initial, &rate, 1},
          std::tuple{&d_lo, &lo, 1}, std::tuple{&d_hi, &hi, 1}, std::tuple{&d_window, window, 2},
          std::tuple{&d_metric, &metric, 1}}) {
        CUDA_OK(cudaMalloc(dst, n * sizeof(double)));
        CUDA_OK(cudaMemcpy(*dst, src, n * sizeof(double), cudaMemcpyHostToDevice));
    }
    optim_greedylr_buffers db{d_rates, d_initial, d_lo, d_hi, d_window};
    ASSERT_EQ(
        optim_greedylr_step(OPTIM_DEVICE_CUDA, 0, &c, d_state, &db, d_metric, OPTIM_DTYPE_FLOAT64),
        OPTIM_STATUS_OK)
        << optim_last_error();
    CUDA_OK(cudaDeviceSynchronize());
    optim_greedylr_state after{};
    double rate_after = 0, window_after[2] = {};
    CUDA_OK(cudaMemcpy(&after, d_state, sizeof(after), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(&rate_after, d_rates, sizeof(double), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(window_after, d_window, sizeof window_after, cudaMemcpyDeviceToHost));
    EXPECT_EQ(std::memcmp(&after, &host, sizeof host), 0) << "the state was written";
    EXPECT_EQ(after.steps, 0);
    EXPECT_EQ(rate_after, rate);
    EXPECT_EQ(window_after[0], window[0]);
    EXPECT_EQ(window_after[1], window[1]);
    for (void* p :
         {static_cast<void*>(d_state), static_cast<void*>(d_rates), static_cast<void*>(d_initial),
          static_cast<void*>(d_lo), static_cast<void*>(d_hi), static_cast<void*>(d_window),
          static_cast<void*>(d_metric)})
        cudaFree(p);
}

// ---- Hypergradient descent ------------------------------------------------------------------

namespace {

template <typename T>
T* hd_upload(const std::vector<T>& v)
{
    T* d = nullptr;
    if (v.empty()) return d;
    EXPECT_EQ(cudaMalloc(&d, v.size() * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

template <typename T>
std::vector<T> hd_download(const T* d, size_t n)
{
    std::vector<T> v(n);
    if (n > 0) {
        EXPECT_EQ(cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return v;
}

// The four per-element arrays of every tensor: [array][tensor][element].
constexpr int kHdArrays = 4;
const char* const kHdArrayNames[kHdArrays] = {"param", "momentum buffer", "prev update",
                                              "param rate"};
template <typename T>
using HdState = std::vector<std::vector<std::vector<T>>>;

template <typename T>
HdState<T> hd_download_state(const std::vector<std::vector<T*>>& dev,
                             const std::vector<size_t>& sizes)
{
    HdState<T> state(kHdArrays);
    for (int a = 0; a < kHdArrays; ++a)
        for (size_t k = 0; k < sizes.size(); ++k)
            state[a].push_back(hd_download(dev[a][k], sizes[k]));
    return state;
}

template <typename T>
void hd_expect_close(const std::vector<T>& cpu, const std::vector<T>& gpu, const char* what,
                     size_t k, double rtol, double atol)
{
    ASSERT_EQ(cpu.size(), gpu.size());
    int bad = 0;
    for (size_t i = 0; i < cpu.size() && bad < 5; ++i) {
        const double c = cpu[i], g = gpu[i];
        if (!(std::fabs(g - c) <= atol + rtol * std::fabs(c))) {
            ADD_FAILURE() << what << " " << k << " element " << i << ": gpu " << g << " cpu " << c;
            ++bad;
        }
    }
}

// The CPU path and the CUDA path side by side: two param groups (heavy-ball momentum with weight
// decay, and plain SGD), 40 tensors of mixed sizes (one spanning many blocks, one empty, more than
// one launch's table), 10 steps from the first; then a step with a NaN gradient, which both paths
// must skip without writing anything.
template <typename T>
void hd_compare_with_cpu(int32_t scope, int32_t rule, int32_t assume_finite)
{
    SCOPED_TRACE(testing::Message()
                 << (sizeof(T) == 4 ? "float32" : "float64") << " scope " << scope << " rule "
                 << rule << " assume_finite " << assume_finite);
    const size_t K = 40;
    std::vector<size_t> sizes(K);
    for (size_t k = 0; k < K; ++k) sizes[k] = 1 + (k * 7919) % 70000;
    sizes[13] = 1200000 + 7;
    sizes[27] = 0;
    const std::vector<int64_t> numels(sizes.begin(), sizes.end());
    std::vector<int32_t> group(K);
    for (size_t k = 0; k < K; ++k) group[k] = k < K / 2 ? 0 : 1;
    const optim_hd_group groups[2] = {
        {0.9, 0.1, 1e-2, 0, 0}, // heavy ball: u_prev is the momentum buffer
        {0.0, 0.0, 0.0, 0, 0},  // plain SGD: u_prev is prev_updates
    };
    const bool per_parameter = scope == OPTIM_HD_SCOPE_PER_PARAMETER;
    optim_hd_params hp{};
    // Rates that move without all reaching a bound (h grows with the elements a rate covers).
    hp.hypergrad_lr = rule == OPTIM_HD_RULE_NORMALIZED     ? 0.05
                      : per_parameter                      ? 1e-2
                      : scope == OPTIM_HD_SCOPE_PER_TENSOR ? 1e-7
                      : scope == OPTIM_HD_SCOPE_PER_GROUP  ? 1e-8
                                                           : 1e-9;
    hp.lr_min = 1e-4;
    hp.lr_max = 0.1;
    hp.eps = 1e-8;
    hp.scope = scope;
    hp.rule = rule;
    hp.assume_finite = assume_finite;
    const size_t slots = per_parameter                       ? 0
                         : scope == OPTIM_HD_SCOPE_GLOBAL    ? 1
                         : scope == OPTIM_HD_SCOPE_PER_GROUP ? 2
                                                             : K;
    std::vector<double> rates(slots);
    for (size_t s = 0; s < slots; ++s) rates[s] = 0.01 + 0.001 * static_cast<double>(s);

    std::mt19937_64 rng(29);
    HdState<T> host(kHdArrays, std::vector<std::vector<T>>(K));
    for (size_t k = 0; k < K; ++k) {
        host[0][k] = random_vector<T>(sizes[k], rng);
        host[1][k].assign(sizes[k], T(0));
        host[2][k].assign(sizes[k], T(0));
        host[3][k].assign(sizes[k], T(0.01));
    }
    std::vector<std::vector<T*>> dev(kHdArrays);
    std::vector<std::vector<void*>> host_ptrs(kHdArrays), dev_ptrs(kHdArrays);
    for (int a = 0; a < kHdArrays; ++a) {
        for (size_t k = 0; k < K; ++k) {
            dev[a].push_back(hd_upload(host[a][k]));
            host_ptrs[a].push_back(host[a][k].data());
            dev_ptrs[a].push_back(dev[a][k]);
        }
    }
    std::vector<std::vector<T>> grads(K);
    std::vector<T*> dgrads(K);
    std::vector<const void*> host_grads(K), dev_grads(K);
    for (size_t k = 0; k < K; ++k) {
        grads[k].assign(sizes[k], T(0));
        dgrads[k] = hd_upload(grads[k]);
        host_grads[k] = grads[k].data();
        dev_grads[k] = dgrads[k];
    }
    double* d_rates = per_parameter ? nullptr : hd_upload(rates);
    int64_t* d_skipped = nullptr;
    CUDA_OK(cudaMalloc(&d_skipped, sizeof(int64_t)));
    CUDA_OK(cudaMemset(d_skipped, 0, sizeof(int64_t)));

    std::vector<uint8_t> fresh(K, 1);
    const optim_hd_tensors host_t{static_cast<int64_t>(K), host_ptrs[0].data(), host_grads.data(),
                                  host_ptrs[1].data(),     host_ptrs[2].data(), host_ptrs[3].data(),
                                  numels.data(),           group.data(),        fresh.data()};
    const optim_hd_tensors dev_t{static_cast<int64_t>(K), dev_ptrs[0].data(), dev_grads.data(),
                                 dev_ptrs[1].data(),      dev_ptrs[2].data(), dev_ptrs[3].data(),
                                 numels.data(),           group.data(),       fresh.data()};
    const int32_t dtype = sizeof(T) == 4 ? OPTIM_DTYPE_FLOAT32 : OPTIM_DTYPE_FLOAT64;
    std::uniform_real_distribution<double> noise(-0.1, 0.1);
    // Gradients of a quadratic plus noise, from the CPU side's parameters, given to both paths.
    auto make_grads = [&] {
        for (size_t k = 0; k < K; ++k)
            for (size_t i = 0; i < sizes[k]; ++i)
                grads[k][i] = static_cast<T>(0.5 * static_cast<double>(host[0][k][i]) + noise(rng));
    };
    auto upload_grads = [&] {
        for (size_t k = 0; k < K; ++k) {
            if (sizes[k] == 0) continue;
            CUDA_OK(cudaMemcpy(dgrads[k], grads[k].data(), sizes[k] * sizeof(T),
                               cudaMemcpyHostToDevice));
        }
    };
    double* host_rates = per_parameter ? nullptr : rates.data();

    for (int step = 0; step < 10; ++step) {
        make_grads();
        upload_grads();
        if (testing::Test::HasFatalFailure()) return;
        for (size_t k = 0; k < K; ++k) fresh[k] = step == 0 ? 1 : 0;
        hp.first_step = step == 0 ? 1 : 0;
        int64_t skipped = -1;
        ASSERT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, dtype, &host_t, 2, groups, &hp, host_rates,
                                &skipped),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        EXPECT_EQ(skipped, 0);
        ASSERT_EQ(
            optim_hd_step(OPTIM_DEVICE_CUDA, 0, dtype, &dev_t, 2, groups, &hp, d_rates, d_skipped),
            OPTIM_STATUS_OK)
            << optim_last_error();
    }
    CUDA_OK(cudaDeviceSynchronize());

    const double rtol = sizeof(T) == 4 ? 1e-4 : 1e-9, atol = sizeof(T) == 4 ? 1e-5 : 1e-11;
    HdState<T> gpu = hd_download_state(dev, sizes);
    for (int a = 0; a < kHdArrays; ++a)
        for (size_t k = 0; k < K; ++k)
            hd_expect_close(host[a][k], gpu[a][k], kHdArrayNames[a], k, rtol, atol);
    std::vector<double> gpu_rates = hd_download(d_rates, slots);
    hd_expect_close(rates, gpu_rates, "rate", 0, rtol, atol);
    int64_t gpu_skipped = -1;
    CUDA_OK(cudaMemcpy(&gpu_skipped, d_skipped, sizeof(int64_t), cudaMemcpyDeviceToHost));
    EXPECT_EQ(gpu_skipped, 0);

    // A NaN gradient (only when the step checks: with assume_finite the NaN reaches the
    // parameters): both paths skip the whole step and write nothing but the skip report.
    if (!assume_finite) {
        const HdState<T> host_before = host;
        const std::vector<double> rates_before = rates;
        make_grads();
        grads[5][3] = static_cast<T>(std::nan(""));
        upload_grads();
        if (testing::Test::HasFatalFailure()) return;
        for (size_t k = 0; k < K; ++k) fresh[k] = 0;
        hp.first_step = 0;
        int64_t skipped = -1;
        ASSERT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, dtype, &host_t, 2, groups, &hp, host_rates,
                                &skipped),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        EXPECT_EQ(skipped, 1);
        EXPECT_TRUE(host == host_before);
        EXPECT_EQ(rates, rates_before);
        ASSERT_EQ(
            optim_hd_step(OPTIM_DEVICE_CUDA, 0, dtype, &dev_t, 2, groups, &hp, d_rates, d_skipped),
            OPTIM_STATUS_OK)
            << optim_last_error();
        CUDA_OK(cudaDeviceSynchronize());
        EXPECT_TRUE(hd_download_state(dev, sizes) == gpu);
        EXPECT_EQ(hd_download(d_rates, slots), gpu_rates);
        CUDA_OK(cudaMemcpy(&gpu_skipped, d_skipped, sizeof(int64_t), cudaMemcpyDeviceToHost));
        EXPECT_EQ(gpu_skipped, 1);
    }

    for (int a = 0; a < kHdArrays; ++a)
        for (T* d : dev[a]) cudaFree(d);
    for (T* d : dgrads) cudaFree(d);
    cudaFree(d_rates);
    cudaFree(d_skipped);
}

} // namespace

TEST(HdCuda, MatchesCpuForEveryScope)
{
    if (!have_device()) GTEST_SKIP() << "no CUDA device";
    for (int32_t scope = OPTIM_HD_SCOPE_GLOBAL; scope <= OPTIM_HD_SCOPE_PER_PARAMETER; ++scope) {
        for (int32_t rule = OPTIM_HD_RULE_ADDITIVE; rule <= OPTIM_HD_RULE_NORMALIZED; ++rule) {
            for (int32_t assume_finite : {0, 1}) {
                hd_compare_with_cpu<float>(scope, rule, assume_finite);
                if (testing::Test::HasFatalFailure()) return;
                hd_compare_with_cpu<double>(scope, rule, assume_finite);
                if (testing::Test::HasFatalFailure()) return;
            }
        }
    }
}
