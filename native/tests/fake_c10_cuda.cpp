// A stand-in for LibTorch's libc10_cuda with the two functions optim_torch_cuda_stream calls,
// declared with c10's shapes (Device, Stream, CUDAStream as c10/core and c10/cuda declare them, so
// the symbols and the by-value return are the real ones'). The handle it reports encodes the
// device index and a per-thread stream id the test sets, so the test sees both pass through.
#include <cstdint>

#define FAKE_EXPORT __attribute__((visibility("default")))

namespace c10 {
using DeviceIndex = int8_t;
using StreamId = int64_t;
enum class DeviceType : int8_t { CPU = 0, CUDA = 1 };

struct Device {
    DeviceType type_;
    DeviceIndex index_;
};

class Stream {
  public:
    Stream(Device device, StreamId id) : device_(device), id_(id) {}
    DeviceIndex device_index() const { return device_.index_; }
    StreamId id() const { return id_; }

  private:
    Device device_;
    StreamId id_;
};

namespace cuda {
class FAKE_EXPORT CUDAStream {
  public:
    explicit CUDAStream(Stream stream) : stream_(stream) {}
    void* stream() const;

  private:
    Stream stream_;
};

FAKE_EXPORT CUDAStream getCurrentCUDAStream(DeviceIndex device_index);
} // namespace cuda
} // namespace c10

namespace {
thread_local int64_t current_id = 0;
}

extern "C" FAKE_EXPORT void fake_c10_cuda_set_current(int64_t id)
{
    current_id = id;
}

c10::cuda::CUDAStream c10::cuda::getCurrentCUDAStream(DeviceIndex device_index)
{
    return CUDAStream(Stream(Device{DeviceType::CUDA, device_index}, current_id));
}

void* c10::cuda::CUDAStream::stream() const
{
    return reinterpret_cast<void*>(
        static_cast<uintptr_t>(0x100000 + 0x1000 * stream_.device_index() + stream_.id()));
}
