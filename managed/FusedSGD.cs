using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

/// <summary>
/// Stochastic gradient descent (optionally with momentum, Nesterov momentum, dampening, weight decay and
/// maximization) with PyTorch's semantics, computed by one native call that updates every tensor of
/// every param group in a single pass over memory.
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
/// contiguous, float32, float64, float16 or bfloat16 (a gradient of its parameter's dtype); all parameters share
/// one dtype and one device. Float16 and bfloat16 parameters are updated in float32 with float32 momentum buffers
/// and written back rounded to nearest, or kept as float32 master copies (<c>master_weights</c>), or for bfloat16
/// rounded stochastically (<c>stochastic_rounding</c>). CPU tensors use the native CPU path; CUDA tensors use the
/// CUDA kernels when the native library was built with them and a device exists, otherwise <see cref="NotSupportedException"/> (never a silent fallback).</para>
/// <para>Threads: one instance is used from one thread at a time (as TorchSharp's optimizers): its
/// <c>step</c>, <c>zero_grad</c>, <c>add_param_group</c>, <c>state_dict</c> and <c>load_state_dict</c>, and a
/// scheduler's <c>step</c> (which writes the rates a step reads), must not overlap, and nothing else may
/// use its parameters, gradients or state during a step. Separate optimizers over separate parameters
/// may step on separate threads at once, with the results they give alone; the native CPU path runs the
/// large ones (131,072 elements or more) one at a time on its shared team of threads.</para>
/// </remarks>
public partial class FusedSGD : FusedOptimizer<FusedSGD.Options, FusedSGD.State>, IMomentum
{
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
    /// <param name="max_grad_norm">Clips the gradients to this global norm inside each step (finite, &gt; 0; null: no clipping); see <see cref="FusedOptimizer{TOptions, TState}.MaxGradNorm"/>.</param>
    /// <param name="master_weights">Keep float32 master copies of float16/bfloat16 parameters; see <see cref="FusedOptimizer{TOptions, TState}.MasterWeights"/>.</param>
    /// <param name="stochastic_rounding">Round bfloat16 parameters updated in place stochastically; see <see cref="FusedOptimizer{TOptions, TState}.StochasticRounding"/>.</param>
    /// <param name="rounding_seed">The seed of stochastic rounding; see <see cref="FusedOptimizer{TOptions, TState}.RoundingSeed"/>.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public FusedSGD(IEnumerable<Parameter> parameters, double lr, double momentum = 0, double dampening = 0,
        double weight_decay = 0, bool nesterov = false, bool maximize = false, double? max_grad_norm = null,
        bool master_weights = false, bool stochastic_rounding = false, long rounding_seed = 0)
        : this(new[] { new ParamGroup(parameters ?? throw new ArgumentNullException(nameof(parameters))) },
               lr, momentum, dampening, weight_decay, nesterov, maximize, max_grad_norm, master_weights, stochastic_rounding, rounding_seed)
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
    /// <param name="max_grad_norm">Clips the gradients to this global norm inside each step (finite, &gt; 0; null: no clipping); see <see cref="FusedOptimizer{TOptions, TState}.MaxGradNorm"/>.</param>
    /// <param name="master_weights">Keep float32 master copies of float16/bfloat16 parameters; see <see cref="FusedOptimizer{TOptions, TState}.MasterWeights"/>.</param>
    /// <param name="stochastic_rounding">Round bfloat16 parameters updated in place stochastically; see <see cref="FusedOptimizer{TOptions, TState}.StochasticRounding"/>.</param>
    /// <param name="rounding_seed">The seed of stochastic rounding; see <see cref="FusedOptimizer{TOptions, TState}.RoundingSeed"/>.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public FusedSGD(IEnumerable<ParamGroup> parameters, double lr, double momentum = 0, double dampening = 0,
        double weight_decay = 0, bool nesterov = false, bool maximize = false, double? max_grad_norm = null,
        bool master_weights = false, bool stochastic_rounding = false, long rounding_seed = 0)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var defaults = SgdOptionsBase.Create<Options>(lr, momentum, dampening, weight_decay, nesterov, maximize);
        defaults.Validate(null);
        MaxGradNorm = max_grad_norm;
        SetPrecision(master_weights, stochastic_rounding, rounding_seed);
        Initialize(defaults, parameters);
    }

    /// <summary>The default momentum; setting it also sets every param group's momentum (for momentum schedulers).</summary>
    public double Momentum
    {
        get => ((Options)_defaults).momentum!.Value;
        set => SgdOptionsBase.SetMomentum(_defaults, _parameter_groups, value);
    }

    private protected override string Name => nameof(FusedSGD);

    private protected override bool TakesLowPrecision => true;

    private protected override Action PrepareGroupOptions(Options given, int group)
    {
        var def = (Options)_defaults;
        var filled = SgdOptionsBase.Filled(given, def, given.LearningRate ?? def.LearningRate!.Value);
        filled.Validate(group);
        return () =>
        {
            given.LoadStateDict(filled);
            given.InitialLearningRate = filled.LearningRate!.Value;
        };
    }

    private protected override State CreateState(Parameter parameter, Options options) => new(parameter);

    private protected override void CheckGroupOptions(Options options, int group) => options.Validate(group);

    private protected override void AddStateRecords(State state, HandleList records)
    {
        if (state.momentum_buffer is { } buf)
        {
            records.Add(buf.Handle);
        }
        if (state.master_param is { } master)
        {
            records.Add(master.Handle);
        }
    }

    private protected override void GatherState(int k, ref TensorChecks checks, in TensorInfo parameter, State state, Options options, int group, int index)
    {
        // A missing master copy is made in CreateMissingState (Fresh is the native call's buffer flag, so not marked there).
        if (MasterWeights && state.master_param is { } master && TensorChecks.IsLowPrecision((ScalarType)parameter.ScalarType))
        {
            Batch.Masters[k] = CheckState(ref checks, master, parameter, group, index, "master_param");
        }
        if (options.momentum!.Value == 0)
        {
            return;
        }
        var buf = state.momentum_buffer;
        if (buf is null)
        {
            Batch.Fresh[k] = 1;
            return;
        }
        Batch.Buffers[k] = CheckState(ref checks, buf, parameter, group, index, "momentum buffer");
    }

    // A state tensor's checks (the parameter's state dtype: float32 for a 16-bit parameter) and its data pointer.
    private nint CheckState(ref TensorChecks checks, Tensor t, in TensorInfo parameter, int group, int index, string name)
    {
        var info = TorchSharpNative.Describe(t.Handle);
        checks.CheckState(info, parameter, group, index, name);
        Batch.Written.Add(t.Handle);
        return info.Data;
    }

    // The hyperparameters of every group, for one native call that checks every group before it writes.
    private protected override void PrepareStep(in TensorChecks checks)
    {
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
    }

    // The momentum buffers of parameters on their first step with momentum, and the master copies of 16-bit
    // parameters on their first step with master_weights (only then allocates).
    private protected override void CreateMissingState(in TensorChecks checks)
    {
        var batch = Batch;
        bool masters = UsesMasters(checks);
        for (int k = 0; k < batch.Count; k++)
        {
            bool masterMissing = masters && batch.States[k].master_param is null;
            if (masterMissing || batch.Fresh[k] != 0)
            {
                CreateMissingState(k, masterMissing);
            }
        }
    }

    // Apart from the loop: the lambdas' closure is then allocated only for a parameter that needs state.
    private void CreateMissingState(int k, bool masterMissing)
    {
        var batch = Batch;
        var state = batch.States[k];
        var p = batch.ParamTensors[k];
        if (masterMissing)
        {
            state.master_param = Created(p.detach().to(ScalarType.Float32, copy: true), () => state.master_param = null);
            batch.Masters[k] = TorchSharpNative.DataPointer(state.master_param.Handle);
        }
        if (batch.Fresh[k] != 0)
        {
            var buf = Created(torch.empty_like(p, TensorChecks.StateType(p.dtype)), () => state.momentum_buffer = null);
            state.momentum_buffer = buf;
            batch.Buffers[k] = TorchSharpNative.DataPointer(buf.Handle);
        }
    }

    private protected override void NativeStep(in TensorChecks checks)
    {
        var batch = Batch;
        int n = batch.Count;
        var (maxNorm, totalNorm) = GradClip(checks);
        var (invScale, foundInf) = GradScale(checks);
        OptimNative.SgdStep(checks.Device, checks.DeviceIndex, checks.DType,
            batch.Params.AsSpan(0, n), batch.Grads.AsSpan(0, n), batch.Buffers.AsSpan(0, n),
            batch.Numels.AsSpan(0, n), batch.Fresh.AsSpan(0, n), batch.GroupIndex.AsSpan(0, n),
            _groupParams.AsSpan(0, _parameter_groups.Count), maxNorm, totalNorm, invScale, foundInf, ReducesAcrossRanks,
            UsesMasters(checks) ? batch.Masters.AsSpan(0, n) : default, Rounding(checks));
    }
}
