// The interface between libOptim.Native and its MPI plugin, libOptim.Native.Mpi.so: the plugin
// alone links libmpi, so the main library loads on machines without MPI and finds the plugin (next
// to itself) at the first optim_mpi_* call. Arguments are checked by the main library; each
// function returns an optim_status and, on failure, writes a message into `message` (cut to
// capacity bytes).
#pragma once

#include <optim.h>

#ifdef __cplusplus
extern "C" {
#endif

// The plugin's interface version; the main library refuses a plugin whose version differs.
#define OPTIM_MPI_PLUGIN_VERSION 3

typedef struct optim_mpi_plugin {
    int32_t version;
    optim_status (*init)(int32_t* rank, int32_t* size, char* message, int64_t capacity);
    optim_status (*finalize)(char* message, int64_t capacity);
    optim_status (*broadcast)(int32_t dtype, const optim_comm_tensors* tensors, int32_t root,
                              int64_t bucket_bytes, char* message, int64_t capacity);
    optim_status (*allreduce)(int32_t dtype, const optim_comm_tensors* tensors, int32_t op,
                              int64_t bucket_bytes, char* message, int64_t capacity);
    optim_status (*allreduce_scalars)(double* values, int64_t count, int32_t op, char* message,
                                      int64_t capacity);
    optim_status (*abort_job)(int32_t error_code, char* message, int64_t capacity);
    optim_status (*reduce_scatter)(int32_t dtype, const optim_comm_tensors* tensors,
                                   const int32_t* owners, int32_t op, int64_t bucket_bytes,
                                   char* message, int64_t capacity);
    optim_status (*allgather)(int32_t dtype, const optim_comm_tensors* tensors,
                              const int32_t* owners, int64_t bucket_bytes, char* message,
                              int64_t capacity);
    optim_status (*set_timeout)(double seconds, char* message, int64_t capacity);
    optim_status (*get_timeout)(double* seconds, char* message, int64_t capacity);
} optim_mpi_plugin;

// The one symbol the plugin exports.
typedef const optim_mpi_plugin* (*optim_mpi_plugin_entry)(void);
#define OPTIM_MPI_PLUGIN_ENTRY "optim_mpi_plugin_v1"

#ifdef __cplusplus
} /* extern "C" */
#endif
