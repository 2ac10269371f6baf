// Concurrency: steps from several threads at once while another changes the thread count, results
// that do not depend on the calling thread, the last error per thread. Built as its own executable
// so that scripts/test.sh also runs it under ThreadSanitizer (artifacts/native-tsan).
#include <optim.h>
#include <optim_bench.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

// Enough elements for the worker pool (the library goes parallel from 2^17 elements per call).
constexpr int64_t kSizes[] = {150000, 7, 70000};
constexpr int kTensors = 3;

// One independent model: parameters, gradients, momentum buffers and the HD state.
struct Model {
    std::vector<std::vector<float>> p, g, b, u;
    double rate = 0.01;

    explicit Model(uint32_t seed)
    {
        uint32_t s = seed * 2654435761u + 1;
        auto next = [&] {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            return static_cast<float>(s % 2001) / 1000.0f - 1.0f;
        };
        for (int64_t n : kSizes) {
            std::vector<float> pv(static_cast<size_t>(n)), gv(static_cast<size_t>(n));
            for (auto& x : pv) x = next();
            for (auto& x : gv) x = next() * 0.1f;
            p.push_back(pv);
            g.push_back(gv);
            b.emplace_back(static_cast<size_t>(n), 0.0f);
            u.emplace_back(static_cast<size_t>(n), 0.0f);
        }
    }

    // A momentum SGD step, an HD step at the global scope and a read-only bandwidth pass: every
    // kind of parallel loop the library has.
    void step(int i)
    {
        void* ps[kTensors];
        const void* gs[kTensors];
        void* bs[kTensors];
        void* us[kTensors];
        int64_t ns[kTensors];
        int32_t groups[kTensors] = {0, 0, 0};
        uint8_t fresh[kTensors];
        for (int k = 0; k < kTensors; ++k) {
            ps[k] = p[k].data();
            gs[k] = g[k].data();
            bs[k] = b[k].data();
            us[k] = u[k].data();
            ns[k] = kSizes[k];
            fresh[k] = i == 0;
        }
        optim_tensor_list list{kTensors, ps, gs, bs, ns, fresh, nullptr};
        optim_sgd_params sgd;
        optim_sgd_params_default(&sgd);
        sgd.momentum = 0.9;
        ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &sgd),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        optim_hd_tensors hd{kTensors, ps, gs, nullptr, us, nullptr, ns, groups, nullptr};
        optim_hd_group group{};
        optim_hd_params hp{1e-4,   0.0, 1.0, 1e-8, OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_RULE_ADDITIVE,
                           i == 0, 0,   0};
        ASSERT_EQ(optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &hd, 1, &group, &hp,
                                &rate, nullptr),
                  OPTIM_STATUS_OK)
            << optim_last_error();
        const void* reads[kTensors] = {p[0].data(), p[1].data(), p[2].data()};
        optim_stream_tensors st{kTensors, 1, 0, reads, nullptr, ns};
        double sum = 0;
        ASSERT_EQ(optim_stream_reference(OPTIM_DTYPE_FLOAT32, &st, 1.0, &sum), OPTIM_STATUS_OK)
            << optim_bench_last_error();
        // The sum feeds back into the next gradients, so a wrong sum changes the parameters.
        g[1][0] = static_cast<float>(sum * 1e-9);
    }

    bool same_as(const Model& o) const
    {
        for (int k = 0; k < kTensors; ++k)
            if (std::memcmp(p[k].data(), o.p[k].data(), p[k].size() * sizeof(float)) != 0 ||
                std::memcmp(b[k].data(), o.b[k].data(), b[k].size() * sizeof(float)) != 0 ||
                std::memcmp(u[k].data(), o.u[k].data(), u[k].size() * sizeof(float)) != 0)
                return false;
        return std::memcmp(&rate, &o.rate, sizeof rate) == 0;
    }
};

constexpr int kSteps = 4;

class Concurrency : public ::testing::Test {
  protected:
    void TearDown() override { optim_set_num_threads(0); }
};

} // namespace

TEST_F(Concurrency, SetNumThreadsWhileSteppingFromSeveralThreads)
{
    // The reference: every model stepped on the calling thread alone.
    constexpr int kCallers = 4;
    ASSERT_EQ(optim_set_num_threads(1), OPTIM_STATUS_OK);
    std::vector<Model> expected;
    for (int c = 0; c < kCallers; ++c) {
        expected.emplace_back(static_cast<uint32_t>(c + 1));
        for (int i = 0; i < kSteps; ++i) expected.back().step(i);
    }

    std::vector<Model> models;
    for (int c = 0; c < kCallers; ++c) models.emplace_back(static_cast<uint32_t>(c + 1));
    std::atomic<int> running{kCallers};
    std::vector<std::thread> callers;
    for (int c = 0; c < kCallers; ++c)
        callers.emplace_back([&, c] {
            for (int i = 0; i < kSteps; ++i) models[static_cast<size_t>(c)].step(i);
            running.fetch_sub(1);
        });
    // Meanwhile: resize the pool, again and again, and read the count.
    int resizes = 0;
    while (running.load() > 0) {
        EXPECT_EQ(optim_set_num_threads(1 + resizes % 3), OPTIM_STATUS_OK);
        EXPECT_GE(optim_get_num_threads(), 1);
        ++resizes;
        std::this_thread::yield();
    }
    for (auto& t : callers) t.join();
    EXPECT_GT(resizes, 0);
    for (int c = 0; c < kCallers; ++c)
        EXPECT_TRUE(models[static_cast<size_t>(c)].same_as(expected[static_cast<size_t>(c)]))
            << "caller " << c << " differs from the one-thread reference";
}

TEST_F(Concurrency, ResultsDoNotDependOnTheCallingThreadOrTheThreadCount)
{
    ASSERT_EQ(optim_set_num_threads(1), OPTIM_STATUS_OK);
    Model reference(9);
    for (int i = 0; i < kSteps; ++i) reference.step(i);

    ASSERT_EQ(optim_set_num_threads(3), OPTIM_STATUS_OK);
    Model here(9), there(9);
    for (int i = 0; i < kSteps; ++i) here.step(i);
    std::thread t([&] {
        for (int i = 0; i < kSteps; ++i) there.step(i);
    });
    t.join();
    EXPECT_TRUE(here.same_as(reference));
    EXPECT_TRUE(there.same_as(reference));
}

TEST(LastError, IsPerThreadAndNeverNull)
{
    // Each thread fails a different call, in an order that interleaves them: thread A fails first,
    // B fails while A waits, and A then still sees its own message. A fresh thread sees "".
    std::atomic<int> phase{0};
    std::string seen_a, seen_fresh;
    std::thread a([&] {
        EXPECT_EQ(optim_cuda_device_count(nullptr), OPTIM_STATUS_INVALID_ARGUMENT);
        phase.store(1);
        while (phase.load() != 2) std::this_thread::yield();
        seen_a = optim_last_error();
    });
    std::thread b([&] {
        while (phase.load() != 1) std::this_thread::yield();
        EXPECT_EQ(optim_set_num_threads(-1), OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(std::string(optim_last_error()).find("optim_set_num_threads"), std::string::npos);
        phase.store(2);
    });
    a.join();
    b.join();
    std::thread fresh([&] {
        const char* e = optim_last_error();
        ASSERT_NE(e, nullptr);
        seen_fresh = e;
    });
    fresh.join();
    EXPECT_NE(seen_a.find("count is NULL"), std::string::npos) << seen_a;
    EXPECT_EQ(seen_a.find("optim_set_num_threads"), std::string::npos) << seen_a;
    EXPECT_EQ(seen_fresh, "");
}
