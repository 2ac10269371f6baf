using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

/// <summary>
/// Adam (optionally AMSGrad, L2 weight decay and maximization) with PyTorch's semantics, computed by one
/// native call that updates every tensor of every param group in a single pass over memory.
/// </summary>
/// <remarks>
/// <para>A drop-in replacement for <c>torch.optim.Adam</c>: replace <c>torch.optim.Adam(params, lr, ...)</c> with
/// <c>new Optim.FusedAdam(params, lr, ...)</c>. Schedulers (<c>OneCycleLR</c>'s beta cycling included, through
/// <see cref="IBetas"/>), <c>zero_grad</c>, param groups and <c>save_state_dict</c>/<c>load_state_dict</c> work as
/// they do for TorchSharp's Adam, whose saved format this is.</para>
/// <para>The update per element, for a parameter p with gradient g at the parameter's own step t (PyTorch's
/// order): <c>g = maximize ? -g : g; g += weight_decay * p; m = lerp(m, g, 1 - beta1);
/// v = beta2 * v + (1 - beta2) * g * g; amsgrad: vmax = max(vmax, v), used instead of v;
/// p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)</c>. <see cref="FusedAdamW"/> decays
/// the weights instead (<c>p *= 1 - lr * weight_decay</c> first). The step count t is kept per parameter and
/// advances only on steps where the parameter has a gradient, as in PyTorch.</para>
/// <para>Requirements, checked before anything is written: every parameter and gradient is dense, contiguous,
/// float32, float64, float16 or bfloat16 (a gradient of its parameter's dtype); all parameters share one dtype and
/// one device. Float16 and bfloat16 parameters are updated in float32 with float32 moments and written back rounded
/// to nearest, or kept as float32 master copies (<c>master_weights</c>), or for bfloat16 rounded stochastically
/// (<c>stochastic_rounding</c>). CPU tensors use the native CPU path;
/// CUDA tensors use the CUDA kernels when the native library was built with them and a device exists,
/// otherwise <see cref="NotSupportedException"/> (never a silent fallback). Threads: as <see cref="FusedSGD"/>.</para>
/// </remarks>
public partial class FusedAdam : FusedOptimizer<FusedAdam.Options, FusedAdam.State>, IBetas
{
    private const int ExpAvgMissing = 1;
    private const int ExpAvgSqMissing = 2;
    private const int MaximumMissing = 4;
    private const int MasterMissing = 8;
    private AdamGroupParams[] _groupParams = Array.Empty<AdamGroupParams>();
    private bool _anyAmsgrad;

    /// <summary>Creates the optimizer over one group of parameters.</summary>
    /// <param name="parameters">The parameters to optimize (for example <c>model.parameters()</c>).</param>
    /// <param name="lr">Learning rate (≥ 0; default 1e-3).</param>
    /// <param name="beta1">Coefficient of the running average of the gradient (in [0, 1); default 0.9).</param>
    /// <param name="beta2">Coefficient of the running average of the squared gradient (in [0, 1); default 0.999).</param>
    /// <param name="eps">Term added to the denominator (≥ 0; default 1e-8).</param>
    /// <param name="weight_decay">Weight decay (≥ 0; default 0).</param>
    /// <param name="amsgrad">Use the AMSGrad variant.</param>
    /// <param name="maximize">Maximize the objective instead of minimizing it.</param>
    /// <param name="max_grad_norm">Clips the gradients to this global norm inside each step (finite, &gt; 0; null: no clipping); see <see cref="FusedOptimizer{TOptions, TState}.MaxGradNorm"/>.</param>
    /// <param name="master_weights">Keep float32 master copies of float16/bfloat16 parameters; see <see cref="FusedOptimizer{TOptions, TState}.MasterWeights"/>.</param>
    /// <param name="stochastic_rounding">Round bfloat16 parameters updated in place stochastically; see <see cref="FusedOptimizer{TOptions, TState}.StochasticRounding"/>.</param>
    /// <param name="rounding_seed">The seed of stochastic rounding; see <see cref="FusedOptimizer{TOptions, TState}.RoundingSeed"/>.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public FusedAdam(IEnumerable<Parameter> parameters, double lr = 0.001, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0, bool amsgrad = false, bool maximize = false, double? max_grad_norm = null,
        bool master_weights = false, bool stochastic_rounding = false, long rounding_seed = 0)
        : this(new[] { new ParamGroup(parameters ?? throw new ArgumentNullException(nameof(parameters))) },
               lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, max_grad_norm, master_weights, stochastic_rounding, rounding_seed)
    {
    }

    /// <summary>
    /// Creates the optimizer over several param groups. Options a group leaves unset (null) take the values
    /// given here.
    /// </summary>
    /// <param name="parameters">The param groups.</param>
    /// <param name="lr">Default learning rate (≥ 0).</param>
    /// <param name="beta1">Default beta1 (in [0, 1)).</param>
    /// <param name="beta2">Default beta2 (in [0, 1)).</param>
    /// <param name="eps">Default eps (≥ 0).</param>
    /// <param name="weight_decay">Default weight decay (≥ 0).</param>
    /// <param name="amsgrad">Default for AMSGrad.</param>
    /// <param name="maximize">Default for maximization.</param>
    /// <param name="max_grad_norm">Clips the gradients to this global norm inside each step (finite, &gt; 0; null: no clipping); see <see cref="FusedOptimizer{TOptions, TState}.MaxGradNorm"/>.</param>
    /// <param name="master_weights">Keep float32 master copies of float16/bfloat16 parameters; see <see cref="FusedOptimizer{TOptions, TState}.MasterWeights"/>.</param>
    /// <param name="stochastic_rounding">Round bfloat16 parameters updated in place stochastically; see <see cref="FusedOptimizer{TOptions, TState}.StochasticRounding"/>.</param>
    /// <param name="rounding_seed">The seed of stochastic rounding; see <see cref="FusedOptimizer{TOptions, TState}.RoundingSeed"/>.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public FusedAdam(IEnumerable<ParamGroup> parameters, double lr = 0.001, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0, bool amsgrad = false, bool maximize = false, double? max_grad_norm = null,
        bool master_weights = false, bool stochastic_rounding = false, long rounding_seed = 0)
    {
        ArgumentNullException.ThrowIfNull(parameters);
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
            ValidateOptions(o.LearningRate!.Value, value.Item1, value.Item2, o.eps!.Value, o.weight_decay!.Value, null);
            (o.beta1, o.beta2) = value;
            foreach (var g in _parameter_groups)
            {
                var go = (Options)g.Options;
                (go.beta1, go.beta2) = value;
            }
        }
    }

    /// <summary>Whether weight decay is decoupled (AdamW) rather than an L2 penalty (Adam).</summary>
    private protected virtual bool Decoupled => false;

    private protected override string Name => nameof(FusedAdam);

    private protected override bool TakesLowPrecision => true;

    private protected override Action PrepareGroupOptions(Options given, int group)
    {
        var def = (Options)_defaults;
        var filled = new Options
        {
            LearningRate = given.LearningRate ?? def.LearningRate,
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
            given.LoadStateDict(filled);
            given.InitialLearningRate = filled.LearningRate!.Value;
        };
    }

    private protected override State CreateState(Parameter parameter, Options options) => new(parameter);

    private static void ValidateOptions(Options o, int? group) =>
        ValidateOptions(o.LearningRate!.Value, o.beta1!.Value, o.beta2!.Value, o.eps!.Value, o.weight_decay!.Value, group);

    // PyTorch's checks and messages, with the param group named when there is one. Runs on every step:
    // the messages are built only when a check fails.
    internal static void ValidateOptions(double lr, double beta1, double beta2, double eps, double wd, int? group)
    {
        if (!(lr >= 0) || double.IsInfinity(lr))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid learning rate: {lr}{Where(group)}"), "lr");
        }
        if (!(eps >= 0) || double.IsInfinity(eps))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid epsilon value: {eps}{Where(group)}"), "eps");
        }
        if (!(beta1 >= 0 && beta1 < 1))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid beta parameter at index 0: {beta1}{Where(group)}"), "beta1");
        }
        if (!(beta2 >= 0 && beta2 < 1))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid beta parameter at index 1: {beta2}{Where(group)}"), "beta2");
        }
        if (!(wd >= 0) || double.IsInfinity(wd))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid weight_decay value: {wd}{Where(group)}"), "weight_decay");
        }
    }

    private static string Where(int? group) => group is null ? "" : FormattableString.Invariant($" (param group {group})");

    private protected override void CheckGroupOptions(Options options, int group) => ValidateOptions(options, group);

    private protected override void AddStateRecords(State state, HandleList records)
    {
        foreach (var t in (ReadOnlySpan<Tensor?>)[state.exp_avg, state.exp_avg_sq, state.max_exp_avg_sq, state.master_param])
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
        if (MasterWeights && TensorChecks.IsLowPrecision((ScalarType)parameter.ScalarType))
        {
            if (state.master_param is null)
            {
                batch.Fresh[k] |= MasterMissing;
            }
            else
            {
                batch.Masters[k] = CheckState(ref checks, state.master_param, parameter, group, index, "master_param");
            }
        }
        if (state.exp_avg is null)
        {
            batch.Fresh[k] |= ExpAvgMissing;
        }
        else
        {
            batch.Buffers[k] = CheckState(ref checks, state.exp_avg, parameter, group, index, "exp_avg");
        }
        if (state.exp_avg_sq is null)
        {
            batch.Fresh[k] |= ExpAvgSqMissing;
        }
        else
        {
            batch.ExpAvgSqs[k] = CheckState(ref checks, state.exp_avg_sq, parameter, group, index, "exp_avg_sq");
        }
        if (!options.amsgrad!.Value)
        {
            return;
        }
        if (state.max_exp_avg_sq is null)
        {
            batch.Fresh[k] |= MaximumMissing;
        }
        else
        {
            batch.MaxExpAvgSqs[k] = CheckState(ref checks, state.max_exp_avg_sq, parameter, group, index, "max_exp_avg_sq");
        }
    }

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
            _groupParams = new AdamGroupParams[_parameter_groups.Count];
        }
        _anyAmsgrad = false;
        for (int gi = 0; gi < _parameter_groups.Count; gi++)
        {
            var o = (Options)_parameter_groups[gi].Options;
            _anyAmsgrad |= o.amsgrad!.Value;
            _groupParams[gi] = new AdamGroupParams
            {
                Lr = o.LearningRate!.Value,
                Beta1 = o.beta1!.Value,
                Beta2 = o.beta2!.Value,
                Eps = o.eps!.Value,
                WeightDecay = o.weight_decay!.Value,
                Amsgrad = o.amsgrad.Value ? 1 : 0,
                Maximize = o.maximize!.Value ? 1 : 0,
                Decoupled = Decoupled ? 1 : 0,
            };
        }
    }

    // The zero moments of parameters on their first step, and the running maximum on a parameter's first
    // step with AMSGrad (only then allocates).
    private protected override void CreateMissingState(in TensorChecks checks)
    {
        var batch = Batch;
        for (int k = 0; k < batch.Count; k++)
        {
            if (batch.Fresh[k] != 0)
            {
                CreateMissingState(k, batch.Fresh[k]);
            }
        }
    }

    // Apart from the loop: the lambdas' closure is then allocated only for a parameter that needs state.
    private void CreateMissingState(int k, int missing)
    {
        var batch = Batch;
        var state = batch.States[k];
        var p = batch.ParamTensors[k];
        var dtype = TensorChecks.StateType(p.dtype); // float32 for 16-bit parameters
        if ((missing & MasterMissing) != 0)
        {
            state.master_param = Created(p.detach().to(ScalarType.Float32, copy: true), () => state.master_param = null);
            batch.Masters[k] = TorchSharpNative.DataPointer(state.master_param.Handle);
        }
        if ((missing & ExpAvgMissing) != 0)
        {
            state.exp_avg = Created(torch.zeros_like(p, dtype), () => state.exp_avg = null);
            batch.Buffers[k] = TorchSharpNative.DataPointer(state.exp_avg.Handle);
        }
        if ((missing & ExpAvgSqMissing) != 0)
        {
            state.exp_avg_sq = Created(torch.zeros_like(p, dtype), () => state.exp_avg_sq = null);
            batch.ExpAvgSqs[k] = TorchSharpNative.DataPointer(state.exp_avg_sq.Handle);
        }
        if ((missing & MaximumMissing) != 0)
        {
            state.max_exp_avg_sq = Created(torch.zeros_like(p, dtype), () => state.max_exp_avg_sq = null);
            batch.MaxExpAvgSqs[k] = TorchSharpNative.DataPointer(state.max_exp_avg_sq.Handle);
        }
    }

    private protected override void NativeStep(in TensorChecks checks)
    {
        var batch = Batch;
        int n = batch.Count;
        var (maxNorm, totalNorm) = GradClip(checks);
        var (invScale, foundInf) = GradScale(checks);
        OptimNative.AdamStep(checks.Device, checks.DeviceIndex, checks.DType,
            batch.Params.AsSpan(0, n), batch.Grads.AsSpan(0, n), batch.Buffers.AsSpan(0, n), batch.ExpAvgSqs.AsSpan(0, n),
            _anyAmsgrad ? batch.MaxExpAvgSqs.AsSpan(0, n) : default, batch.Numels.AsSpan(0, n), batch.Steps.AsSpan(0, n),
            batch.GroupIndex.AsSpan(0, n), _groupParams.AsSpan(0, _parameter_groups.Count), maxNorm, totalNorm, invScale, foundInf, ReducesAcrossRanks,
            UsesMasters(checks) ? batch.Masters.AsSpan(0, n) : default, Rounding(checks));
        if (ScaledStepSkipped())
        {
            return;
        }
        // The step happened: each parameter that took part has taken one more.
        for (int k = 0; k < n; k++)
        {
            batch.States[k].step = batch.Steps[k];
        }
    }
}
