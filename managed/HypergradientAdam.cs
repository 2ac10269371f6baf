using System.Globalization;
using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

/// <summary>
/// Adam (with PyTorch's bias corrections, AMSGrad, L2 weight decay and maximize) whose learning rate adapts
/// online by hypergradient descent: the Adam-HD of Baydin et al., "Online Learning Rate Adaptation with
/// Hypergradient Descent", ICLR 2018. One rate for the whole model, per param group, per tensor or per
/// scalar weight, fused into the step.
/// </summary>
/// <remarks>
/// <para>Each step: g̃ = (maximize ? −g : g) + weight_decay·θ; h = Σ g̃·u_prev over each rate's scope, where
/// u_prev is the previous step's Adam direction m̂/(√v̂ + ε) (what the rate multiplied);
/// α ← clamp(α + β·h, lr_min, lr_max) (or the normalized rule of <see cref="HypergradientRule"/>), except on
/// the first step or when h is not finite; then Adam's step with the new α (PyTorch's order, as
/// <see cref="FusedAdam"/>), and u_prev ← m̂/(√v̂ + ε). With <c>hypergrad_lr</c> 0 it is <see cref="FusedAdam"/>.
/// The global, per-group and per-tensor scopes make two passes over memory (a deterministic reduction, then
/// the update); the per-parameter scope a finiteness pass over the gradients and one elementwise pass.
/// Bytes per element: docs/hypergradient.md.</para>
/// <para>Non-finite gradients, <c>skip_nonfinite</c>, <c>max_grad_norm</c>, where the rates live
/// (<see cref="TensorLearningRates"/>, <see cref="ParameterLearningRates"/>, <see cref="SyncLearningRates"/>)
/// and threads: as <see cref="HypergradientSGD"/>. A skipped step leaves every parameter's step count t as
/// it was on the CPU; on CUDA, where only the device knows that a step was skipped, t advances with every
/// launched step (the bias corrections then run one step ahead after a skip). The CUDA path is compiled, not
/// yet run on a GPU.</para>
/// <para><c>hypergrad_lr</c>, <c>scope</c>, <c>rule</c>, <c>lr_min</c> and <c>lr_max</c> apply to the whole
/// optimizer; betas, eps, weight decay, amsgrad, maximize and the initial rate may differ per param group.
/// With the global scope the initial rate is <c>lr</c>. Beta schedulers work through <see cref="IBetas"/>.</para>
/// </remarks>
public partial class HypergradientAdam : FusedOptimizer<HypergradientAdam.Options, HypergradientAdam.State>, IBetas
{
    /// <summary>The normalized rule's guard ε (as <see cref="HypergradientSGD.NormalizedEpsilon"/>).</summary>
    public const double NormalizedEpsilon = HypergradientSGD.NormalizedEpsilon;

    private readonly HypergradientScope _scope;
    private readonly HypergradientRule _rule;
    private readonly double _hypergradLr;
    private readonly double _lrMin;
    private readonly double _lrMax;
    private readonly bool _skipNonFinite;
    private long _steps;   // steps taken on the host path, and before the device counters were created
    private long _skipped; // steps skipped on the host path
    private bool _lastSkipped; // the last CPU step was skipped (its parameters' step counts stay)

    // Reused per step: the scalar rates (CPU), each group's options in native form.
    private double[] _rates = Array.Empty<double>();
    private HdAdamGroupOptions[] _groupOptions = Array.Empty<HdAdamGroupOptions>();
    private HdStepOptions _options;

    // CUDA: the scalar rates and the skip counter in device memory, and the owners of this step's slots.
    private readonly HypergradientDeviceRates _device;
    private readonly List<object> _slotOwners = new();

    /// <summary>Creates the optimizer over one group of parameters.</summary>
    /// <param name="parameters">The parameters to optimize.</param>
    /// <param name="lr">Initial learning rate (≥ 0; default 1e-3).</param>
    /// <param name="hypergrad_lr">The hypergradient learning rate β (≥ 0; 0 gives <see cref="FusedAdam"/>; default 1e-7,
    /// the value of the paper's Adam-HD experiments). Additive rule: α moves by β·h, and h sums g̃·m̂/(√v̂ + ε) over the scope, so β scales with the rate
    /// and the scope's size; the normalized rule is scale free.</param>
    /// <param name="scope">Granularity of the rates.</param>
    /// <param name="beta1">Coefficient of the running average of the gradient (in [0, 1); default 0.9).</param>
    /// <param name="beta2">Coefficient of the running average of the squared gradient (in [0, 1); default 0.999).</param>
    /// <param name="eps">Term added to the denominator (≥ 0; default 1e-8).</param>
    /// <param name="weight_decay">Weight decay, coupled L2 as in Adam (≥ 0; default 0).</param>
    /// <param name="amsgrad">Use the AMSGrad variant.</param>
    /// <param name="maximize">Maximize the objective.</param>
    /// <param name="rule">Additive or normalized rate update.</param>
    /// <param name="lr_min">Lower bound of every rate (≥ 0: a rate never goes negative).</param>
    /// <param name="lr_max">Upper bound of every rate (≥ lr_min).</param>
    /// <param name="skip_nonfinite">True (the default): a step with a NaN or infinite gradient element is
    /// skipped whole and counted in <see cref="SkippedSteps"/>. False: the gradients are taken as checked
    /// by the caller; nothing is skipped, and the per-parameter scope saves its pass over the gradients.</param>
    /// <param name="max_grad_norm">Clips the gradients to this global norm inside each step (finite, &gt; 0; null: no clipping); see
    /// <see cref="FusedOptimizer{TOptions, TState}.MaxGradNorm"/>. The norm is summed in the same pass as the hypergradient, which
    /// uses the clipped gradient.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public HypergradientAdam(IEnumerable<Parameter> parameters, double lr = 0.001, double hypergrad_lr = 1e-7,
        HypergradientScope scope = HypergradientScope.Global,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0,
        bool amsgrad = false, bool maximize = false,
        HypergradientRule rule = HypergradientRule.Additive,
        double lr_min = 0, double lr_max = double.PositiveInfinity, bool skip_nonfinite = true, double? max_grad_norm = null)
        : this(new[] { new ParamGroup(parameters ?? throw new ArgumentNullException(nameof(parameters))) }, lr, hypergrad_lr, scope,
               beta1, beta2, eps, weight_decay, amsgrad, maximize, rule, lr_min, lr_max, skip_nonfinite, max_grad_norm)
    {
    }

    /// <summary>Creates the optimizer over several param groups; options a group leaves null take the values given here.</summary>
    /// <inheritdoc cref="HypergradientAdam(IEnumerable{Parameter}, double, double, HypergradientScope, double, double, double, double, bool, bool, HypergradientRule, double, double, bool, double?)"/>
    public HypergradientAdam(IEnumerable<ParamGroup> parameters, double lr = 0.001, double hypergrad_lr = 1e-7,
        HypergradientScope scope = HypergradientScope.Global,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0,
        bool amsgrad = false, bool maximize = false,
        HypergradientRule rule = HypergradientRule.Additive,
        double lr_min = 0, double lr_max = double.PositiveInfinity, bool skip_nonfinite = true, double? max_grad_norm = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
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
        var defaults = new Options
        {
            LearningRate = lr,
            InitialLearningRate = lr,
            beta1 = beta1,
            beta2 = beta2,
            eps = eps,
            weight_decay = weight_decay,
            amsgrad = amsgrad,
            maximize = maximize,
        };
        ValidateOptions(defaults, null);
        _scope = scope;
        _rule = rule;
        _hypergradLr = hypergrad_lr;
        _lrMin = lr_min;
        _lrMax = lr_max;
        _skipNonFinite = skip_nonfinite;
        MaxGradNorm = max_grad_norm;
        _device = new HypergradientDeviceRates(ReadSlotRate, WriteSlotRate);
        Initialize(defaults, parameters);
    }

    /// <summary>The granularity of the rates.</summary>
    public HypergradientScope Scope => _scope;

    /// <summary>The rate update rule.</summary>
    public HypergradientRule Rule => _rule;

    /// <summary>Whether a step with a non-finite gradient is skipped (the <c>skip_nonfinite</c> argument).</summary>
    public bool SkipsNonFinite => _skipNonFinite;

    /// <summary>Steps taken (skipped steps not counted; reads the device's skip counter on CUDA).</summary>
    public long Steps => _steps + _device.Attempts - _device.Skipped();

    /// <summary>Steps skipped because a gradient had a NaN or infinite element (reads the device counter on CUDA).</summary>
    public long SkippedSteps => _skipped + _device.Skipped();

    // Steps taken on the host plus steps attempted on CUDA (see HypergradientSGD).
    private long Attempts => _steps + _device.Attempts;

    /// <summary>
    /// The default (beta1, beta2); setting it also sets every param group's (for beta schedulers such as
    /// <c>OneCycleLR</c>). An invalid pair changes nothing.
    /// </summary>
    /// <exception cref="ArgumentException">A beta outside [0, 1).</exception>
    public (double, double) Betas
    {
        get => (((Options)_defaults).beta1!.Value, ((Options)_defaults).beta2!.Value);
        set
        {
            var o = (Options)_defaults;
            FusedAdam.ValidateOptions(o.LearningRate!.Value, value.Item1, value.Item2, o.eps!.Value, o.weight_decay!.Value, null);
            (o.beta1, o.beta2) = value;
            foreach (var g in _parameter_groups)
            {
                var go = (Options)g.Options;
                (go.beta1, go.beta2) = value;
            }
        }
    }

    private protected override string Name => nameof(HypergradientAdam);

    // Every parameter takes part, those without a gradient as empty entries: per-tensor rate slots stay fixed.
    private protected override bool KeepsParametersWithoutGradients => true;

    // Its native step takes no gradient scaler yet: GradScaler unscales the gradients itself.
    private protected override bool FusesGradScaling => false;

    private static void ValidateOptions(Options o, int? group) =>
        FusedAdam.ValidateOptions(o.LearningRate!.Value, o.beta1!.Value, o.beta2!.Value, o.eps!.Value, o.weight_decay!.Value, group);

    private protected override Action PrepareGroupOptions(Options given, int group)
    {
        var def = (Options)_defaults;
        // With the global scope every group starts at the optimizer's rate.
        double lr = _scope == HypergradientScope.Global ? def.LearningRate!.Value : given.LearningRate ?? def.LearningRate!.Value;
        var filled = new Options
        {
            LearningRate = lr,
            beta1 = given.beta1 ?? def.beta1,
            beta2 = given.beta2 ?? def.beta2,
            eps = given.eps ?? def.eps,
            weight_decay = given.weight_decay ?? def.weight_decay,
            amsgrad = given.amsgrad ?? def.amsgrad,
            maximize = given.maximize ?? def.maximize,
        };
        ValidateOptions(filled, group);
        return () =>
        {
            (given.LearningRate, given.InitialLearningRate) = (lr, lr);
            (given.beta1, given.beta2, given.eps, given.weight_decay) = (filled.beta1, filled.beta2, filled.eps, filled.weight_decay);
            (given.amsgrad, given.maximize) = (filled.amsgrad, filled.maximize);
        };
    }

    private protected override State CreateState(Parameter parameter, Options options)
    {
        double lr = options.LearningRate!.Value;
        var state = new State(parameter) { tensor_rate = lr, Scope = _scope };
        if (_scope == HypergradientScope.PerParameter)
        {
            // An explicit Scalar kept alive by `using` (see HypergradientSGD.CreateState).
            using var rate = lr.ToScalar();
            state.parameter_rates = torch.full_like(parameter, rate).DetachFromDisposeScope();
        }
        return state;
    }

    private protected override void CheckGroupOptions(Options o, int group) => ValidateOptions(o, group);

    private protected override void AddStateRecords(State state, HandleList records)
    {
        foreach (var t in (ReadOnlySpan<Tensor?>)[state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq, state.prev_update, state.parameter_rates])
        {
            if (t is not null)
            {
                records.Add(t.Handle);
            }
        }
    }

    private protected override void GatherState(int k, ref TensorChecks checks, in TensorInfo parameter, State state, Options options, int group, int index)
    {
        var batch = Batch;
        batch.Steps[k] = state.step + 1;
        if (state.exp_avg is null || state.exp_avg_sq is null || state.prev_update is null ||
            (options.amsgrad!.Value && state.max_exp_avg_sq is null))
        {
            batch.Fresh[k] = 1;
        }
        batch.Buffers[k] = Describe(ref checks, state.exp_avg, parameter, group, index, "exp_avg");
        batch.ExpAvgSqs[k] = Describe(ref checks, state.exp_avg_sq, parameter, group, index, "exp_avg_sq");
        batch.PrevUpdates[k] = Describe(ref checks, state.prev_update, parameter, group, index, "previous update");
        if (options.amsgrad!.Value)
        {
            batch.MaxExpAvgSqs[k] = Describe(ref checks, state.max_exp_avg_sq, parameter, group, index, "max_exp_avg_sq");
        }
        if (_scope == HypergradientScope.PerParameter)
        {
            if (state.parameter_rates is null)
            {
                throw new InvalidOperationException($"HypergradientAdam: parameter {index} of param group {group} has no rates.");
            }
            batch.Rates[k] = Describe(ref checks, state.parameter_rates, parameter, group, index, "rate tensor");
        }
    }

    // The data of an existing state tensor, checked against its parameter and marked as written (0 for none).
    private nint Describe(ref TensorChecks checks, Tensor? t, in TensorInfo parameter, int group, int index, string name)
    {
        if (t is null)
        {
            return 0;
        }
        var info = TorchSharpNative.Describe(t.Handle);
        checks.CheckState(info, parameter, group, index, name);
        Batch.Written.Add(t.Handle);
        return info.Data;
    }

    private protected override void PrepareStep(in TensorChecks checks)
    {
        AdoptLoadedCounters();
        if (_groupOptions.Length != _parameter_groups.Count)
        {
            _groupOptions = new HdAdamGroupOptions[_parameter_groups.Count];
        }
        for (int gi = 0; gi < _parameter_groups.Count; gi++)
        {
            var o = (Options)_parameter_groups[gi].Options;
            _groupOptions[gi] = new HdAdamGroupOptions
            {
                Beta1 = o.beta1!.Value,
                Beta2 = o.beta2!.Value,
                Eps = o.eps!.Value,
                WeightDecay = o.weight_decay!.Value,
                Amsgrad = o.amsgrad!.Value ? 1 : 0,
                Maximize = o.maximize!.Value ? 1 : 0,
            };
        }
        // Entries without a gradient have no elements; their step number only has to be valid.
        var batch = Batch;
        for (int k = 0; k < batch.Count; k++)
        {
            if (!batch.HasGradient[k])
            {
                batch.Steps[k] = 1;
            }
        }
        _options = new HdStepOptions
        {
            HypergradLr = _hypergradLr,
            LrMin = _lrMin,
            LrMax = _lrMax,
            Eps = NormalizedEpsilon,
            Scope = (int)_scope,
            Rule = (int)_rule,
            FirstStep = Attempts == 0 ? 1 : 0,
            AssumeFinite = _skipNonFinite ? 0 : 1,
        };
    }

    // Zero moments, previous update and running maximum on a parameter's first step (as PyTorch creates
    // them); dropped again if the step does not happen.
    private protected override void CreateMissingState(in TensorChecks checks)
    {
        var batch = Batch;
        for (int k = 0; k < batch.Count; k++)
        {
            if (batch.HasGradient[k] && batch.Fresh[k] != 0)
            {
                CreateMissingState(k);
            }
        }
    }

    // Apart from the loop: the lambdas' closure is then allocated only for a parameter that needs state.
    private void CreateMissingState(int k)
    {
        var batch = Batch;
        var state = batch.States[k];
        var p = batch.ParamTensors[k];
        var o = (Options)_parameter_groups[batch.GroupIndex[k]].Options;
        if (state.exp_avg is null)
        {
            state.exp_avg = Created(torch.zeros_like(p), () => state.exp_avg = null);
            batch.Buffers[k] = TorchSharpNative.DataPointer(state.exp_avg.Handle);
        }
        if (state.exp_avg_sq is null)
        {
            state.exp_avg_sq = Created(torch.zeros_like(p), () => state.exp_avg_sq = null);
            batch.ExpAvgSqs[k] = TorchSharpNative.DataPointer(state.exp_avg_sq.Handle);
        }
        if (state.prev_update is null)
        {
            state.prev_update = Created(torch.zeros_like(p), () => state.prev_update = null);
            batch.PrevUpdates[k] = TorchSharpNative.DataPointer(state.prev_update.Handle);
        }
        if (o.amsgrad!.Value && state.max_exp_avg_sq is null)
        {
            state.max_exp_avg_sq = Created(torch.zeros_like(p), () => state.max_exp_avg_sq = null);
            batch.MaxExpAvgSqs[k] = TorchSharpNative.DataPointer(state.max_exp_avg_sq.Handle);
        }
    }

    private protected override void NativeStep(in TensorChecks checks)
    {
        if (checks.Device == NativeDevice.Cuda)
        {
            StepOnDevice(checks);
        }
        else
        {
            StepOnHost(checks);
        }
        // The step was taken (CPU) or launched (CUDA): each parameter with a gradient has taken one more.
        var batch = Batch;
        for (int k = 0; k < batch.Count; k++)
        {
            if (batch.HasGradient[k] && !_lastSkipped)
            {
                batch.States[k].step = batch.Steps[k];
            }
        }
    }

    // The number of scalar rates, by the native library's one rule (none for the per-parameter scope).
    private int Slots => OptimNative.HdRateCount((int)_scope, _parameter_groups.Count, Batch.Count);

    private unsafe void StepOnHost(in TensorChecks checks)
    {
        var batch = Batch;
        int slots = Slots;
        if (_rates.Length < Math.Max(slots, 1))
        {
            _rates = new double[Math.Max(slots, 1)];
        }
        // The rates' home on the CPU: the groups' LearningRate (global, per group; a scheduler's change
        // is adopted) and each State's tensor_rate (per tensor).
        for (int s = 0; s < slots; s++)
        {
            _rates[s] = _scope == HypergradientScope.PerTensor ? batch.States[s].tensor_rate : _parameter_groups[s].LearningRate;
        }
        long skipped = 0;
        fixed (double* rates = _rates)
        {
            Step(NativeDevice.Cpu, checks, (nint)rates, (nint)(&skipped));
        }
        _lastSkipped = skipped != 0;
        if (_lastSkipped)
        {
            _skipped++;
            UndoCreatedState();
            return;
        }
        _steps++;
        for (int s = 0; s < slots; s++)
        {
            WriteSlotRate(_scope == HypergradientScope.PerTensor ? batch.States[s] : _parameter_groups[s], _rates[s]);
        }
    }

    private void StepOnDevice(in TensorChecks checks)
    {
        var batch = Batch;
        _slotOwners.Clear();
        int slots = Slots;
        for (int s = 0; s < slots; s++)
        {
            _slotOwners.Add(_scope == HypergradientScope.PerTensor ? batch.States[s] : _parameter_groups[s]);
        }
        var (rates, skipped) = _device.Prepare(_slotOwners, new Device(DeviceType.CUDA, checks.DeviceIndex));
        Step(NativeDevice.Cuda, checks, rates, skipped);
        _device.Launched();
        _lastSkipped = false; // known only on the device
    }

    private void Step(NativeDevice device, in TensorChecks checks, nint rates, nint skipped)
    {
        var b = Batch;
        int n = b.Count;
        var (maxNorm, totalNorm) = GradClip(checks);
        OptimNative.HdAdamStep(device, checks.DeviceIndex, checks.DType, b.Params.AsSpan(0, n), b.Grads.AsSpan(0, n),
            b.Buffers.AsSpan(0, n), b.ExpAvgSqs.AsSpan(0, n), b.MaxExpAvgSqs.AsSpan(0, n), b.PrevUpdates.AsSpan(0, n),
            b.Rates.AsSpan(0, n), b.Numels.AsSpan(0, n), b.Steps.AsSpan(0, n), b.GroupIndex.AsSpan(0, n),
            _groupOptions.AsSpan(0, _parameter_groups.Count), _options, rates, skipped, maxNorm, totalNorm);
    }

    // The host value of a device rate slot's owner: a param group (global, per group) or a tensor's state.
    private double ReadSlotRate(object owner) => owner is State s ? s.tensor_rate : ((TorchSharp.Modules.ParamGroup)owner).LearningRate;

    private void WriteSlotRate(object owner, double rate)
    {
        if (owner is State s)
        {
            s.tensor_rate = rate;
        }
        else if (_scope == HypergradientScope.Global)
        {
            for (int gi = 0; gi < _parameter_groups.Count; gi++)
            {
                _parameter_groups[gi].LearningRate = rate;
            }
        }
        else
        {
            ((TorchSharp.Modules.ParamGroup)owner).LearningRate = rate;
        }
    }

    /// <summary>
    /// Copies CUDA-resident rates back to the param groups' <c>LearningRate</c> (global and per-group
    /// scopes) and to the per-tensor state (a device synchronization). A no-op on the CPU.
    /// </summary>
    public void SyncLearningRates()
    {
        AdoptLoadedCounters();
        _device.CopyBack();
    }

    /// <summary>
    /// The current rate of every parameter tensor, in parameter order across groups: its own rate for the
    /// per-tensor scope, its group's (or the global) rate for the scalar scopes, and the mean of its rates for
    /// the per-parameter scope. Copies from the device on CUDA.
    /// </summary>
    public IReadOnlyList<double> TensorLearningRates()
    {
        SyncLearningRates();
        var result = new List<double>();
        foreach (var g in _parameter_groups)
        {
            foreach (var p in ParametersOf(g))
            {
                var s = (State)_state[p.Handle];
                result.Add(_scope switch
                {
                    HypergradientScope.PerTensor => s.tensor_rate,
                    HypergradientScope.PerParameter => s.parameter_rates!.mean().ToDouble(),
                    _ => g.LearningRate,
                });
            }
        }
        return result;
    }

    /// <summary>A copy of the per-parameter rates of <paramref name="parameter"/> (per-parameter scope only).</summary>
    /// <exception cref="InvalidOperationException">Another scope.</exception>
    /// <exception cref="ArgumentException">The parameter is not optimized by this optimizer.</exception>
    public Tensor ParameterLearningRates(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        if (_scope != HypergradientScope.PerParameter)
        {
            throw new InvalidOperationException($"HypergradientAdam: per-parameter rates exist only for the PerParameter scope, not {_scope}.");
        }
        if (!_state.ContainsKey(parameter.Handle))
        {
            throw new ArgumentException("HypergradientAdam: the parameter is not optimized by this optimizer.", nameof(parameter));
        }
        return ((State)_state[parameter.Handle]).parameter_rates!.clone();
    }

    /// <summary>The state, with CUDA-resident rates copied back first so that saving captures them.</summary>
    public override StateDictionary state_dict()
    {
        SyncLearningRates();
        foreach (var g in _parameter_groups)
        {
            var o = (Options)g.Options;
            o.steps = Steps;
            o.skipped = SkippedSteps;
        }
        return base.state_dict();
    }

    // Adopts counters restored by a load (set on the options by the loader; the next step or rate read
    // adopts them).
    private void AdoptLoadedCounters()
    {
        var o = (Options)_parameter_groups[0].Options;
        if (o.loaded)
        {
            _steps = o.steps;
            _skipped = o.skipped;
            foreach (var g in _parameter_groups)
            {
                ((Options)g.Options).loaded = false;
            }
            // The loaded host values are the truth now: the device copies are rebuilt from them.
            _device.Reset();
        }
    }

    private protected override void AfterLoad() => AdoptLoadedCounters();

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing)
        {
            _device.Dispose();
        }
    }
}
