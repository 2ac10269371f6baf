using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// The calling thread's CUDA stream as the managed side sets it: per thread, and before each CUDA step
/// LibTorch's current stream (the legacy default stream, 0, where LibTorch's CUDA library is not loaded,
/// as with TorchSharp-cpu here). That steps then launch on it is the GPU check's part.
/// </summary>
[TestFixture]
public class CudaStreamTests
{
    [Test]
    public void TheStreamIsPerThreadAndReadsBackAsSet()
    {
        try
        {
            OptimNative.SetCudaStream(1, 0x1230);
            Assert.That(OptimNative.GetCudaStream(1), Is.EqualTo((nint)0x1230));
            Assert.That(OptimNative.GetCudaStream(0), Is.EqualTo(nint.Zero), "another device's stream is its own");
            nint other = -1;
            var thread = new Thread(() => other = OptimNative.GetCudaStream(1));
            thread.Start();
            thread.Join();
            Assert.That(other, Is.EqualTo(nint.Zero), "another thread starts on the legacy default stream");
        }
        finally
        {
            OptimNative.SetCudaStream(1, 0);
        }
    }

    [Test]
    public void ADeviceIndexOutsideTheTableIsRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => OptimNative.SetCudaStream(64, 0x10));
        Assert.That(e!.Message, Does.Contain("device_index must be in [0, 64), got 64"));
        Assert.Throws<ArgumentException>(() => OptimNative.GetCudaStream(-1));
    }

    [Test]
    public void FollowingLibTorchWithoutItsCudaLibraryMeansTheDefaultStream()
    {
        Assert.That(OptimNative.TryGetTorchCudaStream(0, out nint stream), Is.False,
            "TorchSharp-cpu loads no libc10_cuda");
        Assert.That(stream, Is.EqualTo(nint.Zero));
        OptimNative.SetCudaStream(0, 0x4560);
        OptimNative.FollowTorchCudaStream(0);
        Assert.That(OptimNative.GetCudaStream(0), Is.EqualTo(nint.Zero));
    }
}
