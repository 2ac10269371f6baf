// libOptim.Native.Mpi.so: the MPI collectives of optim.h's "Data parallelism over MPI" section, the
// only code that links libmpi (mpi_plugin.h says why). Arguments arrive checked by mpi_api.cpp.
#include "mpi_plugin.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

struct PluginError {
    optim_status status;
    std::string message;
};

[[noreturn]] void mpi_failed(const char* call, int code)
{
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
    throw PluginError{OPTIM_STATUS_MPI_ERROR,
                      std::string(call) + " failed: " + std::string(text, size_t(length))};
}

#define OPTIM_MPI_CALL(call)                                                                       \
    do {                                                                                           \
        int optim_mpi_code = (call);                                                               \
        if (optim_mpi_code != MPI_SUCCESS) mpi_failed(#call, optim_mpi_code);                      \
    } while (0)

// Waits for a non-blocking collective, polling it against g_timeout_seconds; past the deadline the
// job cannot go on (a collective cannot be cancelled): says which collective and how long, on
// stderr, and ends the job with MPI_Abort.
void wait_for(MPI_Request& request, const char* collective);

#define OPTIM_COLLECTIVE(start, ...)                                                               \
    do {                                                                                           \
        MPI_Request optim_request = MPI_REQUEST_NULL;                                              \
        OPTIM_MPI_CALL(start(__VA_ARGS__, &optim_request));                                        \
        wait_for(optim_request, #start);                                                           \
    } while (0)

// Everything below is guarded by g_mutex: calls into MPI are serialised, so MPI_THREAD_SERIALIZED
// is enough whichever threads call.
std::mutex g_mutex;
MPI_Comm g_comm = MPI_COMM_NULL; // a duplicate of MPI_COMM_WORLD that returns its errors
bool g_we_initialised = false;
int g_rank = 0;
int g_size = 1;
std::vector<unsigned char> g_bucket;  // the packing buffer, kept between calls
std::vector<unsigned char> g_receive; // a rank's segment of a reduce-scattered bucket
std::vector<double> g_scalars;        // every rank's scalars, gathered
// How long a collective may wait for the other ranks (optim_mpi_set_timeout); the default is
// PyTorch's process-group default, 30 minutes.
std::atomic<double> g_timeout_seconds{1800}; // not under g_mutex: settable during a wait
const char* g_function = ""; // the optim_mpi_* call in progress, for the timeout's message

void wait_for(MPI_Request& request, const char* collective)
{
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
        int done = 0;
        OPTIM_MPI_CALL(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
        if (done) return;
        const double waited =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (waited > g_timeout_seconds) {
            char text[512];
            std::snprintf(text, sizeof text,
                          "optim: rank %d of %d: %s in %s did not complete within the timeout of "
                          "%g s (optim_mpi_set_timeout, ProcessGroup.Timeout): another rank has "
                          "died or hangs; ending the job (MPI_Abort)",
                          g_rank, g_size, collective, g_function, g_timeout_seconds.load());
            std::fprintf(stderr, "%s\n", text);
            std::fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 1); // returns only if MPI could not abort
            throw PluginError{OPTIM_STATUS_MPI_ERROR, text};
        }
        std::this_thread::yield(); // on shared cores, let the rank being waited for run
    }
}

void require_initialised(const char* function)
{
    g_function = function;
    if (g_comm == MPI_COMM_NULL)
        throw PluginError{OPTIM_STATUS_INVALID_ARGUMENT,
                          std::string(function) + ": call optim_mpi_init first"};
}

template <class Body>
optim_status boundary(char* message, int64_t capacity, Body&& body) noexcept
{
    std::string text;
    optim_status status = OPTIM_STATUS_OK;
    try {
        std::lock_guard<std::mutex> lock(g_mutex);
        body();
        return OPTIM_STATUS_OK;
    } catch (const PluginError& e) {
        status = e.status;
        try {
            text = e.message;
        } catch (...) {
        }
    } catch (const std::bad_alloc&) {
        status = OPTIM_STATUS_OUT_OF_MEMORY;
        text = "";
    } catch (...) {
        status = OPTIM_STATUS_INTERNAL;
    }
    if (message != nullptr && capacity > 0) {
        size_t n = std::min(text.size(), size_t(capacity - 1));
        std::memcpy(message, text.data(), n);
        message[n] = '\0';
    }
    return status;
}

MPI_Datatype mpi_type(int32_t dtype)
{
    return dtype == OPTIM_DTYPE_FLOAT64 ? MPI_DOUBLE : MPI_FLOAT;
}

MPI_Op mpi_op(int32_t op)
{
    switch (op) {
    case OPTIM_REDUCE_MAX:
        return MPI_MAX;
    case OPTIM_REDUCE_MIN:
        return MPI_MIN;
    default:
        return MPI_SUM; // OPTIM_REDUCE_SUM, and OPTIM_REDUCE_MEAN before its division
    }
}

// Divides n elements by the number of ranks, in the element type (the mean of a sum).
template <class T>
void divide_by_size(T* data, int64_t n)
{
    const T size = T(g_size);
    for (int64_t i = 0; i < n; ++i) data[i] /= size;
}

void divide_by_size(int32_t dtype, void* data, int64_t n)
{
    if (dtype == OPTIM_DTYPE_FLOAT64)
        divide_by_size(static_cast<double*>(data), n);
    else
        divide_by_size(static_cast<float*>(data), n);
}

// One collective over the tensors of a list: tensors smaller than a bucket are packed into the
// bucket buffer (one collective per full bucket), larger ones are handed to MPI in place, in pieces
// MPI's int counts can hold. Every rank makes the same sequence of calls from the same list shape.
// `collective(buffer, n)` runs on n elements; `pack(k, offset, n, dst)` and `unpack(...)` move
// tensor k's elements [offset, offset + n) into and out of the bucket.
template <class Collective, class Pack, class Unpack>
void bucketed(int32_t dtype, const optim_comm_tensors& tensors, int64_t bucket_bytes,
              Collective&& collective, Pack&& pack, Unpack&& unpack)
{
    const int64_t element = dtype == OPTIM_DTYPE_FLOAT64 ? 8 : 4;
    // A bucket's element count goes to MPI as an int.
    const int64_t capacity =
        std::min<int64_t>(INT_MAX, std::max<int64_t>(1, bucket_bytes / element));
    struct Slot {
        int64_t tensor, position;
    };
    std::vector<Slot> slots;
    int64_t fill = 0;
    auto flush = [&] {
        if (fill == 0) return;
        collective(g_bucket.data(), fill);
        for (const Slot& slot : slots)
            unpack(slot.tensor, g_bucket.data() + slot.position * element);
        slots.clear();
        fill = 0;
    };
    for (int64_t k = 0; k < tensors.count; ++k) {
        const int64_t n = tensors.numels[k];
        if (n == 0) continue;
        if (n >= capacity) {
            auto* data = static_cast<unsigned char*>(tensors.data[k]);
            for (int64_t done = 0; done < n;) {
                const int64_t piece = std::min<int64_t>(n - done, INT_MAX);
                collective(data + done * element, piece);
                done += piece;
            }
            continue;
        }
        if (fill + n > capacity) flush();
        if (g_bucket.size() < size_t(capacity * element))
            g_bucket.resize(size_t(capacity * element));
        pack(k, g_bucket.data() + fill * element);
        slots.push_back({k, fill});
        fill += n;
    }
    flush();
}

// Refuses owners that are not ranks of this job, before any communication.
void check_owners(const char* function, const optim_comm_tensors& tensors, const int32_t* owners)
{
    for (int64_t k = 0; k < tensors.count; ++k)
        if (owners[k] >= g_size)
            throw PluginError{OPTIM_STATUS_INVALID_ARGUMENT,
                              std::string(function) + ": tensor " + std::to_string(k) +
                                  " has owner " + std::to_string(owners[k]) +
                                  ", not a rank (the job has " + std::to_string(g_size) +
                                  " ranks)"};
}

// One collective over a sharded list (tensor k belongs to rank owners[k]). Tensors smaller than a
// bucket are gathered into buckets in list order, as bucketed() does, and laid out rank by rank
// within a bucket, so each rank's elements form one segment: `bucket(counts, displs)` moves a full
// bucket. Larger tensors go in place: `large(data, n, owner)`, in pieces MPI's int counts can hold.
// `pack(k, dst)` and `unpack(k, src)` move tensor k into and out of its place in the bucket.
template <class Bucket, class Large, class Pack, class Unpack>
void sharded(int32_t dtype, const optim_comm_tensors& tensors, const int32_t* owners,
             int64_t bucket_bytes, Bucket&& bucket, Large&& large, Pack&& pack, Unpack&& unpack)
{
    const int64_t element = dtype == OPTIM_DTYPE_FLOAT64 ? 8 : 4;
    const int64_t capacity =
        std::min<int64_t>(INT_MAX, std::max<int64_t>(1, bucket_bytes / element));
    std::vector<int64_t> members, positions;
    const size_t ranks = static_cast<size_t>(g_size);
    std::vector<int> counts(ranks), displs(ranks), cursor(ranks);
    int64_t fill = 0;
    auto flush = [&] {
        if (members.empty()) return;
        std::fill(counts.begin(), counts.end(), 0);
        for (int64_t k : members) counts[size_t(owners[k])] += int(tensors.numels[k]);
        for (int r = 0, at = 0; r < g_size; at += counts[size_t(r)], ++r) displs[size_t(r)] = at;
        cursor = displs;
        positions.clear();
        for (int64_t k : members) {
            positions.push_back(cursor[size_t(owners[k])]);
            cursor[size_t(owners[k])] += int(tensors.numels[k]);
        }
        if (g_bucket.size() < size_t(capacity * element))
            g_bucket.resize(size_t(capacity * element));
        for (size_t i = 0; i < members.size(); ++i)
            pack(members[i], g_bucket.data() + positions[i] * element);
        bucket(counts, displs);
        for (size_t i = 0; i < members.size(); ++i)
            unpack(members[i], g_bucket.data() + positions[i] * element);
        members.clear();
        fill = 0;
    };
    for (int64_t k = 0; k < tensors.count; ++k) {
        const int64_t n = tensors.numels[k];
        if (n == 0) continue;
        if (n >= capacity) {
            auto* data = static_cast<unsigned char*>(tensors.data[k]);
            for (int64_t done = 0; done < n;) {
                const int64_t piece = std::min<int64_t>(n - done, INT_MAX);
                large(data + done * element, piece, owners[k]);
                done += piece;
            }
            continue;
        }
        if (fill + n > capacity) flush();
        members.push_back(k);
        fill += n;
    }
    flush();
}

optim_status plugin_init(int32_t* rank, int32_t* size, char* message, int64_t capacity)
{
    return boundary(message, capacity, [&] {
        if (g_comm == MPI_COMM_NULL) {
            int finalized = 0;
            OPTIM_MPI_CALL(MPI_Finalized(&finalized));
            if (finalized)
                throw PluginError{OPTIM_STATUS_INVALID_ARGUMENT,
                                  "optim_mpi_init: MPI was finalized in this process; it cannot "
                                  "be initialised again"};
            int initialised = 0;
            OPTIM_MPI_CALL(MPI_Initialized(&initialised));
            if (!initialised) {
                int provided = 0;
                OPTIM_MPI_CALL(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided));
                g_we_initialised = true;
            }
            MPI_Comm comm = MPI_COMM_NULL;
            OPTIM_MPI_CALL(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
            OPTIM_MPI_CALL(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
            OPTIM_MPI_CALL(MPI_Comm_rank(comm, &g_rank));
            OPTIM_MPI_CALL(MPI_Comm_size(comm, &g_size));
            g_comm = comm;
        }
        *rank = g_rank;
        *size = g_size;
    });
}

optim_status plugin_finalize(char* message, int64_t capacity)
{
    return boundary(message, capacity, [&] {
        if (g_comm == MPI_COMM_NULL) return;
        OPTIM_MPI_CALL(MPI_Comm_free(&g_comm));
        g_comm = MPI_COMM_NULL;
        std::vector<unsigned char>().swap(g_bucket);
        std::vector<unsigned char>().swap(g_receive);
        if (g_we_initialised) {
            g_we_initialised = false;
            OPTIM_MPI_CALL(MPI_Finalize());
        }
    });
}

optim_status plugin_broadcast(int32_t dtype, const optim_comm_tensors* tensors, int32_t root,
                              int64_t bucket_bytes, char* message, int64_t capacity)
{
    return boundary(message, capacity, [&] {
        require_initialised("optim_mpi_broadcast");
        if (root >= g_size)
            throw PluginError{OPTIM_STATUS_INVALID_ARGUMENT,
                              "optim_mpi_broadcast: root " + std::to_string(root) +
                                  " is not a rank (the job has " + std::to_string(g_size) +
                                  " ranks)"};
        const size_t element = dtype == OPTIM_DTYPE_FLOAT64 ? 8 : 4;
        const bool is_root = g_rank == root;
        bucketed(
            dtype, *tensors, bucket_bytes,
            [&](void* buffer, int64_t n) {
                OPTIM_COLLECTIVE(MPI_Ibcast, buffer, int(n), mpi_type(dtype), root, g_comm);
            },
            [&](int64_t k, unsigned char* dst) {
                if (is_root)
                    std::memcpy(dst, tensors->data[k], size_t(tensors->numels[k]) * element);
            },
            [&](int64_t k, const unsigned char* src) {
                if (!is_root)
                    std::memcpy(tensors->data[k], src, size_t(tensors->numels[k]) * element);
            });
    });
}

optim_status plugin_allreduce(int32_t dtype, const optim_comm_tensors* tensors, int32_t op,
                              int64_t bucket_bytes, char* message, int64_t capacity)
{
    return boundary(message, capacity, [&] {
        require_initialised("optim_mpi_allreduce");
        const size_t element = dtype == OPTIM_DTYPE_FLOAT64 ? 8 : 4;
        const bool mean = op == OPTIM_REDUCE_MEAN;
        bucketed(
            dtype, *tensors, bucket_bytes,
            [&](void* buffer, int64_t n) {
                OPTIM_COLLECTIVE(MPI_Iallreduce, MPI_IN_PLACE, buffer, int(n), mpi_type(dtype),
                                 mpi_op(op), g_comm);
                // In place on a large tensor: divide here; bucketed elements are divided on unpack.
                if (mean && buffer != static_cast<void*>(g_bucket.data()))
                    divide_by_size(dtype, buffer, n);
            },
            [&](int64_t k, unsigned char* dst) {
                std::memcpy(dst, tensors->data[k], size_t(tensors->numels[k]) * element);
            },
            [&](int64_t k, const unsigned char* src) {
                std::memcpy(tensors->data[k], src, size_t(tensors->numels[k]) * element);
                if (mean) divide_by_size(dtype, tensors->data[k], tensors->numels[k]);
            });
    });
}

optim_status plugin_allreduce_scalars(double* values, int64_t count, int32_t op, char* message,
                                      int64_t capacity)
{
    return boundary(message, capacity, [&] {
        require_initialised("optim_mpi_allreduce_scalars");
        if (count == 0) return;
        // Gathered and combined in rank order on every rank, so every rank gets the same bits (an
        // MPI_Allreduce may round differently on different ranks): rates derived from these sums
        // stay identical across the job.
        std::vector<double>& all = g_scalars;
        all.resize(size_t(count) * size_t(g_size));
        OPTIM_COLLECTIVE(MPI_Iallgather, values, int(count), MPI_DOUBLE, all.data(), int(count),
                         MPI_DOUBLE, g_comm);
        for (int64_t i = 0; i < count; ++i) {
            double r = all[size_t(i)];
            for (int rank = 1; rank < g_size; ++rank) {
                const double v = all[size_t(rank) * size_t(count) + size_t(i)];
                switch (op) {
                case OPTIM_REDUCE_MAX:
                    r = std::max(r, v);
                    break;
                case OPTIM_REDUCE_MIN:
                    r = std::min(r, v);
                    break;
                default:
                    r += v;
                    break;
                }
            }
            values[i] = r;
        }
        if (op == OPTIM_REDUCE_MEAN) divide_by_size(values, count);
    });
}

optim_status plugin_reduce_scatter(int32_t dtype, const optim_comm_tensors* tensors,
                                   const int32_t* owners, int32_t op, int64_t bucket_bytes,
                                   char* message, int64_t capacity)
{
    return boundary(message, capacity, [&] {
        constexpr const char* function = "optim_mpi_reduce_scatter";
        require_initialised(function);
        check_owners(function, *tensors, owners);
        const size_t element = dtype == OPTIM_DTYPE_FLOAT64 ? 8 : 4;
        const bool mean = op == OPTIM_REDUCE_MEAN;
        sharded(
            dtype, *tensors, owners, bucket_bytes,
            [&](const std::vector<int>& counts, const std::vector<int>& displs) {
                const size_t mine = size_t(counts[size_t(g_rank)]);
                if (g_receive.size() < std::max<size_t>(1, mine * element))
                    g_receive.resize(std::max<size_t>(1, mine * element));
                OPTIM_COLLECTIVE(MPI_Ireduce_scatter, g_bucket.data(), g_receive.data(),
                                 counts.data(), mpi_type(dtype), mpi_op(op), g_comm);
                std::memcpy(g_bucket.data() + size_t(displs[size_t(g_rank)]) * element,
                            g_receive.data(), mine * element);
            },
            [&](void* data, int64_t n, int32_t owner) {
                const bool mine = owner == g_rank;
                OPTIM_COLLECTIVE(MPI_Ireduce, mine ? MPI_IN_PLACE : data, mine ? data : nullptr,
                                 int(n), mpi_type(dtype), mpi_op(op), owner, g_comm);
                if (mine && mean) divide_by_size(dtype, data, n);
            },
            [&](int64_t k, unsigned char* dst) {
                std::memcpy(dst, tensors->data[k], size_t(tensors->numels[k]) * element);
            },
            [&](int64_t k, const unsigned char* src) {
                if (owners[k] != g_rank) return;
                std::memcpy(tensors->data[k], src, size_t(tensors->numels[k]) * element);
                if (mean) divide_by_size(dtype, tensors->data[k], tensors->numels[k]);
            });
    });
}

optim_status plugin_allgather(int32_t dtype, const optim_comm_tensors* tensors,
                              const int32_t* owners, int64_t bucket_bytes, char* message,
                              int64_t capacity)
{
    return boundary(message, capacity, [&] {
        constexpr const char* function = "optim_mpi_allgather";
        require_initialised(function);
        check_owners(function, *tensors, owners);
        const size_t element = dtype == OPTIM_DTYPE_FLOAT64 ? 8 : 4;
        sharded(
            dtype, *tensors, owners, bucket_bytes,
            [&](const std::vector<int>& counts, const std::vector<int>& displs) {
                OPTIM_COLLECTIVE(MPI_Iallgatherv, MPI_IN_PLACE, 0, MPI_DATATYPE_NULL,
                                 g_bucket.data(), counts.data(), displs.data(), mpi_type(dtype),
                                 g_comm);
            },
            [&](void* data, int64_t n, int32_t owner) {
                OPTIM_COLLECTIVE(MPI_Ibcast, data, int(n), mpi_type(dtype), owner, g_comm);
            },
            [&](int64_t k, unsigned char* dst) {
                if (owners[k] == g_rank)
                    std::memcpy(dst, tensors->data[k], size_t(tensors->numels[k]) * element);
            },
            [&](int64_t k, const unsigned char* src) {
                if (owners[k] != g_rank)
                    std::memcpy(tensors->data[k], src, size_t(tensors->numels[k]) * element);
            });
    });
}

optim_status plugin_abort(int32_t error_code, char* message, int64_t capacity)
{
    // Not under g_mutex: another thread may be blocked inside a collective, which is what this
    // ends.
    std::string text;
    int initialised = 0, finalized = 0;
    if (MPI_Initialized(&initialised) != MPI_SUCCESS || MPI_Finalized(&finalized) != MPI_SUCCESS ||
        !initialised || finalized) {
        text = "optim_mpi_abort: MPI is not initialised";
    } else {
        MPI_Abort(MPI_COMM_WORLD, error_code); // returns only if MPI could not abort
        text = "optim_mpi_abort: MPI_Abort returned";
    }
    if (message != nullptr && capacity > 0) {
        size_t n = std::min(text.size(), size_t(capacity - 1));
        std::memcpy(message, text.data(), n);
        message[n] = '\0';
    }
    return OPTIM_STATUS_MPI_ERROR;
}

optim_status plugin_set_timeout(double seconds, char*, int64_t)
{
    g_timeout_seconds = seconds;
    return OPTIM_STATUS_OK;
}

optim_status plugin_get_timeout(double* seconds, char*, int64_t)
{
    *seconds = g_timeout_seconds;
    return OPTIM_STATUS_OK;
}

const optim_mpi_plugin g_plugin = {OPTIM_MPI_PLUGIN_VERSION,
                                   plugin_init,
                                   plugin_finalize,
                                   plugin_broadcast,
                                   plugin_allreduce,
                                   plugin_allreduce_scalars,
                                   plugin_abort,
                                   plugin_reduce_scatter,
                                   plugin_allgather,
                                   plugin_set_timeout,
                                   plugin_get_timeout};

} // namespace

extern "C" __attribute__((visibility("default"))) const optim_mpi_plugin* optim_mpi_plugin_v1(void)
{
    return &g_plugin;
}
