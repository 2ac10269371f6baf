using System.Runtime.InteropServices;

namespace Optim.Interop;

/// <summary>What the fused optimizers need to know about one tensor, read in a few nanoseconds.</summary>
/// <param name="Data">Address of the first element (storage offset included; a device address for CUDA tensors; 0 when empty).</param>
/// <param name="Numel">Number of elements.</param>
/// <param name="ScalarType">c10's scalar type code (TorchSharp's <c>ScalarType</c> has the same values).</param>
/// <param name="DeviceType">c10's device type code (TorchSharp's <c>DeviceType</c> has the same values).</param>
/// <param name="DeviceIndex">Device ordinal (-1 for the CPU).</param>
/// <param name="Contiguous">Dense row-major layout.</param>
/// <param name="Sparse">A sparse layout.</param>
internal readonly record struct TensorInfo(nint Data, long Numel, int ScalarType, int DeviceType, int DeviceIndex, bool Contiguous, bool Sparse);

/// <summary>
/// Direct calls into LibTorchSharp (already loaded by TorchSharp) for the per-step hot path of the fused
/// optimizers: a tensor's data pointer, which TorchSharp does not make public, its metadata, and its
/// gradient handle, without the managed wrapper and error check TorchSharp's properties add to each
/// read (about 0.13 µs for <c>Tensor.grad</c> alone; at 1000 tensors that is most of a step's
/// overhead). The metadata exports are field reads that neither fail nor allocate for a live tensor
/// handle, so they skip the GC transition; the gradient handle's create and release allocate, so they
/// do not. Handles are TorchSharp's <c>Tensor.Handle</c>.
/// </summary>
internal static partial class TorchSharpNative
{
    private const string Lib = "LibTorchSharp";

    [LibraryImport(Lib), SuppressGCTransition]
    private static partial nint THSTensor_data(nint tensor);

    [LibraryImport(Lib), SuppressGCTransition]
    private static partial long THSTensor_numel(nint tensor);

    [LibraryImport(Lib), SuppressGCTransition]
    private static partial sbyte THSTensor_type(nint tensor);

    [LibraryImport(Lib), SuppressGCTransition]
    private static partial int THSTensor_device_type(nint tensor);

    [LibraryImport(Lib), SuppressGCTransition]
    private static partial int THSTensor_device_index(nint tensor);

    // Declared as byte: LibTorchSharp 0.107 returns a C++ bool (only the low byte is defined).
    [LibraryImport(Lib), SuppressGCTransition]
    private static partial byte THSTensor_is_contiguous(nint tensor);

    [LibraryImport(Lib), SuppressGCTransition]
    private static partial byte THSTensor_is_sparse(nint tensor);

    // These two allocate and free on the native heap, so they keep the GC transition: a thread in
    // cooperative mode that the runtime interrupts inside malloc deadlocks on the heap lock (seen).
    [LibraryImport(Lib)]
    private static partial nint THSTensor_grad(nint tensor);

    [LibraryImport(Lib)]
    private static partial void THSTensor_dispose(nint tensor);

    /// <summary>Address of the first element of the tensor behind <paramref name="tensorHandle"/>.</summary>
    public static nint DataPointer(nint tensorHandle) => THSTensor_data(tensorHandle);

    /// <summary>
    /// Reads the metadata of a live tensor. <see cref="TensorInfo.Data"/> is read only for dense CPU and
    /// CUDA tensors (0 otherwise): for others LibTorch's data_ptr() throws, and LibTorchSharp would keep
    /// that error for TorchSharp's next call to report.
    /// </summary>
    public static TensorInfo Describe(nint tensorHandle)
    {
        bool sparse = THSTensor_is_sparse(tensorHandle) != 0;
        int deviceType = THSTensor_device_type(tensorHandle);
        bool dense = !sparse && (deviceType == CpuDeviceType || deviceType == CudaDeviceType);
        return new TensorInfo(
            dense ? THSTensor_data(tensorHandle) : 0,
            THSTensor_numel(tensorHandle),
            THSTensor_type(tensorHandle),
            deviceType,
            THSTensor_device_index(tensorHandle),
            !sparse && THSTensor_is_contiguous(tensorHandle) != 0,
            sparse);
    }

    /// <summary>c10::DeviceType::CPU.</summary>
    public const int CpuDeviceType = 0;

    /// <summary>c10::DeviceType::CUDA.</summary>
    public const int CudaDeviceType = 1;

    /// <summary>
    /// A new handle to the gradient of the tensor behind <paramref name="tensorHandle"/>, or 0 when it
    /// has none. The caller owns the handle and must pass it to <see cref="ReleaseHandle"/>.
    /// </summary>
    public static nint GradientHandle(nint tensorHandle) => THSTensor_grad(tensorHandle);

    /// <summary>Releases a handle obtained from <see cref="GradientHandle"/> (the tensor itself lives on).</summary>
    public static void ReleaseHandle(nint handle)
    {
        if (handle != 0)
        {
            THSTensor_dispose(handle);
        }
    }
}
