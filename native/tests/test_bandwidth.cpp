// The memory-bandwidth reference (optim_stream_reference): it computes exactly what optim.h says,
// for every array count, both dtypes and sizes that cross the 64 Ki chunks; its sum does not depend
// on the thread count; bad arguments are reported and nothing is written.
#include "reference.hpp"

#include <optim_bench.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

using namespace optim_test;

namespace {

// Chunk-crossing sizes, an empty tensor and tiny ones; about 0.46M elements in all, enough for the
// parallel path.
const std::vector<size_t> kSizes = {1, 0, 7, 1000, 65536 + 3, 3 * 65536 - 5, 33, 200000};

template <typename T>
constexpr int32_t dtype_of()
{
    return std::is_same_v<T, float> ? OPTIM_DTYPE_FLOAT32 : OPTIM_DTYPE_FLOAT64;
}

// n_read read arrays and n_update update arrays per tensor, random (or small-integer) values.
template <typename T>
struct Streams {
    int32_t n_read, n_update;
    std::vector<std::vector<T>> reads, updates; // tensor-major: [k * n + j]
    std::vector<const void*> read_ptrs;
    std::vector<void*> update_ptrs;
    std::vector<int64_t> numels;

    Streams(int32_t nr, int32_t nu, const std::vector<size_t>& sizes, uint64_t seed,
            bool integers = false)
        : n_read(nr), n_update(nu)
    {
        std::mt19937_64 rng(seed);
        std::uniform_int_distribution<int> small(-8, 8);
        auto values = [&](size_t n) {
            if (!integers) return random_vector<T>(n, rng);
            std::vector<T> v(n);
            for (auto& x : v) x = static_cast<T>(small(rng));
            return v;
        };
        for (size_t n : sizes) {
            for (int32_t j = 0; j < nr; ++j) reads.push_back(values(n));
            for (int32_t j = 0; j < nu; ++j) updates.push_back(values(n));
            numels.push_back(static_cast<int64_t>(n));
        }
        for (auto& v : reads) read_ptrs.push_back(v.data());
        for (auto& v : updates) update_ptrs.push_back(v.data());
    }

    optim_stream_tensors list() const
    {
        return optim_stream_tensors{static_cast<int64_t>(numels.size()),
                                    n_read,
                                    n_update,
                                    read_ptrs.empty() ? nullptr : read_ptrs.data(),
                                    update_ptrs.empty() ? nullptr : update_ptrs.data(),
                                    numels.data()};
    }

    // optim.h's formula, element by element: r = read_0 + read_1 + ... (left to right).
    T r(size_t k, size_t i) const
    {
        if (n_read == 0) return T(0);
        T s = reads[k * static_cast<size_t>(n_read)][i];
        for (int32_t j = 1; j < n_read; ++j) s = s + reads[k * static_cast<size_t>(n_read) + j][i];
        return s;
    }
};

template <typename T>
void check_update_pass(int32_t nr, int32_t nu)
{
    SCOPED_TRACE("n_read " + std::to_string(nr) + ", n_update " + std::to_string(nu));
    Streams<T> s(nr, nu, kSizes, 17 + static_cast<uint64_t>(nr * 5 + nu));
    const Streams<T> before = s;
    const double scale = -0.375;
    const optim_stream_tensors list = s.list();
    for (int pass = 0; pass < 2; ++pass) // twice: the update arrays carry over
        ASSERT_EQ(optim_stream_reference(dtype_of<T>(), &list, scale, nullptr), OPTIM_STATUS_OK)
            << optim_bench_last_error();
    for (size_t k = 0; k < kSizes.size(); ++k)
        for (int32_t j = 0; j < nu; ++j) {
            const auto& got = s.updates[k * static_cast<size_t>(nu) + j];
            std::vector<T> want = before.updates[k * static_cast<size_t>(nu) + j];
            for (size_t i = 0; i < want.size(); ++i)
                for (int pass = 0; pass < 2; ++pass)
                    want[i] = want[i] + static_cast<T>(scale) * before.r(k, i);
            ASSERT_TRUE(same_bits(got, want))
                << "update array " << j << " of tensor " << k << " differs from the formula";
        }
    EXPECT_EQ(s.reads, before.reads) << "a read array was written";
}

} // namespace

TEST(StreamReference, UpdatePassComputesItsFormulaFloat32)
{
    for (int32_t nr = 0; nr <= OPTIM_STREAM_MAX_ARRAYS; ++nr)
        for (int32_t nu = 1; nu <= OPTIM_STREAM_MAX_ARRAYS; ++nu) check_update_pass<float>(nr, nu);
}

TEST(StreamReference, UpdatePassComputesItsFormulaFloat64)
{
    for (int32_t nr : {0, 1, 4})
        for (int32_t nu : {1, 2, 3}) check_update_pass<double>(nr, nu);
}

TEST(StreamReference, ReadOnlyPassReturnsTheExactSum)
{
    // Small integers: every partial sum is exact in double, so any order gives the exact total.
    for (int32_t nr = 1; nr <= OPTIM_STREAM_MAX_ARRAYS; ++nr) {
        Streams<float> s(nr, 0, kSizes, 40 + static_cast<uint64_t>(nr), true);
        double want = 0;
        for (size_t k = 0; k < kSizes.size(); ++k)
            for (size_t i = 0; i < kSizes[k]; ++i) want += static_cast<double>(s.r(k, i));
        const optim_stream_tensors list = s.list();
        double sum = std::numeric_limits<double>::quiet_NaN();
        ASSERT_EQ(optim_stream_reference(OPTIM_DTYPE_FLOAT32, &list, 1.0, &sum), OPTIM_STATUS_OK)
            << optim_bench_last_error();
        EXPECT_EQ(sum, want) << "n_read " << nr;
    }
}

TEST(StreamReference, EmptyListsAndTensors)
{
    double sum = 5;
    optim_stream_tensors none{0, 2, 0, nullptr, nullptr, nullptr};
    ASSERT_EQ(optim_stream_reference(OPTIM_DTYPE_FLOAT32, &none, 1.0, &sum), OPTIM_STATUS_OK);
    EXPECT_EQ(sum, 0.0);
    const void* reads[2] = {nullptr, nullptr};
    const int64_t numels[1] = {0};
    optim_stream_tensors empty{1, 2, 0, reads, nullptr, numels};
    sum = 5;
    ASSERT_EQ(optim_stream_reference(OPTIM_DTYPE_FLOAT64, &empty, 1.0, &sum), OPTIM_STATUS_OK);
    EXPECT_EQ(sum, 0.0);
}

class StreamThreads : public ::testing::Test {
  protected:
    void TearDown() override { optim_set_num_threads(0); }
};

TEST_F(StreamThreads, SumAndUpdatesAreBitwiseIdenticalForAnyNumberOfThreads)
{
    std::vector<double> sums;
    std::vector<std::vector<std::vector<float>>> updates;
    for (int threads : {1, 2, 3, 8}) {
        ASSERT_EQ(optim_set_num_threads(threads), OPTIM_STATUS_OK);
        const Streams<float> reads(3, 0, kSizes, 7);
        const optim_stream_tensors rl = reads.list();
        double sum = 0;
        ASSERT_EQ(optim_stream_reference(OPTIM_DTYPE_FLOAT32, &rl, 1.0, &sum), OPTIM_STATUS_OK);
        sums.push_back(sum);
        Streams<float> s(1, 2, kSizes, 8);
        const optim_stream_tensors ul = s.list();
        ASSERT_EQ(optim_stream_reference(OPTIM_DTYPE_FLOAT32, &ul, 0.5, nullptr), OPTIM_STATUS_OK);
        updates.push_back(s.updates);
    }
    for (size_t r = 1; r < sums.size(); ++r) {
        EXPECT_EQ(0, std::memcmp(&sums[0], &sums[r], sizeof(double)))
            << sums[0] << " vs " << sums[r];
        EXPECT_EQ(updates[0], updates[r]);
    }
}

// ---- Validation: every bad argument is reported, and nothing is written ------------------------

namespace {
struct StreamFixture {
    std::vector<float> a = {1, 2, 3}, b = {4, 5, 6}, c = {7, 8, 9};
    const void* reads[1] = {a.data()};
    void* updates[2] = {b.data(), c.data()};
    int64_t numels[1] = {3};
    optim_stream_tensors list{1, 1, 2, reads, updates, numels};
    double scale = 0.5;
    double sum = 42;
    double* sum_ptr = nullptr;

    void expect_failure(optim_status expected, const std::string& fragment,
                        int32_t dtype = OPTIM_DTYPE_FLOAT32, bool null_list = false)
    {
        EXPECT_EQ(optim_stream_reference(dtype, null_list ? nullptr : &list, scale, sum_ptr),
                  expected);
        const std::string message = optim_bench_last_error();
        EXPECT_NE(message.find("optim_stream_reference"), std::string::npos) << message;
        EXPECT_NE(message.find(fragment), std::string::npos)
            << "message '" << message << "' lacks '" << fragment << "'";
        EXPECT_EQ(a, (std::vector<float>{1, 2, 3}));
        EXPECT_EQ(b, (std::vector<float>{4, 5, 6})) << "an update array was written";
        EXPECT_EQ(c, (std::vector<float>{7, 8, 9})) << "an update array was written";
        EXPECT_EQ(sum, 42) << "sum was written";
    }
};
} // namespace

TEST(StreamReferenceValidation, UnsupportedDtype)
{
    StreamFixture f;
    f.expect_failure(OPTIM_STATUS_UNSUPPORTED, "unsupported dtype 7", 7);
}

TEST(StreamReferenceValidation, NullTensors)
{
    StreamFixture f;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "tensors is NULL", OPTIM_DTYPE_FLOAT32, true);
}

TEST(StreamReferenceValidation, ArrayCountsOutOfRange)
{
    StreamFixture f;
    f.list.n_read = OPTIM_STREAM_MAX_ARRAYS + 1;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "n_read must be in [0, 4], got 5");
    f.list.n_read = 1;
    f.list.n_update = -1;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "n_update must be in [0, 4], got -1");
    f.list.n_read = 0;
    f.list.n_update = 0;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "n_read and n_update are both 0");
}

TEST(StreamReferenceValidation, NonFiniteScale)
{
    StreamFixture f;
    f.scale = std::numeric_limits<double>::infinity();
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "scale must be finite");
    f.scale = std::nan("");
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "scale must be finite");
}

TEST(StreamReferenceValidation, ReadOnlyPassNeedsSum)
{
    StreamFixture f;
    f.list.n_update = 0;
    f.list.update = nullptr;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "sum is NULL but n_update is 0");
}

TEST(StreamReferenceValidation, NegativeCountAndNumel)
{
    StreamFixture f;
    f.list.count = -1;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "count is negative");
    f.list.count = 1;
    f.numels[0] = -3;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "tensor 0: numel is negative");
}

TEST(StreamReferenceValidation, NullArrays)
{
    StreamFixture f;
    f.list.numels = nullptr;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "tensors->numels is NULL");
    f.list.numels = f.numels;
    f.list.read = nullptr;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "tensors->read is NULL but n_read is 1");
    f.list.read = f.reads;
    f.list.update = nullptr;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "tensors->update is NULL but n_update is 2");
    f.list.update = f.updates;
    f.updates[1] = nullptr;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "tensor 0: update array 1 is NULL");
    f.updates[1] = f.c.data();
    f.reads[0] = nullptr;
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT, "tensor 0: read array 0 is NULL");
}

TEST(StreamReferenceValidation, AnUpdateArrayMayNotBeAnotherArrayOfTheSameTensor)
{
    StreamFixture f;
    f.updates[1] = f.b.data();
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT,
                     "tensor 0: the update array 0 and the update array 1 are the same memory");
    f.updates[1] = f.c.data();
    f.reads[0] = f.c.data();
    f.expect_failure(OPTIM_STATUS_INVALID_ARGUMENT,
                     "tensor 0: the update array 1 and the read array 0 are the same memory");
}
