using TorchSharp.Modules;

namespace Optim;

/// <summary>
/// AdamW: <see cref="FusedAdam"/> with decoupled weight decay (Loshchilov and Hutter, 2019), PyTorch's
/// semantics, one native pass over memory per step.
/// </summary>
/// <remarks>
/// <para>A drop-in replacement for <c>torch.optim.AdamW</c>, with TorchSharp's defaults (weight_decay 0; PyTorch's
/// own default is 0.01). Per element, first <c>p *= 1 - lr * weight_decay</c>, then Adam's update without the
/// L2 term (see <see cref="FusedAdam"/>). As in PyTorch, where <c>AdamW</c> derives from <c>Adam</c>, it shares
/// Adam's options, param groups and state (<see cref="FusedAdam.Options"/>, <see cref="FusedAdam.ParamGroup"/>,
/// <see cref="FusedAdam.State"/>, also reachable as <c>FusedAdamW.Options</c> and so on); its saved state is
/// TorchSharp's AdamW format and names <c>FusedAdamW</c>.</para>
/// </remarks>
public class FusedAdamW : FusedAdam
{
    /// <summary>Creates the optimizer over one group of parameters.</summary>
    /// <param name="parameters">The parameters to optimize (for example <c>model.parameters()</c>).</param>
    /// <param name="lr">Learning rate (≥ 0; default 1e-3).</param>
    /// <param name="beta1">Coefficient of the running average of the gradient (in [0, 1); default 0.9).</param>
    /// <param name="beta2">Coefficient of the running average of the squared gradient (in [0, 1); default 0.999).</param>
    /// <param name="eps">Term added to the denominator (≥ 0; default 1e-8).</param>
    /// <param name="weight_decay">Decoupled weight decay (≥ 0; default 0).</param>
    /// <param name="amsgrad">Use the AMSGrad variant.</param>
    /// <param name="maximize">Maximize the objective instead of minimizing it.</param>
    /// <param name="max_grad_norm">Clips the gradients to this global norm inside each step (finite, &gt; 0; null: no clipping); see <see cref="FusedOptimizer{TOptions, TState}.MaxGradNorm"/>.</param>
    /// <param name="master_weights">Keep float32 master copies of float16/bfloat16 parameters; see <see cref="FusedOptimizer{TOptions, TState}.MasterWeights"/>.</param>
    /// <param name="stochastic_rounding">Round bfloat16 parameters updated in place stochastically; see <see cref="FusedOptimizer{TOptions, TState}.StochasticRounding"/>.</param>
    /// <param name="rounding_seed">The seed of stochastic rounding; see <see cref="FusedOptimizer{TOptions, TState}.RoundingSeed"/>.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public FusedAdamW(IEnumerable<Parameter> parameters, double lr = 0.001, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0, bool amsgrad = false, bool maximize = false, double? max_grad_norm = null,
        bool master_weights = false, bool stochastic_rounding = false, long rounding_seed = 0)
        : base(parameters, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, max_grad_norm, master_weights, stochastic_rounding, rounding_seed)
    {
    }

    /// <summary>Creates the optimizer over several param groups; options a group leaves unset take the values given here.</summary>
    /// <param name="parameters">The param groups.</param>
    /// <param name="lr">Default learning rate (≥ 0).</param>
    /// <param name="beta1">Default beta1 (in [0, 1)).</param>
    /// <param name="beta2">Default beta2 (in [0, 1)).</param>
    /// <param name="eps">Default eps (≥ 0).</param>
    /// <param name="weight_decay">Default decoupled weight decay (≥ 0).</param>
    /// <param name="amsgrad">Default for AMSGrad.</param>
    /// <param name="maximize">Default for maximization.</param>
    /// <param name="max_grad_norm">Clips the gradients to this global norm inside each step (finite, &gt; 0; null: no clipping); see <see cref="FusedOptimizer{TOptions, TState}.MaxGradNorm"/>.</param>
    /// <param name="master_weights">Keep float32 master copies of float16/bfloat16 parameters; see <see cref="FusedOptimizer{TOptions, TState}.MasterWeights"/>.</param>
    /// <param name="stochastic_rounding">Round bfloat16 parameters updated in place stochastically; see <see cref="FusedOptimizer{TOptions, TState}.StochasticRounding"/>.</param>
    /// <param name="rounding_seed">The seed of stochastic rounding; see <see cref="FusedOptimizer{TOptions, TState}.RoundingSeed"/>.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter or an unsupported tensor.</exception>
    public FusedAdamW(IEnumerable<ParamGroup> parameters, double lr = 0.001, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0, bool amsgrad = false, bool maximize = false, double? max_grad_norm = null,
        bool master_weights = false, bool stochastic_rounding = false, long rounding_seed = 0)
        : base(parameters, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, max_grad_norm, master_weights, stochastic_rounding, rounding_seed)
    {
    }

    private protected override bool Decoupled => true;

    private protected override string Name => nameof(FusedAdamW);
}
