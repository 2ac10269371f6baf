using System.Globalization;
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
/// <see cref="SyncLearningRates"/> (and the rate readers) copy them back when asked. The CUDA path is
/// compiled, not yet run on a GPU.</para>
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
public class HypergradientSGD : OptimizerHelper, IMomentum
{
    /// <summary>The normalized rule's guard ε.</summary>
    public const double NormalizedEpsilon = 1e-12;

    private readonly HypergradientScope _scope;
    private readonly HypergradientRule _rule;
    private readonly double _hypergradLr;
    private readonly double _lrMin;
    private readonly double _lrMax;
    private readonly bool _skipNonFinite;
    private long _steps;   // steps taken on the host path, and before the device counters were created
    private long _skipped; // steps skipped on the host path

    // Reused per-step arrays.
    private nint[] _p = Array.Empty<nint>(), _g = Array.Empty<nint>(), _b = Array.Empty<nint>(), _u = Array.Empty<nint>(), _r = Array.Empty<nint>();
    private long[] _n = Array.Empty<long>();
    private int[] _gi = Array.Empty<int>();
    private byte[] _fresh = Array.Empty<byte>();
    private byte[] _has = Array.Empty<byte>();
    private nint[] _gradHandles = Array.Empty<nint>();
    private double[] _rates = Array.Empty<double>();
    private HdGroupOptions[] _groupOptions = Array.Empty<HdGroupOptions>();
    private readonly List<(State State, Tensor Buffer)> _created = new();
    private readonly WrittenTensors _written = new();

    // CUDA: the scalar rates and the skip counter in device memory, and the owners of this step's slots.
    private readonly HypergradientDeviceRates _device;
    private readonly List<object> _slotOwners = new();

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
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public HypergradientSGD(IEnumerable<Parameter> parameters, double lr, double hypergrad_lr,
        HypergradientScope scope = HypergradientScope.Global,
        double momentum = 0, double dampening = 0, double weight_decay = 0,
        bool nesterov = false, bool maximize = false,
        HypergradientRule rule = HypergradientRule.Additive,
        double lr_min = 0, double lr_max = double.PositiveInfinity, bool skip_nonfinite = true)
        : this(new[] { new ParamGroup(parameters ?? throw new ArgumentNullException(nameof(parameters))) }, lr, hypergrad_lr, scope,
               momentum, dampening, weight_decay, nesterov, maximize, rule, lr_min, lr_max, skip_nonfinite)
    {
    }

    /// <summary>Creates the optimizer over several param groups; options a group leaves null take the values given here.</summary>
    /// <inheritdoc cref="HypergradientSGD(IEnumerable{Parameter}, double, double, HypergradientScope, double, double, double, bool, bool, HypergradientRule, double, double, bool)"/>
    public HypergradientSGD(IEnumerable<ParamGroup> parameters, double lr, double hypergrad_lr,
        HypergradientScope scope = HypergradientScope.Global,
        double momentum = 0, double dampening = 0, double weight_decay = 0,
        bool nesterov = false, bool maximize = false,
        HypergradientRule rule = HypergradientRule.Additive,
        double lr_min = 0, double lr_max = double.PositiveInfinity, bool skip_nonfinite = true)
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
            momentum = momentum,
            dampening = dampening,
            weight_decay = weight_decay,
            nesterov = nesterov,
            maximize = maximize,
        };
        FusedSGD.ValidateOptions(defaults.momentum!.Value, defaults.dampening!.Value, defaults.weight_decay!.Value,
            defaults.nesterov!.Value, lr, null);
        OptimNative.EnsureLoaded();
        _scope = scope;
        _rule = rule;
        _hypergradLr = hypergrad_lr;
        _lrMin = lr_min;
        _lrMax = lr_max;
        _skipNonFinite = skip_nonfinite;
        _device = new HypergradientDeviceRates(ReadSlotRate, WriteSlotRate);
        _defaults = defaults;
        _parameter_groups = new List<TorchSharp.Modules.ParamGroup>();
        foreach (var group in parameters)
        {
            add_param_group(group);
        }
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

    // Steps taken on the host plus steps attempted on CUDA, where whether a step was skipped is known
    // only on the device: "the first step" (whose rates do not move) is the first attempt there.
    private long Attempts => _steps + _device.Attempts;

    /// <summary>The default momentum; setting it also sets every param group's momentum.</summary>
    public double Momentum
    {
        get => ((Options)_defaults).momentum!.Value;
        set => SgdOptionsBase.SetMomentum(_defaults, _parameter_groups, value);
    }

    /// <summary>Adds a param group (options left null take the optimizer's defaults); validated before it is added.</summary>
    public override void add_param_group(TorchSharp.Modules.ParamGroup param_group)
    {
        ArgumentNullException.ThrowIfNull(param_group);
        if (param_group.Parameters is null)
        {
            throw new ArgumentException("The param group has no Parameters.", nameof(param_group));
        }
        var def = (Options)_defaults;
        if (param_group.Options is not null and not Options)
        {
            throw new ArgumentException($"A HypergradientSGD param group needs HypergradientSGD.Options, not {param_group.Options.GetType().Name}.", nameof(param_group));
        }
        var opt = (Options?)param_group.Options ?? new Options();
        int groupIndex = _parameter_groups.Count;
        double lr = _scope == HypergradientScope.Global ? def.LearningRate!.Value : opt.LearningRate ?? def.LearningRate!.Value;
        double momentum = opt.momentum ?? def.momentum!.Value, dampening = opt.dampening ?? def.dampening!.Value,
            wd = opt.weight_decay ?? def.weight_decay!.Value;
        bool nesterov = opt.nesterov ?? def.nesterov!.Value, maximize = opt.maximize ?? def.maximize!.Value;
        FusedSGD.ValidateOptions(momentum, dampening, wd, nesterov, lr, groupIndex);
        var parameters = param_group.Parameters.ToList();
        TensorChecks.CheckNewGroup(nameof(HypergradientSGD), parameters, groupIndex, _state.ContainsKey,
            _parameter_groups.SelectMany(g => g.Parameters).FirstOrDefault());
        opt.LearningRate = lr;
        opt.InitialLearningRate = lr;
        opt.momentum = momentum;
        opt.dampening = dampening;
        opt.weight_decay = wd;
        opt.nesterov = nesterov;
        opt.maximize = maximize;
        param_group.Options = opt;
        param_group.Parameters = parameters;
        _parameter_groups.Add(param_group);
        foreach (var p in parameters)
        {
            var state = new State(p) { tensor_rate = lr, Scope = _scope };
            if (_scope == HypergradientScope.PerParameter)
            {
                // An explicit Scalar kept alive by `using`: TorchSharp 0.107's implicit double-to-Scalar
                // temporaries can be finalized by the GC while the native call still reads them.
                using var rate = lr.ToScalar();
                state.parameter_rates = torch.full_like(p, rate).DetachFromDisposeScope();
            }
            _state[p.Handle] = state;
        }
    }

    /// <summary>
    /// Performs one step over every param group. Everything is checked first; on an invalid option or
    /// tensor an <see cref="ArgumentException"/> is thrown and nothing has changed.
    /// </summary>
    public override Tensor step(Func<Tensor>? closure = null)
    {
        Tensor? loss = null;
        if (closure is not null)
        {
            using (torch.enable_grad())
            {
                loss = closure();
            }
        }
        StepCore();
        return loss!;
    }

    private void Ensure(int n)
    {
        if (_p.Length >= n)
        {
            return;
        }
        int m = Math.Max(n, _p.Length * 2);
        Array.Resize(ref _p, m);
        Array.Resize(ref _g, m);
        Array.Resize(ref _b, m);
        Array.Resize(ref _u, m);
        Array.Resize(ref _r, m);
        Array.Resize(ref _n, m);
        Array.Resize(ref _gi, m);
        Array.Resize(ref _fresh, m);
        Array.Resize(ref _has, m);
        Array.Resize(ref _gradHandles, m);
    }

    private void StepCore()
    {
        AdoptLoadedCounters();
        // Index loops over the groups on the step path: _parameter_groups is an IList, and foreach over
        // it would allocate an enumerator on every step.
        int total = 0;
        for (int gi = 0; gi < _parameter_groups.Count; gi++)
        {
            total += ParametersOf(_parameter_groups[gi]).Count;
        }
        Ensure(total);
        if (_groupOptions.Length != _parameter_groups.Count)
        {
            _groupOptions = new HdGroupOptions[_parameter_groups.Count];
        }
        var groups = _groupOptions;
        int handles = 0;
        _written.Clear();
        try
        {
            // 1. Check and gather every parameter (those without a gradient take part with 0 elements, so
            //    that per-tensor rate slots stay fixed). Nothing is written yet.
            var checks = new TensorChecks(nameof(HypergradientSGD));
            int k = 0;
            for (int gi = 0; gi < _parameter_groups.Count; gi++)
            {
                var o = (Options)_parameter_groups[gi].Options;
                FusedSGD.ValidateOptions(o.momentum!.Value, o.dampening!.Value, o.weight_decay!.Value, o.nesterov!.Value, o.LearningRate!.Value, gi);
                groups[gi] = new HdGroupOptions
                {
                    Momentum = o.momentum.Value,
                    Dampening = o.dampening.Value,
                    WeightDecay = o.weight_decay.Value,
                    Nesterov = o.nesterov.Value ? 1 : 0,
                    Maximize = o.maximize!.Value ? 1 : 0,
                };
                bool momentum = o.momentum.Value != 0;
                bool heavyBall = momentum && !o.nesterov.Value;
                var list = ParametersOf(_parameter_groups[gi]);
                for (int i = 0; i < list.Count; i++, k++)
                {
                    var p = list[i];
                    checks.CheckAlive(p, gi, i);
                    var state = (State)_state[p.Handle];
                    _gi[k] = gi;
                    _p[k] = _g[k] = _b[k] = _u[k] = _r[k] = 0;
                    _n[k] = 0;
                    _fresh[k] = 0;
                    _has[k] = 0;
                    nint gh = TorchSharpNative.GradientHandle(p.Handle);
                    if (gh == 0)
                    {
                        continue;
                    }
                    _gradHandles[handles++] = gh;
                    _has[k] = 1;
                    _written.Add(p.Handle);
                    var pi = TorchSharpNative.Describe(p.Handle);
                    var gInfo = TorchSharpNative.Describe(gh);
                    checks.CheckParameter(pi, gi, i);
                    checks.CheckGradient(gInfo, pi, gi, i);
                    if (momentum && state.momentum_buffer is not null)
                    {
                        var bi = TorchSharpNative.Describe(state.momentum_buffer.Handle);
                        checks.CheckState(bi, pi, gi, i, "momentum buffer");
                        _b[k] = bi.Data;
                        _written.Add(state.momentum_buffer.Handle);
                    }
                    if (!heavyBall && state.prev_update is not null)
                    {
                        var ui = TorchSharpNative.Describe(state.prev_update.Handle);
                        checks.CheckState(ui, pi, gi, i, "previous update");
                        _u[k] = ui.Data;
                        _written.Add(state.prev_update.Handle);
                    }
                    if (_scope == HypergradientScope.PerParameter)
                    {
                        if (state.parameter_rates is null)
                        {
                            throw new InvalidOperationException($"HypergradientSGD: parameter {i} of param group {gi} has no rates.");
                        }
                        var ri = TorchSharpNative.Describe(state.parameter_rates.Handle);
                        checks.CheckState(ri, pi, gi, i, "rate tensor");
                        _r[k] = ri.Data;
                        _written.Add(state.parameter_rates.Handle);
                    }
                    _p[k] = pi.Data;
                    _g[k] = gInfo.Data;
                    _n[k] = pi.Numel;
                    _fresh[k] = momentum && state.momentum_buffer is null ? (byte)1 : (byte)0;
                }
            }
            if (checks.Empty)
            {
                return;
            }
            bool cuda = checks.Device == NativeDevice.Cuda;

            // 2. Create missing buffers (first steps only).
            _created.Clear();
            k = 0;
            for (int gi = 0; gi < _parameter_groups.Count; gi++)
            {
                var o = (Options)_parameter_groups[gi].Options;
                bool heavyBall = o.momentum!.Value != 0 && !o.nesterov!.Value;
                foreach (var p in ParametersOf(_parameter_groups[gi]))
                {
                    if (_has[k] != 0)
                    {
                        var state = (State)_state[p.Handle];
                        if (_fresh[k] != 0)
                        {
                            // On CUDA whether the step is skipped is known only on the device, so a new
                            // buffer starts at zero: if this first step is skipped, the next one blends
                            // into zeros (exact for dampening 0; (1 - dampening)·g̃ otherwise).
                            var buf = (cuda ? torch.zeros_like(p) : torch.empty_like(p)).DetachFromDisposeScope();
                            state.momentum_buffer = buf;
                            _created.Add((state, buf));
                            _b[k] = TorchSharpNative.DataPointer(buf.Handle);
                        }
                        if (!heavyBall && state.prev_update is null)
                        {
                            state.prev_update = torch.zeros_like(p).DetachFromDisposeScope();
                            _u[k] = TorchSharpNative.DataPointer(state.prev_update.Handle);
                        }
                    }
                    k++;
                }
            }

            // 3. The native step.
            var options = new HdStepOptions
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
            try
            {
                _written.BumpVersions();
                if (cuda)
                {
                    StepOnDevice(checks, total, groups, options);
                }
                else
                {
                    StepOnHost(checks, total, groups, options);
                }
            }
            catch
            {
                RollBackCreatedBuffers();
                throw;
            }
        }
        finally
        {
            for (int i = 0; i < handles; i++)
            {
                TorchSharpNative.ReleaseHandle(_gradHandles[i]);
                _gradHandles[i] = 0;
            }
            _created.Clear();
        }
    }

    private void RollBackCreatedBuffers()
    {
        // A buffer created for this step was never written: the next step must start it afresh.
        foreach (var (state, buf) in _created)
        {
            state.momentum_buffer = null;
            buf.Dispose();
        }
    }

    private int Slots(int total) => _scope switch
    {
        HypergradientScope.Global => 1,
        HypergradientScope.PerGroup => _parameter_groups.Count,
        HypergradientScope.PerTensor => total,
        _ => 0,
    };

    private unsafe void StepOnHost(TensorChecks checks, int total, HdGroupOptions[] groups, in HdStepOptions options)
    {
        int slots = Slots(total);
        if (_rates.Length < Math.Max(slots, 1))
        {
            _rates = new double[Math.Max(slots, 1)];
        }
        // The rates' home on the CPU: the groups' LearningRate (global, per group; a scheduler's change
        // is adopted) and each State's tensor_rate (per tensor).
        if (_scope == HypergradientScope.Global)
        {
            _rates[0] = _parameter_groups[0].LearningRate;
        }
        else if (_scope == HypergradientScope.PerGroup)
        {
            for (int gi = 0; gi < slots; gi++)
            {
                _rates[gi] = _parameter_groups[gi].LearningRate;
            }
        }
        else if (_scope == HypergradientScope.PerTensor)
        {
            int k = 0;
            for (int gi = 0; gi < _parameter_groups.Count; gi++)
            {
                foreach (var p in ParametersOf(_parameter_groups[gi]))
                {
                    _rates[k++] = ((State)_state[p.Handle]).tensor_rate;
                }
            }
        }
        long skipped = 0;
        fixed (double* rates = _rates)
        {
            OptimNative.HdStep(NativeDevice.Cpu, 0, checks.DType, _p.AsSpan(0, total), _g.AsSpan(0, total), _b.AsSpan(0, total), _u.AsSpan(0, total),
                _r.AsSpan(0, total), _n.AsSpan(0, total), _gi.AsSpan(0, total), _fresh.AsSpan(0, total), groups, options, (nint)rates, (nint)(&skipped));
        }
        if (skipped != 0)
        {
            _skipped++;
            RollBackCreatedBuffers();
            return;
        }
        _steps++;
        if (_scope == HypergradientScope.Global)
        {
            for (int gi = 0; gi < _parameter_groups.Count; gi++)
            {
                _parameter_groups[gi].LearningRate = _rates[0];
            }
        }
        else if (_scope == HypergradientScope.PerGroup)
        {
            for (int gi = 0; gi < slots; gi++)
            {
                _parameter_groups[gi].LearningRate = _rates[gi];
            }
        }
        else if (_scope == HypergradientScope.PerTensor)
        {
            int k = 0;
            for (int gi = 0; gi < _parameter_groups.Count; gi++)
            {
                foreach (var p in ParametersOf(_parameter_groups[gi]))
                {
                    ((State)_state[p.Handle]).tensor_rate = _rates[k++];
                }
            }
        }
    }

    private void StepOnDevice(TensorChecks checks, int total, HdGroupOptions[] groups, in HdStepOptions options)
    {
        _slotOwners.Clear();
        switch (_scope)
        {
            case HypergradientScope.Global:
                _slotOwners.Add(_parameter_groups[0]);
                break;
            case HypergradientScope.PerGroup:
                for (int gi = 0; gi < _parameter_groups.Count; gi++)
                {
                    _slotOwners.Add(_parameter_groups[gi]);
                }
                break;
            case HypergradientScope.PerTensor:
                for (int gi = 0; gi < _parameter_groups.Count; gi++)
                {
                    foreach (var p in ParametersOf(_parameter_groups[gi]))
                    {
                        _slotOwners.Add(_state[p.Handle]);
                    }
                }
                break;
        }
        var (rates, skipped) = _device.Prepare(_slotOwners, new Device(DeviceType.CUDA, checks.DeviceIndex));
        OptimNative.HdStep(NativeDevice.Cuda, checks.DeviceIndex, checks.DType, _p.AsSpan(0, total), _g.AsSpan(0, total), _b.AsSpan(0, total),
            _u.AsSpan(0, total), _r.AsSpan(0, total), _n.AsSpan(0, total), _gi.AsSpan(0, total), _fresh.AsSpan(0, total), groups, options,
            rates, skipped);
        _device.Launched();
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

    // A group's parameters as the list add_param_group stored (re-listed if the caller replaced them).
    private static List<Parameter> ParametersOf(TorchSharp.Modules.ParamGroup group)
    {
        if (group.Parameters is not List<Parameter> list)
        {
            list = group.Parameters.ToList();
            group.Parameters = list;
        }
        return list;
    }

    private IEnumerable<Parameter> AllParameters() => _parameter_groups.SelectMany(g => ParametersOf(g));

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
    /// The current rate of every parameter tensor, in parameter order across groups: its own rate for
    /// the per-tensor scope, its group's (or the global) rate for the scalar scopes, and the mean of its
    /// rates for the per-parameter scope. Copies from the device on CUDA.
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
            throw new InvalidOperationException($"HypergradientSGD: per-parameter rates exist only for the PerParameter scope, not {_scope}.");
        }
        if (!_state.ContainsKey(parameter.Handle))
        {
            throw new ArgumentException("HypergradientSGD: the parameter is not optimized by this optimizer.", nameof(parameter));
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

    /// <summary>
    /// Adopts counters restored by <c>load_state_dict</c> (TorchSharp's loader is not virtual: call this
    /// after loading, or rely on the next step, which does it).
    /// </summary>
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

    /// <summary>
    /// Restores the state written by <c>save_state_dict</c>, all or nothing: every param group's options
    /// and counters and every parameter's buffers and rates are read and checked before anything changes.
    /// </summary>
    /// <exception cref="InvalidDataException">Not a valid HypergradientSGD state for these param groups and
    /// this scope (truncated, corrupt, another optimizer's, other shapes); the optimizer is unchanged.</exception>
    /// <remarks>Load through this type: TorchSharp's <c>OptimizerHelper.load_state_dict</c>, which is not
    /// virtual, applies the groups and parameters one at a time.</remarks>
    public new void load_state_dict(BinaryReader reader)
    {
        StateLoad.Load(this, reader, _parameter_groups, _state);
        AdoptLoadedCounters();
    }

    /// <summary>Restores the state from a file written by <c>save_state_dict</c>, all or nothing.</summary>
    /// <exception cref="InvalidDataException">Not a valid HypergradientSGD state; the optimizer is unchanged.</exception>
    public new void load_state_dict(string location)
    {
        using var stream = File.OpenRead(location);
        using var reader = new BinaryReader(stream);
        load_state_dict(reader);
    }

    /// <summary>Copies the state of another HypergradientSGD over the same parameters, all or nothing.</summary>
    /// <exception cref="ArgumentException">The dictionary does not fit; the optimizer is unchanged.</exception>
    public override void load_state_dict(StateDictionary state_dict)
    {
        StateLoad.Copy(this, state_dict, this.state_dict());
        AdoptLoadedCounters();
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing)
        {
            foreach (var (_, st) in _state)
            {
                (st as State)?.Dispose();
            }
            _state.Clear();
            _device.Dispose();
        }
    }

    /// <summary>Per-parameter state.</summary>
    public sealed class State : OptimizerState, IDisposable, IStagedLoad
    {
        /// <summary>The scope of the optimizer this state belongs to (what a loaded state must hold).</summary>
        internal HypergradientScope Scope { get; init; }

        /// <summary>The momentum buffer (heavy-ball momentum: also the previous update direction).</summary>
        public Tensor? momentum_buffer;
        /// <summary>The previous update direction, kept when there is no momentum or with Nesterov.</summary>
        public Tensor? prev_update;
        /// <summary>The per-parameter scope's rates, shaped like the parameter.</summary>
        public Tensor? parameter_rates;
        /// <summary>The per-tensor scope's rate of this tensor.</summary>
        public double tensor_rate;

        /// <summary>Creates the state of one parameter.</summary>
        public State(Parameter parameter) : base(parameter)
        {
        }

        /// <summary>Disposes the tensors.</summary>
        public void Dispose()
        {
            momentum_buffer?.Dispose();
            prev_update?.Dispose();
            parameter_rates?.Dispose();
            momentum_buffer = prev_update = parameter_rates = null;
        }

        /// <summary>Moves the tensors to <paramref name="device"/>.</summary>
        public override void to(Device device)
        {
            momentum_buffer = Move(momentum_buffer, device);
            prev_update = Move(prev_update, device);
            parameter_rates = Move(parameter_rates, device);
        }

        private static Tensor? Move(Tensor? t, Device device)
        {
            if (t is null)
            {
                return null;
            }
            var moved = t.to(device).DetachFromDisposeScope();
            if (!ReferenceEquals(moved, t))
            {
                t.Dispose();
            }
            return moved;
        }

        /// <summary>Reads the state written by <see cref="SaveStateDict(BinaryWriter)"/>; nothing changes if it is invalid.</summary>
        /// <exception cref="InvalidDataException">A tensor does not fit the parameter, a rate is invalid, or the data ends early.</exception>
        public override void LoadStateDict(BinaryReader reader)
        {
            using var r = new StateReader(reader, nameof(HypergradientSGD)) { Part = "parameter state" };
            var apply = ReadStaged(r);
            r.Staged.Commit();
            apply();
        }

        Action IStagedLoad.ReadStaged(StateReader reader) => ReadStaged(reader);

        Action IStagedLoad.CopyStaged(object source, Staging staging) => CopyStaged(source, staging);

        private Action ReadStaged(StateReader r)
        {
            var b = r.ReadOptionalTensor("momentum buffer", _parameter);
            var u = r.ReadOptionalTensor("previous update", _parameter);
            var rates = r.ReadOptionalTensor("per-parameter rates", _parameter);
            double rate = r.ReadNonNegative("per-tensor rate");
            CheckRates(rates, r.Invalid);
            if (rates is not null)
            {
                r.RequireNonNegative(rates, "per-parameter rates");
            }
            return () => Replace(b, u, rates, rate);
        }

        private Action CopyStaged(object source, Staging staging)
        {
            if (source is not State o)
            {
                throw new ArgumentException($"Expected a HypergradientSGD.State, got {source?.GetType().Name ?? "null"}.", nameof(source));
            }
            const string owner = nameof(HypergradientSGD);
            var b = StateLoad.CopyTensor(o.momentum_buffer, _parameter, staging, owner, "momentum buffer");
            var u = StateLoad.CopyTensor(o.prev_update, _parameter, staging, owner, "previous update");
            var rates = StateLoad.CopyTensor(o.parameter_rates, _parameter, staging, owner, "per-parameter rates");
            if (!double.IsFinite(o.tensor_rate) || o.tensor_rate < 0)
            {
                throw new ArgumentException($"{owner}: the source's per-tensor rate {o.tensor_rate} is invalid.", nameof(source));
            }
            CheckRates(rates, m => new ArgumentException($"{owner}: {m}", nameof(source)));
            double rate = o.tensor_rate;
            return () => Replace(b, u, rates, rate);
        }

        // The per-parameter scope needs a rate tensor; the other scopes have none.
        private void CheckRates<TException>(Tensor? rates, Func<string, TException> fail) where TException : Exception
        {
            if (Scope == HypergradientScope.PerParameter && rates is null)
            {
                throw fail("the per-parameter scope needs per-parameter rates, and the state has none.");
            }
            if (Scope != HypergradientScope.PerParameter && rates is not null)
            {
                throw fail($"the state has per-parameter rates, but this optimizer's scope is {Scope}.");
            }
        }

        private void Replace(Tensor? b, Tensor? u, Tensor? rates, double rate)
        {
            Dispose();
            (momentum_buffer, prev_update, parameter_rates, tensor_rate) = (b, u, rates, rate);
        }

        /// <summary>Writes the buffers, the rates and the per-tensor rate.</summary>
        public override void SaveStateDict(BinaryWriter writer)
        {
            SaveConditionalStateTensor(writer, momentum_buffer!);
            SaveConditionalStateTensor(writer, prev_update!);
            SaveConditionalStateTensor(writer, parameter_rates!);
            writer.Write(tensor_rate);
        }

        /// <summary>Copies another <see cref="State"/>; nothing changes if it does not fit the parameter.</summary>
        public override void LoadStateDict(OptimizerState source)
        {
            using var staging = new Staging();
            var apply = CopyStaged(source, staging);
            staging.Commit();
            apply();
        }

        /// <summary>Approximate equality of every tensor and the per-tensor rate.</summary>
        public override bool ApproximatelyEquals(OptimizerState other)
        {
            static bool Eq(Tensor? a, Tensor? b) => a is null ? b is null : b is not null && a.allclose(b);
            return other is State o && Eq(momentum_buffer, o.momentum_buffer) && Eq(prev_update, o.prev_update) &&
                Eq(parameter_rates, o.parameter_rates) && tensor_rate == o.tensor_rate;
        }

        /// <summary>Clears the buffers (the rates are kept).</summary>
        public override void Initialize(OptimizerOptions options)
        {
            momentum_buffer?.Dispose();
            prev_update?.Dispose();
            momentum_buffer = prev_update = null;
        }
    }

    /// <summary>Options of a param group; null values take the optimizer's defaults. Also carries the
    /// optimizer's step and skipped counts through <c>state_dict</c>.</summary>
    public class Options : SgdOptionsBase
    {
        internal long steps;
        internal long skipped;
        internal bool loaded;

        private protected override Action ReadStaged(StateReader r)
        {
            var options = base.ReadStaged(r);
            long s = r.ReadCount("the step count");
            long k = r.ReadCount("the skipped step count");
            return () =>
            {
                options();
                (steps, skipped, loaded) = (s, k, true);
            };
        }

        private protected override Action CopyStaged(object source)
        {
            var options = base.CopyStaged(source);
            var o = (Options)source;
            if (o.steps < 0 || o.skipped < 0)
            {
                throw new ArgumentException("The source options have negative step counts.", nameof(source));
            }
            var (s, k) = (o.steps, o.skipped);
            return () =>
            {
                options();
                (steps, skipped, loaded) = (s, k, true);
            };
        }

        /// <summary>Writes the options, the step count and the skipped count.</summary>
        public override void SaveStateDict(BinaryWriter writer)
        {
            base.SaveStateDict(writer);
            writer.Write(steps);
            writer.Write(skipped);
        }
    }

    /// <summary>A param group of <see cref="HypergradientSGD"/>, with optional per-group options.</summary>
    public class ParamGroup : SgdParamGroupBase<Options>
    {
        /// <summary>An empty group (set <c>Parameters</c> and <c>Options</c>).</summary>
        public ParamGroup()
        {
        }

        /// <summary>A group with explicit options (null fields take the optimizer's defaults).</summary>
        public ParamGroup(IEnumerable<Parameter> parameters, Options options) : base(parameters, options)
        {
        }

        /// <summary>A group; each option left null takes the optimizer's default.</summary>
        public ParamGroup(IEnumerable<Parameter> parameters, double? lr = null, double? momentum = null, double? dampening = null,
            double? weight_decay = null, bool? nesterov = null, bool? maximize = null)
            : base(parameters, lr, momentum, dampening, weight_decay, nesterov, maximize)
        {
        }
    }
}
