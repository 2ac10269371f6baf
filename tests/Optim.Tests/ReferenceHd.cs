using TorchSharp;
using TorchSharp.Modules;
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
    // Per-parameter normalized rule, last step: each parameter's rates before it, and where the sign of h was undetermined.
    private readonly Dictionary<IntPtr, (Tensor RatesBefore, Tensor Undetermined)> _signs = new();
    private double[] _grate = Array.Empty<double>();
    private int _steps;

    /// <param name="rtol">Relative tolerance of <see cref="AssertMatches"/> for values, buffers and previous updates.</param>
    /// <param name="atol">Absolute tolerance of the same.</param>
    /// <param name="rateRtol">Relative tolerance for the scalar rates (global, per group, per tensor; kept in double).</param>
    /// <param name="parameterRateRtol">Relative tolerance for the per-parameter rates (kept in the parameters' dtype).</param>
    public ReferenceHd(HypergradientScope scope, HypergradientRule rule, double beta, double lrMin = 0, double lrMax = double.PositiveInfinity,
        double eps = HypergradientSGD.NormalizedEpsilon, double rtol = 2e-5, double atol = 2e-6, double rateRtol = 1e-6, double parameterRateRtol = 1e-5)
    {
        (_scope, _rule, _beta, _lrMin, _lrMax, _eps) = (scope, rule, beta, lrMin, lrMax, eps);
        (Rtol, Atol, RateRtol, ParameterRateRtol) = (rtol, atol, rateRtol, parameterRateRtol);
    }

    public double Rtol { get; }

    public double Atol { get; }

    public double RateRtol { get; }

    public double ParameterRateRtol { get; }

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

    /// <summary>The previous update direction kept apart from the buffer (no momentum, or Nesterov); null with heavy-ball momentum.</summary>
    public Tensor? PrevUpdate(Tensor p) => _uprev.TryGetValue(p.Handle, out var u) ? u : null;

    public void Step()
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        bool update = _steps > 0;
        // g~ and u_prev of every parameter with a gradient.
        var items = new List<(int G, Tensor P, Tensor Grad, Tensor Gt, Tensor Up)>();
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
                var gt = g.Maximize ? grad.neg() : grad.clone();
                if (g.WeightDecay != 0)
                {
                    gt = gt.add(p, alpha: g.WeightDecay);
                }
                Tensor up = HeavyBall(g)
                    ? (_buf.TryGetValue(p.Handle, out var b) ? b.clone() : torch.zeros_like(p))
                    : (_uprev.TryGetValue(p.Handle, out var u) ? u.clone() : torch.zeros_like(p));
                items.Add((gi, p, grad, gt, up));
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
        (double H, double G, double U) Sums(IEnumerable<(int G, Tensor P, Tensor Grad, Tensor Gt, Tensor Up)> xs)
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
                        if (_rule == HypergradientRule.Normalized)
                        {
                            RecordSigns(x.P, x.Grad, x.Gt, x.Up, _groups[x.G].WeightDecay);
                        }
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

    // The normalized per-parameter rule moves each rate by a factor 1 + β·h/(|g̃|·|u_prev| + ε), with
    // h = g̃·u_prev: by ±β, or less where |g̃|·|u_prev| is near ε. Where g̃ = g + λθ cancels, or u_prev is
    // within the tolerance of zero, two implementations whose states agree within the tolerances can
    // see opposite signs of h, or very different |g̃| (one ulp of θ is enough, and LibTorch's kernels
    // fuse multiply-adds where ours do not), and their rates may then part by up to 2β: that element's
    // step is not determined by anything this comparison can check. Recorded before the step.
    private void RecordSigns(Tensor p, Tensor grad, Tensor gt, Tensor up, double weightDecay)
    {
        double ulp = p.dtype == ScalarType.Float64 ? Math.Pow(2, -52) : Math.Pow(2, -23);
        // |Δg̃| between two states that pass the comparison: λ·(atol + rtol·|θ|) plus the rounding of g + λθ.
        var gtSlack = (p.abs() * (weightDecay * Rtol) + weightDecay * Atol) + (grad.abs() + p.abs() * weightDecay) * (4 * ulp);
        var undetermined = gt.abs().le(gtSlack).logical_or(up.abs().le(Atol / (1 - Rtol)));
        if (_signs.Remove(p.Handle, out var old))
        {
            old.RatesBefore.Dispose();
            old.Undetermined.Dispose();
        }
        _signs[p.Handle] = (_prate[p.Handle].clone().DetachFromDisposeScope(), undetermined.DetachFromDisposeScope());
    }

    /// <summary>
    /// Compares every piece of <paramref name="ours"/>' state after a step with this reference's after the
    /// same step, parameter by parameter (<paramref name="op"/> ours, <paramref name="rp"/> the reference's,
    /// in the same order): values, momentum buffers and previous updates (each present exactly where the
    /// reference has one), and the rates of the scope (group, tensor or parameter rates).
    /// For the per-parameter normalized rule it first adopts our rate and value at the elements whose
    /// rates differ beyond the tolerance, and fails unless the step of each such element was undetermined
    /// (see <see cref="RecordSigns"/>) and our rate moved by at most β; everything else, buffers and
    /// previous updates included, keeps running on the reference's own state. Returns the number of
    /// elements adopted.
    /// </summary>
    public long AssertMatches(HypergradientSGD ours, IReadOnlyList<Parameter> op, IReadOnlyList<Tensor> rp, string where)
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        long adopted = 0;
        for (int i = 0; i < op.Count; i++)
        {
            var s = Harness.HdState(ours, i);
            if (_signs.Remove(rp[i].Handle, out var signs))
            {
                var mine = _prate[rp[i].Handle];
                var theirs = s.parameter_rates!;
                var apart = (theirs - mine).abs().gt(mine.abs() * ParameterRateRtol + 1e-12);
                long unexplained = apart.logical_and(signs.Undetermined.logical_not()).sum().item<long>();
                Assert.That(unexplained, Is.Zero, $"{where}, parameter {i}: rates differ where the step was determined");
                var outOfRule = (theirs - signs.RatesBefore).abs().gt(signs.RatesBefore * (_beta * (1 + ParameterRateRtol)) + 1e-12).logical_and(apart);
                Assert.That(outOfRule.sum().item<long>(), Is.Zero, $"{where}, parameter {i}: a rate moved by more than β");
                adopted += apart.sum().item<long>();
                mine.copy_(torch.where(apart, theirs, mine));
                rp[i].copy_(torch.where(apart, op[i], rp[i]));
                signs.RatesBefore.Dispose();
                signs.Undetermined.Dispose();
            }
            Harness.AssertClose(op[i], rp[i], $"{where}, parameter {i}", Rtol, Atol);
            AssertPiece(s.momentum_buffer, Buffer(rp[i]), $"{where}, momentum buffer {i}");
            AssertPiece(s.prev_update, PrevUpdate(rp[i]), $"{where}, previous update {i}");
            switch (_scope)
            {
                case HypergradientScope.PerTensor:
                    Assert.That(s.tensor_rate, Is.EqualTo(TensorRate(rp[i])).Within(RateRtol * 100).Percent, $"{where}, rate of tensor {i}");
                    break;
                case HypergradientScope.PerParameter:
                    Harness.AssertClose(s.parameter_rates!, ParameterRates(rp[i]), $"{where}, rates of parameter {i}", ParameterRateRtol, 1e-12);
                    break;
            }
        }
        if (_scope is HypergradientScope.Global or HypergradientScope.PerGroup)
        {
            var groups = ours.ParamGroups.ToList();
            for (int g = 0; g < groups.Count; g++)
            {
                Assert.That(groups[g].LearningRate, Is.EqualTo(GroupRate(g)).Within(RateRtol * 100).Percent, $"{where}, rate of group {g}");
            }
        }
        return adopted;
    }

    private void AssertPiece(Tensor? actual, Tensor? expected, string what)
    {
        Assert.That(actual is null, Is.EqualTo(expected is null), $"{what}: {(actual is null ? "missing" : "present but the reference has none")}");
        if (actual is not null && expected is not null)
        {
            Harness.AssertClose(actual, expected, what, Rtol, Atol);
        }
    }

    public void Dispose()
    {
        foreach (var t in _buf.Values.Concat(_uprev.Values).Concat(_prate.Values))
        {
            t.Dispose();
        }
        foreach (var (before, undetermined) in _signs.Values)
        {
            before.Dispose();
            undetermined.Dispose();
        }
    }
}
