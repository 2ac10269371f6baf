using System.Globalization;
using System.Runtime.InteropServices;
using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim;

/// <summary>A hypergradient optimizer's per-parameter state as its rates see it.</summary>
internal interface IHypergradientState
{
    /// <summary>The per-tensor scope's rate of this tensor.</summary>
    double TensorRate { get; set; }

    /// <summary>The per-parameter scope's rates, shaped like the parameter.</summary>
    Tensor? ParameterRates { get; }
}

/// <summary>A hypergradient optimizer's param-group options, which carry its step counts through <c>state_dict</c>.</summary>
internal interface IHypergradientOptions
{
    SavedStepCounts Counts { get; set; }
}

/// <summary>The steps taken and skipped, as saved with every param group's options; <see cref="Loaded"/> marks
/// counts a load restored that the optimizer has not adopted yet.</summary>
internal readonly record struct SavedStepCounts(long Steps, long Skipped, bool Loaded)
{
    /// <summary>Reads the counts written by <see cref="Write"/>.</summary>
    public static SavedStepCounts Read(StateReader r) =>
        new(r.ReadCount("the step count"), r.ReadCount("the skipped step count"), true);

    /// <summary>Another optimizer's counts, checked.</summary>
    /// <exception cref="ArgumentException">A negative count.</exception>
    public static SavedStepCounts Copied(SavedStepCounts source)
    {
        if (source.Steps < 0 || source.Skipped < 0)
        {
            throw new ArgumentException("The source options have negative step counts.", nameof(source));
        }
        return source with { Loaded = true };
    }

    public void Write(BinaryWriter writer)
    {
        writer.Write(Steps);
        writer.Write(Skipped);
    }
}

/// <summary>The rules a hypergradient optimizer's loaded or copied state must follow.</summary>
internal static class HypergradientStateRules
{
    /// <summary>The per-parameter scope needs a rate tensor; the other scopes have none.</summary>
    public static void CheckRates<TException>(HypergradientScope scope, Tensor? rates, Func<string, TException> fail)
        where TException : Exception
    {
        if (scope == HypergradientScope.PerParameter && rates is null)
        {
            throw fail("the per-parameter scope needs per-parameter rates, and the state has none.");
        }
        if (scope != HypergradientScope.PerParameter && rates is not null)
        {
            throw fail($"the state has per-parameter rates, but this optimizer's scope is {scope}.");
        }
    }

    /// <summary>A source state's per-tensor rate, checked (finite, ≥ 0).</summary>
    /// <exception cref="ArgumentException">An invalid rate.</exception>
    public static double CopiedTensorRate(double rate, string owner)
    {
        if (!double.IsFinite(rate) || rate < 0)
        {
            throw new ArgumentException($"{owner}: the source's per-tensor rate {rate} is invalid.", "source");
        }
        return rate;
    }
}

/// <summary>
/// What <see cref="HypergradientSGD"/> and <see cref="HypergradientAdam"/> share about their rates: the
/// hypergradient options (checked once), the scalar rate slots and where they live (on the CPU in the param
/// groups' <c>LearningRate</c> and each state's per-tensor rate; on CUDA in device memory, through
/// <see cref="HypergradientDeviceRates"/>), the step and skip counters, and the rate readers.
/// Each optimizer keeps its own options, native call and state.
/// </summary>
internal sealed class HypergradientRates<TState> : IDisposable where TState : class, IHypergradientState
{
    private readonly string _owner;
    private readonly Func<IList<TorchSharp.Modules.ParamGroup>> _groups;
    private long _steps;   // steps taken on the host path, and before the device counters were created
    private long _skipped; // steps skipped on the host path

    // Reused per step: the scalar rates and the skip flag on the CPU (pinned: the native step writes them),
    // the owners of this step's slots.
    private double[] _hostRates = GC.AllocateArray<double>(1, pinned: true);
    private readonly long[] _hostSkipped = GC.AllocateArray<long>(1, pinned: true);
    private readonly List<object> _slotOwners = new();

    // CUDA: the scalar rates and the skip counter in device memory.
    private readonly HypergradientDeviceRates _device;

    /// <summary>Checks the hypergradient options (in this order, each a clear <see cref="ArgumentException"/>);
    /// <paramref name="owner"/> names the optimizer in messages, <paramref name="groups"/> reads its param groups
    /// when used (they are created after this).</summary>
    public HypergradientRates(string owner, Func<IList<TorchSharp.Modules.ParamGroup>> groups, double hypergrad_lr,
        HypergradientScope scope, HypergradientRule rule, double lr_min, double lr_max, bool skip_nonfinite)
    {
        static string F(double v) => v.ToString("R", CultureInfo.InvariantCulture);
        if (!(hypergrad_lr >= 0) || double.IsInfinity(hypergrad_lr))
        {
            throw new ArgumentException($"Invalid hypergrad_lr value: {F(hypergrad_lr)}", nameof(hypergrad_lr));
        }
        if (!(lr_min >= 0) || double.IsInfinity(lr_min))
        {
            throw new ArgumentException($"Invalid lr_min value: {F(lr_min)}", nameof(lr_min));
        }
        if (!(lr_max >= lr_min))
        {
            throw new ArgumentException($"lr_min ({F(lr_min)}) must not be greater than lr_max ({F(lr_max)})", nameof(lr_min));
        }
        if (!Enum.IsDefined(scope))
        {
            throw new ArgumentException($"Unknown scope {scope}", nameof(scope));
        }
        if (!Enum.IsDefined(rule))
        {
            throw new ArgumentException($"Unknown rule {rule}", nameof(rule));
        }
        _owner = owner;
        _groups = groups;
        (Scope, Rule, HypergradLr, LrMin, LrMax, SkipsNonFinite) = (scope, rule, hypergrad_lr, lr_min, lr_max, skip_nonfinite);
        _device = new HypergradientDeviceRates(ReadSlotRate, WriteSlotRate);
    }

    public HypergradientScope Scope { get; }

    public HypergradientRule Rule { get; }

    public double HypergradLr { get; }

    public double LrMin { get; }

    public double LrMax { get; }

    public bool SkipsNonFinite { get; }

    /// <summary>Steps taken (skipped steps not counted; reads the device's skip counter on CUDA).</summary>
    public long Steps => _steps + _device.Attempts - _device.Skipped();

    /// <summary>Steps skipped for a non-finite gradient (reads the device counter on CUDA).</summary>
    public long SkippedSteps => _skipped + _device.Skipped();

    // Steps taken on the host plus steps attempted on CUDA, where whether a step was skipped is known
    // only on the device: "the first step" (whose rates do not move) is the first attempt there.
    private long Attempts => _steps + _device.Attempts;

    /// <summary>This step's rate options for the native step.</summary>
    public HdStepOptions StepOptions() => new()
    {
        HypergradLr = HypergradLr,
        LrMin = LrMin,
        LrMax = LrMax,
        Eps = HypergradientSGD.NormalizedEpsilon,
        Scope = (int)Scope,
        Rule = (int)Rule,
        FirstStep = Attempts == 0 ? 1 : 0,
        AssumeFinite = SkipsNonFinite ? 0 : 1,
    };

    /// <summary>A new parameter's per-parameter rates (null for the other scopes).</summary>
    public Tensor? NewParameterRates(Parameter parameter, double lr)
    {
        if (Scope != HypergradientScope.PerParameter)
        {
            return null;
        }
        // An explicit Scalar kept alive by `using`: TorchSharp 0.107's implicit double-to-Scalar
        // temporaries can be finalized by the GC while the native call still reads them.
        using var rate = lr.ToScalar();
        // float32 for float16 and bfloat16 parameters, as all their state.
        return torch.full_like(parameter, rate, TensorChecks.StateType(parameter.dtype)).DetachFromDisposeScope();
    }

    /// <summary>
    /// The addresses of this step's scalar rates and skip counter: on the CPU, host copies read from their
    /// owners; on CUDA, the device copies (see <see cref="HypergradientDeviceRates"/>).
    /// </summary>
    public (nint Rates, nint Skipped) Prepare(in TensorChecks checks, TensorBatch<TState> batch)
    {
        var groups = _groups();
        _slotOwners.Clear();
        // The number of scalar rates, by the native library's one rule (none for the per-parameter scope).
        int slots = OptimNative.HdRateCount((int)Scope, groups.Count, batch.Count);
        for (int s = 0; s < slots; s++)
        {
            _slotOwners.Add(Scope == HypergradientScope.PerTensor ? batch.States[s] : groups[s]);
        }
        if (checks.Device == NativeDevice.Cuda)
        {
            return _device.Prepare(_slotOwners, new Device(DeviceType.CUDA, checks.DeviceIndex));
        }
        if (_hostRates.Length < slots)
        {
            _hostRates = GC.AllocateArray<double>(slots, pinned: true);
        }
        // The rates' home on the CPU: the groups' LearningRate (global, per group; a scheduler's change
        // is adopted) and each state's per-tensor rate.
        for (int s = 0; s < slots; s++)
        {
            _hostRates[s] = ReadSlotRate(_slotOwners[s]);
        }
        _hostSkipped[0] = 0;
        return (Marshal.UnsafeAddrOfPinnedArrayElement(_hostRates, 0), Marshal.UnsafeAddrOfPinnedArrayElement(_hostSkipped, 0));
    }

    /// <summary>
    /// Counts the step the native call took and, on the CPU, adopts its rates. A step a gradient scaler
    /// skipped is the scaler's: not counted. Returns whether the step skipped itself for a non-finite
    /// gradient (known on the CPU only; its new state is then to be undone).
    /// </summary>
    public bool Finish(NativeDevice device, bool scalerSkipped)
    {
        if (scalerSkipped)
        {
            return false;
        }
        if (device == NativeDevice.Cuda)
        {
            _device.Launched();
            return false;
        }
        if (_hostSkipped[0] != 0)
        {
            _skipped++;
            return true;
        }
        _steps++;
        for (int s = 0; s < _slotOwners.Count; s++)
        {
            WriteSlotRate(_slotOwners[s], _hostRates[s]);
        }
        return false;
    }

    // The host value of a rate slot's owner: a param group (global, per group) or a tensor's state.
    private double ReadSlotRate(object owner) => owner is TState s ? s.TensorRate : ((TorchSharp.Modules.ParamGroup)owner).LearningRate;

    private void WriteSlotRate(object owner, double rate)
    {
        if (owner is TState s)
        {
            s.TensorRate = rate;
        }
        else if (Scope == HypergradientScope.Global)
        {
            var groups = _groups();
            for (int gi = 0; gi < groups.Count; gi++)
            {
                groups[gi].LearningRate = rate;
            }
        }
        else
        {
            ((TorchSharp.Modules.ParamGroup)owner).LearningRate = rate;
        }
    }

    /// <summary>Copies CUDA-resident rates back to their owners (a device synchronization); a no-op on the CPU.</summary>
    public void Sync()
    {
        AdoptLoadedCounts();
        _device.CopyBack();
    }

    /// <summary>Every tensor's current rate, in parameter order across groups (see the optimizers' <c>TensorLearningRates</c>).</summary>
    public IReadOnlyList<double> TensorLearningRates(Func<TorchSharp.Modules.ParamGroup, IEnumerable<Parameter>> parametersOf,
        Func<Parameter, TState> stateOf)
    {
        Sync();
        var result = new List<double>();
        foreach (var g in _groups())
        {
            foreach (var p in parametersOf(g))
            {
                var s = stateOf(p);
                result.Add(Scope switch
                {
                    HypergradientScope.PerTensor => s.TensorRate,
                    HypergradientScope.PerParameter => s.ParameterRates!.mean().ToDouble(),
                    _ => g.LearningRate,
                });
            }
        }
        return result;
    }

    /// <summary>A copy of one parameter's per-parameter rates (see the optimizers' <c>ParameterLearningRates</c>).</summary>
    public Tensor ParameterLearningRates(Parameter parameter, Func<Parameter, TState?> stateOf)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        if (Scope != HypergradientScope.PerParameter)
        {
            throw new InvalidOperationException($"{_owner}: per-parameter rates exist only for the PerParameter scope, not {Scope}.");
        }
        var state = stateOf(parameter) ??
            throw new ArgumentException($"{_owner}: the parameter is not optimized by this optimizer.", nameof(parameter));
        return state.ParameterRates!.clone();
    }

    /// <summary>Copies the rates back and puts the counts on every group's options, for <c>state_dict</c>.</summary>
    public void BeforeSave()
    {
        Sync();
        var counts = new SavedStepCounts(Steps, SkippedSteps, false);
        foreach (var g in _groups())
        {
            ((IHypergradientOptions)g.Options).Counts = counts;
        }
    }

    /// <summary>
    /// Adopts counts restored by a load (TorchSharp's per-item loader sets them on the options: the next
    /// step or rate read adopts them).
    /// </summary>
    public void AdoptLoadedCounts()
    {
        var groups = _groups();
        var counts = ((IHypergradientOptions)groups[0].Options).Counts;
        if (counts.Loaded)
        {
            (_steps, _skipped) = (counts.Steps, counts.Skipped);
            foreach (var g in groups)
            {
                var o = (IHypergradientOptions)g.Options;
                o.Counts = o.Counts with { Loaded = false };
            }
            // The loaded host values are the truth now: the device copies are rebuilt from them.
            _device.Reset();
        }
    }

    public void Dispose() => _device.Dispose();
}
