using Optim.Bench.Comparison;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// The NMF stability bound (bench/Optim.Bench/Comparison/NmfStability.cs, docs/nmf-bound.md): the power
/// iteration against torch.linalg's spectral norm, the curvature bound against the Hessian computed by
/// autograd on small matrices, the quadratic model decreasing below the bound, a constructed case that
/// converges below it and blows up above it, and the rate clip composing with a schedule.
/// </summary>
[TestFixture]
public class NmfBoundTests
{
    private static double SpectralNorm(Tensor a) => torch.linalg.matrix_norm(a.to(ScalarType.Float64), 2).ToDouble();

    [TestCase(8, 5, true)]
    [TestCase(100, 10, true)]
    [TestCase(16, 784, true)]
    [TestCase(100, 784, false)]
    public void PowerIterationMatchesTheSpectralNorm(int rows, int cols, bool nonNegative)
    {
        using var gen = new torch.Generator((ulong)(rows * 1000 + cols));
        using var a = nonNegative ? torch.rand(rows, cols, generator: gen) : torch.randn(rows, cols, generator: gen);
        double exact = SpectralNorm(a);
        using var power = new PowerIteration(3);
        double first = power.SpectralNorm(a);
        Assert.That(first, Is.LessThanOrEqualTo(exact * (1 + 1e-12)), "power iteration never overestimates");
        if (nonNegative)
        {
            // A positive matrix has a large spectral gap: the cold start from the all-ones vector converges.
            Assert.That(first, Is.EqualTo(exact).Within(1e-6).Percent);
        }
        // Warm starts keep improving the estimate: after enough calls it matches on any matrix.
        double last = first;
        for (int call = 0; call < 200; call++)
        {
            last = power.SpectralNorm(a);
        }
        Assert.That(last, Is.EqualTo(exact).Within(1e-3).Percent, "warm-started calls converge");
        Assert.That(last, Is.GreaterThanOrEqualTo(first * (1 - 1e-12)));
    }

    [Test]
    public void AWarmStartCarriesAcrossMinibatches()
    {
        // W_B of successive minibatches: different rows, same columns; 3 warm iterations per call stay close.
        using var gen = new torch.Generator(3);
        using var w = torch.rand(2000, 10, generator: gen);
        using var power = new PowerIteration(3);
        for (int b = 0; b < 20; b++)
        {
            using var rows = w.narrow(0, b * 100, 100);
            Assert.That(power.SpectralNorm(rows), Is.EqualTo(SpectralNorm(rows)).Within(1e-4).Percent, $"batch {b}");
        }
    }

    /// <summary>The minibatch loss f = (1/b)‖X − WH‖²_F of the NMF task.</summary>
    private static Tensor Loss(Tensor x, Tensor w, Tensor h) => (x - w.matmul(h)).square().sum(1).mean();

    /// <summary>The Hessian of f over (W, H) flattened, by autograd (gradient, then the gradient of each of its entries).</summary>
    private static Tensor Hessian(Tensor x, Tensor w0, Tensor h0)
    {
        var w = w0.detach().clone().requires_grad_(true);
        var h = h0.detach().clone().requires_grad_(true);
        var grads = torch.autograd.grad(new[] { Loss(x, w, h) }, new[] { w, h }, retain_graph: true, create_graph: true);
        var g = torch.cat(new[] { grads[0].flatten(), grads[1].flatten() });
        var rows = new List<Tensor>();
        for (int i = 0; i < g.shape[0]; i++)
        {
            var second = torch.autograd.grad(new[] { g[i] }, new[] { w, h }, retain_graph: true);
            rows.Add(torch.cat(new[] { second[0].flatten(), second[1].flatten() }));
        }
        return torch.stack(rows);
    }

    private static (Tensor X, Tensor W, Tensor H) Random(int seed, int b = 6, int n = 5, int r = 2, double noise = 0.5)
    {
        var gen = new torch.Generator((ulong)seed);
        var w = torch.rand(b, r, dtype: ScalarType.Float64, generator: gen);
        var h = torch.rand(r, n, dtype: ScalarType.Float64, generator: gen);
        // X near W H but not equal: the residual's cross term matters.
        var x = (w.matmul(h) + noise * torch.rand(b, n, dtype: ScalarType.Float64, generator: gen)).clamp_min(0);
        var w0 = torch.rand(b, r, dtype: ScalarType.Float64, generator: gen);
        var h0 = torch.rand(r, n, dtype: ScalarType.Float64, generator: gen);
        return (x, w0, h0);
    }

    [Test]
    public void TheBoundHoldsTheHessianAndTheGaussNewtonPartIsExact()
    {
        for (int seed = 0; seed < 30; seed++)
        {
            using var scope = torch.NewDisposeScope();
            var (x, w, h) = Random(seed, noise: seed % 3);
            using var stability = new NmfStability();
            var c = stability.Measure(x, w, h);
            var eig = torch.linalg.eigvalsh(Hessian(x, w, h));
            double top = eig.max().ToDouble();
            double b = x.shape[0];
            Assert.That(top, Is.LessThanOrEqualTo(c.Smoothness * (1 + 1e-9)), $"seed {seed}: L bounds the Hessian's top eigenvalue");
            // The Gauss–Newton part's top eigenvalue is exactly (2/b)(‖W‖² + ‖H‖²); the cross term moves it by at most (2/b)‖R‖.
            Assert.That(top, Is.GreaterThanOrEqualTo(2 / b * (c.WNormSquared + c.HNormSquared - c.ResidualNorm) * (1 - 1e-9)), $"seed {seed}: the bound is within the cross term");
            var gn = Hessian(w.matmul(h), w, h); // X = WH: no residual, the Hessian is the Gauss–Newton matrix
            Assert.That(torch.linalg.eigvalsh(gn).max().ToDouble(), Is.EqualTo(2 / b * (c.WNormSquared + c.HNormSquared)).Within(1e-6).Percent, $"seed {seed}: Gauss–Newton top eigenvalue");
        }
    }

    [Test]
    public void AStepBelowTheBoundDecreasesTheQuadraticModel()
    {
        for (int seed = 0; seed < 30; seed++)
        {
            using var scope = torch.NewDisposeScope();
            var (x, w0, h0) = Random(100 + seed, noise: seed % 3);
            var w = w0.detach().clone().requires_grad_(true);
            var h = h0.detach().clone().requires_grad_(true);
            var loss = Loss(x, w, h);
            var grads = torch.autograd.grad(new[] { loss }, new[] { w, h });
            var g = torch.cat(new[] { grads[0].flatten(), grads[1].flatten() });
            var hess = Hessian(x, w0, h0);
            double gg = g.dot(g).ToDouble();
            double gHg = g.dot(hess.mv(g)).ToDouble();
            using var stability = new NmfStability();
            double bound = stability.Measure(x, w0, h0).StableRate(0);
            foreach (double k in new[] { 0.1, 0.5, 0.9, 0.999 })
            {
                double eta = k * bound;
                // m(η) − f = −η‖g‖² + ½η² gᵀ∇²f g: negative for every rate under 2 / L.
                double change = -eta * gg + 0.5 * eta * eta * gHg;
                Assert.That(change, Is.LessThan(0), $"seed {seed}, {k} × bound");
                // And the step itself decreases the loss at half the bound (the descent lemma's 1 / L).
                if (k <= 0.5)
                {
                    using var noGrad = torch.no_grad();
                    double after = Loss(x, (w0 - eta * grads[0]).clamp_min(0), (h0 - eta * grads[1]).clamp_min(0)).ToDouble();
                    Assert.That(after, Is.LessThan(loss.ToDouble()), $"seed {seed}, {k} × bound: the projected step decreases f");
                }
            }
        }
    }

    /// <summary>
    /// X = w hᵀ exactly (rank 1, positive, balanced), started from the solution moved a little along the top
    /// Gauss–Newton direction, where the bound is tight; FusedSGD at a fixed multiple of the bound taken at
    /// the solution. The final loss relative to the first.
    /// </summary>
    private static double Constructed(double multiple, double momentum, int steps)
    {
        using var scope = torch.NewDisposeScope();
        var gen = new torch.Generator(9);
        var wStar = torch.rand(20, 1, generator: gen).add_(0.5);
        var hStar = torch.rand(1, 30, generator: gen).add_(0.5);
        // Balanced (‖w‖ = ‖h‖): of all the factorisations w hᵀ of X this one has the least curvature, so a rate above
        // its bound has no stable solution to drift to (an unbalanced start can rebalance and settle).
        hStar.mul_(wStar.norm() / hStar.norm());
        var x = wStar.matmul(hStar);
        double wn = wStar.norm().ToDouble(), hn = hStar.norm().ToDouble();
        // The top Gauss–Newton direction: dW ∝ ‖h‖ w / ‖w‖, dH ∝ ‖w‖ h / ‖h‖.
        double eps = 1e-3;
        var w = new Parameter(wStar + eps * hn / wn * wStar);
        var h = new Parameter(hStar + eps * wn / hn * hStar);
        using var stability = new NmfStability();
        double bound = stability.Measure(x, wStar, hStar).StableRate(momentum);
        using var opt = new FusedSGD(new[] { w, h }, multiple * bound, momentum: momentum);
        double first = double.NaN, last = double.NaN;
        for (int step = 0; step < steps; step++)
        {
            opt.zero_grad();
            var loss = Loss(x, w, h);
            last = loss.ToDouble();
            first = step == 0 ? last : first;
            if (!double.IsFinite(last) || last > 1e12)
            {
                return double.PositiveInfinity;
            }
            loss.backward();
            opt.step();
            using var noGrad = torch.no_grad();
            w.clamp_(0);
            h.clamp_(0);
        }
        return last / first;
    }

    [TestCase(0.0)]
    [TestCase(0.9)]
    public void AConstructedCaseConvergesBelowTheBoundAndBlowsUpAbove(double momentum)
    {
        Assert.That(Constructed(0.9, momentum, 300), Is.LessThan(1e-3), "0.9 × bound converges");
        Assert.That(Constructed(0.5, momentum, 300), Is.LessThan(1e-3), "0.5 × bound converges");
        Assert.That(Constructed(1.1, momentum, 300), Is.GreaterThan(1), "1.1 × bound does not converge");
        // Far above the bound the first overshoots pass zero; the projection then leaves zero factors (a stationary point),
        // and the loss ends at ‖X‖²/b, five orders of magnitude above the start.
        Assert.That(Constructed(2.5, momentum, 100), Is.GreaterThan(1e4), "2.5 × bound blows up");
    }

    [Test]
    public void TheRateClipLowersOnlyAboveTheBoundAndRestoresTheSchedule()
    {
        using var a = new Parameter(torch.ones(3));
        using var b = new Parameter(torch.ones(3));
        using var opt = new FusedSGD(new[] { new FusedSGD.ParamGroup(new[] { a }, lr: 0.5), new FusedSGD.ParamGroup(new[] { b }, lr: 0.1) }, 0.5);
        using (var clip = RateClip.Apply(opt, 0.2))
        {
            Assert.That(clip.Clipped, Is.True);
            Assert.That(opt.ParamGroups.Select(g => g.LearningRate), Is.EqualTo(new[] { 0.2, 0.1 }));
        }
        Assert.That(opt.ParamGroups.Select(g => g.LearningRate), Is.EqualTo(new[] { 0.5, 0.1 }), "the scheduled rates come back");
        using (var clip = RateClip.Apply(opt, 1.0))
        {
            Assert.That(clip.Clipped, Is.False);
            Assert.That(opt.ParamGroups.Select(g => g.LearningRate), Is.EqualTo(new[] { 0.5, 0.1 }));
        }
    }
}
