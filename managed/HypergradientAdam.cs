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
/// launched step (the bias corrections then run one step ahead after a skip). The CUDA kernels are checked against
/// the CPU path on an H200; this class on CUDA tensors has not yet run on a GPU.</para>
/// <para>Parameters are float32, float64, float16 or bfloat16, as for <see cref="HypergradientSGD"/>: float16 and
/// bfloat16 ones are updated in float32 with float32 state (moments, previous update, per-parameter rates),
/// written back rounded to nearest, kept as float32 master copies (<c>master_weights</c>), or for bfloat16
/// rounded stochastically (<c>stochastic_rounding</c>).</para>
/// <para><c>hypergrad_lr</c>, <c>scope</c>, <c>rule</c>, <c>lr_min</c> and <c>lr_max</c> apply to the whole
/// optimizer; betas, eps, weight decay, amsgrad, maximize and the initial rate may differ per param group.
/// With the global scope the initial rate is <c>lr</c>. Beta schedulers work through <see cref="IBetas"/>.</para>
/// </remarks>
public partial class HypergradientAdam : FusedOptimizer<HypergradientAdam.Options, HypergradientAdam.State>, IBetas
{
    /// <summary>The normalized rule's guard ε (as <see cref="HypergradientSGD.NormalizedEpsilon"/>).</summary>
    public const double NormalizedEpsilon = HypergradientSGD.NormalizedEpsilon;

    // The hypergradient options, the scalar rates (host or CUDA) and the step counters.
    private readonly HypergradientRates<State> _hd;

    // Reused per step: each group's options in native form.
    private HdAdamGroupOptions[] _groupOptions = Array.Empty<HdAdamGroupOptions>();
    private HdStepOptions _options;

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
    /// <param name="master_weights">Keep float32 master copies of float16/bfloat16 parameters; see <see cref="FusedOptimizer{TOptions, TState}.MasterWeights"/>.</param>
    /// <param name="stochastic_rounding">Round bfloat16 parameters updated in place stochastically; see <see cref="FusedOptimizer{TOptions, TState}.StochasticRounding"/>.</param>
    /// <param name="rounding_seed">The seed of stochastic rounding; see <see cref="FusedOptimizer{TOptions, TState}.RoundingSeed"/>.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public HypergradientAdam(IEnumerable<Parameter> parameters, double lr = 0.001, double hypergrad_lr = 1e-7,
        HypergradientScope scope = HypergradientScope.Global,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0,
        bool amsgrad = false, bool maximize = false,
        HypergradientRule rule = HypergradientRule.Additive,
        double lr_min = 0, double lr_max = double.PositiveInfinity, bool skip_nonfinite = true, double? max_grad_norm = null,
        bool master_weights = false, bool stochastic_rounding = false, long rounding_seed = 0)
        : this(new[] { new ParamGroup(parameters ?? throw new ArgumentNullException(nameof(parameters))) }, lr, hypergrad_lr, scope,
               beta1, beta2, eps, weight_decay, amsgrad, maximize, rule, lr_min, lr_max, skip_nonfinite, max_grad_norm,
               master_weights, stochastic_rounding, rounding_seed)
    {
    }

    /// <summary>Creates the optimizer over several param groups; options a group leaves null take the values given here.</summary>
    /// <inheritdoc cref="HypergradientAdam(IEnumerable{Parameter}, double, double, HypergradientScope, double, double, double, double, bool, bool, HypergradientRule, double, double, bool, double?, bool, bool, long)"/>
    public HypergradientAdam(IEnumerable<ParamGroup> parameters, double lr = 0.001, double hypergrad_lr = 1e-7,
        HypergradientScope scope = HypergradientScope.Global,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0,
        bool amsgrad = false, bool maximize = false,
        HypergradientRule rule = HypergradientRule.Additive,
        double lr_min = 0, double lr_max = double.PositiveInfinity, bool skip_nonfinite = true, double? max_grad_norm = null,
        bool master_weights = false, bool stochastic_rounding = false, long rounding_seed = 0)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        _hd = new HypergradientRates<State>(Name, () => _parameter_groups, hypergrad_lr, scope, rule, lr_min, lr_max, skip_nonfinite);
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

    /// <summary>Steps skipped because a gradient had a NaN or infinite element (reads the device counter on CUDA).</summary>
    public long SkippedSteps => _hd.SkippedSteps;

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

    private protected override bool TakesLowPrecision => true;

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
        double lr = Scope == HypergradientScope.Global ? def.LearningRate!.Value : given.LearningRate ?? def.LearningRate!.Value;
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
        return new State(parameter) { tensor_rate = lr, Scope = Scope, parameter_rates = _hd.NewParameterRates(parameter, lr) };
    }

    private protected override void CheckGroupOptions(Options o, int group) => ValidateOptions(o, group);

    private protected override void AddStateRecords(State state, HandleList records)
    {
        foreach (var t in (ReadOnlySpan<Tensor?>)[state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq, state.prev_update, state.parameter_rates,
            state.master_param])
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
        bool masters = MasterWeights && TensorChecks.IsLowPrecision((ScalarType)parameter.ScalarType);
        if (state.exp_avg is null || state.exp_avg_sq is null || state.prev_update is null ||
            (options.amsgrad!.Value && state.max_exp_avg_sq is null) || (masters && state.master_param is null))
        {
            batch.Fresh[k] = 1;
        }
        if (masters)
        {
            batch.Masters[k] = Describe(ref checks, state.master_param, parameter, group, index, "master_param");
        }
        batch.Buffers[k] = Describe(ref checks, state.exp_avg, parameter, group, index, "exp_avg");
        batch.ExpAvgSqs[k] = Describe(ref checks, state.exp_avg_sq, parameter, group, index, "exp_avg_sq");
        batch.PrevUpdates[k] = Describe(ref checks, state.prev_update, parameter, group, index, "previous update");
        if (options.amsgrad!.Value)
        {
            batch.MaxExpAvgSqs[k] = Describe(ref checks, state.max_exp_avg_sq, parameter, group, index, "max_exp_avg_sq");
        }
        if (Scope == HypergradientScope.PerParameter)
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
        _hd.AdoptLoadedCounts();
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
        _options = _hd.StepOptions();
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
        var dtype = TensorChecks.StateType(p.dtype); // float32 for 16-bit parameters
        if (MasterWeights && TensorChecks.IsLowPrecision(p.dtype) && state.master_param is null)
        {
            state.master_param = Created(p.detach().to(ScalarType.Float32, copy: true), () => state.master_param = null);
            batch.Masters[k] = TorchSharpNative.DataPointer(state.master_param.Handle);
        }
        if (state.exp_avg is null)
        {
            state.exp_avg = Created(torch.zeros_like(p, dtype), () => state.exp_avg = null);
            batch.Buffers[k] = TorchSharpNative.DataPointer(state.exp_avg.Handle);
        }
        if (state.exp_avg_sq is null)
        {
            state.exp_avg_sq = Created(torch.zeros_like(p, dtype), () => state.exp_avg_sq = null);
            batch.ExpAvgSqs[k] = TorchSharpNative.DataPointer(state.exp_avg_sq.Handle);
        }
        if (state.prev_update is null)
        {
            state.prev_update = Created(torch.zeros_like(p, dtype), () => state.prev_update = null);
            batch.PrevUpdates[k] = TorchSharpNative.DataPointer(state.prev_update.Handle);
        }
        if (o.amsgrad!.Value && state.max_exp_avg_sq is null)
        {
            state.max_exp_avg_sq = Created(torch.zeros_like(p, dtype), () => state.max_exp_avg_sq = null);
            batch.MaxExpAvgSqs[k] = TorchSharpNative.DataPointer(state.max_exp_avg_sq.Handle);
        }
    }

    private protected override void NativeStep(in TensorChecks checks)
    {
        var (rates, skipped) = _hd.Prepare(checks, Batch);
        var b = Batch;
        int n = b.Count;
        var (maxNorm, totalNorm) = GradClip(checks);
        OptimNative.HdAdamStep(checks.Device, checks.DeviceIndex, checks.DType, b.Params.AsSpan(0, n), b.Grads.AsSpan(0, n),
            b.Buffers.AsSpan(0, n), b.ExpAvgSqs.AsSpan(0, n), b.MaxExpAvgSqs.AsSpan(0, n), b.PrevUpdates.AsSpan(0, n),
            b.Rates.AsSpan(0, n), b.Numels.AsSpan(0, n), b.Steps.AsSpan(0, n), b.GroupIndex.AsSpan(0, n),
            _groupOptions.AsSpan(0, _parameter_groups.Count), _options, rates, skipped, maxNorm, totalNorm,
            UsesMasters(checks) ? b.Masters.AsSpan(0, n) : default, Rounding(checks));
        // Skipped: known on the CPU only; its parameters' step counts stay.
        if (_hd.Finish(checks.Device, ScaledStepSkipped()))
        {
            UndoCreatedState();
            return;
        }
        // The step was taken (CPU) or launched (CUDA): each parameter with a gradient has taken one more.
        for (int k = 0; k < n; k++)
        {
            if (b.HasGradient[k])
            {
                b.States[k].step = b.Steps[k];
            }
        }
    }

    /// <inheritdoc cref="HypergradientSGD.SyncLearningRates"/>
    public void SyncLearningRates() => _hd.Sync();

    /// <inheritdoc cref="HypergradientSGD.TensorLearningRates"/>
    public IReadOnlyList<double> TensorLearningRates() => _hd.TensorLearningRates(ParametersOf, p => (State)_state[p.Handle]);

    /// <inheritdoc cref="HypergradientSGD.ParameterLearningRates"/>
    public Tensor ParameterLearningRates(Parameter parameter) =>
        _hd.ParameterLearningRates(parameter, p => _state.TryGetValue(p.Handle, out var s) ? (State)s : null);

    /// <inheritdoc cref="HypergradientSGD.state_dict"/>
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
