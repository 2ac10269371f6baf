using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// A naive Adam/AdamW written with TorchSharp tensor operations, step by step as PyTorch's
/// <c>torch/optim/adam.py</c> (<c>_single_tensor_adam</c>) spells it: the step count per parameter
/// (advanced only when it has a gradient), AdamW's <c>p *= 1 - lr * weight_decay</c> first, the gradient
/// negated for maximize before Adam's L2 term, <c>exp_avg.lerp_(grad, 1 - beta1)</c>, the running
/// maximum for AMSGrad, <c>denom = sqrt(v) / sqrt(bias_correction2) + eps</c>. Independent of the
/// native code.
/// </summary>
internal sealed class ReferenceAdam : IDisposable
{
    public sealed class ParamState
    {
        public long Step;
        public Tensor ExpAvg = null!, ExpAvgSq = null!;
        public Tensor? MaxExpAvgSq;
    }

    private readonly List<(IList<Tensor> Params, double Lr, double Beta1, double Beta2, double Eps, double WeightDecay, bool Amsgrad, bool Maximize)> _groups = new();
    private readonly Dictionary<IntPtr, ParamState> _state = new();
    private readonly bool _decoupled;

    public ReferenceAdam(bool decoupled) => _decoupled = decoupled;

    public void AddGroup(IEnumerable<Tensor> parameters, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0, bool amsgrad = false, bool maximize = false) =>
        _groups.Add((parameters.ToList(), lr, beta1, beta2, eps, weight_decay, amsgrad, maximize));

    public ParamState? State(Tensor p) => _state.TryGetValue(p.Handle, out var s) ? s : null;

    public void Step()
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        foreach (var g in _groups)
        {
            foreach (var p in g.Params)
            {
                using var grad = p.grad;
                if (grad is null)
                {
                    continue;
                }
                if (!_state.TryGetValue(p.Handle, out var s))
                {
                    s = new ParamState
                    {
                        ExpAvg = torch.zeros_like(p).DetachFromDisposeScope(),
                        ExpAvgSq = torch.zeros_like(p).DetachFromDisposeScope(),
                    };
                    _state[p.Handle] = s;
                }
                if (g.Amsgrad && s.MaxExpAvgSq is null)
                {
                    s.MaxExpAvgSq = torch.zeros_like(p).DetachFromDisposeScope();
                }
                s.Step += 1;
                var d = g.Maximize ? grad.neg() : grad.clone();
                if (g.WeightDecay != 0)
                {
                    if (_decoupled)
                    {
                        p.mul_(1 - g.Lr * g.WeightDecay);
                    }
                    else
                    {
                        d = d.add(p, alpha: g.WeightDecay);
                    }
                }
                s.ExpAvg.lerp_(d, torch.tensor(1 - g.Beta1, p.dtype));
                s.ExpAvgSq.mul_(g.Beta2).addcmul_(d, d, value: 1 - g.Beta2);
                double bc1 = 1 - Math.Pow(g.Beta1, s.Step);
                double bc2 = 1 - Math.Pow(g.Beta2, s.Step);
                Tensor second = s.ExpAvgSq;
                if (g.Amsgrad)
                {
                    s.MaxExpAvgSq!.copy_(torch.maximum(s.MaxExpAvgSq!, s.ExpAvgSq));
                    second = s.MaxExpAvgSq!;
                }
                var denom = (second.sqrt() / Math.Sqrt(bc2)).add_(g.Eps);
                p.addcdiv_(s.ExpAvg, denom, value: -(g.Lr / bc1));
            }
        }
    }

    public void Dispose()
    {
        foreach (var s in _state.Values)
        {
            s.ExpAvg.Dispose();
            s.ExpAvgSq.Dispose();
            s.MaxExpAvgSq?.Dispose();
        }
        _state.Clear();
    }
}
