using System.Runtime.InteropServices;

namespace Optim.Interop;

/// <summary>Where the data of a tensor list lives.</summary>
internal enum NativeDevice
{
    /// <summary>Host memory, updated by the CPU path.</summary>
    Cpu = 0,
    /// <summary>CUDA device memory, updated by the CUDA kernels.</summary>
    Cuda = 1,
}

/// <summary>Element types the native core computes in.</summary>
internal enum NativeDType
{
    /// <summary>IEEE float32.</summary>
    Float32 = 0,
    /// <summary>IEEE float64.</summary>
    Float64 = 1,
    /// <summary>IEEE binary16 parameters and gradients (float32 math and state).</summary>
    Float16 = 2,
    /// <summary>bfloat16 parameters and gradients (float32 math and state).</summary>
    BFloat16 = 3,
}

/// <summary>
/// The mixed-precision options of one step (<c>optim_precision</c>): float32 master copies of 16-bit
/// parameters, or stochastic rounding of bfloat16 parameters updated in place, with its seed and step.
/// <see cref="Plain"/> (no master weights, rounding to nearest) takes the plain entry points.
/// </summary>
internal readonly record struct MixedPrecision(bool StochasticRounding, long Seed, long Step)
{
    /// <summary>In place, rounded to nearest (the plain entry points).</summary>
    public static MixedPrecision Plain => default;
}

/// <summary>Hyperparameters of one fused SGD step (PyTorch's meaning; see <c>optim_sgd_params</c>).</summary>
internal readonly record struct SgdHyperparameters(
    double Lr, double Momentum = 0, double Dampening = 0, double WeightDecay = 0, bool Nesterov = false, bool Maximize = false);

/// <summary>The hyperparameters of one param group of a fused SGD step: the mirror of <c>optim_sgd_params</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SgdGroupParams
{
    /// <summary>Learning rate (used when <see cref="LrPointer"/> is 0).</summary>
    public double Lr;
    /// <summary>Momentum factor.</summary>
    public double Momentum;
    /// <summary>Dampening for momentum.</summary>
    public double Dampening;
    /// <summary>Weight decay (coupled L2).</summary>
    public double WeightDecay;
    /// <summary>1 for Nesterov momentum.</summary>
    public int Nesterov;
    /// <summary>1 to maximize.</summary>
    public int Maximize;
    /// <summary>Optional address of a double holding the rate, in the memory of the device that runs the step.</summary>
    public nint LrPointer;

    /// <summary>The native form of <paramref name="hyper"/>, reading the rate from <paramref name="lrPointer"/> when it is not 0.</summary>
    public static SgdGroupParams From(in SgdHyperparameters hyper, nint lrPointer = 0) => new()
    {
        Lr = hyper.Lr,
        Momentum = hyper.Momentum,
        Dampening = hyper.Dampening,
        WeightDecay = hyper.WeightDecay,
        Nesterov = hyper.Nesterov ? 1 : 0,
        Maximize = hyper.Maximize ? 1 : 0,
        LrPointer = lrPointer,
    };
}

/// <summary>The hyperparameters of one param group of a fused Adam/AdamW step: the mirror of <c>optim_adam_params</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AdamGroupParams
{
    /// <summary>Learning rate.</summary>
    public double Lr;
    /// <summary>Coefficient of the running average of the gradient.</summary>
    public double Beta1;
    /// <summary>Coefficient of the running average of the squared gradient.</summary>
    public double Beta2;
    /// <summary>Term added to the denominator.</summary>
    public double Eps;
    /// <summary>Weight decay (coupled L2 for Adam, decoupled for AdamW).</summary>
    public double WeightDecay;
    /// <summary>1 for AMSGrad.</summary>
    public int Amsgrad;
    /// <summary>1 to maximize.</summary>
    public int Maximize;
    /// <summary>1 for AdamW's decoupled weight decay, 0 for Adam's coupled L2.</summary>
    public int Decoupled;
}

/// <summary>
/// The managed face of the native core: loads the library, checks its ABI version once, and turns every
/// failing status into an exception carrying the native message. Arguments are raw data pointers; the
/// TorchSharp optimizers in the <c>Optim</c> assembly gather them from tensors.
/// </summary>
internal static unsafe class OptimNative
{
    /// <summary>The <c>OPTIM_ABI_VERSION</c> these bindings were written for.</summary>
    public const int ExpectedAbiVersion = 9;

    private static volatile bool s_checked;
    private static readonly object s_lock = new();

    /// <summary>
    /// Checks the loaded TorchSharp's version (<see cref="TorchSharpVersionCheck"/>), loads the native library
    /// and checks its ABI version (once; later calls are free). Every optimizer and scheduler calls it on
    /// construction, before any LibTorchSharp export is called.
    /// </summary>
    /// <exception cref="DllNotFoundException">The library could not be found; the message lists where it was looked for.</exception>
    /// <exception cref="InvalidOperationException">TorchSharp is not the version the bindings were written for, or
    /// the library's ABI version differs from <see cref="ExpectedAbiVersion"/>.</exception>
    public static void EnsureLoaded()
    {
        if (!s_checked)
        {
            CheckOnce();
        }
    }

    private static void CheckOnce()
    {
        lock (s_lock)
        {
            if (s_checked)
            {
                return;
            }
            TorchSharpVersionCheck.CheckLoaded();
            int version;
            try
            {
                version = NativeMethods.optim_abi_version();
            }
            catch (DllNotFoundException e)
            {
                throw new DllNotFoundException(
                    "Optim: the native library libOptim.Native could not be loaded. Looked for: " +
                    string.Join(", ", NativeLibraryResolver.CandidatePaths()) + ", then the system's default search. " +
                    "Build the repository with `dotnet build` (it runs CMake), or set OPTIM_NATIVE_LIBRARY to the library's path. " +
                    "Loader message: " + e.Message, e);
            }
            if (version != ExpectedAbiVersion)
            {
                throw new InvalidOperationException(
                    $"Optim: the native library at '{NativeLibraryResolver.LoadedFrom ?? "(default search)"}' has ABI version {version}, " +
                    $"but these bindings need version {ExpectedAbiVersion}. Rebuild the native library from the same sources as the bindings.");
            }
            s_checked = true;
        }
    }

    /// <summary>The path the native library was loaded from (null if found by the system's default search).</summary>
    public static string? LibraryPath
    {
        get
        {
            EnsureLoaded();
            return NativeLibraryResolver.LoadedFrom;
        }
    }

    /// <summary>Version and build description of the native library, e.g. "optim 0.2.0 (cpu, cuda: sm_70 sm_80 sm_90)".</summary>
    public static string BuildInfo
    {
        get
        {
            EnsureLoaded();
            return Marshal.PtrToStringUTF8((nint)NativeMethods.optim_build_info()) ?? "";
        }
    }

    /// <summary>Whether the native library was built with its CUDA kernels.</summary>
    public static bool CudaCompiled
    {
        get
        {
            EnsureLoaded();
            return NativeMethods.optim_cuda_compiled() != 0;
        }
    }

    /// <summary>Usable CUDA devices (0 without CUDA support or without a device).</summary>
    public static int CudaDeviceCount
    {
        get
        {
            EnsureLoaded();
            int n;
            ThrowIfFailed(NativeMethods.optim_cuda_device_count(&n));
            return n;
        }
    }

    /// <summary>
    /// Sets the calling thread's CUDA stream for a device (<c>optim_cuda_set_stream</c>): every CUDA step
    /// this thread makes on that device launches its kernels on <paramref name="stream"/> (a
    /// <c>cudaStream_t</c> of that device; 0 is the legacy default stream, the initial setting).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="deviceIndex"/> is outside [0, 64).</exception>
    public static void SetCudaStream(int deviceIndex, nint stream)
    {
        EnsureLoaded();
        ThrowIfFailed(NativeMethods.optim_cuda_set_stream(deviceIndex, stream));
    }

    /// <summary>The calling thread's CUDA stream for a device (0: the legacy default stream).</summary>
    /// <exception cref="ArgumentException"><paramref name="deviceIndex"/> is outside [0, 64).</exception>
    public static nint GetCudaStream(int deviceIndex)
    {
        EnsureLoaded();
        nint stream;
        ThrowIfFailed(NativeMethods.optim_cuda_get_stream(deviceIndex, &stream));
        return stream;
    }

    /// <summary>
    /// LibTorch's current CUDA stream for a device on the calling thread (<c>optim_torch_cuda_stream</c>).
    /// False, with <paramref name="stream"/> 0, when LibTorch's CUDA library is not loaded in the process
    /// (TorchSharp-cpu) or does not export what the look-up needs.
    /// </summary>
    public static bool TryGetTorchCudaStream(int deviceIndex, out nint stream)
    {
        EnsureLoaded();
        nint found = 0;
        int status = NativeMethods.optim_torch_cuda_stream(deviceIndex, &found);
        stream = found;
        if (status == (int)NativeStatus.Unsupported)
        {
            return false;
        }
        ThrowIfFailed(status);
        return true;
    }

    /// <summary>
    /// Makes the calling thread's CUDA stream for a device LibTorch's current one (the legacy default
    /// stream when LibTorch's CUDA library is not found), so the steps that follow are ordered with the
    /// caller's LibTorch work on that device. The optimizers call it before each CUDA step.
    /// </summary>
    public static void FollowTorchCudaStream(int deviceIndex)
    {
        TryGetTorchCudaStream(deviceIndex, out nint stream);
        SetCudaStream(deviceIndex, stream);
    }

    /// <summary>
    /// Threads of the CPU path (the caller counts as one). Setting 0 restores the default
    /// (<c>OPTIM_NUM_THREADS</c>, else the CPUs this process may use). Results never depend on it.
    /// </summary>
    public static int NumThreads
    {
        get
        {
            EnsureLoaded();
            return NativeMethods.optim_get_num_threads();
        }
        set
        {
            EnsureLoaded();
            ThrowIfFailed(NativeMethods.optim_set_num_threads(value));
        }
    }

    /// <summary>
    /// Which threads run the CPU path: "openmp team of &lt;path&gt;" when LibTorch's OpenMP runtime was
    /// loaded at the first parallel step (its team is shared), else "optim worker pool".
    /// </summary>
    public static string ThreadingInfo
    {
        get
        {
            EnsureLoaded();
            return Marshal.PtrToStringUTF8((nint)NativeMethods.optim_threading_info()) ?? "";
        }
    }

    /// <summary>
    /// One fused SGD step over many tensors of one param group (see <c>optim_sgd_step</c> in <c>optim.h</c>).
    /// All spans have one entry per tensor, except <paramref name="momentumBuffers"/>, which is empty when
    /// momentum is 0, and <paramref name="bufferFresh"/>, which may be empty (no buffer is fresh). On a
    /// failed check nothing was written.
    /// </summary>
    /// <param name="device">Where the data lives.</param>
    /// <param name="deviceIndex">CUDA device ordinal; ignored for the CPU.</param>
    /// <param name="dtype">Element type of every tensor.</param>
    /// <param name="parameters">Parameter data pointers (updated in place).</param>
    /// <param name="gradients">Gradient data pointers.</param>
    /// <param name="momentumBuffers">Momentum buffer data pointers (updated in place).</param>
    /// <param name="numels">Element count of each tensor.</param>
    /// <param name="bufferFresh">Nonzero where a momentum buffer has no history yet.</param>
    /// <param name="hyper">The hyperparameters.</param>
    /// <param name="lrPointer">Optional: address of a double holding the rate, in the memory of the device
    /// that runs the step; overrides <see cref="SgdHyperparameters.Lr"/>.</param>
    public static void SgdStep(NativeDevice device, int deviceIndex, NativeDType dtype,
        ReadOnlySpan<nint> parameters, ReadOnlySpan<nint> gradients, ReadOnlySpan<nint> momentumBuffers,
        ReadOnlySpan<long> numels, ReadOnlySpan<byte> bufferFresh, in SgdHyperparameters hyper, nint lrPointer = 0)
    {
        var group = SgdGroupParams.From(hyper, lrPointer);
        SgdStep(device, deviceIndex, dtype, parameters, gradients, momentumBuffers, numels, bufferFresh, default,
            new ReadOnlySpan<SgdGroupParams>(in group));
    }

    /// <summary>
    /// One fused SGD step over the tensors of several param groups in one call: every group and every
    /// tensor is checked before anything is written. Spans as in the one-group overload, plus
    /// <paramref name="groupIndex"/> (each tensor's group, non-decreasing; empty when there is one group).
    /// With <paramref name="totalNorm"/> not 0 the gradients are clipped to global norm
    /// <paramref name="maxNorm"/> inside the step (<c>optim_grad_clip</c>) and the norm is written to
    /// <paramref name="totalNorm"/>, a double in the memory of the device that runs the step. With
    /// <paramref name="acrossRanks"/> the tensors are this rank's shard and the norm is that of every rank's
    /// tensors (a collective: every rank calls, with or without tensors; CPU only). With
    /// <paramref name="invScale"/> not 0 the step applies a gradient scaler (<c>optim_grad_scale</c>):
    /// <paramref name="invScale"/> and <paramref name="foundInf"/> are float32 scalars in that same memory;
    /// the step multiplies each gradient element by the inverse scale and is skipped whole (nothing
    /// written but the flag, set to 1) when a gradient element is not finite or the flag is nonzero.
    /// </summary>
    public static void SgdStep(NativeDevice device, int deviceIndex, NativeDType dtype,
        ReadOnlySpan<nint> parameters, ReadOnlySpan<nint> gradients, ReadOnlySpan<nint> momentumBuffers,
        ReadOnlySpan<long> numels, ReadOnlySpan<byte> bufferFresh, ReadOnlySpan<int> groupIndex, ReadOnlySpan<SgdGroupParams> groups,
        double maxNorm = 0, nint totalNorm = 0, nint invScale = 0, nint foundInf = 0, bool acrossRanks = false,
        ReadOnlySpan<nint> masterParams = default, MixedPrecision precision = default)
    {
        EnsureLoaded();
        int n = parameters.Length;
        if (gradients.Length != n || numels.Length != n)
        {
            throw new ArgumentException($"SgdStep: {n} parameters but {gradients.Length} gradients and {numels.Length} element counts.");
        }
        if (momentumBuffers.Length != 0 && momentumBuffers.Length != n)
        {
            throw new ArgumentException($"SgdStep: {n} parameters but {momentumBuffers.Length} momentum buffers.", nameof(momentumBuffers));
        }
        if (bufferFresh.Length != 0 && bufferFresh.Length != n)
        {
            throw new ArgumentException($"SgdStep: {n} parameters but {bufferFresh.Length} fresh flags.", nameof(bufferFresh));
        }
        if (groupIndex.Length != 0 && groupIndex.Length != n)
        {
            throw new ArgumentException($"SgdStep: {n} parameters but {groupIndex.Length} group indices.", nameof(groupIndex));
        }
        fixed (nint* p = parameters)
        fixed (nint* g = gradients)
        fixed (nint* b = momentumBuffers)
        fixed (long* ne = numels)
        fixed (byte* f = bufferFresh)
        fixed (int* gi = groupIndex)
        fixed (SgdGroupParams* sp = groups)
        {
            var list = new TensorList
            {
                Count = n,
                Params = p,
                Grads = g,
                MomentumBuffers = momentumBuffers.Length == 0 ? null : b,
                Numels = ne,
                BufferFresh = bufferFresh.Length == 0 ? null : f,
                GroupIndex = groupIndex.Length == 0 ? null : gi,
            };
            var clip = new GradClip { MaxNorm = maxNorm, TotalNorm = (double*)totalNorm, AcrossRanks = acrossRanks ? 1 : 0 };
            var scale = new GradScale { InvScale = (float*)invScale, FoundInf = (float*)foundInf };
            if (masterParams.Length != 0 || precision.StochasticRounding)
            {
                fixed (nint* mp = masterParams)
                {
                    var options = Precision(masterParams, mp, n, precision);
                    ThrowIfFailed(invScale != 0
                        ? NativeMethods.optim_sgd_step_mixed_scaled((int)device, deviceIndex, (int)dtype, &list, groups.Length, sp,
                            totalNorm == 0 ? null : &clip, &scale, &options)
                        : NativeMethods.optim_sgd_step_mixed((int)device, deviceIndex, (int)dtype, &list, groups.Length, sp,
                            totalNorm == 0 ? null : &clip, &options));
                }
                return;
            }
            ThrowIfFailed(invScale != 0
                ? NativeMethods.optim_sgd_step_scaled((int)device, deviceIndex, (int)dtype, &list, groups.Length, sp, totalNorm == 0 ? null : &clip, &scale)
                : totalNorm == 0
                ? NativeMethods.optim_sgd_step((int)device, deviceIndex, (int)dtype, &list, groups.Length, sp)
                : NativeMethods.optim_sgd_step_clipped((int)device, deviceIndex, (int)dtype, &list, groups.Length, sp, &clip));
        }
    }

    /// <summary>
    /// One fused Adam/AdamW step over the tensors of several param groups in one call (see
    /// <c>optim_adam_step</c> in <c>optim.h</c>): every group and every tensor is checked before anything is
    /// written. Every per-tensor span has one entry per tensor, except <paramref name="maxExpAvgSqs"/>, which
    /// is empty when no group uses AMSGrad, and <paramref name="groupIndex"/>, which is empty for one group.
    /// <paramref name="steps"/> holds each tensor's step number after this update (≥ 1); or, with
    /// <paramref name="stepCounts"/> (then <paramref name="steps"/> is empty), each tensor's count of steps taken
    /// so far is an int64 at that address in the step's memory, read and advanced by the step itself (not on a
    /// step the scaler skips): <c>step_counts</c>, which a CUDA step reads on the device. Clipping with
    /// <paramref name="maxNorm"/> and <paramref name="totalNorm"/>, scaling with <paramref name="invScale"/>
    /// and <paramref name="foundInf"/> as in <see cref="SgdStep(NativeDevice, int, NativeDType, ReadOnlySpan{nint}, ReadOnlySpan{nint}, ReadOnlySpan{nint}, ReadOnlySpan{long}, ReadOnlySpan{byte}, ReadOnlySpan{int}, ReadOnlySpan{SgdGroupParams}, double, nint, nint, nint, bool, ReadOnlySpan{nint}, MixedPrecision)"/>.
    /// </summary>
    public static void AdamStep(NativeDevice device, int deviceIndex, NativeDType dtype,
        ReadOnlySpan<nint> parameters, ReadOnlySpan<nint> gradients, ReadOnlySpan<nint> expAvgs, ReadOnlySpan<nint> expAvgSqs,
        ReadOnlySpan<nint> maxExpAvgSqs, ReadOnlySpan<long> numels, ReadOnlySpan<long> steps, ReadOnlySpan<int> groupIndex,
        ReadOnlySpan<AdamGroupParams> groups, double maxNorm = 0, nint totalNorm = 0, nint invScale = 0, nint foundInf = 0, bool acrossRanks = false,
        ReadOnlySpan<nint> masterParams = default, MixedPrecision precision = default, ReadOnlySpan<nint> stepCounts = default)
    {
        EnsureLoaded();
        int n = parameters.Length;
        bool counted = stepCounts.Length != 0;
        if (gradients.Length != n || expAvgs.Length != n || expAvgSqs.Length != n || numels.Length != n ||
            (counted ? stepCounts.Length != n || steps.Length != 0 : steps.Length != n) ||
            (maxExpAvgSqs.Length != 0 && maxExpAvgSqs.Length != n) || (groupIndex.Length != 0 && groupIndex.Length != n))
        {
            throw new ArgumentException($"AdamStep: every per-tensor span must have {n} entries (the max_exp_avg_sq and group spans may be empty; " +
                "one of steps and stepCounts is empty).");
        }
        fixed (nint* p = parameters)
        fixed (nint* g = gradients)
        fixed (nint* m = expAvgs)
        fixed (nint* v = expAvgSqs)
        fixed (nint* w = maxExpAvgSqs)
        fixed (long* ne = numels)
        fixed (long* st = steps)
        fixed (nint* sc = stepCounts)
        fixed (int* gi = groupIndex)
        fixed (AdamGroupParams* ap = groups)
        {
            var list = new AdamTensors
            {
                Count = n,
                Params = p,
                Grads = g,
                ExpAvgs = m,
                ExpAvgSqs = v,
                MaxExpAvgSqs = maxExpAvgSqs.Length == 0 ? null : w,
                Numels = ne,
                Steps = counted ? null : st,
                GroupIndex = groupIndex.Length == 0 ? null : gi,
                StepCounts = counted ? sc : null,
            };
            var clip = new GradClip { MaxNorm = maxNorm, TotalNorm = (double*)totalNorm, AcrossRanks = acrossRanks ? 1 : 0 };
            var scale = new GradScale { InvScale = (float*)invScale, FoundInf = (float*)foundInf };
            if (masterParams.Length != 0 || precision.StochasticRounding)
            {
                fixed (nint* mp = masterParams)
                {
                    var options = Precision(masterParams, mp, n, precision);
                    ThrowIfFailed(invScale != 0
                        ? NativeMethods.optim_adam_step_mixed_scaled((int)device, deviceIndex, (int)dtype, &list, groups.Length, ap,
                            totalNorm == 0 ? null : &clip, &scale, &options)
                        : NativeMethods.optim_adam_step_mixed((int)device, deviceIndex, (int)dtype, &list, groups.Length, ap,
                            totalNorm == 0 ? null : &clip, &options));
                }
                return;
            }
            ThrowIfFailed(invScale != 0
                ? NativeMethods.optim_adam_step_scaled((int)device, deviceIndex, (int)dtype, &list, groups.Length, ap, totalNorm == 0 ? null : &clip, &scale)
                : totalNorm == 0
                ? NativeMethods.optim_adam_step((int)device, deviceIndex, (int)dtype, &list, groups.Length, ap)
                : NativeMethods.optim_adam_step_clipped((int)device, deviceIndex, (int)dtype, &list, groups.Length, ap, &clip));
        }
    }

    // The optim_precision of a _mixed step: master weights (one per tensor, or none) and the rounding.
    private static PrecisionOptions Precision(ReadOnlySpan<nint> masterParams, nint* pointers, int n, in MixedPrecision precision)
    {
        if (masterParams.Length != 0 && masterParams.Length != n)
        {
            throw new ArgumentException($"{n} parameters but {masterParams.Length} master weights.", nameof(masterParams));
        }
        return new PrecisionOptions
        {
            MasterParams = masterParams.Length == 0 ? null : pointers,
            Seed = precision.Seed,
            Step = precision.Step,
            Rounding = precision.StochasticRounding ? 1 : 0,
        };
    }

    /// <summary>What one pass of the stochastic line search does (<c>optim_sls_save</c>, <c>_trial</c>, <c>_restore</c>).</summary>
    public enum SlsPass
    {
        /// <summary>origins = parameters.</summary>
        Save,
        /// <summary>parameters = origins − step size · gradients.</summary>
        Trial,
        /// <summary>parameters = origins.</summary>
        Restore,
    }

    /// <summary>
    /// One pass of the stochastic line search over many tensors, in one native call (see <c>optim_sls_save</c>,
    /// <c>optim_sls_trial</c> and <c>optim_sls_restore</c> in <c>optim.h</c>). Every span has one entry per
    /// tensor (gradients may be empty except for a trial). On failure nothing was written.
    /// </summary>
    public static void SlsStep(SlsPass pass, NativeDevice device, int deviceIndex, NativeDType dtype,
        ReadOnlySpan<nint> parameters, ReadOnlySpan<nint> origins, ReadOnlySpan<nint> gradients, ReadOnlySpan<long> numels, double stepSize)
    {
        EnsureLoaded();
        int n = parameters.Length;
        if (origins.Length != n || numels.Length != n || (gradients.Length != n && (pass == SlsPass.Trial || gradients.Length != 0)))
        {
            throw new ArgumentException($"SlsStep: every per-tensor span must have {n} entries (the gradients may be empty except for a trial).");
        }
        fixed (nint* p = parameters)
        fixed (nint* o = origins)
        fixed (nint* g = gradients)
        fixed (long* ne = numels)
        {
            var list = new SlsTensors { Count = n, Params = p, Origins = o, Grads = gradients.Length == 0 ? null : g, Numels = ne };
            ThrowIfFailed(pass switch
            {
                SlsPass.Save => NativeMethods.optim_sls_save((int)device, deviceIndex, (int)dtype, &list),
                SlsPass.Trial => NativeMethods.optim_sls_trial((int)device, deviceIndex, (int)dtype, &list, stepSize),
                _ => NativeMethods.optim_sls_restore((int)device, deviceIndex, (int)dtype, &list),
            });
        }
    }

    /// <summary>The sum of the squared gradient elements over many tensors, in double and deterministic (<c>optim_sls_grad_norm_sq</c>); waits for a CUDA device.</summary>
    public static double SlsGradNormSquared(NativeDevice device, int deviceIndex, NativeDType dtype, ReadOnlySpan<nint> gradients, ReadOnlySpan<long> numels)
    {
        EnsureLoaded();
        int n = gradients.Length;
        if (numels.Length != n)
        {
            throw new ArgumentException($"SlsGradNormSquared: numels must have {n} entries.");
        }
        fixed (nint* g = gradients)
        fixed (long* ne = numels)
        {
            var list = new SlsTensors { Count = n, Grads = g, Numels = ne };
            double result;
            ThrowIfFailed(NativeMethods.optim_sls_grad_norm_sq((int)device, deviceIndex, (int)dtype, &list, &result));
            return result;
        }
    }

    /// <summary>How many scalar rates a hypergradient step keeps for a scope (<c>optim_hd_rate_count</c>): 1, one per group, one per tensor, or 0 for per-parameter rates.</summary>
    public static int HdRateCount(int scope, int groups, int tensors)
    {
        long n = NativeMethods.optim_hd_rate_count(scope, groups, tensors);
        return n >= 0 ? checked((int)n) : throw new ArgumentException($"HdRateCount: unknown scope {scope} or a negative count.");
    }

    /// <summary>
    /// One hypergradient SGD step over many tensors (see <c>optim_hd_step</c> in <c>optim.h</c>). Every
    /// per-tensor span has one entry per tensor (entries a tensor does not need may be 0); groups are
    /// indexed by <paramref name="groupIndex"/>. <paramref name="rates"/> (scalar scopes) and
    /// <paramref name="skipped"/> are addresses in the memory of the device that runs the step: a host
    /// array of doubles and a host long for the CPU (skipped is set to 1 or 0), device memory for CUDA
    /// (skipped is a counter there). On failure nothing was written. Clipping with <paramref name="maxNorm"/>
    /// and <paramref name="totalNorm"/>, scaling with <paramref name="invScale"/> and <paramref name="foundInf"/>
    /// (a step the scaler skips is not counted in <paramref name="skipped"/>) as in <see cref="SgdStep(NativeDevice, int, NativeDType, ReadOnlySpan{nint}, ReadOnlySpan{nint}, ReadOnlySpan{nint}, ReadOnlySpan{long}, ReadOnlySpan{byte}, ReadOnlySpan{int}, ReadOnlySpan{SgdGroupParams}, double, nint, nint, nint, bool, ReadOnlySpan{nint}, MixedPrecision)"/>.
    /// Master weights (<paramref name="masterParams"/>: one float32 copy per tensor, or empty) and stochastic
    /// rounding (<paramref name="precision"/>) call <c>optim_hd_step_mixed</c>, which has no scaled form: they
    /// may not be combined with <paramref name="invScale"/>.
    /// </summary>
    public static void HdStep(NativeDevice device, int deviceIndex, NativeDType dtype,
        ReadOnlySpan<nint> parameters, ReadOnlySpan<nint> gradients, ReadOnlySpan<nint> momentumBuffers, ReadOnlySpan<nint> prevUpdates,
        ReadOnlySpan<nint> parameterRates, ReadOnlySpan<long> numels, ReadOnlySpan<int> groupIndex, ReadOnlySpan<byte> bufferFresh,
        ReadOnlySpan<HdGroupOptions> groups, HdStepOptions options, nint rates, nint skipped, double maxNorm = 0, nint totalNorm = 0,
        nint invScale = 0, nint foundInf = 0, bool acrossRanks = false,
        ReadOnlySpan<nint> masterParams = default, MixedPrecision precision = default)
    {
        EnsureLoaded();
        int n = parameters.Length;
        if (gradients.Length != n || momentumBuffers.Length != n || prevUpdates.Length != n || parameterRates.Length != n ||
            numels.Length != n || groupIndex.Length != n || bufferFresh.Length != n)
        {
            throw new ArgumentException($"HdStep: every per-tensor span must have {n} entries.");
        }
        options.AcrossRanks = acrossRanks ? 1 : 0;
        HdStepOptions* o = &options;
        fixed (nint* p = parameters)
        fixed (nint* g = gradients)
        fixed (nint* b = momentumBuffers)
        fixed (nint* u = prevUpdates)
        fixed (nint* r = parameterRates)
        fixed (long* ne = numels)
        fixed (int* gi = groupIndex)
        fixed (byte* f = bufferFresh)
        fixed (HdGroupOptions* go = groups)
        {
            var list = new HdTensors
            {
                Count = n,
                Params = p,
                Grads = g,
                MomentumBuffers = b,
                PrevUpdates = u,
                ParamRates = r,
                Numels = ne,
                GroupIndex = gi,
                BufferFresh = f,
            };
            var clip = new GradClip { MaxNorm = maxNorm, TotalNorm = (double*)totalNorm, AcrossRanks = acrossRanks ? 1 : 0 };
            var scale = new GradScale { InvScale = (float*)invScale, FoundInf = (float*)foundInf };
            if (masterParams.Length != 0 || precision.StochasticRounding)
            {
                if (invScale != 0)
                {
                    throw new ArgumentException("HdStep: master weights and stochastic rounding have no scaled step.", nameof(invScale));
                }
                fixed (nint* mp = masterParams)
                {
                    var mixed = Precision(masterParams, mp, n, precision);
                    ThrowIfFailed(NativeMethods.optim_hd_step_mixed((int)device, deviceIndex, (int)dtype, &list, groups.Length, go, o,
                        (double*)rates, (long*)skipped, totalNorm == 0 ? null : &clip, &mixed));
                }
                return;
            }
            ThrowIfFailed(invScale != 0
                ? NativeMethods.optim_hd_step_scaled((int)device, deviceIndex, (int)dtype, &list, groups.Length, go, o, (double*)rates, (long*)skipped,
                    totalNorm == 0 ? null : &clip, &scale)
                : totalNorm == 0
                ? NativeMethods.optim_hd_step((int)device, deviceIndex, (int)dtype, &list, groups.Length, go, o, (double*)rates, (long*)skipped)
                : NativeMethods.optim_hd_step_clipped((int)device, deviceIndex, (int)dtype, &list, groups.Length, go, o, (double*)rates, (long*)skipped,
                    &clip));
        }
    }

    /// <summary>
    /// One hypergradient Adam step over many tensors (see <c>optim_hd_adam_step</c> in <c>optim.h</c>). Every
    /// per-tensor span has one entry per tensor (entries a tensor does not need may be 0; <paramref name="steps"/>
    /// holds each tensor's step number after this update, ≥ 1). Rates, skip report, clipping, master weights and
    /// stochastic rounding as in <see cref="HdStep"/>. On failure nothing was written.
    /// </summary>
    public static void HdAdamStep(NativeDevice device, int deviceIndex, NativeDType dtype,
        ReadOnlySpan<nint> parameters, ReadOnlySpan<nint> gradients, ReadOnlySpan<nint> expAvgs, ReadOnlySpan<nint> expAvgSqs,
        ReadOnlySpan<nint> maxExpAvgSqs, ReadOnlySpan<nint> prevUpdates, ReadOnlySpan<nint> parameterRates, ReadOnlySpan<long> numels,
        ReadOnlySpan<long> steps, ReadOnlySpan<int> groupIndex, ReadOnlySpan<HdAdamGroupOptions> groups, in HdStepOptions options,
        nint rates, nint skipped, double maxNorm = 0, nint totalNorm = 0,
        ReadOnlySpan<nint> masterParams = default, MixedPrecision precision = default)
    {
        EnsureLoaded();
        int n = parameters.Length;
        if (gradients.Length != n || expAvgs.Length != n || expAvgSqs.Length != n || maxExpAvgSqs.Length != n || prevUpdates.Length != n ||
            parameterRates.Length != n || numels.Length != n || steps.Length != n || groupIndex.Length != n)
        {
            throw new ArgumentException($"HdAdamStep: every per-tensor span must have {n} entries.");
        }
        fixed (nint* p = parameters)
        fixed (nint* g = gradients)
        fixed (nint* m = expAvgs)
        fixed (nint* v = expAvgSqs)
        fixed (nint* w = maxExpAvgSqs)
        fixed (nint* u = prevUpdates)
        fixed (nint* r = parameterRates)
        fixed (long* ne = numels)
        fixed (long* st = steps)
        fixed (int* gi = groupIndex)
        fixed (HdAdamGroupOptions* go = groups)
        fixed (HdStepOptions* o = &options)
        {
            var list = new HdAdamTensors
            {
                Count = n,
                Params = p,
                Grads = g,
                ExpAvgs = m,
                ExpAvgSqs = v,
                MaxExpAvgSqs = w,
                PrevUpdates = u,
                ParamRates = r,
                Numels = ne,
                Steps = st,
                GroupIndex = gi,
            };
            var clip = new GradClip { MaxNorm = maxNorm, TotalNorm = (double*)totalNorm };
            if (masterParams.Length != 0 || precision.StochasticRounding)
            {
                fixed (nint* mp = masterParams)
                {
                    var mixed = Precision(masterParams, mp, n, precision);
                    ThrowIfFailed(NativeMethods.optim_hd_adam_step_mixed((int)device, deviceIndex, (int)dtype, &list, groups.Length, go, o,
                        (double*)rates, (long*)skipped, totalNorm == 0 ? null : &clip, &mixed));
                }
                return;
            }
            ThrowIfFailed(totalNorm == 0
                ? NativeMethods.optim_hd_adam_step((int)device, deviceIndex, (int)dtype, &list, groups.Length, go, o, (double*)rates, (long*)skipped)
                : NativeMethods.optim_hd_adam_step_clipped((int)device, deviceIndex, (int)dtype, &list, groups.Length, go, o, (double*)rates,
                    (long*)skipped, &clip));
        }
    }

    /// <summary>
    /// Bumps the autograd version counter of each tensor (LibTorch handles, as <c>Tensor.Handle</c>; 0
    /// entries are skipped), as LibTorch's in-place operations do, so that a graph that saved one of
    /// them before a native step refuses to run backward instead of silently using the new values.
    /// One atomic increment per tensor; no kernel (see <c>optim_torch_bump_versions</c>).
    /// </summary>
    public static void BumpTorchVersions(ReadOnlySpan<nint> tensorHandles)
    {
        EnsureLoaded();
        fixed (nint* t = tensorHandles)
        {
            ThrowIfFailed(NativeMethods.optim_torch_bump_versions(t, tensorHandles.Length));
        }
    }

    /// <summary>
    /// Each tensor's gradient as a borrowed handle (see <c>optim_torch_gradients</c>): the address of the
    /// <c>at::Tensor</c> inside the tensor's autograd record, 0 for a tensor without a gradient (or a 0
    /// entry). Valid until that gradient is replaced or the tensor freed; never disposed. One native call
    /// for every tensor, making no handle. False, with nothing written, when LibTorch's exports are not
    /// found in the process.
    /// </summary>
    public static bool TryBorrowGradients(ReadOnlySpan<nint> tensorHandles, Span<nint> gradients)
    {
        EnsureLoaded();
        if (gradients.Length < tensorHandles.Length)
        {
            throw new ArgumentException("One gradient entry per tensor is needed.", nameof(gradients));
        }
        fixed (nint* t = tensorHandles)
        fixed (nint* g = gradients)
        {
            int status = NativeMethods.optim_torch_gradients(t, tensorHandles.Length, g);
            if (status == (int)NativeStatus.Unsupported)
            {
                return false;
            }
            ThrowIfFailed(status);
        }
        return true;
    }

    /// <summary>
    /// The single place that turns a native status into an exception: <see cref="ArgumentException"/> for
    /// invalid arguments, <see cref="NotSupportedException"/> for unsupported dtypes and missing CUDA,
    /// <see cref="OutOfMemoryException"/>, else <see cref="OptimNativeException"/>. The message is the
    /// native library's own.
    /// </summary>
    internal static void ThrowIfFailed(int status)
    {
        if (status == 0)
        {
            return;
        }
        throw StatusException(status, Marshal.PtrToStringUTF8((nint)NativeMethods.optim_last_error()) ?? "");
    }

    /// <summary>The exception <see cref="ThrowIfFailed"/> throws for a failing status and its message (also
    /// used by the benchmarks' library, which keeps its own last error).</summary>
    internal static Exception StatusException(int status, string message)
    {
        return (NativeStatus)status switch
        {
            NativeStatus.InvalidArgument => new ArgumentException(message),
            NativeStatus.Unsupported => new NotSupportedException(message),
            NativeStatus.CudaUnavailable => new NotSupportedException(message),
            NativeStatus.OutOfMemory => new OutOfMemoryException(message),
            NativeStatus.CudaError => new OptimNativeException(NativeStatus.CudaError, message),
            NativeStatus.MpiError => new OptimNativeException(NativeStatus.MpiError, message),
            _ => new OptimNativeException((NativeStatus)status, $"{message} (status {status})"),
        };
    }
}
