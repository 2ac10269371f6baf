using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// What Optim's fused optimizers share: param groups whose unset options take the optimizer's defaults,
/// the closure step, the checks and pointer gather of every parameter before anything is written, clipping
/// and <see cref="GradScaler"/>'s fused path (the inverse scale and the overflow flag read by the native
/// step; a skipped step leaves every state as it was), the
/// state tensors created on a parameter's first step and their rollback when the step does not happen,
/// the autograd version bumps, all-or-nothing loading and disposal. A derived optimizer supplies only
/// what is its own: its options, its per-parameter state, and its native step. It is derived only
/// inside Optim (its constructor is not public).
/// </summary>
/// <typeparam name="TOptions">The optimizer's per-group options.</typeparam>
/// <typeparam name="TState">The optimizer's per-parameter state.</typeparam>
public abstract class FusedOptimizer<TOptions, TState> : OptimizerHelper, IFusedGradScaling
    where TOptions : OptimizerOptions, new()
    where TState : OptimizerState, IDisposable
{
    private readonly List<(Tensor Tensor, Action Undo)> _created = new();
    private double? _maxGradNorm;
    private Tensor? _gradNorm;
    // The GradScaler's tensors during a scaled step (null otherwise), their copies on the step's
    // device when they live elsewhere, and whether the step was found to be skipped (read once).
    private Tensor? _invScale, _foundInf, _invScaleHere, _foundInfHere;
    private bool? _scaledSkip;
    private bool _masterWeights;
    private bool _stochasticRounding;
    private long _roundingSeed;
    private long _roundingStep;

    private protected FusedOptimizer()
    {
    }

    /// <summary>This step's tensors: pointers, sizes, groups and states, in param-group order.</summary>
    private protected TensorBatch<TState> Batch { get; } = new();

    /// <summary>The optimizer's name in messages.</summary>
    private protected abstract string Name { get; }

    /// <summary>Whether the optimizer takes float16 and bfloat16 parameters (float32 math and state).</summary>
    private protected virtual bool TakesLowPrecision => false;

    /// <summary>
    /// Whether float16 and bfloat16 parameters have float32 master copies (the constructors'
    /// <c>master_weights</c>): each step updates the copy and writes the parameter as the copy rounded to
    /// nearest, so small updates accumulate in float32 (the mixed-precision recipe of apex and DeepSpeed). The
    /// copy is made from the parameter on its first step, kept in the parameter's state (saved and loaded with
    /// it) and is what the optimizer follows from then on: a parameter changed from outside afterwards is
    /// overwritten by the next step (load the optimizer's state with the model's). Float32 and float64
    /// parameters have nothing to copy: the option changes nothing for them.
    /// </summary>
    public bool MasterWeights => _masterWeights;

    /// <summary>
    /// Whether bfloat16 parameters updated in place (without <see cref="MasterWeights"/>) are rounded
    /// stochastically (the constructors' <c>stochastic_rounding</c>): up with probability equal to the dropped
    /// fraction of the last place, so the rounding is unbiased and updates below half a place still move the
    /// parameter on average. The random bits are a hash of (<see cref="RoundingSeed"/>, the optimizer's step
    /// count, the tensor's index in the step, the element's index): the same seed gives the same run, with no
    /// generator state. The step count is the number of steps taken (a step a <see cref="GradScaler"/> skips is
    /// not one); it is saved with the state of each float16 or bfloat16 parameter and restored by
    /// <c>load_state_dict</c>, so a resumed run draws the bits of an uninterrupted one. Other dtypes are rounded
    /// to nearest (float16 parameters with this option are refused).
    /// </summary>
    public bool StochasticRounding => _stochasticRounding;

    /// <summary>The seed of <see cref="StochasticRounding"/> (the constructors' <c>rounding_seed</c>).</summary>
    public long RoundingSeed => _roundingSeed;

    /// <summary>Sets the mixed-precision options of the constructors, checked first.</summary>
    private protected void SetPrecision(bool masterWeights, bool stochasticRounding, long roundingSeed)
    {
        if (masterWeights && stochasticRounding)
        {
            throw new ArgumentException($"{Name}: stochastic_rounding is for parameters updated in place; with master_weights the " +
                "parameter is its float32 master copy rounded to nearest. Choose one.", "stochastic_rounding");
        }
        (_masterWeights, _stochasticRounding, _roundingSeed) = (masterWeights, stochasticRounding, roundingSeed);
    }

    /// <summary>Whether this step keeps master copies: <see cref="MasterWeights"/> with 16-bit parameters.</summary>
    private protected bool UsesMasters(in TensorChecks checks) => _masterWeights && checks.LowPrecision;

    /// <summary>The rounding of this step for the native call (stochastic for bfloat16 parameters in place with <see cref="StochasticRounding"/>).</summary>
    private protected MixedPrecision Rounding(in TensorChecks checks) =>
        _stochasticRounding && checks.DType == NativeDType.BFloat16 ? new MixedPrecision(true, _roundingSeed, _roundingStep) : MixedPrecision.Plain;

    /// <summary>Whether parameters without a gradient take part in a step as empty entries (keeping per-tensor slots fixed).</summary>
    private protected virtual bool KeepsParametersWithoutGradients => false;

    /// <summary>Sets the defaults and adds the groups, each checked by <see cref="add_param_group"/>.</summary>
    private protected void Initialize(TOptions defaults, IEnumerable<TorchSharp.Modules.ParamGroup> groups)
    {
        ArgumentNullException.ThrowIfNull(groups);
        OptimNative.EnsureLoaded();
        _defaults = defaults;
        _parameter_groups = new List<TorchSharp.Modules.ParamGroup>();
        foreach (var group in groups)
        {
            add_param_group(group);
        }
    }

    /// <summary>
    /// Performs one step over every param group. Every tensor and option is checked first; if a check
    /// fails, an exception names the problem and no parameter or state has changed.
    /// </summary>
    /// <param name="closure">Optional: re-evaluates the model and returns the loss.</param>
    /// <returns>The closure's loss, or null.</returns>
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
        var batch = Batch;
        try
        {
            var checks = Gather();
            if (checks.Empty)
            {
                if (_shardDType is not ScalarType dtype)
                {
                    return loss!;
                }
                checks.AssumeForEmptyStep(dtype);
            }
            if (_stochasticRounding && checks.DType == NativeDType.Float16)
            {
                throw new ArgumentException($"{Name}: stochastic_rounding is for bfloat16 parameters; these are Float16 " +
                    "(use master_weights, or bfloat16 parameters).", "parameters");
            }
            PrepareStep(checks);
            try
            {
                CreateMissingState(checks);
                batch.Written.BumpVersions();
                if (checks.Device == NativeDevice.Cuda)
                {
                    OptimNative.FollowTorchCudaStream(checks.DeviceIndex);
                }
                NativeStep(checks);
                if (ScaledStepSkipped())
                {
                    // The native step changed nothing: neither may the state made for it.
                    UndoCreatedState();
                }
                else
                {
                    _roundingStep++;
                }
            }
            catch
            {
                UndoCreatedState();
                throw;
            }
            finally
            {
                _created.Clear();
            }
        }
        finally
        {
            batch.Release();
        }
        return loss!;
    }

    /// <summary>
    /// Gradient clipping by global norm (the constructors' <c>max_grad_norm</c>; null: none). Each step
    /// then equals <c>torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)</c> followed by the
    /// step: the norm of all gradients of all param groups is taken in one read pass, and the
    /// coefficient <c>min(max_grad_norm / (norm + 1e-6), 1)</c> is applied inside the update as each
    /// gradient element is read. The gradients themselves are not modified (PyTorch's
    /// <c>clip_grad_norm_</c> scales <c>.grad</c> in place). On CUDA the norm stays on the device and
    /// the update reads it there: no step waits for the host. Setting an invalid value changes nothing.
    /// </summary>
    /// <exception cref="ArgumentException">A value that is not finite and &gt; 0.</exception>
    /// <exception cref="NotSupportedException">A value on an optimizer that does not clip (<see cref="Sls"/>).</exception>
    public double? MaxGradNorm
    {
        get => _maxGradNorm;
        set
        {
            CheckMaxGradNorm(value);
            if (value is not null && !ClipsGradients)
            {
                throw new NotSupportedException($"{Name} does not clip gradients: its step has no max_grad_norm.");
            }
            _maxGradNorm = value;
        }
    }

    /// <summary>
    /// Whether this optimizer's parameters are one rank's shard of a model split over the ranks of an MPI
    /// job (set by <see cref="Distributed.ShardedOptimizer"/> with <see cref="ReduceAcrossRanks"/>): its
    /// step then sums what it reduces over every rank (the clipping norm; HD's global and per-group
    /// hypergradients and its non-finite check), so every rank clips by the whole model's norm and moves
    /// its rates alike. Every rank then steps together, with or without gradients of its own. CPU only.
    /// </summary>
    internal bool ReducesAcrossRanks => _shardDType is not null;

    private ScalarType? _shardDType;

    /// <summary>Makes the step reduce across ranks (<see cref="ReducesAcrossRanks"/>); <paramref name="dtype"/> is the
    /// model's, which a rank without tensors of its own steps in (null: a job of one, nothing to reduce).</summary>
    internal void ReduceAcrossRanks(ScalarType? dtype) => _shardDType = dtype;

    /// <summary>Whether this optimizer's native step applies <see cref="MaxGradNorm"/> (Sls's line search does not).</summary>
    private protected virtual bool ClipsGradients => true;

    /// <summary>
    /// The global gradient norm of the last clipped step (before clipping), as a float64 scalar on the
    /// parameters' device: a copy the caller disposes, so reading its value (<c>item</c>) is what waits
    /// for the step on CUDA. Null before the first step with <see cref="MaxGradNorm"/> set.
    /// </summary>
    public Tensor? GradNorm => _gradNorm?.clone();

    // Master weights and stochastic rounding included (optim_*_step_mixed_scaled).
    bool IFusedGradScaling.SupportsGradScaling => FusesGradScaling;

    /// <summary>Whether this optimizer's native step applies a gradient scaler (Sls's line search and
    /// HypergradientAdam's step do not: the scaler then unscales the gradients itself).</summary>
    private protected virtual bool FusesGradScaling => ClipsGradients;

    void IFusedGradScaling.ScaledStep(Tensor invScale, Tensor foundInf)
    {
        _invScale = invScale;
        _foundInf = foundInf;
        _scaledSkip = null;
        try
        {
            step();
            if (_foundInfHere is not null)
            {
                _foundInf.copy_(_foundInfHere);
            }
        }
        finally
        {
            _invScale = _foundInf = null;
            _invScaleHere?.Dispose();
            _foundInfHere?.Dispose();
            _invScaleHere = _foundInfHere = null;
            _scaledSkip = null;
        }
    }

    /// <summary>The GradScaler of this step for the native call: (address of the float32 inverse scale,
    /// address of the float32 found-inf flag), both on the step's device, or (0, 0) for an unscaled step.</summary>
    private protected (nint InvScale, nint FoundInf) GradScale(in TensorChecks checks)
    {
        if (_invScale is null || _foundInf is null)
        {
            return (0, 0);
        }
        var type = checks.Device == NativeDevice.Cuda ? DeviceType.CUDA : DeviceType.CPU;
        int index = checks.DeviceIndex;
        var device = type == DeviceType.CUDA ? new Device(type, index) : torch.CPU;
        bool Here(Tensor t) => t.device_type == type && (type == DeviceType.CPU || t.device_index == index);
        if (!Here(_invScale) && _invScaleHere is null)
        {
            _invScaleHere = _invScale.to(device).DetachFromDisposeScope();
        }
        if (!Here(_foundInf) && _foundInfHere is null)
        {
            _foundInfHere = _foundInf.to(device).DetachFromDisposeScope();
        }
        var inv = _invScaleHere ?? _invScale;
        var found = _foundInfHere ?? _foundInf;
        return (TorchSharpNative.DataPointer(inv.Handle), TorchSharpNative.DataPointer(found.Handle));
    }

    /// <summary>Whether this step is a scaled one that the native step skipped (its found-inf flag is set;
    /// on CUDA reading it waits for the step). False for an unscaled step.</summary>
    private protected bool ScaledStepSkipped()
    {
        if (_foundInf is null)
        {
            return false;
        }
        _scaledSkip ??= (_foundInfHere ?? _foundInf).item<float>() != 0;
        return _scaledSkip.Value;
    }

    /// <summary>Checks a <c>max_grad_norm</c> value: null, or finite and &gt; 0.</summary>
    private protected static void CheckMaxGradNorm(double? value)
    {
        if (value is double v && !(v > 0 && double.IsFinite(v)))
        {
            throw new ArgumentException($"Invalid max_grad_norm value: {v.ToString("R", System.Globalization.CultureInfo.InvariantCulture)} " +
                "(must be finite and > 0, or null for no clipping)", "max_grad_norm");
        }
    }

    /// <summary>The clipping of this step for the native call: (max norm, address of the norm's float64
    /// home on the step's device), or (0, 0) without clipping.</summary>
    private protected (double MaxNorm, nint TotalNorm) GradClip(in TensorChecks checks)
    {
        if (_maxGradNorm is not double max)
        {
            return (0, 0);
        }
        var type = checks.Device == NativeDevice.Cuda ? DeviceType.CUDA : DeviceType.CPU;
        int index = checks.Device == NativeDevice.Cuda ? checks.DeviceIndex : -1;
        // Compared field by field, so that a warm step allocates nothing.
        if (_gradNorm is null || _gradNorm.device_type != type || (type == DeviceType.CUDA && _gradNorm.device_index != index))
        {
            var device = type == DeviceType.CUDA ? new Device(type, index) : torch.CPU;
            var norm = torch.full(Array.Empty<long>(), double.NaN, ScalarType.Float64, device).DetachFromDisposeScope();
            _gradNorm?.Dispose();
            _gradNorm = norm;
        }
        return (max, TorchSharpNative.DataPointer(_gradNorm.Handle));
    }

    /// <summary>Runs a step's checks and gather alone and writes nothing: what the managed side of a step costs (benchmarks).</summary>
    internal void GatherOnly()
    {
        try
        {
            Gather();
        }
        finally
        {
            Batch.Release();
        }
    }

    /// <summary>Checks a group's options before a step (the options may have been changed since it was added).</summary>
    private protected abstract void CheckGroupOptions(TOptions options, int group);

    /// <summary>Gathers what the step needs of one parameter's state into entry <paramref name="k"/> of <see cref="Batch"/>, checking each state tensor.</summary>
    private protected abstract void GatherState(int k, ref TensorChecks checks, in TensorInfo parameter, TState state, TOptions options, int group, int index);

    /// <summary>Everything the native call needs that may still fail (nothing is written yet).</summary>
    private protected virtual void PrepareStep(in TensorChecks checks)
    {
    }

    /// <summary>Creates the state tensors of parameters on their first step, each through <see cref="Created"/>.</summary>
    private protected abstract void CreateMissingState(in TensorChecks checks);

    /// <summary>The native step over <see cref="Batch"/>.</summary>
    private protected abstract void NativeStep(in TensorChecks checks);

    /// <summary>Takes a state tensor made for this step; if the step does not happen, <paramref name="undo"/> runs and the tensor is freed.</summary>
    private protected Tensor Created(Tensor tensor, Action undo)
    {
        tensor.DetachFromDisposeScope();
        _created.Add((tensor, undo));
        return tensor;
    }

    /// <summary>Undoes the state tensors made for this step (a failed or skipped step): the next step starts them afresh.</summary>
    private protected void UndoCreatedState()
    {
        foreach (var (tensor, undo) in _created)
        {
            undo();
            tensor.Dispose();
        }
        _created.Clear();
    }

    // Checks every parameter of every group and gathers its pointers into the batch; writes nothing.
    // In passes over all tensors, so that the cache misses on LibTorch's records of different tensors
    // overlap (docs/design.md, "Many tensors"): the parameters and their state, prefetched; the gradient
    // handles, prefetched; then the reads and checks, from cache. Nothing is cached across steps.
    private TensorChecks Gather()
    {
        var batch = Batch;
        batch.Reset();
        var checks = new TensorChecks(Name, TakesLowPrecision);
        var pending = batch.Pending;
        // Index loops: _parameter_groups is an IList, and foreach over it allocates an enumerator.
        for (int gi = 0; gi < _parameter_groups.Count; gi++)
        {
            var group = _parameter_groups[gi];
            CheckGroupOptions((TOptions)group.Options, gi);
            var list = ParametersOf(group);
            for (int i = 0; i < list.Count; i++)
            {
                var p = list[i];
                checks.CheckAlive(p, gi, i);
                nint handle = p.Handle;
                var state = (TState)_state[handle];
                pending.Add(p, handle, state, gi, i);
                AddStateRecords(state, pending.Records);
            }
        }
        pending.PrefetchRecords();
        // The gradients as borrowed handles, in one native call; TorchSharp's own handles (one each,
        // made and released per step) only where LibTorch's exports are not found.
        if (!OptimNative.TryBorrowGradients(pending.Handles.AsSpan(0, pending.Count), pending.Grads))
        {
            for (int j = 0; j < pending.Count; j++)
            {
                nint gradHandle = TorchSharpNative.GradientHandle(pending.Handles[j]);
                if (gradHandle != 0)
                {
                    batch.OwnGradientHandle(gradHandle);
                }
                pending.Grads[j] = gradHandle;
            }
        }
        pending.PrefetchGradients();
        for (int j = 0; j < pending.Count; j++)
        {
            var p = pending.Params[j];
            var state = pending.States[j];
            int gi = pending.Groups[j], i = pending.Indices[j];
            nint handle = pending.Handles[j], gradHandle = pending.Grads[j];
            if (gradHandle == 0)
            {
                if (KeepsParametersWithoutGradients)
                {
                    batch.BeginGroup(gi);
                    batch.AddWithoutGradient(p, state);
                }
                continue;
            }
            var pi = TorchSharpNative.Describe(handle);
            var gInfo = TorchSharpNative.Describe(gradHandle);
            checks.CheckParameter(pi, gi, i);
            checks.CheckGradient(gInfo, pi, gi, i);
            batch.Written.Add(handle);
            batch.BeginGroup(gi);
            int k = batch.Add(p, pi, gInfo, state);
            GatherState(k, ref checks, pi, state, (TOptions)_parameter_groups[gi].Options, gi, i);
        }
        return checks;
    }

    /// <summary>Adds the handles of a parameter's state tensors to <paramref name="records"/>, to be prefetched before the step reads them.</summary>
    private protected abstract void AddStateRecords(TState state, HandleList records);

    /// <summary>
    /// Adds a param group. Options it leaves unset take the optimizer's defaults; the group's options and
    /// tensors are checked before anything changes.
    /// </summary>
    /// <exception cref="ArgumentException">Invalid options, an unsupported tensor, or a parameter that is already optimized.</exception>
    public override void add_param_group(TorchSharp.Modules.ParamGroup param_group)
    {
        ArgumentNullException.ThrowIfNull(param_group);
        if (param_group.Parameters is null)
        {
            throw new ArgumentException("The param group has no Parameters.", nameof(param_group));
        }
        if (param_group.Options is not null and not TOptions)
        {
            throw new ArgumentException($"A {Name} param group needs {Name}.Options, not {param_group.Options.GetType().Name}.", nameof(param_group));
        }
        var options = (TOptions?)param_group.Options ?? new TOptions();
        int index = _parameter_groups.Count;
        var completeOptions = PrepareGroupOptions(options, index);
        var parameters = param_group.Parameters.ToList();
        TensorChecks.CheckNewGroup(Name, parameters, index, _state.ContainsKey, _parameter_groups.SelectMany(g => g.Parameters).FirstOrDefault(),
            TakesLowPrecision);
        // Every check passed: now change the group and the optimizer.
        completeOptions();
        param_group.Options = options;
        param_group.Parameters = parameters;
        _parameter_groups.Add(param_group);
        foreach (var p in parameters)
        {
            _state[p.Handle] = CreateState(p, options);
        }
    }

    /// <summary>Checks a new group's options with the defaults filled in; returns the action that fills them in (which cannot fail).</summary>
    private protected abstract Action PrepareGroupOptions(TOptions given, int group);

    /// <summary>The state of a parameter of a new group.</summary>
    private protected abstract TState CreateState(Parameter parameter, TOptions options);

    /// <summary>A group's parameters as <see cref="add_param_group"/> stored them (re-listed once if the caller replaced them).</summary>
    private protected static List<Parameter> ParametersOf(TorchSharp.Modules.ParamGroup group)
    {
        if (group.Parameters is not List<Parameter> list)
        {
            list = group.Parameters.ToList();
            group.Parameters = list;
        }
        return list;
    }

    /// <summary>Every parameter, in param-group order.</summary>
    private protected IEnumerable<Parameter> AllParameters() => _parameter_groups.SelectMany(g => ParametersOf(g));

    /// <summary>
    /// Restores the state written by <c>save_state_dict</c>, all or nothing: every param group's options
    /// and every parameter's state are read and checked before anything changes.
    /// </summary>
    /// <exception cref="InvalidDataException">Not a valid state of this optimizer for these param groups
    /// (truncated, corrupt, another optimizer's, or other shapes); the optimizer is unchanged.</exception>
    /// <remarks>Load through the optimizer's own type: TorchSharp's <c>OptimizerHelper.load_state_dict</c>,
    /// which is not virtual, applies the groups and parameters one at a time.</remarks>
    public new void load_state_dict(BinaryReader reader)
    {
        StateLoad.Load(this, reader, _parameter_groups, _state);
        AdoptRoundingStep();
        AfterLoad();
    }

    /// <summary>Restores the state from a file written by <c>save_state_dict</c>, all or nothing.</summary>
    /// <exception cref="InvalidDataException">Not a valid state of this optimizer; the optimizer is unchanged.</exception>
    public new void load_state_dict(string location)
    {
        using var stream = File.OpenRead(location);
        using var reader = new BinaryReader(stream);
        load_state_dict(reader);
    }

    /// <summary>Copies the state of another optimizer of this type over the same parameters, all or nothing.</summary>
    /// <exception cref="ArgumentException">The dictionary does not fit; the optimizer is unchanged.</exception>
    public override void load_state_dict(StateDictionary state_dict)
    {
        StateLoad.Copy(this, state_dict, this.state_dict());
        AdoptRoundingStep();
        AfterLoad();
    }

    /// <summary>The state of every parameter, each float16 or bfloat16 one carrying the stochastic-rounding step count (saved with it).</summary>
    public override StateDictionary state_dict()
    {
        foreach (var (_, state) in _state)
        {
            if (state is IRoundingStepState carrier)
            {
                carrier.RoundingStep = _roundingStep;
            }
        }
        return base.state_dict();
    }

    // The stochastic-rounding step count a load restored: that of the first float16 or bfloat16 parameter
    // (all carry the same; other dtypes carry none, and then the count stays).
    private void AdoptRoundingStep()
    {
        foreach (var group in _parameter_groups)
        {
            foreach (var p in ParametersOf(group))
            {
                if (_state[p.Handle] is IRoundingStepState { CarriesRoundingStep: true } carrier)
                {
                    _roundingStep = carrier.RoundingStep;
                    return;
                }
            }
        }
    }

    /// <summary>Adopts what a load restored beyond the options and states (counters, device copies).</summary>
    private protected virtual void AfterLoad()
    {
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing)
        {
            foreach (var (_, state) in _state)
            {
                (state as TState)?.Dispose();
            }
            _state.Clear();
            _gradNorm?.Dispose();
            _gradNorm = null;
        }
    }
}

/// <summary>A parameter's state that saves the optimizer's stochastic-rounding step count (float16 and bfloat16 parameters).</summary>
internal interface IRoundingStepState
{
    /// <summary>The optimizer's step count, stamped before a save and read after a load.</summary>
    long RoundingStep { get; set; }

    /// <summary>Whether this state saves the count (its parameter is float16 or bfloat16).</summary>
    bool CarriesRoundingStep { get; }
}
