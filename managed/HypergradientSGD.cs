using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

/// <summary>The granularity of the learning rates that <see cref="HypergradientSGD"/> adapts.</summary>
public enum HypergradientScope
{
    /// <summary>One rate for the whole optimizer.</summary>
    Global,
    /// <summary>One rate per param group.</summary>
    PerGroup,
    /// <summary>One rate per parameter tensor ("per layer").</summary>
    PerTensor,
    /// <summary>One rate per scalar weight: a tensor shaped like each parameter.</summary>
    PerParameter,
}

/// <summary>How a rate moves with its hypergradient h.</summary>
public enum HypergradientRule
{
    /// <summary>α ← α + β·h (Baydin et al.).</summary>
    Additive,
    /// <summary>α ← α·(1 + β·h / (‖g‖·‖u_prev‖ + ε)): scale free, easier to tune.</summary>
    Normalized,
}

/// <summary>
/// SGD (with PyTorch's momentum, Nesterov, dampening, weight decay and maximize) whose learning rate
/// adapts online by hypergradient descent (Baydin et al., "Online Learning Rate Adaptation with
/// Hypergradient Descent", ICLR 2018): one rate for the whole model, per param group, per tensor or per
/// scalar weight, fused into the step.
/// </summary>
/// <remarks>
/// <para>Each step: g̃ = (maximize ? −g : g) + weight_decay·θ; h = Σ g̃·u_prev over each rate's scope;
/// α ← clamp(α + β·h, lr_min, lr_max) (or the normalized rule), except on the first step or when h is not
/// finite; then the SGD update with the new α, and u_prev ← u. The global, per-group and per-tensor scopes
/// make two passes over memory (an exact, deterministic reduction, then the update); the per-parameter
/// scope makes a finiteness pass over the gradients and one elementwise pass.</para>
/// <para>A step with any non-finite gradient is skipped whole (parameters, buffers and rates untouched)
/// and counted in <see cref="SkippedSteps"/>. With <c>skip_nonfinite: false</c> the caller vouches for
/// the gradients instead (as when a gradient scaler has already checked them): no step is skipped, the
/// per-parameter scope saves its finiteness pass (28 instead of 32 bytes per fp32 element with heavy-ball
/// momentum), and a non-finite gradient element reaches its parameter as in <c>torch.optim.SGD</c>
/// (a non-finite hypergradient still leaves its rate unchanged).</para>
/// <para>Where the rates are: after each CPU step, every param group's <c>LearningRate</c> holds its
/// current rate for the <see cref="HypergradientScope.Global"/> and <see cref="HypergradientScope.PerGroup"/>
/// scopes (so loggers and schedulers see it, and a scheduler's change is adopted on the next step);
/// <see cref="TensorLearningRates"/> and <see cref="ParameterLearningRates"/> read the per-tensor and
/// per-parameter rates. On CUDA the rates stay in device memory and a step never waits for the device;
/// <see cref="SyncLearningRates"/> (and the rate readers) copy them back when asked. The CUDA kernels are
/// checked against the CPU path on an H200; this class on CUDA tensors has not yet run on a GPU.</para>
/// <para>Parameters are float32, float64, float16 or bfloat16 (a gradient of its parameter's dtype; one dtype and
/// one device for all). Float16 and bfloat16 parameters are updated in float32 with float32 state (momentum
/// buffers, previous updates, per-parameter rates; the scalar rates stay doubles) and written back rounded to
/// nearest, or kept as float32 master copies (<c>master_weights</c>), or for bfloat16 rounded stochastically
/// (<c>stochastic_rounding</c>); the hypergradient is summed from the same float32 values the update reads.</para>
/// <para><c>hypergrad_lr</c>, <c>scope</c>, <c>rule</c>, <c>lr_min</c> and <c>lr_max</c> apply to the
/// whole optimizer; momentum, dampening, weight decay, Nesterov, maximize and the initial rate may differ
/// per param group. With the global scope the initial rate is <c>lr</c>.</para>
/// <para>Threads: one instance is used from one thread at a time (as TorchSharp's optimizers): its
/// <c>step</c>, <c>zero_grad</c>, <c>add_param_group</c>, <c>state_dict</c> and <c>load_state_dict</c>, and a
/// scheduler's <c>step</c> (which writes the rates a step reads), must not overlap, and nothing else may
/// use its parameters, gradients or state during a step. Separate optimizers over separate parameters
/// may step on separate threads at once, with the results they give alone; the native CPU path runs the
/// large ones (131,072 elements or more) one at a time on its shared team of threads.</para>
/// </remarks>
public partial class HypergradientSGD : FusedOptimizer<HypergradientSGD.Options, HypergradientSGD.State>, IMomentum
{
    /// <summary>The normalized rule's guard ε.</summary>
    public const double NormalizedEpsilon = 1e-12;

    // The hypergradient options, the scalar rates (host or CUDA) and the step counters.
    private readonly HypergradientRates<State> _hd;

    // Reused per step: each group's options in native form.
    private HdGroupOptions[] _groupOptions = Array.Empty<HdGroupOptions>();
    private HdStepOptions _options;

    /// <summary>Creates the optimizer over one group of parameters.</summary>
    /// <param name="parameters">The parameters to optimize.</param>
    /// <param name="lr">Initial learning rate (≥ 0).</param>
    /// <param name="hypergrad_lr">The hypergradient learning rate β (≥ 0; 0 gives plain SGD).</param>
    /// <param name="scope">Granularity of the rates.</param>
    /// <param name="momentum">Momentum factor (≥ 0).</param>
    /// <param name="dampening">Dampening for momentum.</param>
    /// <param name="weight_decay">Weight decay, coupled L2 (≥ 0).</param>
    /// <param name="nesterov">Nesterov momentum (needs momentum &gt; 0 and dampening 0).</param>
    /// <param name="maximize">Maximize the objective.</param>
    /// <param name="rule">Additive or normalized rate update.</param>
    /// <param name="lr_min">Lower bound of every rate (≥ 0: a rate never goes negative).</param>
    /// <param name="lr_max">Upper bound of every rate (≥ lr_min).</param>
    /// <param name="skip_nonfinite">True (the default): a step with a NaN or infinite gradient element is
    /// skipped whole and counted in <see cref="SkippedSteps"/>. False: the gradients are taken as checked
    /// by the caller; nothing is skipped, and the per-parameter scope makes one pass over memory instead of two.</param>
    /// <param name="max_grad_norm">Clips the gradients to this global norm inside each step (finite, &gt; 0; null: no clipping); see
    /// <see cref="FusedOptimizer{TOptions, TState}.MaxGradNorm"/>. The norm is summed in the same pass as the hypergradient, which
    /// uses the clipped gradient. A step skipped for a non-finite gradient still reports its (non-finite) norm.</param>
    /// <param name="master_weights">Keep float32 master copies of float16/bfloat16 parameters; see <see cref="FusedOptimizer{TOptions, TState}.MasterWeights"/>.</param>
    /// <param name="stochastic_rounding">Round bfloat16 parameters updated in place stochastically; see <see cref="FusedOptimizer{TOptions, TState}.StochasticRounding"/>.</param>
    /// <param name="rounding_seed">The seed of stochastic rounding; see <see cref="FusedOptimizer{TOptions, TState}.RoundingSeed"/>.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public HypergradientSGD(IEnumerable<Parameter> parameters, double lr, double hypergrad_lr,
        HypergradientScope scope = HypergradientScope.Global,
        double momentum = 0, double dampening = 0, double weight_decay = 0,
        bool nesterov = false, bool maximize = false,
        HypergradientRule rule = HypergradientRule.Additive,
        double lr_min = 0, double lr_max = double.PositiveInfinity, bool skip_nonfinite = true, double? max_grad_norm = null,
        bool master_weights = false, bool stochastic_rounding = false, long rounding_seed = 0)
        : this(new[] { new ParamGroup(parameters ?? throw new ArgumentNullException(nameof(parameters))) }, lr, hypergrad_lr, scope,
               momentum, dampening, weight_decay, nesterov, maximize, rule, lr_min, lr_max, skip_nonfinite, max_grad_norm,
               master_weights, stochastic_rounding, rounding_seed)
    {
    }

    /// <summary>Creates the optimizer over several param groups; options a group leaves null take the values given here.</summary>
    /// <inheritdoc cref="HypergradientSGD(IEnumerable{Parameter}, double, double, HypergradientScope, double, double, double, bool, bool, HypergradientRule, double, double, bool, double?, bool, bool, long)"/>
    public HypergradientSGD(IEnumerable<ParamGroup> parameters, double lr, double hypergrad_lr,
        HypergradientScope scope = HypergradientScope.Global,
        double momentum = 0, double dampening = 0, double weight_decay = 0,
        bool nesterov = false, bool maximize = false,
        HypergradientRule rule = HypergradientRule.Additive,
        double lr_min = 0, double lr_max = double.PositiveInfinity, bool skip_nonfinite = true, double? max_grad_norm = null,
        bool master_weights = false, bool stochastic_rounding = false, long rounding_seed = 0)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        _hd = new HypergradientRates<State>(Name, () => _parameter_groups, hypergrad_lr, scope, rule, lr_min, lr_max, skip_nonfinite);
        var defaults = SgdOptionsBase.Create<Options>(lr, momentum, dampening, weight_decay, nesterov, maximize);
        defaults.Validate(null);
        MaxGradNorm = max_grad_norm;
        SetPrecision(master_weights, stochastic_rounding, rounding_seed);
        Initialize(defaults, parameters);
    }

    /// <summary>The granularity of the rates.</summary>
    public HypergradientScope Scope => _hd.Scope;

    /// <summary>The rate update rule.</summary>
    public HypergradientRule Rule => _hd.Rule;

    /// <summary>Whether a step with a non-finite gradient is skipped (the <c>skip_nonfinite</c> argument).</summary>
    public bool SkipsNonFinite => _hd.SkipsNonFinite;

    /// <summary>Steps taken (skipped steps not counted; reads the device's skip counter on CUDA).</summary>
    public long Steps => _hd.Steps;

    /// <summary>Steps skipped because a gradient had a NaN or infinite element (reads the device counter on CUDA).
    /// A step a <see cref="GradScaler"/> skips is the scaler's and is not counted here (nor in <see cref="Steps"/>).</summary>
    public long SkippedSteps => _hd.SkippedSteps;

    /// <summary>The default momentum; setting it also sets every param group's momentum.</summary>
    public double Momentum
    {
        get => ((Options)_defaults).momentum!.Value;
        set => SgdOptionsBase.SetMomentum(_defaults, _parameter_groups, value);
    }

    private protected override string Name => nameof(HypergradientSGD);

    private protected override bool TakesLowPrecision => true;

    // optim_hd_step_mixed has no scaled form: with master weights or stochastic rounding a GradScaler takes its
    // unfused path (unscale_, then a plain step).
    private protected override bool FusesGradScaling => base.FusesGradScaling && !MasterWeights && !StochasticRounding;

    // Every parameter takes part, those without a gradient as empty entries: per-tensor rate slots stay fixed.
    private protected override bool KeepsParametersWithoutGradients => true;

    private protected override Action PrepareGroupOptions(Options given, int group)
    {
        var def = (Options)_defaults;
        // With the global scope every group starts at the optimizer's rate.
        double lr = Scope == HypergradientScope.Global ? def.LearningRate!.Value : given.LearningRate ?? def.LearningRate!.Value;
        var filled = SgdOptionsBase.Filled(given, def, lr);
        filled.Validate(group);
        return () =>
        {
            (given.LearningRate, given.InitialLearningRate) = (lr, lr);
            (given.momentum, given.dampening, given.weight_decay) = (filled.momentum, filled.dampening, filled.weight_decay);
            (given.nesterov, given.maximize) = (filled.nesterov, filled.maximize);
        };
    }

    private protected override State CreateState(Parameter parameter, Options options)
    {
        double lr = options.LearningRate!.Value;
        return new State(parameter) { tensor_rate = lr, Scope = Scope, parameter_rates = _hd.NewParameterRates(parameter, lr) };
    }

    private protected override void CheckGroupOptions(Options o, int group) => o.Validate(group);

    private protected override void AddStateRecords(State state, HandleList records)
    {
        foreach (var t in (ReadOnlySpan<Tensor?>)[state.momentum_buffer, state.prev_update, state.parameter_rates, state.master_param])
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
        // A missing master copy is made in CreateMissingState (Fresh is the native call's buffer flag).
        if (MasterWeights && state.master_param is { } master && TensorChecks.IsLowPrecision((ScalarType)parameter.ScalarType))
        {
            var mi = TorchSharpNative.Describe(master.Handle);
            checks.CheckState(mi, parameter, group, index, "master_param");
            batch.Masters[k] = mi.Data;
            batch.Written.Add(master.Handle);
        }
        bool momentum = options.momentum!.Value != 0;
        bool heavyBall = momentum && !options.nesterov!.Value;
        if (momentum)
        {
            if (state.momentum_buffer is null)
            {
                batch.Fresh[k] = 1;
            }
            else
            {
                var bi = TorchSharpNative.Describe(state.momentum_buffer.Handle);
                checks.CheckState(bi, parameter, group, index, "momentum buffer");
                batch.Buffers[k] = bi.Data;
                batch.Written.Add(state.momentum_buffer.Handle);
            }
        }
        if (!heavyBall && state.prev_update is not null)
        {
            var ui = TorchSharpNative.Describe(state.prev_update.Handle);
            checks.CheckState(ui, parameter, group, index, "previous update");
            batch.PrevUpdates[k] = ui.Data;
            batch.Written.Add(state.prev_update.Handle);
        }
        if (Scope == HypergradientScope.PerParameter)
        {
            if (state.parameter_rates is null)
            {
                throw new InvalidOperationException($"HypergradientSGD: parameter {index} of param group {group} has no rates.");
            }
            var ri = TorchSharpNative.Describe(state.parameter_rates.Handle);
            checks.CheckState(ri, parameter, group, index, "rate tensor");
            batch.Rates[k] = ri.Data;
            batch.Written.Add(state.parameter_rates.Handle);
        }
    }

    private protected override void PrepareStep(in TensorChecks checks)
    {
        _hd.AdoptLoadedCounts();
        if (_groupOptions.Length != _parameter_groups.Count)
        {
            _groupOptions = new HdGroupOptions[_parameter_groups.Count];
        }
        for (int gi = 0; gi < _parameter_groups.Count; gi++)
        {
            var o = (Options)_parameter_groups[gi].Options;
            _groupOptions[gi] = new HdGroupOptions
            {
                Momentum = o.momentum!.Value,
                Dampening = o.dampening!.Value,
                WeightDecay = o.weight_decay!.Value,
                Nesterov = o.nesterov!.Value ? 1 : 0,
                Maximize = o.maximize!.Value ? 1 : 0,
            };
        }
        _options = _hd.StepOptions();
    }

    // Momentum buffers on a parameter's first step with momentum, previous updates where the rule needs
    // them (zero: no previous direction yet).
    private protected override void CreateMissingState(in TensorChecks checks)
    {
        var batch = Batch;
        bool cuda = checks.Device == NativeDevice.Cuda;
        bool masters = UsesMasters(checks);
        for (int k = 0; k < batch.Count; k++)
        {
            if (!batch.HasGradient[k])
            {
                continue;
            }
            var state = batch.States[k];
            var p = batch.ParamTensors[k];
            var o = (Options)_parameter_groups[batch.GroupIndex[k]].Options;
            var dtype = TensorChecks.StateType(p.dtype); // float32 for 16-bit parameters
            if (masters && state.master_param is null)
            {
                state.master_param = Created(p.detach().to(ScalarType.Float32, copy: true), ForgetMaster(state));
                batch.Masters[k] = TorchSharpNative.DataPointer(state.master_param.Handle);
            }
            if (batch.Fresh[k] != 0)
            {
                // On CUDA whether the step is skipped is known only on the device, so a new buffer
                // starts at zero: if this first step is skipped, the next one blends into zeros (exact
                // for dampening 0; (1 - dampening)·g̃ otherwise).
                var buf = Created(cuda ? torch.zeros_like(p, dtype) : torch.empty_like(p, dtype), ForgetBuffer(state));
                state.momentum_buffer = buf;
                batch.Buffers[k] = TorchSharpNative.DataPointer(buf.Handle);
            }
            bool heavyBall = o.momentum!.Value != 0 && !o.nesterov!.Value;
            if (!heavyBall && state.prev_update is null)
            {
                // Zero is also "no previous update"; a skipped step still forgets it, so that it changes
                // no state at all (GradScaler's promise).
                state.prev_update = Created(torch.zeros_like(p, dtype), ForgetPrevUpdate(state));
                batch.PrevUpdates[k] = TorchSharpNative.DataPointer(state.prev_update.Handle);
            }
        }
    }

    // A closure made only for a new buffer (one captured in the loop would be allocated per tensor and step).
    private static Action ForgetBuffer(State state) => () => state.momentum_buffer = null;

    private static Action ForgetPrevUpdate(State state) => () => state.prev_update = null;

    private static Action ForgetMaster(State state) => () => state.master_param = null;

    private protected override void NativeStep(in TensorChecks checks)
    {
        var (rates, skipped) = _hd.Prepare(checks, Batch);
        var b = Batch;
        int n = b.Count;
        var (maxNorm, totalNorm) = GradClip(checks);
        var (invScale, foundInf) = GradScale(checks);
        OptimNative.HdStep(checks.Device, checks.DeviceIndex, checks.DType, b.Params.AsSpan(0, n), b.Grads.AsSpan(0, n), b.Buffers.AsSpan(0, n),
            b.PrevUpdates.AsSpan(0, n), b.Rates.AsSpan(0, n), b.Numels.AsSpan(0, n), b.GroupIndex.AsSpan(0, n), b.Fresh.AsSpan(0, n),
            _groupOptions.AsSpan(0, _parameter_groups.Count), _options, rates, skipped, maxNorm, totalNorm, invScale, foundInf, ReducesAcrossRanks,
            UsesMasters(checks) ? b.Masters.AsSpan(0, n) : default, Rounding(checks));
        // A step the scaler skipped is the scaler's and not counted (the base undoes its new state).
        if (_hd.Finish(checks.Device, ScaledStepSkipped()))
        {
            UndoCreatedState();
        }
    }

    /// <summary>
    /// Copies CUDA-resident rates back to the param groups' <c>LearningRate</c> (global and per-group
    /// scopes) and to the per-tensor state (a device synchronization). A no-op on the CPU.
    /// </summary>
    public void SyncLearningRates() => _hd.Sync();

    /// <summary>
    /// The current rate of every parameter tensor, in parameter order across groups: its own rate for
    /// the per-tensor scope, its group's (or the global) rate for the scalar scopes, and the mean of its
    /// rates for the per-parameter scope. Copies from the device on CUDA.
    /// </summary>
    public IReadOnlyList<double> TensorLearningRates() => _hd.TensorLearningRates(ParametersOf, p => (State)_state[p.Handle]);

    /// <summary>A copy of the per-parameter rates of <paramref name="parameter"/> (per-parameter scope only).</summary>
    /// <exception cref="InvalidOperationException">Another scope.</exception>
    /// <exception cref="ArgumentException">The parameter is not optimized by this optimizer.</exception>
    public Tensor ParameterLearningRates(Parameter parameter) =>
        _hd.ParameterLearningRates(parameter, p => _state.TryGetValue(p.Handle, out var s) ? (State)s : null);

    /// <summary>The state, with CUDA-resident rates copied back first so that saving captures them.</summary>
    public override StateDictionary state_dict()
    {
        _hd.BeforeSave();
        return base.state_dict();
    }

    private protected override void AfterLoad() => _hd.AdoptLoadedCounts();

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing)
        {
            _hd.Dispose();
        }
    }
}
