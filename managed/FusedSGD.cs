using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

/// <summary>
/// Stochastic gradient descent (optionally with momentum, Nesterov momentum, dampening, weight decay and
/// maximization) with PyTorch's semantics, computed by one native call per param group that updates
/// every tensor of the group in a single pass over memory.
/// </summary>
/// <remarks>
/// <para>A drop-in replacement for <c>torch.optim.SGD</c>: replace <c>torch.optim.SGD(params, lr, ...)</c>
/// with <c>new Optim.FusedSGD(params, lr, ...)</c>. Schedulers, <c>zero_grad</c>, param groups and
/// <c>save_state_dict</c>/<c>load_state_dict</c> work as they do for TorchSharp's SGD.</para>
/// <para>The update per element, for a parameter p with gradient g (PyTorch's order):
/// <c>g = maximize ? -g : g; g += weight_decay * p; buf = first step ? g : momentum * buf + (1 - dampening) * g;
/// d = nesterov ? g + momentum * buf : (momentum != 0 ? buf : g); p -= lr * d</c>.
/// With <c>maximize</c> this follows PyTorch, which negates the gradient before weight decay; TorchSharp
/// 0.107's SGD instead flips the sign of the final update, so its momentum buffers have the opposite
/// sign and its weight decay grows the weights when maximizing (docs/design.md).</para>
/// <para>Requirements, checked before anything is written: every parameter and gradient is dense,
/// contiguous, float32 or float64; all parameters share one dtype and one device. CPU tensors use the
/// native CPU path; CUDA tensors use the CUDA kernels when the native library was built with them and a
/// device exists, otherwise <see cref="NotSupportedException"/> (never a silent fallback).</para>
/// <para>Threads: one instance is used from one thread at a time (as TorchSharp's optimizers): its
/// <c>step</c>, <c>zero_grad</c>, <c>add_param_group</c>, <c>state_dict</c> and <c>load_state_dict</c>, and a
/// scheduler's <c>step</c> (which writes the rates a step reads), must not overlap, and nothing else may
/// use its parameters, gradients or state during a step. Separate optimizers over separate parameters
/// may step on separate threads at once, with the results they give alone; the native CPU path runs the
/// large ones (131,072 elements or more) one at a time on its shared team of threads.</para>
/// </remarks>
public class FusedSGD : OptimizerHelper, IMomentum
{
    private readonly TensorBatch<State> _batch = new();
    private readonly List<Tensor> _created = new();
    private SgdGroupParams[] _groupParams = Array.Empty<SgdGroupParams>();
    private Tensor? _deviceRates;

    /// <summary>
    /// Makes CUDA steps read each param group's rate from <paramref name="rates"/> (float64, one element
    /// per group, contiguous, on the parameters' CUDA device) instead of <c>LearningRate</c>, so a rate
    /// computed on the device (GreedyLR's sync-free path) never makes a step wait for the host. Null
    /// unbinds. CPU steps always use <c>LearningRate</c>. The caller keeps the tensor alive.
    /// </summary>
    internal void BindDeviceLearningRates(Tensor? rates)
    {
        if (rates is not null && (rates.dtype != ScalarType.Float64 || rates.device_type != DeviceType.CUDA || !rates.is_contiguous() ||
            rates.numel() != _parameter_groups.Count))
        {
            throw new ArgumentException($"FusedSGD: device rates must be a contiguous CUDA float64 tensor of {_parameter_groups.Count} elements.", nameof(rates));
        }
        _deviceRates = rates;
    }

    /// <summary>Creates the optimizer over one group of parameters.</summary>
    /// <param name="parameters">The parameters to optimize (for example <c>model.parameters()</c>).</param>
    /// <param name="lr">Learning rate (≥ 0).</param>
    /// <param name="momentum">Momentum factor (≥ 0; default 0).</param>
    /// <param name="dampening">Dampening for momentum (default 0).</param>
    /// <param name="weight_decay">Weight decay, an L2 penalty (≥ 0; default 0).</param>
    /// <param name="nesterov">Enables Nesterov momentum (needs momentum &gt; 0 and dampening 0).</param>
    /// <param name="maximize">Maximize the objective instead of minimizing it.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public FusedSGD(IEnumerable<Parameter> parameters, double lr, double momentum = 0, double dampening = 0,
        double weight_decay = 0, bool nesterov = false, bool maximize = false)
        : this(new[] { new ParamGroup(parameters ?? throw new ArgumentNullException(nameof(parameters))) },
               lr, momentum, dampening, weight_decay, nesterov, maximize)
    {
    }

    /// <summary>
    /// Creates the optimizer over several param groups. Options a group leaves unset (null) take the
    /// values given here.
    /// </summary>
    /// <param name="parameters">The param groups.</param>
    /// <param name="lr">Default learning rate (≥ 0).</param>
    /// <param name="momentum">Default momentum factor (≥ 0).</param>
    /// <param name="dampening">Default dampening.</param>
    /// <param name="weight_decay">Default weight decay (≥ 0).</param>
    /// <param name="nesterov">Default for Nesterov momentum.</param>
    /// <param name="maximize">Default for maximization.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public FusedSGD(IEnumerable<ParamGroup> parameters, double lr, double momentum = 0, double dampening = 0,
        double weight_decay = 0, bool nesterov = false, bool maximize = false)
    {
        ArgumentNullException.ThrowIfNull(parameters);
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
        ValidateOptions(defaults, null);
        OptimNative.EnsureLoaded();
        _defaults = defaults;
        _parameter_groups = new List<TorchSharp.Modules.ParamGroup>();
        foreach (var group in parameters)
        {
            add_param_group(group);
        }
    }

    /// <summary>The default momentum; setting it also sets every param group's momentum (for momentum schedulers).</summary>
    public double Momentum
    {
        get => ((Options)_defaults).momentum!.Value;
        set => SgdOptionsBase.SetMomentum(_defaults, _parameter_groups, value);
    }

    /// <summary>
    /// Adds a param group. Unset options are taken from the optimizer's defaults; the group's options and
    /// tensors are validated before the group is added.
    /// </summary>
    /// <exception cref="ArgumentException">Invalid options, an unsupported tensor, or a parameter that is already optimized.</exception>
    public override void add_param_group(TorchSharp.Modules.ParamGroup param_group)
    {
        ArgumentNullException.ThrowIfNull(param_group);
        if (param_group.Parameters is null)
        {
            throw new ArgumentException("The param group has no Parameters.", nameof(param_group));
        }
        var def = (Options)_defaults;
        var given = param_group.Options;
        if (given is not null && given is not Options)
        {
            throw new ArgumentException($"A FusedSGD param group needs FusedSGD.Options, not {given.GetType().Name}.", nameof(param_group));
        }
        var opt = (Options?)given ?? new Options();
        var filled = new Options
        {
            LearningRate = opt.LearningRate ?? def.LearningRate,
            momentum = opt.momentum ?? def.momentum,
            dampening = opt.dampening ?? def.dampening,
            weight_decay = opt.weight_decay ?? def.weight_decay,
            nesterov = opt.nesterov ?? def.nesterov,
            maximize = opt.maximize ?? def.maximize,
        };
        int groupIndex = _parameter_groups.Count;
        ValidateOptions(filled, groupIndex);

        var parameters = param_group.Parameters.ToList();
        TensorChecks.CheckNewGroup(nameof(FusedSGD), parameters, groupIndex, _state.ContainsKey,
            _parameter_groups.SelectMany(g => g.Parameters).FirstOrDefault());
        // Every check passed: now change the group and the optimizer.
        opt.LearningRate = filled.LearningRate;
        opt.momentum = filled.momentum;
        opt.dampening = filled.dampening;
        opt.weight_decay = filled.weight_decay;
        opt.nesterov = filled.nesterov;
        opt.maximize = filled.maximize;
        opt.InitialLearningRate = filled.LearningRate!.Value;
        param_group.Options = opt;
        param_group.Parameters = parameters;
        _parameter_groups.Add(param_group);
        foreach (var p in parameters)
        {
            var state = new State(p);
            state.Initialize(opt);
            _state[p.Handle] = state;
        }
    }

    private static void ValidateOptions(Options o, int? group) =>
        ValidateOptions(o.momentum!.Value, o.dampening!.Value, o.weight_decay!.Value, o.nesterov!.Value, o.LearningRate!.Value, group);

    // PyTorch's checks and messages, with the param group named when there is one. Runs on every step:
    // the messages are built only when a check fails (nothing is allocated otherwise).
    internal static void ValidateOptions(double momentum, double dampening, double wd, bool nesterov, double lr, int? group)
    {
        if (!(lr >= 0) || double.IsInfinity(lr))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid learning rate: {lr}{Where(group)}"), "lr");
        }
        if (!(momentum >= 0) || double.IsInfinity(momentum))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid momentum value: {momentum}{Where(group)}"), "momentum");
        }
        if (!double.IsFinite(dampening))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid dampening value: {dampening}{Where(group)}"), "dampening");
        }
        if (!(wd >= 0) || double.IsInfinity(wd))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid weight_decay value: {wd}{Where(group)}"), "weight_decay");
        }
        if (nesterov && (momentum <= 0 || dampening != 0))
        {
            throw new ArgumentException($"Nesterov momentum requires a momentum and zero dampening{Where(group)}", "nesterov");
        }
    }

    private static string Where(int? group) => group is null ? "" : FormattableString.Invariant($" (param group {group})");

    /// <summary>
    /// Performs one optimization step over every param group. All tensors and options are checked first;
    /// if a check fails, an <see cref="ArgumentException"/> is thrown and no parameter or state has changed.
    /// Parameters without a gradient are skipped, as in TorchSharp.
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
        StepCore();
        return loss!;
    }

    private void StepCore()
    {
        var batch = _batch;
        batch.Reset(_parameter_groups.Count);
        try
        {
            // 1. Check everything and gather pointers; nothing is written yet.
            var checks = new TensorChecks(nameof(FusedSGD));
            for (int gi = 0; gi < _parameter_groups.Count; gi++)
            {
                var group = _parameter_groups[gi];
                var o = (Options)group.Options;
                ValidateOptions(o, gi);
                bool momentum = o.momentum!.Value != 0;
                batch.BeginGroup(gi);
                if (group.Parameters is List<Parameter> list)
                {
                    for (int i = 0; i < list.Count; i++)
                    {
                        Gather(batch, ref checks, list[i], gi, i, momentum);
                    }
                }
                else
                {
                    int i = 0;
                    foreach (var p in group.Parameters)
                    {
                        Gather(batch, ref checks, p, gi, i++, momentum);
                    }
                }
            }
            if (checks.Empty)
            {
                return;
            }

            // 2. The hyperparameters of every group, for one native call that checks every group before it writes.
            if (_groupParams.Length < _parameter_groups.Count)
            {
                _groupParams = new SgdGroupParams[_parameter_groups.Count];
            }
            nint deviceRates = 0;
            if (checks.Device == NativeDevice.Cuda && _deviceRates is not null)
            {
                if (_deviceRates.numel() != _parameter_groups.Count)
                {
                    throw new InvalidOperationException($"FusedSGD: the bound device rates hold {_deviceRates.numel()} values but the optimizer now has " +
                        $"{_parameter_groups.Count} param groups (a group was added after GreedyLR moved to the device).");
                }
                deviceRates = TorchSharpNative.DataPointer(_deviceRates.Handle);
            }
            for (int gi = 0; gi < _parameter_groups.Count; gi++)
            {
                var o = (Options)_parameter_groups[gi].Options;
                var hyper = new SgdHyperparameters(o.LearningRate!.Value, o.momentum!.Value, o.dampening!.Value,
                    o.weight_decay!.Value, o.nesterov!.Value, o.maximize!.Value);
                _groupParams[gi] = SgdGroupParams.From(hyper, deviceRates == 0 ? 0 : deviceRates + gi * sizeof(double));
            }
            // 3. Create the momentum buffers of parameters on their first step (only then allocates).
            _created.Clear();
            for (int k = 0; k < batch.Count; k++)
            {
                if (batch.Fresh[k] != 0)
                {
                    var state = batch.States[k];
                    var p = batch.ParamTensors[k];
                    var buf = torch.empty_like(p).DetachFromDisposeScope();
                    // Created like the parameter, so dense and contiguous; re-checked for safety.
                    if (!buf.is_contiguous())
                    {
                        throw new InvalidOperationException("FusedSGD: empty_like produced a non-contiguous momentum buffer.");
                    }
                    _created.Add(buf);
                    state.momentum_buffer = buf;
                    batch.Buffers[k] = TorchSharpNative.DataPointer(buf.Handle);
                }
            }

            // 4. The step.
            try
            {
                batch.Written.BumpVersions();
                int n = batch.Count;
                OptimNative.SgdStep(checks.Device, checks.DeviceIndex, checks.DType,
                    batch.Params.AsSpan(0, n), batch.Grads.AsSpan(0, n), batch.Buffers.AsSpan(0, n),
                    batch.Numels.AsSpan(0, n), batch.Fresh.AsSpan(0, n), batch.GroupIndex.AsSpan(0, n),
                    _groupParams.AsSpan(0, _parameter_groups.Count));
            }
            catch when (_created.Count > 0)
            {
                // Undo the buffers this step created so that the next step starts them afresh.
                for (int k = 0; k < batch.Count; k++)
                {
                    if (batch.Fresh[k] != 0)
                    {
                        batch.States[k].momentum_buffer = null;
                    }
                }
                foreach (var t in _created)
                {
                    t.Dispose();
                }
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
    }

    // Checks one parameter and, if it has a gradient, adds it to the batch.
    private void Gather(TensorBatch<State> batch, ref TensorChecks checks, Parameter p, int group, int index, bool momentum)
    {
        checks.CheckAlive(p, group, index);
        nint handle = p.Handle;
        nint gradHandle = TorchSharpNative.GradientHandle(handle);
        if (gradHandle == 0)
        {
            return;
        }
        batch.OwnGradientHandle(gradHandle);
        var pi = TorchSharpNative.Describe(handle);
        var gi = TorchSharpNative.Describe(gradHandle);
        checks.CheckParameter(pi, group, index);
        checks.CheckGradient(gi, pi, group, index);
        var state = (State)_state[handle];
        nint buffer = 0;
        var buf = momentum ? state.momentum_buffer : null;
        if (buf is not null)
        {
            var bi = TorchSharpNative.Describe(buf.Handle);
            checks.CheckState(bi, pi, group, index, "momentum buffer");
            buffer = bi.Data;
            batch.Written.Add(buf.Handle);
        }
        batch.Written.Add(handle);
        batch.Add(p, pi, gi, buffer, state, fresh: momentum && buf is null);
    }

    /// <summary>
    /// Restores the state written by <c>save_state_dict</c>, all or nothing: every param group's options
    /// and every parameter's state are read and checked before anything changes.
    /// </summary>
    /// <exception cref="InvalidDataException">Not a valid FusedSGD state for these param groups (truncated,
    /// corrupt, another optimizer's, or other shapes); the optimizer is unchanged.</exception>
    /// <remarks>Load through this type: TorchSharp's <c>OptimizerHelper.load_state_dict</c>, which is not
    /// virtual, applies the groups and parameters one at a time.</remarks>
    public new void load_state_dict(BinaryReader reader) => StateLoad.Load(this, reader, _parameter_groups, _state);

    /// <summary>Restores the state from a file written by <c>save_state_dict</c>, all or nothing.</summary>
    /// <exception cref="InvalidDataException">Not a valid FusedSGD state; the optimizer is unchanged.</exception>
    public new void load_state_dict(string location)
    {
        using var stream = File.OpenRead(location);
        using var reader = new BinaryReader(stream);
        load_state_dict(reader);
    }

    /// <summary>Copies the state of another FusedSGD over the same parameters, all or nothing.</summary>
    /// <exception cref="ArgumentException">The dictionary does not fit; the optimizer is unchanged.</exception>
    public override void load_state_dict(StateDictionary state_dict) => StateLoad.Copy(this, state_dict, this.state_dict());

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
        }
    }

    /// <summary>Per-parameter state: the momentum buffer (null until the parameter's first step with momentum).</summary>
    public sealed class State : OptimizerState, IDisposable, IStagedLoad
    {
        /// <summary>The momentum buffer, shaped like the parameter; null before the first step.</summary>
        public Tensor? momentum_buffer;

        /// <summary>Creates the state of one parameter.</summary>
        public State(Parameter parameter) : base(parameter)
        {
        }

        /// <summary>Disposes the buffer.</summary>
        public void Dispose()
        {
            momentum_buffer?.Dispose();
            momentum_buffer = null;
        }

        /// <summary>Moves the buffer to <paramref name="device"/>.</summary>
        public override void to(Device device)
        {
            if (momentum_buffer is not null)
            {
                var moved = momentum_buffer.to(device).DetachFromDisposeScope();
                if (!ReferenceEquals(moved, momentum_buffer))
                {
                    momentum_buffer.Dispose();
                }
                momentum_buffer = moved;
            }
        }

        /// <summary>Reads the buffer written by <see cref="SaveStateDict(BinaryWriter)"/> (TorchSharp's SGD format); nothing changes if it is invalid.</summary>
        /// <exception cref="InvalidDataException">The buffer does not fit the parameter, or the data ends early.</exception>
        public override void LoadStateDict(BinaryReader reader)
        {
            using var r = new StateReader(reader, nameof(FusedSGD)) { Part = "parameter state" };
            var apply = ReadStaged(r);
            r.Staged.Commit();
            apply();
        }

        /// <summary>Writes the buffer (a flag, then the tensor), as TorchSharp's SGD does.</summary>
        public override void SaveStateDict(BinaryWriter writer) => SaveConditionalStateTensor(writer, momentum_buffer!);

        /// <summary>Copies the buffer of another <see cref="State"/>; nothing changes if it does not fit the parameter.</summary>
        public override void LoadStateDict(OptimizerState source)
        {
            using var staging = new Staging();
            var apply = CopyStaged(source, staging);
            staging.Commit();
            apply();
        }

        Action IStagedLoad.ReadStaged(StateReader reader) => ReadStaged(reader);

        Action IStagedLoad.CopyStaged(object source, Staging staging) => CopyStaged(source, staging);

        private Action ReadStaged(StateReader r)
        {
            var buf = r.ReadOptionalTensor("momentum buffer", _parameter);
            return () => Replace(buf);
        }

        private Action CopyStaged(object source, Staging staging)
        {
            if (source is not State other)
            {
                throw new ArgumentException($"Expected a FusedSGD.State, got {source?.GetType().Name ?? "null"}.", nameof(source));
            }
            var buf = StateLoad.CopyTensor(other.momentum_buffer, _parameter, staging, nameof(FusedSGD), "momentum buffer");
            return () => Replace(buf);
        }

        private void Replace(Tensor? buf)
        {
            momentum_buffer?.Dispose();
            momentum_buffer = buf;
        }

        /// <summary>True when both buffers are absent or approximately equal.</summary>
        public override bool ApproximatelyEquals(OptimizerState other) =>
            other is State rhs && (momentum_buffer is null ? rhs.momentum_buffer is null
                : rhs.momentum_buffer is not null && momentum_buffer.allclose(rhs.momentum_buffer));

        /// <summary>Clears the buffer: the next step starts momentum afresh.</summary>
        public override void Initialize(OptimizerOptions options)
        {
            momentum_buffer?.Dispose();
            momentum_buffer = null;
        }
    }

    /// <summary>Hyperparameters of a param group. Unset (null) values take the optimizer's defaults.</summary>
    public class Options : SgdOptionsBase
    {
    }

    /// <summary>A param group of <see cref="FusedSGD"/>, with optional per-group options.</summary>
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
