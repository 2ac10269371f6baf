using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// The checks every fused optimizer makes before it touches memory: each tensor must be dense,
/// contiguous, float32 or float64, and every tensor of one optimizer must share one dtype and one
/// device. Messages name the optimizer, the param group and the parameter.
/// </summary>
internal struct TensorChecks
{
    private readonly string _optimizer;
    private ScalarType _dtype;
    private DeviceType _deviceType;
    private int _deviceIndex;
    private bool _first;

    public TensorChecks(string optimizer)
    {
        _optimizer = optimizer;
        _first = true;
        _dtype = default;
        _deviceType = default;
        _deviceIndex = 0;
    }

    public readonly NativeDType DType => _dtype == ScalarType.Float64 ? NativeDType.Float64 : NativeDType.Float32;

    public readonly NativeDevice Device => _deviceType == DeviceType.CUDA ? NativeDevice.Cuda : NativeDevice.Cpu;

    public readonly int DeviceIndex => _deviceIndex < 0 ? 0 : _deviceIndex;

    public readonly bool Empty => _first;

    private readonly ArgumentException Fail(int group, int index, string problem) =>
        new($"{_optimizer}: parameter {index} of param group {group} {problem}", "parameters");

    private static string Describe(DeviceType type, int index) => type == DeviceType.CPU ? "cpu" : $"{type.ToString().ToLowerInvariant()}:{index}";

    /// <summary>Checks a parameter tensor; the first one fixes the dtype and device of the optimizer.</summary>
    public void CheckParameter(Tensor p, int group, int index)
    {
        if (p is null)
        {
            throw Fail(group, index, "is null.");
        }
        if (p.IsInvalid)
        {
            throw Fail(group, index, "has been disposed.");
        }
        var dtype = p.dtype;
        if (dtype != ScalarType.Float32 && dtype != ScalarType.Float64)
        {
            throw Fail(group, index, $"has dtype {dtype}; only Float32 and Float64 parameters are supported.");
        }
        if (p.is_sparse)
        {
            throw Fail(group, index, "is sparse; only dense tensors are supported.");
        }
        var deviceType = p.device_type;
        int deviceIndex = p.device_index;
        if (deviceType != DeviceType.CPU && deviceType != DeviceType.CUDA)
        {
            throw Fail(group, index, $"is on device {Describe(deviceType, deviceIndex)}; only CPU and CUDA tensors are supported.");
        }
        if (_first)
        {
            _dtype = dtype;
            _deviceType = deviceType;
            _deviceIndex = deviceIndex;
            _first = false;
        }
        else
        {
            if (dtype != _dtype)
            {
                throw Fail(group, index, $"has dtype {dtype} but the optimizer's other parameters have {_dtype}; " +
                    "all parameters of one optimizer must share one dtype (use one optimizer per dtype).");
            }
            if (deviceType != _deviceType || (deviceType == DeviceType.CUDA && deviceIndex != _deviceIndex))
            {
                throw Fail(group, index, $"is on {Describe(deviceType, deviceIndex)} but the optimizer's other parameters are on " +
                    $"{Describe(_deviceType, _deviceIndex)}; all parameters of one optimizer must be on one device.");
            }
        }
        if (!p.is_contiguous())
        {
            throw Fail(group, index, "is not contiguous; call .contiguous() on it (for example via a contiguous copy of the module's weights) before creating the optimizer.");
        }
    }

    /// <summary>Checks a gradient against its (already checked) parameter.</summary>
    public readonly void CheckGradient(Tensor grad, Tensor p, int group, int index)
    {
        if (grad.is_sparse)
        {
            throw Fail(group, index, "has a sparse gradient; only dense gradients are supported.");
        }
        if (grad.dtype != p.dtype)
        {
            throw Fail(group, index, $"has a gradient of dtype {grad.dtype} but is {p.dtype}; they must match.");
        }
        if (grad.device_type != p.device_type || grad.device_index != p.device_index)
        {
            throw Fail(group, index, $"has its gradient on {Describe(grad.device_type, grad.device_index)} but is on {Describe(p.device_type, p.device_index)}.");
        }
        if (grad.numel() != p.numel())
        {
            throw Fail(group, index, $"has {p.numel()} elements but its gradient has {grad.numel()}.");
        }
        if (!grad.is_contiguous())
        {
            throw Fail(group, index, "has a non-contiguous gradient; only contiguous gradients are supported.");
        }
    }

    /// <summary>Checks an optimizer state tensor (for example a momentum buffer) against its parameter.</summary>
    public readonly void CheckState(Tensor state, Tensor p, int group, int index, string name)
    {
        if (state.dtype != p.dtype || state.device_type != p.device_type || state.device_index != p.device_index ||
            state.numel() != p.numel() || !state.is_contiguous() || state.is_sparse)
        {
            throw Fail(group, index, $"has a {name} ({state.dtype}, {Describe(state.device_type, state.device_index)}, " +
                $"{state.numel()} elements{(state.is_contiguous() ? "" : ", non-contiguous")}) that does not match it " +
                $"({p.dtype}, {Describe(p.device_type, p.device_index)}, {p.numel()} elements).");
        }
    }
}
