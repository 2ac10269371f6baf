using System.Runtime.InteropServices;

namespace Optim.Interop;

/// <summary>
/// The one LibTorchSharp export the optimizers need that TorchSharp does not make public: the address
/// of a tensor's first element (storage offset included; a device address for CUDA tensors; null for an
/// empty tensor). LibTorchSharp is already loaded by TorchSharp; the default resolution finds it.
/// </summary>
public static partial class TorchSharpNative
{
    [LibraryImport("LibTorchSharp")]
    [SuppressGCTransition] // a field read on the native side (about 5 ns)
    private static partial nint THSTensor_data(nint tensorHandle);

    /// <summary>Address of the first element of the tensor behind <paramref name="tensorHandle"/> (<c>Tensor.Handle</c>).</summary>
    public static nint DataPointer(nint tensorHandle) => THSTensor_data(tensorHandle);
}
