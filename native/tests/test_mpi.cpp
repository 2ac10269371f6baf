// The optim_mpi_* entry points in one process without mpirun: argument checks come before MPI is
// touched, a build without the plugin says so, and a collective before optim_mpi_init is refused.
// (The collectives themselves run under mpirun: tests/Optim.MpiTests, scripts/test.sh.)
#include <optim.h>

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace {

std::string last_error()
{
    return optim_last_error();
}

TEST(Mpi, CompiledAsConfigured)
{
    EXPECT_EQ(optim_mpi_compiled(), OPTIM_MPI_EXPECTED);
}

TEST(Mpi, ArgumentsAreCheckedFirst)
{
    std::vector<float> a(4, 1.0f);
    void* data[] = {a.data()};
    int64_t numels[] = {4};
    optim_comm_tensors list{1, data, numels};
    EXPECT_EQ(optim_mpi_allreduce(OPTIM_DEVICE_CPU, OPTIM_DTYPE_FLOAT32, nullptr, OPTIM_REDUCE_MEAN,
                                  1024),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(last_error().find("tensors is NULL"), std::string::npos) << last_error();
    EXPECT_EQ(optim_mpi_allreduce(OPTIM_DEVICE_CPU, 7, &list, OPTIM_REDUCE_MEAN, 1024),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(optim_mpi_allreduce(OPTIM_DEVICE_CPU, OPTIM_DTYPE_FLOAT32, &list, 9, 1024),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(last_error().find("unknown reduction 9"), std::string::npos) << last_error();
    EXPECT_EQ(optim_mpi_broadcast(OPTIM_DEVICE_CPU, OPTIM_DTYPE_FLOAT32, &list, 0, 4),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(last_error().find("bucket_bytes 4 is below 8"), std::string::npos) << last_error();
    EXPECT_EQ(optim_mpi_broadcast(OPTIM_DEVICE_CPU, OPTIM_DTYPE_FLOAT32, &list, -1, 1024),
              OPTIM_STATUS_INVALID_ARGUMENT);
    void* null_data[] = {nullptr};
    optim_comm_tensors missing{1, null_data, numels};
    EXPECT_EQ(optim_mpi_allreduce(OPTIM_DEVICE_CPU, OPTIM_DTYPE_FLOAT32, &missing, OPTIM_REDUCE_SUM,
                                  1024),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(last_error().find("tensor 0 has NULL data"), std::string::npos) << last_error();
    EXPECT_EQ(
        optim_mpi_allreduce(OPTIM_DEVICE_CUDA, OPTIM_DTYPE_FLOAT32, &list, OPTIM_REDUCE_SUM, 1024),
        OPTIM_STATUS_UNSUPPORTED);
    EXPECT_NE(last_error().find("CUDA tensors are not supported"), std::string::npos)
        << last_error();
    EXPECT_EQ(optim_mpi_allreduce_scalars(nullptr, 2, OPTIM_REDUCE_MAX),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(optim_mpi_init(nullptr, nullptr), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(a[0], 1.0f); // nothing written
}

TEST(Mpi, ShardedArgumentsAreCheckedFirst)
{
    std::vector<float> a(4, 1.0f), b(2, 2.0f);
    void* data[] = {a.data(), b.data()};
    int64_t numels[] = {4, 2};
    int32_t owners[] = {0, -1};
    optim_comm_tensors list{2, data, numels};
    EXPECT_EQ(optim_mpi_reduce_scatter(OPTIM_DEVICE_CPU, OPTIM_DTYPE_FLOAT32, &list, nullptr,
                                       OPTIM_REDUCE_MEAN, 1024),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(last_error().find("owners is NULL"), std::string::npos) << last_error();
    EXPECT_EQ(optim_mpi_allgather(OPTIM_DEVICE_CPU, OPTIM_DTYPE_FLOAT32, &list, owners, 1024),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(last_error().find("tensor 1 has a negative owner -1"), std::string::npos)
        << last_error();
    owners[1] = 0;
    EXPECT_EQ(
        optim_mpi_reduce_scatter(OPTIM_DEVICE_CPU, OPTIM_DTYPE_FLOAT32, &list, owners, 9, 1024),
        OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(last_error().find("unknown reduction 9"), std::string::npos) << last_error();
    EXPECT_EQ(optim_mpi_allgather(OPTIM_DEVICE_CPU, OPTIM_DTYPE_FLOAT32, &list, owners, 4),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(optim_mpi_allgather(OPTIM_DEVICE_CPU, OPTIM_DTYPE_FLOAT32, nullptr, owners, 1024),
              OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(optim_mpi_allgather(OPTIM_DEVICE_CUDA, OPTIM_DTYPE_FLOAT32, &list, owners, 1024),
              OPTIM_STATUS_UNSUPPORTED);
    // Valid arguments: refused by the plugin before init, or by a build without MPI.
    const optim_status status = optim_mpi_reduce_scatter(OPTIM_DEVICE_CPU, OPTIM_DTYPE_FLOAT32,
                                                         &list, owners, OPTIM_REDUCE_SUM, 1024);
    EXPECT_EQ(status,
              optim_mpi_compiled() ? OPTIM_STATUS_INVALID_ARGUMENT : OPTIM_STATUS_UNSUPPORTED);
    EXPECT_NE(last_error().find(optim_mpi_compiled() ? "call optim_mpi_init first"
                                                     : "this build has no MPI support"),
              std::string::npos)
        << last_error();
    EXPECT_EQ(a[0], 1.0f); // nothing written
    EXPECT_EQ(b[1], 2.0f);
}

TEST(Mpi, Timeout)
{
    EXPECT_EQ(optim_mpi_set_timeout(0), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(last_error().find("is not positive"), std::string::npos) << last_error();
    EXPECT_EQ(optim_mpi_set_timeout(-1), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(optim_mpi_set_timeout(std::nan("")), OPTIM_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(optim_mpi_get_timeout(nullptr), OPTIM_STATUS_INVALID_ARGUMENT);
    double seconds = 0;
    if (optim_mpi_compiled()) {
        // Before optim_mpi_init too: the default, then what was set.
        ASSERT_EQ(optim_mpi_get_timeout(&seconds), OPTIM_STATUS_OK) << last_error();
        EXPECT_EQ(seconds, 1800.0);
        ASSERT_EQ(optim_mpi_set_timeout(2.5), OPTIM_STATUS_OK) << last_error();
        ASSERT_EQ(optim_mpi_get_timeout(&seconds), OPTIM_STATUS_OK);
        EXPECT_EQ(seconds, 2.5);
        ASSERT_EQ(optim_mpi_set_timeout(HUGE_VAL), OPTIM_STATUS_OK);
        ASSERT_EQ(optim_mpi_get_timeout(&seconds), OPTIM_STATUS_OK);
        EXPECT_EQ(seconds, HUGE_VAL);
        ASSERT_EQ(optim_mpi_set_timeout(1800), OPTIM_STATUS_OK);
    } else {
        EXPECT_EQ(optim_mpi_set_timeout(5), OPTIM_STATUS_UNSUPPORTED);
        EXPECT_EQ(optim_mpi_get_timeout(&seconds), OPTIM_STATUS_UNSUPPORTED);
    }
}

TEST(Mpi, CollectiveBeforeInitOrWithoutPlugin)
{
    double values[2] = {1, 2};
    const optim_status status = optim_mpi_allreduce_scalars(values, 2, OPTIM_REDUCE_SUM);
    if (optim_mpi_compiled()) {
        EXPECT_EQ(status, OPTIM_STATUS_INVALID_ARGUMENT);
        EXPECT_NE(last_error().find("call optim_mpi_init first"), std::string::npos)
            << last_error();
    } else {
        EXPECT_EQ(status, OPTIM_STATUS_UNSUPPORTED);
        EXPECT_NE(last_error().find("this build has no MPI support"), std::string::npos)
            << last_error();
        int32_t rank = -1, size = -1;
        EXPECT_EQ(optim_mpi_init(&rank, &size), OPTIM_STATUS_UNSUPPORTED);
        EXPECT_EQ(optim_mpi_finalize(), OPTIM_STATUS_UNSUPPORTED);
        EXPECT_EQ(optim_mpi_abort(1), OPTIM_STATUS_UNSUPPORTED);
    }
    EXPECT_EQ(values[0], 1.0);
    EXPECT_EQ(values[1], 2.0);
}

TEST(Mpi, StatusName)
{
    EXPECT_STREQ(optim_status_name(OPTIM_STATUS_MPI_ERROR), "OPTIM_STATUS_MPI_ERROR");
}

} // namespace
