// Memory of the side under check and the error checks of optim_gpu_check. The side under check is
// the CUDA path on device memory; in a dry run (--dry-run, no GPU needed) it is the CPU path on
// host memory, so the checks' own logic can be proven on a machine without a GPU.
#pragma once

#include <optim.h>

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace optim_gpu {

inline void cuda_ok(cudaError_t e, const char* what)
{
    if (e != cudaSuccess)
        throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

inline void optim_ok(optim_status s, const char* what)
{
    if (s != OPTIM_STATUS_OK)
        throw std::runtime_error(std::string(what) + ": " + optim_status_name(s) + ": " +
                                 optim_last_error());
}

// Where the side under check runs: OPTIM_DEVICE_CUDA, or OPTIM_DEVICE_CPU in a dry run; on which
// stream (StreamScope), and whether its steps are captured in CUDA graphs.
class Target {
  public:
    static void set_dry_run(bool dry) { dry_run_ref() = dry; }
    static bool dry_run() { return dry_run_ref(); }
    static int32_t device() { return dry_run() ? OPTIM_DEVICE_CPU : OPTIM_DEVICE_CUDA; }
    // Waits for the side under check: the whole device (its kernels run asynchronously, on the
    // legacy default stream or a StreamScope's).
    static void sync()
    {
        if (!dry_run()) cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    }
    static cudaStream_t& stream()
    {
        static cudaStream_t s = nullptr;
        return s;
    }
    static bool& graphs()
    {
        static bool on = false;
        return on;
    }

  private:
    static bool& dry_run_ref()
    {
        static bool dry = false;
        return dry;
    }
};

// While it lives, the checked side's calls run on a stream of their own, set with
// optim_cuda_set_stream (non-blocking, so nothing orders it with the legacy default stream); with
// `graphs`, every step after a case's first is captured in a CUDA graph and replayed
// (checked_step).
class StreamScope {
  public:
    explicit StreamScope(bool graphs)
    {
        cuda_ok(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
        optim_ok(optim_cuda_set_stream(0, stream_), "optim_cuda_set_stream");
        Target::stream() = stream_;
        Target::graphs() = graphs;
    }
    ~StreamScope()
    {
        Target::graphs() = false;
        Target::stream() = nullptr;
        optim_cuda_set_stream(0, nullptr);
        cudaStreamSynchronize(stream_);
        cudaStreamDestroy(stream_);
    }
    StreamScope(const StreamScope&) = delete;
    StreamScope& operator=(const StreamScope&) = delete;

  private:
    cudaStream_t stream_ = nullptr;
};

// Makes the checked side's call of a case's step. On a StreamScope's stream it first waits for the
// device (the uploads go through the legacy default stream). With graphs, steps after the first
// (which sizes the stream's scratch) are captured and the graph is run once: a launch to another
// stream, a host wait or an allocation inside the step fails the capture.
template <class Call>
void checked_step(int step, Call&& call)
{
    const cudaStream_t s = Target::stream();
    if (Target::dry_run() || s == nullptr) {
        call();
        return;
    }
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    if (!Target::graphs() || step == 0) {
        call();
        return;
    }
    cuda_ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
    cudaGraph_t graph = nullptr;
    try {
        call();
    } catch (...) {
        if (cudaStreamEndCapture(s, &graph) == cudaSuccess && graph != nullptr)
            cudaGraphDestroy(graph);
        cudaGetLastError();
        throw;
    }
    cuda_ok(cudaStreamEndCapture(s, &graph),
            "cudaStreamEndCapture (a launch off the stream, a host wait or an allocation)");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t made = cudaGraphInstantiateWithFlags(&exec, graph, 0);
    cudaGraphDestroy(graph);
    cuda_ok(made, "cudaGraphInstantiateWithFlags");
    const cudaError_t ran = cudaGraphLaunch(exec, s);
    const cudaError_t done = cudaStreamSynchronize(s);
    cudaGraphExecDestroy(exec);
    cuda_ok(ran, "cudaGraphLaunch");
    cuda_ok(done, "cudaStreamSynchronize (the graph)");
}

// n elements of T in the memory of the side under check; freed on destruction.
template <typename T>
class DeviceBuffer {
  public:
    explicit DeviceBuffer(size_t n = 0) : n_(n)
    {
        if (n == 0) return;
        if (Target::dry_run()) {
            data_ = static_cast<T*>(std::malloc(n * sizeof(T)));
            if (data_ == nullptr) throw std::runtime_error("out of host memory");
        } else {
            cuda_ok(cudaMalloc(&data_, n * sizeof(T)), "cudaMalloc");
        }
    }
    ~DeviceBuffer() { release(); }
    DeviceBuffer(DeviceBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), n_(o.n_) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept
    {
        if (this != &o) {
            release();
            data_ = std::exchange(o.data_, nullptr);
            n_ = o.n_;
        }
        return *this;
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    T* get() const { return data_; }
    size_t size() const { return n_; }

    void upload(const T* host)
    {
        if (n_ == 0) return;
        if (Target::dry_run())
            std::memcpy(data_, host, n_ * sizeof(T));
        else
            cuda_ok(cudaMemcpy(data_, host, n_ * sizeof(T), cudaMemcpyHostToDevice), "upload");
    }
    void download(T* host) const
    {
        if (n_ == 0) return;
        if (Target::dry_run())
            std::memcpy(host, data_, n_ * sizeof(T));
        else
            cuda_ok(cudaMemcpy(host, data_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "download");
    }
    std::vector<T> download() const
    {
        std::vector<T> v(n_);
        download(v.data());
        return v;
    }

  private:
    void release() noexcept
    {
        if (data_ == nullptr) return;
        if (Target::dry_run())
            std::free(data_);
        else
            cudaFree(data_);
        data_ = nullptr;
    }

    T* data_ = nullptr;
    size_t n_ = 0;
};

} // namespace optim_gpu
