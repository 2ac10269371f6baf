using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// The checks every fused optimizer makes before it touches memory: each tensor must be dense,
/// contiguous, float32 or float64 (float16 and bfloat16 too for the optimizers that take them, with
/// float32 state), on the CPU or a CUDA device, and every tensor of one optimizer must share one dtype
/// and one device. Messages name the optimizer, the param group and the parameter.
/// </summary>
internal struct TensorChecks
{
    private readonly string _optimizer;
    private readonly bool _lowPrecision;
    private TensorInfo _first;
    private bool _any;

    /// <param name="optimizer">The optimizer's name in messages.</param>
    /// <param name="lowPrecision">Whether float16 and bfloat16 parameters are accepted.</param>
    public TensorChecks(string optimizer, bool lowPrecision = false)
    {
        _optimizer = optimizer;
        _lowPrecision = lowPrecision;
        _first = default;
        _any = false;
    }

    public readonly NativeDType DType => (ScalarType)_first.ScalarType switch
    {
        ScalarType.Float64 => NativeDType.Float64,
        ScalarType.Float16 => NativeDType.Float16,
        ScalarType.BFloat16 => NativeDType.BFloat16,
        _ => NativeDType.Float32,
    };

    /// <summary>Whether the parameters are float16 or bfloat16.</summary>
    public readonly bool LowPrecision => IsLowPrecision((ScalarType)_first.ScalarType);

    /// <summary>Whether a dtype is one of the 16-bit floating types.</summary>
    public static bool IsLowPrecision(ScalarType dtype) => dtype is ScalarType.Float16 or ScalarType.BFloat16;

    /// <summary>The dtype of the optimizer state of a parameter of this dtype: float32 for 16-bit parameters, else the parameter's.</summary>
    public static ScalarType StateType(ScalarType parameter) => IsLowPrecision(parameter) ? ScalarType.Float32 : parameter;

    public readonly NativeDevice Device => _first.DeviceType == TorchSharpNative.CudaDeviceType ? NativeDevice.Cuda : NativeDevice.Cpu;

    public readonly int DeviceIndex => _first.DeviceIndex < 0 ? 0 : _first.DeviceIndex;

    /// <summary>True until the first parameter has been checked.</summary>
    public readonly bool Empty => !_any;

    /// <summary>
    /// The dtype of a step without tensors (a shard that owns none, which still takes part in the sums
    /// across ranks): the dtype the other ranks' tensors have, so that every rank rounds alike. CPU.
    /// </summary>
    public void AssumeForEmptyStep(ScalarType dtype)
    {
        if (!_any)
        {
            _first = new TensorInfo(0, 0, (int)dtype, TorchSharpNative.CpuDeviceType, -1, true, false);
        }
    }

    private readonly ArgumentException Fail(int group, int index, string problem) =>
        new($"{_optimizer}: parameter {index} of param group {group} {problem}", "parameters");

    private static string Dtype(in TensorInfo t) => ((ScalarType)t.ScalarType).ToString();

    private static string Where(in TensorInfo t) =>
        t.DeviceType == TorchSharpNative.CpuDeviceType ? "cpu" : $"{((DeviceType)t.DeviceType).ToString().ToLowerInvariant()}:{t.DeviceIndex}";

    private static bool SameDevice(in TensorInfo a, in TensorInfo b) => a.DeviceType == b.DeviceType && a.DeviceIndex == b.DeviceIndex;

    /// <summary>Checks a parameter; the first one fixes the dtype and device of the optimizer.</summary>
    public void CheckParameter(in TensorInfo p, int group, int index)
    {
        var dtype = (ScalarType)p.ScalarType;
        if (dtype != ScalarType.Float32 && dtype != ScalarType.Float64 && !(_lowPrecision && IsLowPrecision(dtype)))
        {
            throw Fail(group, index, _lowPrecision
                ? $"has dtype {dtype}; only Float32, Float64, Float16 and BFloat16 parameters are supported."
                : $"has dtype {dtype}; only Float32 and Float64 parameters are supported.");
        }
        if (p.Sparse)
        {
            throw Fail(group, index, "is sparse; only dense tensors are supported.");
        }
        if (p.DeviceType != TorchSharpNative.CpuDeviceType && p.DeviceType != TorchSharpNative.CudaDeviceType)
        {
            throw Fail(group, index, $"is on device {Where(p)}; only CPU and CUDA tensors are supported.");
        }
        if (!_any)
        {
            _first = p;
            _any = true;
        }
        else
        {
            if (p.ScalarType != _first.ScalarType)
            {
                throw Fail(group, index, $"has dtype {dtype} but the optimizer's other parameters have {Dtype(_first)}; " +
                    "all parameters of one optimizer must share one dtype (use one optimizer per dtype).");
            }
            if (!SameDevice(p, _first))
            {
                throw Fail(group, index, $"is on {Where(p)} but the optimizer's other parameters are on {Where(_first)}; " +
                    "all parameters of one optimizer must be on one device.");
            }
        }
        if (!p.Contiguous)
        {
            throw Fail(group, index, "is not contiguous; the fused optimizers update contiguous parameters only (make the weight contiguous before creating the optimizer).");
        }
    }

    /// <summary>Fails for a parameter disposed since it was given to the optimizer (its handle is gone).</summary>
    public readonly void CheckAlive(TorchSharp.Modules.Parameter p, int group, int index)
    {
        if (p.IsInvalid)
        {
            throw new ObjectDisposedException(nameof(TorchSharp.Modules.Parameter),
                $"{_optimizer}: parameter {index} of param group {group} has been disposed; remove it from the optimizer or keep it alive.");
        }
    }

    /// <summary>
    /// Checks the parameters of a param group being added: not null or disposed, supported tensors of one
    /// dtype and device (the optimizer's other parameters' when it has any: <paramref name="existing"/>),
    /// and none already optimized (by an earlier group or twice in this one).
    /// </summary>
    public static void CheckNewGroup(string optimizer, IList<TorchSharp.Modules.Parameter> parameters, int group, Func<IntPtr, bool> alreadyOptimized,
        TorchSharp.Modules.Parameter? existing, bool lowPrecision = false)
    {
        var checks = new TensorChecks(optimizer, lowPrecision);
        if (existing is not null && !existing.IsInvalid)
        {
            checks._first = TorchSharpNative.Describe(existing.Handle);
            checks._any = true;
        }
        var seen = new HashSet<IntPtr>();
        for (int i = 0; i < parameters.Count; i++)
        {
            var p = parameters[i];
            if (p is null || p.IsInvalid)
            {
                throw new ArgumentException($"{optimizer}: parameter {i} of param group {group} is null or disposed.", "param_group");
            }
            checks.CheckParameter(TorchSharpNative.Describe(p.Handle), group, i);
            if (alreadyOptimized(p.Handle) || !seen.Add(p.Handle))
            {
                throw new ArgumentException($"{optimizer}: parameter {i} of param group {group} appears in more than one param group.", "param_group");
            }
        }
    }

    /// <summary>Checks a gradient against its (already checked) parameter.</summary>
    public readonly void CheckGradient(in TensorInfo grad, in TensorInfo p, int group, int index)
    {
        if (grad.Sparse)
        {
            throw Fail(group, index, "has a sparse gradient; only dense gradients are supported.");
        }
        if (grad.ScalarType != p.ScalarType)
        {
            throw Fail(group, index, $"has a gradient of dtype {Dtype(grad)} but is {Dtype(p)}; they must match.");
        }
        if (!SameDevice(grad, p))
        {
            throw Fail(group, index, $"has its gradient on {Where(grad)} but is on {Where(p)}.");
        }
        if (grad.Numel != p.Numel)
        {
            throw Fail(group, index, $"has {p.Numel} elements but its gradient has {grad.Numel}.");
        }
        if (!grad.Contiguous)
        {
            throw Fail(group, index, "has a non-contiguous gradient; only contiguous gradients are supported.");
        }
    }

    /// <summary>Checks an optimizer state tensor (for example a momentum buffer) against its parameter: the parameter's dtype (float32 for a 16-bit parameter), device and size.</summary>
    public readonly void CheckState(in TensorInfo state, in TensorInfo p, int group, int index, string name)
    {
        if (state.ScalarType != (int)StateType((ScalarType)p.ScalarType) || !SameDevice(state, p) || state.Numel != p.Numel || !state.Contiguous || state.Sparse)
        {
            throw Fail(group, index, $"has a {name} ({Dtype(state)}, {Where(state)}, {state.Numel} elements" +
                $"{(state.Contiguous ? "" : ", non-contiguous")}) that does not match it ({Dtype(p)}, {Where(p)}, {p.Numel} elements).");
        }
    }
}
