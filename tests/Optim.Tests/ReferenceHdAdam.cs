using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// A naive hypergradient Adam (Adam-HD) written with TorchSharp tensor operations: each step forms Adam's
/// gradient g̃ = (maximize ? −g : g) + weight_decay·θ, sums h = g̃·u_prev (and the norms of the normalized
/// rule) over each rate's scope in float64, moves the rates (not on the first step, not for a non-finite h,
/// clamped to [lr_min, lr_max]), then takes PyTorch's <c>_single_tensor_adam</c> step with the new rate and
/// keeps u_prev = (exp_avg / (1 − β₁ᵗ)) / denom. Per-parameter rates live in the parameters' dtype, as
/// their rule is elementwise. Independent of the native code.
/// </summary>
internal sealed class ReferenceHdAdam : IDisposable
{
    public sealed record Group(IList<Tensor> Params, double Lr, double Beta1, double Beta2, double Eps, double WeightDecay, bool Amsgrad, bool Maximize);

    public sealed class ParamState
    {
        public long Step;
        public Tensor ExpAvg = null!, ExpAvgSq = null!, PrevUpdate = null!;
        public Tensor? MaxExpAvgSq, Rates;
        public double TensorRate;
    }

    private readonly HypergradientScope _scope;
    private readonly HypergradientRule _rule;
    private readonly double _beta, _lrMin, _lrMax;
    private readonly List<Group> _groups = new();
    private readonly Dictionary<IntPtr, ParamState> _state = new();
    private readonly List<double> _groupRates = new();
    private bool _first = true;

    public ReferenceHdAdam(HypergradientScope scope, HypergradientRule rule, double beta, double lrMin = 0, double lrMax = double.PositiveInfinity) =>
        (_scope, _rule, _beta, _lrMin, _lrMax) = (scope, rule, beta, lrMin, lrMax);

    public void AddGroup(IEnumerable<Tensor> ps, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0, bool amsgrad = false, bool maximize = false)
    {
        double rate = _scope == HypergradientScope.Global && _groups.Count > 0 ? _groupRates[0] : lr;
        var list = ps.ToList();
        _groups.Add(new Group(list, rate, beta1, beta2, eps, weight_decay, amsgrad, maximize));
        _groupRates.Add(rate);
        foreach (var p in list)
        {
            var s = new ParamState
            {
                ExpAvg = torch.zeros_like(p).DetachFromDisposeScope(),
                ExpAvgSq = torch.zeros_like(p).DetachFromDisposeScope(),
                PrevUpdate = torch.zeros_like(p).DetachFromDisposeScope(),
                TensorRate = rate,
            };
            if (_scope == HypergradientScope.PerParameter)
            {
                s.Rates = torch.full_like(p, rate).DetachFromDisposeScope();
            }
            if (amsgrad)
            {
                s.MaxExpAvgSq = torch.zeros_like(p).DetachFromDisposeScope();
            }
            _state[p.Handle] = s;
        }
    }

    public ParamState State(Tensor p) => _state[p.Handle];

    public double GroupRate(int g) => _groupRates[_scope == HypergradientScope.Global ? 0 : g];

    private double Rule(double alpha, double h, double gg, double uu)
    {
        if (_first || !double.IsFinite(h))
        {
            return alpha;
        }
        double next = _rule == HypergradientRule.Normalized
            ? alpha * (1 + _beta * h / (Math.Sqrt(gg) * Math.Sqrt(uu) + HypergradientAdam.NormalizedEpsilon))
            : alpha + _beta * h;
        return Math.Min(Math.Max(next, _lrMin), _lrMax);
    }

    public void Step()
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        // Adam's gradient of every parameter with a gradient, and the scalar scopes' sums.
        var grads = new Dictionary<IntPtr, Tensor>();
        // Keyed by the rate: (0, 0) global, (1, group) per group, (2, handle) per tensor.
        var sums = new Dictionary<(int Kind, nint Id), (double H, double GG, double UU)>();
        for (int gi = 0; gi < _groups.Count; gi++)
        {
            var g = _groups[gi];
            foreach (var p in g.Params)
            {
                var grad = p.grad;
                if (grad is null)
                {
                    continue;
                }
                var d = g.Maximize ? grad.neg() : grad.clone();
                if (g.WeightDecay != 0)
                {
                    // PyTorch's grad.add(param, alpha: wd), as a product then a sum: its CPU kernel fuses
                    // them (one rounding), which where g̃ nearly cancels moves u_prev = m̂/(√v̂ + ε) by far
                    // more than a rounding.
                    d = d + p * g.WeightDecay;
                }
                grads[p.Handle] = d;
                var u = _state[p.Handle].PrevUpdate;
                var key = _scope switch
                {
                    HypergradientScope.Global => (0, (nint)0),
                    HypergradientScope.PerGroup => (1, (nint)gi),
                    _ => (2, p.Handle),
                };
                var (h, gg, uu) = sums.GetValueOrDefault(key);
                var d64 = d.to_type(ScalarType.Float64);
                var u64 = u.to_type(ScalarType.Float64);
                sums[key] = (h + (d64 * u64).sum().item<double>(), gg + (d64 * d64).sum().item<double>(), uu + (u64 * u64).sum().item<double>());
            }
        }
        if (_scope is HypergradientScope.Global or HypergradientScope.PerGroup)
        {
            for (int gi = 0; gi < _groupRates.Count; gi++)
            {
                var (h, gg, uu) = sums.GetValueOrDefault(_scope == HypergradientScope.Global ? (0, 0) : (1, (nint)gi));
                _groupRates[gi] = Rule(_groupRates[gi], h, gg, uu);
            }
            if (_scope == HypergradientScope.Global)
            {
                for (int gi = 1; gi < _groupRates.Count; gi++)
                {
                    _groupRates[gi] = _groupRates[0];
                }
            }
        }
        for (int gi = 0; gi < _groups.Count; gi++)
        {
            var g = _groups[gi];
            foreach (var p in g.Params)
            {
                var s = _state[p.Handle];
                if (!grads.TryGetValue(p.Handle, out var d))
                {
                    if (_scope == HypergradientScope.PerTensor)
                    {
                        s.TensorRate = Rule(s.TensorRate, 0, 0, 0); // an empty tensor's h is 0
                    }
                    continue;
                }
                s.Step += 1;
                if (_scope == HypergradientScope.PerTensor)
                {
                    var (h, gg, uu) = sums[(2, p.Handle)];
                    s.TensorRate = Rule(s.TensorRate, h, gg, uu);
                }
                if (_scope == HypergradientScope.PerParameter && !_first)
                {
                    var h = d * s.PrevUpdate;
                    var moved = _rule == HypergradientRule.Normalized
                        ? s.Rates! * (1 + _beta * h / (d.abs() * s.PrevUpdate.abs() + HypergradientAdam.NormalizedEpsilon))
                        : s.Rates! + _beta * h;
                    moved = moved.clamp(_lrMin, _lrMax);
                    s.Rates!.copy_(torch.where(h.isfinite(), moved, s.Rates!));
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
                s.PrevUpdate.copy_(s.ExpAvg / bc1 / denom);
                if (_scope == HypergradientScope.PerParameter)
                {
                    var stepSize = (s.Rates!.to_type(ScalarType.Float64) / bc1).to_type(p.dtype);
                    p.sub_(stepSize * s.ExpAvg / denom);
                }
                else
                {
                    double rate = _scope == HypergradientScope.PerTensor ? s.TensorRate : _groupRates[gi];
                    p.addcdiv_(s.ExpAvg, denom, value: -(rate / bc1));
                }
            }
        }
        _first = false;
    }

    public void Dispose()
    {
        foreach (var s in _state.Values)
        {
            foreach (var t in new[] { s.ExpAvg, s.ExpAvgSq, s.PrevUpdate, s.MaxExpAvgSq, s.Rates })
            {
                t?.Dispose();
            }
        }
        _state.Clear();
    }
}
