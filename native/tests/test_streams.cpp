// The calling thread's CUDA stream (optim_cuda_set_stream / _get_stream) and LibTorch's current
// stream (optim_torch_cuda_stream), checked without a GPU: the setting is storage per thread and
// device, and the LibTorch look-up runs against a stand-in libc10_cuda (fake_c10_cuda.cpp). That
// steps launch on the set stream, and can be captured in a CUDA graph, is the GPU check's part.
#include <optim.h>

#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstdint>
#include <string>
#include <thread>

namespace {

void* fake_stream(uintptr_t value)
{
    return reinterpret_cast<void*>(value);
}

} // namespace

TEST(Streams, EachThreadStartsOnTheLegacyDefaultStream)
{
    void* s = fake_stream(1);
    ASSERT_EQ(optim_cuda_get_stream(0, &s), OPTIM_STATUS_OK);
    EXPECT_EQ(s, nullptr);
}

TEST(Streams, TheStreamIsPerThreadAndPerDevice)
{
    ASSERT_EQ(optim_cuda_set_stream(0, fake_stream(0x10)), OPTIM_STATUS_OK);
    ASSERT_EQ(optim_cuda_set_stream(OPTIM_MAX_CUDA_DEVICES - 1, fake_stream(0x20)),
              OPTIM_STATUS_OK);
    void* s = nullptr;
    ASSERT_EQ(optim_cuda_get_stream(0, &s), OPTIM_STATUS_OK);
    EXPECT_EQ(s, fake_stream(0x10));
    ASSERT_EQ(optim_cuda_get_stream(1, &s), OPTIM_STATUS_OK);
    EXPECT_EQ(s, nullptr);
    ASSERT_EQ(optim_cuda_get_stream(OPTIM_MAX_CUDA_DEVICES - 1, &s), OPTIM_STATUS_OK);
    EXPECT_EQ(s, fake_stream(0x20));

    void* other = fake_stream(1);
    std::thread([&] {
        optim_cuda_get_stream(0, &other);
        optim_cuda_set_stream(0, fake_stream(0x30));
    }).join();
    EXPECT_EQ(other, nullptr) << "another thread starts on the default stream";
    ASSERT_EQ(optim_cuda_get_stream(0, &s), OPTIM_STATUS_OK);
    EXPECT_EQ(s, fake_stream(0x10)) << "another thread's setting is its own";

    ASSERT_EQ(optim_cuda_set_stream(0, nullptr), OPTIM_STATUS_OK);
    ASSERT_EQ(optim_cuda_get_stream(0, &s), OPTIM_STATUS_OK);
    EXPECT_EQ(s, nullptr) << "NULL restores the legacy default stream";
}

TEST(Streams, BadArgumentsAreRefusedAndChangeNothing)
{
    ASSERT_EQ(optim_cuda_set_stream(2, fake_stream(0x40)), OPTIM_STATUS_OK);
    EXPECT_EQ(optim_cuda_set_stream(-1, fake_stream(0x50)), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("device_index must be in [0, 64), got -1"),
              std::string::npos)
        << optim_last_error();
    EXPECT_EQ(optim_cuda_set_stream(OPTIM_MAX_CUDA_DEVICES, fake_stream(0x50)),
              OPTIM_STATUS_INVALID_ARGUMENT);
    void* s = fake_stream(7);
    EXPECT_EQ(optim_cuda_get_stream(OPTIM_MAX_CUDA_DEVICES, &s), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(s, fake_stream(7));
    EXPECT_EQ(optim_cuda_get_stream(2, nullptr), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("stream is NULL"), std::string::npos);
    ASSERT_EQ(optim_cuda_get_stream(2, &s), OPTIM_STATUS_OK);
    EXPECT_EQ(s, fake_stream(0x40));
}

TEST(Streams, LibTorchsCurrentStreamIsReadThroughLibc10Cuda)
{
    void* s = fake_stream(9);
    EXPECT_EQ(optim_torch_cuda_stream(0, &s), OPTIM_STATUS_UNSUPPORTED)
        << "no libc10_cuda is loaded yet";
    EXPECT_NE(std::string(optim_last_error()).find("libc10_cuda"), std::string::npos);
    EXPECT_EQ(s, fake_stream(9)) << "nothing may be written";
    EXPECT_EQ(optim_torch_cuda_stream(-1, &s), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(optim_torch_cuda_stream(0, nullptr), OPTIM_STATUS_INVALID_ARGUMENT);

    void* lib = dlopen(OPTIM_FAKE_C10_CUDA, RTLD_NOW | RTLD_GLOBAL);
    ASSERT_NE(lib, nullptr) << dlerror();
    auto set_current = reinterpret_cast<void (*)(int64_t)>(dlsym(lib, "fake_c10_cuda_set_current"));
    ASSERT_NE(set_current, nullptr);
    set_current(5);
    ASSERT_EQ(optim_torch_cuda_stream(3, &s), OPTIM_STATUS_OK) << optim_last_error();
    EXPECT_EQ(s, fake_stream(0x100000 + 0x3000 + 5));
    set_current(0);
    ASSERT_EQ(optim_torch_cuda_stream(0, &s), OPTIM_STATUS_OK);
    EXPECT_EQ(s, fake_stream(0x100000));
}
