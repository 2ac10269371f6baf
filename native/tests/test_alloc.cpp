// What the C ABI does when host memory runs out: this executable replaces operator new so that a
// test can make every allocation of the calling thread fail. Information functions need no memory,
// a failing call still records its own message, and a step that cannot start worker threads runs
// on fewer threads instead of failing.
#include <optim.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

namespace {
thread_local bool t_fail_allocations = false;

// Every operator new of the calling thread throws std::bad_alloc while one of these lives. Nothing
// inside may use gtest's assertions (they allocate): record, then check after.
struct NoMemory {
    NoMemory() { t_fail_allocations = true; }
    ~NoMemory() { t_fail_allocations = false; }
};
} // namespace

// Every replacement out of line: inlined, GCC sees malloc() meet operator delete (or free() meet
// operator new) and warns (-Wmismatched-new-delete), not knowing that these two are a pair.
[[gnu::noinline]] void* operator new(std::size_t n)
{
    if (t_fail_allocations) throw std::bad_alloc();
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new[](std::size_t n)
{
    return operator new(n);
}
[[gnu::noinline]] void operator delete(void* p) noexcept
{
    std::free(p);
}
[[gnu::noinline]] void operator delete[](void* p) noexcept
{
    std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept
{
    std::free(p);
}
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept
{
    std::free(p);
}

TEST(NoMemory, BuildInfoNeedsNone)
{
    const char* info = nullptr;
    bool threw = false;
    {
        NoMemory scope;
        try {
            info = optim_build_info(); // the first call in this process
        } catch (...) {
            threw = true; // an exception crossed the C ABI
        }
    }
    ASSERT_FALSE(threw);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(std::string(info).rfind("optim ", 0), 0u) << info;
}

TEST(NoMemory, ThreadingInfoAndThreadCountNeedNone)
{
    ASSERT_GE(optim_get_num_threads(), 1); // the pool exists; its texts are not built yet
    std::string info;
    int32_t threads = 0;
    {
        NoMemory scope;
        const char* text = optim_threading_info(); // terminated the process before the fix
        threads = optim_get_num_threads();
        t_fail_allocations = false;
        info = text;
    }
    EXPECT_EQ(info, "optim worker pool");
    EXPECT_GE(threads, 1);
}

TEST(NoMemory, AFailingCallRecordsItsOwnMessage)
{
    // An earlier failure's message must not survive a later failure.
    ASSERT_EQ(optim_set_num_threads(-1), OPTIM_STATUS_INVALID_ARGUMENT);
    float p = 1, g = 1;
    void* ps[] = {&p};
    const void* gs[] = {&g};
    int64_t ns[] = {1};
    optim_tensor_list list{1, ps, gs, nullptr, ns, nullptr, nullptr};
    optim_sgd_params params;
    optim_sgd_params_default(&params);
    params.lr = -1; // invalid: building its message needs memory
    optim_status status;
    {
        NoMemory scope;
        status = optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &params);
    }
    EXPECT_EQ(status, OPTIM_STATUS_OUT_OF_MEMORY);
    EXPECT_STREQ(optim_last_error(), "optim_sgd_step: out of host memory");
    EXPECT_EQ(p, 1.0f);
}

TEST(NoMemory, AStepThatCannotStartWorkersRunsOnFewerThreads)
{
    // Warm up on one thread, so that the step's own buffers are allocated already; then ask for
    // three threads, whose workers start (and here fail to start) inside the next step.
    const int64_t n = 300000;
    std::vector<float> p(n, 1.0f), g(n, 0.5f), expected(n, 1.0f - 0.1f * 0.5f);
    void* ps[] = {p.data()};
    const void* gs[] = {g.data()};
    int64_t ns[] = {n};
    optim_tensor_list list{1, ps, gs, nullptr, ns, nullptr, nullptr};
    optim_sgd_params params;
    optim_sgd_params_default(&params);
    params.lr = 0.0;
    ASSERT_EQ(optim_set_num_threads(1), OPTIM_STATUS_OK);
    ASSERT_EQ(optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &params),
              OPTIM_STATUS_OK);
    ASSERT_EQ(optim_set_num_threads(3), OPTIM_STATUS_OK);
    params.lr = 0.1;
    optim_status status;
    {
        NoMemory scope;
        status = optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &params);
    }
    optim_set_num_threads(0);
    EXPECT_EQ(status, OPTIM_STATUS_OK) << optim_last_error();
    EXPECT_EQ(p, expected);
}
