#include <optim.h>

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <link.h>

#include <string>

TEST(Abi, VersionMatchesHeader)
{
    EXPECT_EQ(optim_abi_version(), OPTIM_ABI_VERSION);
}

TEST(Abi, BuildInfoNamesTheCudaState)
{
    const std::string info = optim_build_info();
    EXPECT_EQ(info.rfind("optim ", 0), 0u) << info;
    EXPECT_NE(info.find(optim_cuda_compiled() ? "cuda: sm_" : "no cuda"), std::string::npos)
        << info;
}

TEST(Abi, StatusNames)
{
    EXPECT_STREQ(optim_status_name(OPTIM_STATUS_OK), "OPTIM_STATUS_OK");
    EXPECT_STREQ(optim_status_name(OPTIM_STATUS_CUDA_UNAVAILABLE), "OPTIM_STATUS_CUDA_UNAVAILABLE");
    EXPECT_STREQ(optim_status_name(12345), "OPTIM_STATUS_UNKNOWN");
}

TEST(Abi, DefaultParams)
{
    optim_sgd_params p;
    optim_sgd_params_default(&p);
    EXPECT_DOUBLE_EQ(p.lr, 0.01);
    EXPECT_DOUBLE_EQ(p.momentum, 0.0);
    EXPECT_EQ(p.nesterov, 0);
    EXPECT_EQ(p.lr_ptr, nullptr);
    optim_sgd_params_default(nullptr); // a no-op
}

TEST(Abi, CudaDeviceCountIsZeroOrMoreAndConsistentWithBuild)
{
    int32_t n = -1;
    ASSERT_EQ(optim_cuda_device_count(&n), OPTIM_STATUS_OK);
    EXPECT_GE(n, 0);
    if (!optim_cuda_compiled()) {
        EXPECT_EQ(n, 0);
    }
}

TEST(Abi, ThreadingInfoNamesOurPoolWithoutOpenMp)
{
    // This test binary loads no OpenMP runtime, so parallel steps use the library's own pool.
    const std::string info = optim_threading_info();
    EXPECT_EQ(info, "optim worker pool");
}

TEST(Abi, VersionBumpsNeedLibTorchInTheProcess)
{
    // This test binary loads no LibTorch: a clear status, never a crash. (The managed tests cover
    // the bump itself, against LibTorch's own version counters.)
    EXPECT_EQ(optim_torch_bump_versions(nullptr, 0), OPTIM_STATUS_OK);
    EXPECT_EQ(optim_torch_bump_versions(nullptr, -1), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(optim_torch_bump_versions(nullptr, 1), OPTIM_STATUS_INVALID_ARGUMENT);
    int dummy = 0;
    void* handles[] = {&dummy};
    EXPECT_EQ(optim_torch_bump_versions(handles, 1), OPTIM_STATUS_UNSUPPORTED);
    EXPECT_NE(std::string(optim_last_error()).find("LibTorch"), std::string::npos);
}

TEST(Abi, GradientLookUpsNeedLibTorchInTheProcess)
{
    // No LibTorch here: a clear status and nothing written. (The managed tests cover the look-up
    // itself, against TorchSharp's own gradients.)
    const void* grads[1] = {&grads};
    EXPECT_EQ(optim_torch_gradients(nullptr, 0, nullptr), OPTIM_STATUS_OK);
    EXPECT_EQ(optim_torch_gradients(nullptr, -1, grads), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("count is negative"), std::string::npos);
    EXPECT_EQ(optim_torch_gradients(nullptr, 1, grads), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("tensors is NULL"), std::string::npos);
    int dummy = 0;
    const void* handles[] = {&dummy};
    EXPECT_EQ(optim_torch_gradients(handles, 1, nullptr), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(optim_last_error()).find("grads is NULL"), std::string::npos);
    EXPECT_EQ(optim_torch_gradients(handles, 1, grads), OPTIM_STATUS_UNSUPPORTED);
    EXPECT_NE(std::string(optim_last_error()).find("LibTorch"), std::string::npos);
    EXPECT_EQ(grads[0], static_cast<const void*>(&grads)) << "nothing may be written";
}

TEST(Abi, TheLibraryIsNeverUnloaded)
{
    // Its worker threads and the OpenMP hand-over at thread exit run its code until the process
    // ends, so dlclose must not unmap it: the library carries DF_1_NODELETE.
    Dl_info info{};
    ASSERT_NE(dladdr(reinterpret_cast<void*>(&optim_abi_version), &info), 0);
    struct Found {
        const void* base;
        bool seen = false;
        bool nodelete = false;
    } found{info.dli_fbase};
    dl_iterate_phdr(
        [](dl_phdr_info* object, size_t, void* data) {
            auto& f = *static_cast<Found*>(data);
            if (reinterpret_cast<const void*>(object->dlpi_addr) != f.base) return 0;
            f.seen = true;
            for (int i = 0; i < object->dlpi_phnum; ++i) {
                if (object->dlpi_phdr[i].p_type != PT_DYNAMIC) continue;
                const auto* d = reinterpret_cast<const ElfW(Dyn)*>(object->dlpi_addr +
                                                                   object->dlpi_phdr[i].p_vaddr);
                for (; d->d_tag != DT_NULL; ++d)
                    if (d->d_tag == DT_FLAGS_1 && (d->d_un.d_val & DF_1_NODELETE))
                        f.nodelete = true;
            }
            return 1;
        },
        &found);
    EXPECT_TRUE(found.seen) << info.dli_fname;
    EXPECT_TRUE(found.nodelete) << info.dli_fname << " can be unloaded";
}
