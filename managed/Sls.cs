using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// Stochastic gradient descent with a stochastic Armijo line search on every minibatch (Vaswani, Mishkin,
/// Laradji, Schmidt, Gidel, Lacoste-Julien, "Painless Stochastic Gradient: Interpolation, Line-Search, and
/// Convergence Rates", NeurIPS 2019): no learning rate to tune; each step finds its own step size.
/// </summary>
/// <remarks>
/// <para>Stepped with <c>step(closure)</c>, where the closure computes the current minibatch's loss and
/// returns it <b>without</b> calling <c>backward</c>; call <c>zero_grad()</c> before each step, as with
/// any optimizer. One step: the loss f(θ) and its gradient g at θ (the step runs the closure and
/// <c>backward</c> once); the step size η is reset (<c>reset_option</c> 0 keeps it, 1 grows it by
/// <c>gamma^(1/n_batches_per_epoch)</c>, 2 sets it to <c>init_step_size</c>); if ‖g‖ ≥ 1e-8, trial points
/// θ − η·g are evaluated by the closure (under <c>no_grad</c>) until one satisfies the Armijo condition
/// f(θ − η·g) ≤ f(θ) − c·η·‖g‖², shrinking η ← <c>beta_b</c>·η after each failure, at most 100 trials,
/// after which a step of 1e-6 is taken; η is kept for the next step. One η for all parameters. The
/// closure must give the same loss for the same parameters (no dropout or other randomness inside it).</para>
/// <para>The trial steps, the saved copy of θ and ‖g‖² (in double, deterministic) are fused native calls
/// over every tensor (CPU, and CUDA kernels checked against the CPU path on an H200). The Armijo test is made in
/// double from the closure's losses. Each step costs one forward and backward pass plus one forward pass
/// per trial: <see cref="forward_passes"/> and <see cref="last_forward_passes"/> count them.</para>
/// <para>If the closure throws during the search, the parameters are put back to θ, the step size and
/// counters are unchanged, and the exception propagates. The step size and counters are saved by
/// <c>save_state_dict</c> (in each param group's options) and restored by <c>load_state_dict</c>; the
/// hyperparameters are the constructor's.</para>
/// </remarks>
public sealed partial class Sls : FusedOptimizer<Sls.Options, Sls.State>
{
    /// <summary>The most trial points one step evaluates.</summary>
    public const int MaxTrials = 100;
    /// <summary>Below this gradient norm a step searches nothing and leaves the parameters as they are.</summary>
    public const double MinGradientNorm = 1e-8;
    /// <summary>The step size taken when no trial satisfied the Armijo condition.</summary>
    public const double FallbackStepSize = 1e-6;

    private readonly int _batchesPerEpoch;
    private readonly double _initStepSize;
    private readonly double _c;
    private readonly double _betaB;
    private readonly double _gamma;
    private readonly int _resetOption;
    private double _stepSize;
    private long _steps;
    private long _forwardPasses;
    private int _lastForwardPasses;
    private Func<Tensor>? _closure;
    private double _loss;
    private bool _searched;

    /// <summary>Creates the optimizer with the reference's arguments and defaults.</summary>
    /// <param name="parameters">The parameters to optimize (for example <c>model.parameters()</c>).</param>
    /// <param name="n_batches_per_epoch">Minibatches per epoch (≥ 1): with <c>reset_option</c> 1 the step size may grow by <c>gamma</c> per epoch.</param>
    /// <param name="init_step_size">The first step size (finite, &gt; 0).</param>
    /// <param name="c">The Armijo constant (finite, ≥ 0): the fraction of the first-order decrease a trial must achieve.</param>
    /// <param name="beta_b">The factor a failed trial shrinks the step size by (in (0, 1)).</param>
    /// <param name="gamma">The growth per epoch of the step size with <c>reset_option</c> 1 (finite, &gt; 0).</param>
    /// <param name="reset_option">How a step's search starts: 0 keeps the last step size, 1 grows it by <c>gamma^(1/n_batches_per_epoch)</c>, 2 starts from <c>init_step_size</c>.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public Sls(IEnumerable<Parameter> parameters, int n_batches_per_epoch = 500, double init_step_size = 1,
        double c = 0.1, double beta_b = 0.9, double gamma = 2.0, int reset_option = 1)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (n_batches_per_epoch < 1)
        {
            throw new ArgumentException($"Sls: n_batches_per_epoch must be >= 1, got {n_batches_per_epoch}.", nameof(n_batches_per_epoch));
        }
        Require(double.IsFinite(init_step_size) && init_step_size > 0, nameof(init_step_size), "finite and > 0", init_step_size);
        Require(double.IsFinite(c) && c >= 0, nameof(c), "finite and >= 0", c);
        Require(beta_b > 0 && beta_b < 1, nameof(beta_b), "in (0, 1)", beta_b);
        Require(double.IsFinite(gamma) && gamma > 0, nameof(gamma), "finite and > 0", gamma);
        if (reset_option is < 0 or > 2)
        {
            throw new ArgumentException($"Sls: reset_option must be 0, 1 or 2, got {reset_option}.", nameof(reset_option));
        }
        (_batchesPerEpoch, _initStepSize, _c, _betaB, _gamma, _resetOption) = (n_batches_per_epoch, init_step_size, c, beta_b, gamma, reset_option);
        _stepSize = init_step_size;
        Initialize(new Options { LearningRate = init_step_size, InitialLearningRate = init_step_size },
            new[] { new ParamGroup(parameters) });
    }

    private static void Require(bool ok, string name, string rule, double value)
    {
        if (!ok)
        {
            throw new ArgumentException(FormattableString.Invariant($"Sls: {name} must be {rule}, got {value}."), name);
        }
    }

    /// <summary>The step size the last step took (before the first step: <c>init_step_size</c>); the next search starts from it.</summary>
    public double step_size => _stepSize;

    /// <summary>Steps taken.</summary>
    public long steps => _steps;

    /// <summary>Forward passes (closure evaluations) of every step so far: one at θ per step plus one per trial.</summary>
    public long forward_passes => _forwardPasses;

    /// <summary>Forward passes of the last step (1 + its trials).</summary>
    public int last_forward_passes => _lastForwardPasses;

    private protected override string Name => nameof(Sls);

    // The Armijo test is made with the raw gradient; a clipped one would change the method.
    private protected override bool ClipsGradients => false;

    /// <summary>
    /// One step: evaluates the closure and its gradient at θ, then searches the step size along −g (see
    /// the class remarks). Checks every parameter before anything is written.
    /// </summary>
    /// <param name="closure">Computes the current minibatch's loss (a one-element tensor) without calling <c>backward</c>.</param>
    /// <returns>The loss at θ (the closure's first result).</returns>
    /// <exception cref="ArgumentNullException">No closure.</exception>
    /// <exception cref="ArgumentException">The closure's result is not a one-element tensor, or a parameter is unsupported.</exception>
    public override Tensor step(Func<Tensor>? closure = null)
    {
        if (closure is null)
        {
            throw new ArgumentNullException(nameof(closure), "Sls: step needs a closure that computes the minibatch loss (without calling backward).");
        }
        Tensor loss;
        using (torch.enable_grad())
        {
            loss = closure();
            _loss = LossValue(loss, "at the current parameters");
            loss.backward();
        }
        _closure = closure;
        _searched = false;
        try
        {
            base.step(null);
            if (!_searched)
            {
                // No parameter has a gradient: nothing to move, but the step counts (as the reference's).
                Commit(ResetStepSize(), 1);
            }
        }
        finally
        {
            _closure = null;
        }
        return loss;
    }

    private static double LossValue(Tensor loss, string where)
    {
        if (loss is null || loss.numel() != 1)
        {
            throw new ArgumentException($"Sls: the closure must return the loss as a one-element tensor; {where} it returned " +
                (loss is null ? "null." : $"a tensor of shape [{string.Join(", ", loss.shape)}]."), "closure");
        }
        return loss.ToDouble();
    }

    private double ResetStepSize() => _resetOption switch
    {
        0 => _stepSize,
        1 => _stepSize * Math.Pow(_gamma, 1.0 / _batchesPerEpoch),
        _ => _initStepSize,
    };

    // The step size and counters after a step, mirrored into every group's options (state_dict).
    private void Commit(double stepSize, int forwardPasses)
    {
        _stepSize = stepSize;
        _steps++;
        _forwardPasses += forwardPasses;
        _lastForwardPasses = forwardPasses;
        SyncOptions();
    }

    private void SyncOptions()
    {
        foreach (var g in _parameter_groups)
        {
            ((Options)g.Options).Set(_stepSize, _steps, _forwardPasses, _lastForwardPasses);
        }
    }

    private protected override void CheckGroupOptions(Options options, int group)
    {
    }

    private protected override Action PrepareGroupOptions(Options given, int group)
    {
        double init = _initStepSize;
        return () =>
        {
            given.InitialLearningRate = init;
            given.Set(_stepSize, _steps, _forwardPasses, _lastForwardPasses);
        };
    }

    private protected override State CreateState(Parameter parameter, Options options) => new(parameter);

    private protected override void AddStateRecords(State state, HandleList records)
    {
        if (state.origin is { } o)
        {
            records.Add(o.Handle);
        }
    }

    // The saved copy of θ is scratch: one that no longer fits its parameter (moved, retyped) is made afresh.
    private protected override void GatherState(int k, ref TensorChecks checks, in TensorInfo parameter, State state, Options options, int group, int index)
    {
        if (state.origin is { } o)
        {
            var oi = TorchSharpNative.Describe(o.Handle);
            if (oi.ScalarType == parameter.ScalarType && oi.DeviceType == parameter.DeviceType && oi.DeviceIndex == parameter.DeviceIndex &&
                oi.Numel == parameter.Numel && oi.Contiguous && !oi.Sparse)
            {
                Batch.Buffers[k] = oi.Data;
                return;
            }
        }
        Batch.Fresh[k] = 1;
    }

    private protected override void CreateMissingState(in TensorChecks checks)
    {
        var batch = Batch;
        for (int k = 0; k < batch.Count; k++)
        {
            if (batch.Fresh[k] != 0)
            {
                var state = batch.States[k];
                var old = state.origin;
                var origin = Created(torch.empty_like(batch.ParamTensors[k]), () => state.origin = old);
                state.origin = origin;
                batch.Buffers[k] = TorchSharpNative.DataPointer(origin.Handle);
            }
        }
    }

    private protected override void NativeStep(in TensorChecks checks)
    {
        var batch = Batch;
        int n = batch.Count;
        var (device, index, dtype) = (checks.Device, checks.DeviceIndex, checks.DType);
        var parameters = batch.Params.AsSpan(0, n);
        var origins = batch.Buffers.AsSpan(0, n);
        var grads = batch.Grads.AsSpan(0, n);
        var numels = batch.Numels.AsSpan(0, n);
        double gradNormSquared = OptimNative.SlsGradNormSquared(device, index, dtype, grads, numels);
        double eta = ResetStepSize();
        int passes = 1;
        if (Math.Sqrt(gradNormSquared) >= MinGradientNorm)
        {
            OptimNative.SlsStep(OptimNative.SlsPass.Save, device, index, dtype, parameters, origins, grads, numels, 0);
            var closure = _closure!;
            try
            {
                bool found = false;
                using (torch.no_grad())
                {
                    for (int trial = 0; trial < MaxTrials; trial++)
                    {
                        OptimNative.SlsStep(OptimNative.SlsPass.Trial, device, index, dtype, parameters, origins, grads, numels, eta);
                        var next = closure();
                        double value = LossValue(next, $"at trial {trial + 1}");
                        next.Dispose();
                        passes++;
                        // The reference's Armijo test: f(θ − ηg) − (f(θ) − η·c·‖g‖²) ≤ 0 (false for a NaN loss).
                        if (value - (_loss - eta * _c * gradNormSquared) <= 0)
                        {
                            found = true;
                            break;
                        }
                        eta *= _betaB;
                    }
                }
                if (!found)
                {
                    OptimNative.SlsStep(OptimNative.SlsPass.Trial, device, index, dtype, parameters, origins, grads, numels, FallbackStepSize);
                }
            }
            catch
            {
                OptimNative.SlsStep(OptimNative.SlsPass.Restore, device, index, dtype, parameters, origins, default, numels, 0);
                throw;
            }
        }
        _searched = true;
        Commit(eta, passes);
    }

    private protected override void AfterLoad()
    {
        var o = (Options)_parameter_groups[0].Options;
        (_stepSize, _steps, _forwardPasses, _lastForwardPasses) = (o.step_size, o.steps, o.forward_passes, o.last_forward_passes);
        SyncOptions();
    }
}
