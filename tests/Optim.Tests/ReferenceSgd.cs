using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// A naive SGD written with TorchSharp tensor operations, step by step as PyTorch's
/// <c>torch/optim/sgd.py</c> (<c>_single_tensor_sgd</c>) spells it: the gradient is negated for
/// maximize before weight decay; the momentum buffer is a clone of the gradient on a parameter's first
/// step. Independent of the native code.
/// </summary>
internal sealed class ReferenceSgd : IDisposable
{
    private readonly List<(IList<Tensor> Params, double Lr, double Momentum, double Dampening, double WeightDecay, bool Nesterov, bool Maximize)> _groups = new();
    private readonly Dictionary<IntPtr, Tensor> _buffers = new();

    public void AddGroup(IEnumerable<Tensor> parameters, double lr, double momentum = 0, double dampening = 0,
        double weight_decay = 0, bool nesterov = false, bool maximize = false) =>
        _groups.Add((parameters.ToList(), lr, momentum, dampening, weight_decay, nesterov, maximize));

    public Tensor? Buffer(Tensor p) => _buffers.TryGetValue(p.Handle, out var b) ? b : null;

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
                var d = g.Maximize ? grad.neg() : grad.clone();
                if (g.WeightDecay != 0)
                {
                    d = d.add(p, alpha: g.WeightDecay);
                }
                if (g.Momentum != 0)
                {
                    if (!_buffers.TryGetValue(p.Handle, out var buf))
                    {
                        buf = d.clone().detach().DetachFromDisposeScope();
                        _buffers[p.Handle] = buf;
                    }
                    else
                    {
                        buf.mul_(g.Momentum).add_(d, alpha: 1 - g.Dampening);
                    }
                    d = g.Nesterov ? d.add(buf, alpha: g.Momentum) : buf;
                }
                p.add_(d, alpha: -g.Lr);
            }
        }
    }

    public void Dispose()
    {
        foreach (var b in _buffers.Values)
        {
            b.Dispose();
        }
        _buffers.Clear();
    }
}
