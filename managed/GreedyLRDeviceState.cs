using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// GreedyLR's state in CUDA memory for the sync-free path: the counters and the arrays (rates, initial
/// rates, bounds, window) live on the device, a one-thread kernel updates them from a device metric, and
/// the bound <see cref="FusedSGD"/> reads the new rates there, so no step waits for the host. The kernel is
/// checked against the CPU state machine on an H200; this managed wiring has not yet run on a GPU.
/// </summary>
internal sealed class GreedyLRDeviceState : IDisposable
{
    private readonly Tensor _counters; // the GreedyLRCounters bytes
    private readonly Tensor _arrays;   // rates | initial | min_lr | max_lr | window, float64
    private readonly Tensor _rates;    // a view of the rates, read by the fused optimizer's kernels
    private readonly FusedSGD _bound;
    private readonly int _groups;

    private GreedyLRDeviceState(Tensor counters, Tensor arrays, int groups, FusedSGD bound)
    {
        _counters = counters;
        _arrays = arrays;
        _groups = groups;
        _rates = arrays.narrow(0, 0, groups).DetachFromDisposeScope();
        _bound = bound;
        bound.BindDeviceLearningRates(_rates);
    }

    /// <summary>The device the state lives on.</summary>
    public Device Device => _counters.device;

    /// <summary>Copies the host state to <paramref name="device"/> and binds its rates to <paramref name="optimizer"/>.</summary>
    public static unsafe GreedyLRDeviceState Push(Device device, FusedSGD optimizer, in GreedyLRCounters counters,
        double[] rates, double[] initial, double[] minLr, double[] maxLr, double[] window)
    {
        var bytes = new byte[sizeof(GreedyLRCounters)];
        fixed (byte* b = bytes)
        {
            *(GreedyLRCounters*)b = counters;
        }
        var host = rates.Concat(initial).Concat(minLr).Concat(maxLr).Concat(window).ToArray();
        var c = torch.tensor(bytes).to(device).DetachFromDisposeScope();
        var a = torch.tensor(host, ScalarType.Float64).to(device).DetachFromDisposeScope();
        return new GreedyLRDeviceState(c, a, rates.Length, optimizer);
    }

    /// <summary>One evaluation of a one-element CUDA metric on the device (launched, not waited for).</summary>
    public void Step(in GreedyLRConfig config, Tensor metric)
    {
        using var m = metric.contiguous();
        int g = _groups;
        nint arrays = TorchSharpNative.DataPointer(_arrays.Handle);
        OptimNative.FollowTorchCudaStream(Device.index);
        GreedyLRNative.StepOnDevice(Device.index, config, TorchSharpNative.DataPointer(_counters.Handle),
            arrays, arrays + g * sizeof(double), arrays + 2 * g * sizeof(double), arrays + 3 * g * sizeof(double), arrays + 4 * g * sizeof(double),
            TorchSharpNative.DataPointer(m.Handle), m.dtype == ScalarType.Float64 ? NativeDType.Float64 : NativeDType.Float32);
    }

    /// <summary>Copies the state back (a synchronization): the counters, the rates and the window.</summary>
    public unsafe (GreedyLRCounters Counters, double[] Rates, double[] Window) Pull()
    {
        using var state = _counters.cpu();
        using var arrays = _arrays.cpu();
        var bytes = state.data<byte>().ToArray();
        GreedyLRCounters counters;
        fixed (byte* b = bytes)
        {
            counters = *(GreedyLRCounters*)b;
        }
        var all = arrays.data<double>().ToArray();
        return (counters, all[.._groups], all[(4 * _groups)..]);
    }

    /// <summary>Unbinds the optimizer's device rates and frees the device state.</summary>
    public void Dispose()
    {
        _bound.BindDeviceLearningRates(null);
        _rates.Dispose();
        _counters.Dispose();
        _arrays.Dispose();
    }
}
