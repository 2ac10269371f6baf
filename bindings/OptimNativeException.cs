namespace Optim.Interop;

/// <summary>The status codes of <c>optim.h</c>.</summary>
public enum NativeStatus
{
    /// <summary>Success.</summary>
    Ok = 0,
    /// <summary>A null pointer, bad count or invalid hyperparameter.</summary>
    InvalidArgument = 1,
    /// <summary>A dtype or device this build cannot handle.</summary>
    Unsupported = 2,
    /// <summary>Built without CUDA, or no CUDA device present.</summary>
    CudaUnavailable = 3,
    /// <summary>The CUDA runtime reported an error.</summary>
    CudaError = 4,
    /// <summary>Out of host memory.</summary>
    OutOfMemory = 5,
    /// <summary>A bug in the native library.</summary>
    Internal = 6,
    /// <summary>MPI reported an error (a peer died, a network failure, ...).</summary>
    MpiError = 7,
}

/// <summary>
/// A failure of the native library that is not a caller's mistake: a CUDA runtime error or an internal
/// error, or an MPI error. Invalid arguments surface as <see cref="ArgumentException"/>, unsupported dtypes and missing
/// CUDA support as <see cref="NotSupportedException"/>.
/// </summary>
public sealed class OptimNativeException : Exception
{
    /// <summary>Creates the exception.</summary>
    public OptimNativeException(NativeStatus status, string message) : base(message) => Status = status;

    /// <summary>The native status code.</summary>
    public NativeStatus Status { get; }
}
