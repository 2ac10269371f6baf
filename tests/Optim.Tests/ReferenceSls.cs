using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// The stochastic Armijo line search written naively with TorchSharp tensor operations in the reference's
/// order (Vaswani et al. 2019, <c>sls.py</c>): reset the step size, loss and backward at θ, ‖g‖² (here in
/// float64, as Optim sums it), trials p = p0 − η·g until f(p) − (f(θ) − η·c·‖g‖²) ≤ 0, η ← β·η after each
/// failure, at most 100 trials, then a step of 1e-6. Shares no code with <see cref="Sls"/>.
/// </summary>
internal sealed class ReferenceSls
{
    private readonly IReadOnlyList<Parameter> _params;
    private readonly int _batches;
    private readonly double _init, _c, _beta, _gamma;
    private readonly int _reset;

    public ReferenceSls(IReadOnlyList<Parameter> parameters, int n_batches_per_epoch = 500, double init_step_size = 1, double c = 0.1,
        double beta_b = 0.9, double gamma = 2.0, int reset_option = 1)
    {
        (_params, _batches, _init, _c, _beta, _gamma, _reset) = (parameters, n_batches_per_epoch, init_step_size, c, beta_b, gamma, reset_option);
        StepSize = init_step_size;
    }

    public double StepSize { get; private set; }
    public long ForwardPasses { get; private set; }
    public int LastForwardPasses { get; private set; }

    public double Step(Func<Tensor> closure)
    {
        double eta = _reset switch
        {
            0 => StepSize,
            1 => StepSize * Math.Pow(_gamma, 1.0 / _batches),
            _ => _init,
        };
        foreach (var p in _params)
        {
            using var g = p.grad;
            g?.zero_();
        }
        double loss;
        using (torch.enable_grad())
        {
            using var l = closure();
            l.backward();
            loss = l.ToDouble();
        }
        int passes = 1;
        var grads = _params.Select(p => p.grad).ToList();
        double gg = 0;
        foreach (var g in grads)
        {
            if (g is not null)
            {
                using var sq = g.to(ScalarType.Float64).square().sum();
                gg += sq.ToDouble();
            }
        }
        if (Math.Sqrt(gg) >= 1e-8)
        {
            var start = _params.Select(p => p.detach().clone()).ToList();
            using (torch.no_grad())
            {
                bool found = false;
                for (int e = 0; e < 100; e++)
                {
                    Move(start, grads, eta);
                    using var next = closure();
                    passes++;
                    if (next.ToDouble() - (loss - eta * _c * gg) <= 0)
                    {
                        found = true;
                        break;
                    }
                    eta *= _beta;
                }
                if (!found)
                {
                    Move(start, grads, 1e-6);
                }
            }
            start.ForEach(t => t.Dispose());
        }
        grads.ForEach(g => g?.Dispose());
        StepSize = eta;
        ForwardPasses += passes;
        LastForwardPasses = passes;
        return loss;
    }

    private void Move(List<Tensor> start, List<Tensor?> grads, double eta)
    {
        for (int i = 0; i < _params.Count; i++)
        {
            if (grads[i] is { } g)
            {
                using var step = g * eta;
                using var moved = start[i] - step;
                _params[i].copy_(moved);
            }
        }
    }
}
