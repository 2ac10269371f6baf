using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// A naive hypergradient-descent SGD written with TorchSharp tensor operations, step by step as the
/// remarks of <see cref="HypergradientSGD"/> describe it; independent of the native code. Sums for the scalar
/// scopes are taken in float64.
/// </summary>
internal sealed class ReferenceHd : IDisposable
{
    public sealed record Group(IList<Tensor> Params, double Lr, double Momentum, double Dampening, double WeightDecay, bool Nesterov, bool Maximize);

    private readonly List<Group> _groups = new();
    private readonly HypergradientScope _scope;
    private readonly HypergradientRule _rule;
    private readonly double _beta, _lrMin, _lrMax, _eps;
    private readonly Dictionary<IntPtr, Tensor> _buf = new(), _uprev = new(), _prate = new();
    private readonly Dictionary<IntPtr, double> _trate = new();
    private double[] _grate = Array.Empty<double>();
    private int _steps;

    public ReferenceHd(HypergradientScope scope, HypergradientRule rule, double beta, double lrMin = 0, double lrMax = double.PositiveInfinity, double eps = HypergradientSGD.NormalizedEpsilon)
    {
        (_scope, _rule, _beta, _lrMin, _lrMax, _eps) = (scope, rule, beta, lrMin, lrMax, eps);
    }

    public void AddGroup(IEnumerable<Tensor> ps, double lr, double momentum = 0, double dampening = 0, double weight_decay = 0, bool nesterov = false, bool maximize = false)
    {
        var g = new Group(ps.ToList(), lr, momentum, dampening, weight_decay, nesterov, maximize);
        _groups.Add(g);
        _grate = _grate.Append(_scope == HypergradientScope.Global && _groups.Count > 1 ? _grate[0] : lr).ToArray();
        foreach (var p in g.Params)
        {
            _trate[p.Handle] = lr;
            _prate[p.Handle] = torch.full_like(p, lr).DetachFromDisposeScope();
        }
    }

    public Tensor? Buffer(Tensor p) => _buf.TryGetValue(p.Handle, out var b) ? b : null;

    public double GroupRate(int g) => _scope == HypergradientScope.Global ? _grate[0] : _grate[g];

    public double TensorRate(Tensor p) => _trate[p.Handle];

    public Tensor ParameterRates(Tensor p) => _prate[p.Handle];

    private static bool HeavyBall(Group g) => g.Momentum != 0 && !g.Nesterov;

    /// <summary>
    /// Overwrites the state of reference parameter <paramref name="p"/> (its values, momentum buffer,
    /// previous update and per-parameter rates) with copies of another implementation's, so that the
    /// next <see cref="Step"/> starts from exactly that state. Null arguments leave that piece as it is.
    /// </summary>
    public void StartFrom(Tensor p, Tensor values, Tensor? buffer, Tensor? prevUpdate, Tensor? rates)
    {
        using var noGrad = torch.no_grad();
        p.copy_(values);
        void Put(Dictionary<IntPtr, Tensor> d, Tensor? t)
        {
            if (t is null)
            {
                return;
            }
            if (d.TryGetValue(p.Handle, out var mine))
            {
                mine.copy_(t);
            }
            else
            {
                d[p.Handle] = t.clone().DetachFromDisposeScope();
            }
        }
        Put(_buf, buffer);
        Put(_uprev, prevUpdate);
        Put(_prate, rates);
    }

    public void Step()
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        bool update = _steps > 0;
        // g~ and u_prev of every parameter with a gradient.
        var items = new List<(int G, Tensor P, Tensor Gt, Tensor Up)>();
        for (int gi = 0; gi < _groups.Count; gi++)
        {
            var g = _groups[gi];
            foreach (var p in g.Params)
            {
                using var grad = p.grad;
                if (grad is null)
                {
                    continue;
                }
                var gt = g.Maximize ? grad.neg() : grad.clone();
                if (g.WeightDecay != 0)
                {
                    gt = gt.add(p, alpha: g.WeightDecay);
                }
                Tensor up = HeavyBall(g)
                    ? (_buf.TryGetValue(p.Handle, out var b) ? b.clone() : torch.zeros_like(p))
                    : (_uprev.TryGetValue(p.Handle, out var u) ? u.clone() : torch.zeros_like(p));
                items.Add((gi, p, gt, up));
            }
        }
        double NewRate(double alpha, double h, double gnorm, double unorm)
        {
            if (!update || !double.IsFinite(h))
            {
                return alpha;
            }
            double next = _rule == HypergradientRule.Additive ? alpha + _beta * h : alpha * (1 + _beta * h / (gnorm * unorm + _eps));
            return Math.Min(Math.Max(next, _lrMin), _lrMax);
        }
        (double H, double G, double U) Sums(IEnumerable<(int G, Tensor P, Tensor Gt, Tensor Up)> xs)
        {
            double h = 0, gg = 0, uu = 0;
            foreach (var x in xs)
            {
                var gt = x.Gt.to(ScalarType.Float64);
                var up = x.Up.to(ScalarType.Float64);
                h += (gt * up).sum().ToDouble();
                gg += (gt * gt).sum().ToDouble();
                uu += (up * up).sum().ToDouble();
            }
            return (h, Math.Sqrt(gg), Math.Sqrt(uu));
        }
        switch (_scope)
        {
            case HypergradientScope.Global:
                {
                    var (h, gn, un) = Sums(items);
                    _grate[0] = NewRate(_grate[0], h, gn, un);
                    break;
                }
            case HypergradientScope.PerGroup:
                for (int gi = 0; gi < _groups.Count; gi++)
                {
                    var (h, gn, un) = Sums(items.Where(x => x.G == gi));
                    _grate[gi] = NewRate(_grate[gi], h, gn, un);
                }
                break;
            case HypergradientScope.PerTensor:
                foreach (var x in items)
                {
                    var (h, gn, un) = Sums(new[] { x });
                    _trate[x.P.Handle] = NewRate(_trate[x.P.Handle], h, gn, un);
                }
                break;
            case HypergradientScope.PerParameter:
                if (update)
                {
                    foreach (var x in items)
                    {
                        var a = _prate[x.P.Handle];
                        var h = x.Gt * x.Up;
                        var next = _rule == HypergradientRule.Additive
                            ? a + h * _beta
                            : a * (h * _beta / (x.Gt.abs() * x.Up.abs() + _eps) + 1);
                        a.copy_(next.clamp(_lrMin, _lrMax));
                    }
                }
                break;
        }
        foreach (var x in items)
        {
            var g = _groups[x.G];
            var d = x.Gt;
            if (g.Momentum != 0)
            {
                if (!_buf.TryGetValue(x.P.Handle, out var buf))
                {
                    buf = x.Gt.clone().DetachFromDisposeScope();
                    _buf[x.P.Handle] = buf;
                }
                else
                {
                    buf.mul_(g.Momentum).add_(x.Gt, alpha: 1 - g.Dampening);
                }
                d = g.Nesterov ? x.Gt.add(buf, alpha: g.Momentum) : buf;
            }
            if (!HeavyBall(g))
            {
                if (_uprev.TryGetValue(x.P.Handle, out var u))
                {
                    u.copy_(d);
                }
                else
                {
                    _uprev[x.P.Handle] = d.clone().DetachFromDisposeScope();
                }
            }
            switch (_scope)
            {
                case HypergradientScope.PerParameter:
                    x.P.sub_(_prate[x.P.Handle] * d);
                    break;
                case HypergradientScope.PerTensor:
                    x.P.add_(d, alpha: -_trate[x.P.Handle]);
                    break;
                default:
                    x.P.add_(d, alpha: -GroupRate(x.G));
                    break;
            }
        }
        _steps++;
    }

    public void Dispose()
    {
        foreach (var t in _buf.Values.Concat(_uprev.Values).Concat(_prate.Values))
        {
            t.Dispose();
        }
    }
}
