using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// <c>max_grad_norm</c>: each fused optimizer against TorchSharp's own
/// <c>torch.nn.utils.clip_grad_norm_</c> followed by a reference step (TorchSharp's SGD,
/// <see cref="ReferenceAdam"/>, <see cref="ReferenceHd"/>), over 50 steps, two param groups, 1.16M
/// elements spanning many native chunks, on 1, 2 and 3 threads (bitwise equal to each other), with the
/// clip active and inactive; the reported norm; the gradients left unscaled; non-finite gradients with
/// and without <c>skip_nonfinite</c>; bad values.
/// </summary>
[TestFixture]
[NonParallelizable]
public class ClipTests
{
    public enum Kind { Sgd, Adam, AdamW, HdGlobal, HdPerGroupNormalized, HdPerParameter }

    private static readonly int[] Threads = { 1, 2, 3 };
    private const int FirstGroup = 4;
    private const double Lr = 0.01, Lr2 = 0.003;
    // DriftingGradients of scale 1 over LargeShapes have a global norm of about 650.
    private const double ActiveNorm = 300, InactiveNorm = 1e4;
    private const int Steps = 50;
    private int _torchThreads;

    [SetUp]
    public void OneTorchThread()
    {
        _torchThreads = torch.get_num_threads();
        torch.set_num_threads(1);
    }

    [TearDown]
    public void RestoreThreads()
    {
        OptimNative.NumThreads = 0;
        torch.set_num_threads(_torchThreads);
    }

    private static bool IsHd(Kind k) => k is Kind.HdGlobal or Kind.HdPerGroupNormalized or Kind.HdPerParameter;

    private static HypergradientScope Scope(Kind k) => k switch
    {
        Kind.HdGlobal => HypergradientScope.Global,
        Kind.HdPerGroupNormalized => HypergradientScope.PerGroup,
        _ => HypergradientScope.PerParameter,
    };

    private static HypergradientRule Rule(Kind k) => k == Kind.HdPerGroupNormalized ? HypergradientRule.Normalized : HypergradientRule.Additive;

    // β moves the rates by about 1% a step (h is about the number of elements a rate covers).
    private static double Beta(Kind k) => k switch
    {
        Kind.HdGlobal => 0.01 * Lr / 1e6,
        Kind.HdPerGroupNormalized => 0.02,
        _ => 0.01 * Lr,
    };

    // Momentum, weight decay and maximize differ by kind, so that the clipped gradient meets each of them.
    private static (double Momentum, double WeightDecay, bool Nesterov, bool Maximize) Options(Kind k) => k switch
    {
        Kind.Sgd => (0.9, 0.01, true, false),
        Kind.HdGlobal => (0.9, 0.01, false, false),
        Kind.HdPerGroupNormalized => (0, 0.02, false, true),
        Kind.HdPerParameter => (0.5, 0, true, false),
        _ => (0, 0.05, false, false),
    };

    private static OptimizerHelper Make(Kind k, IReadOnlyList<Parameter> ps, double? maxNorm)
    {
        var (m, wd, nesterov, maximize) = Options(k);
        switch (k)
        {
            case Kind.Sgd:
                return new FusedSGD(new[] { new FusedSGD.ParamGroup(ps.Take(FirstGroup)), new FusedSGD.ParamGroup(ps.Skip(FirstGroup), lr: Lr2) },
                    Lr, m, 0, wd, nesterov, maximize, max_grad_norm: maxNorm);
            case Kind.Adam:
            case Kind.AdamW:
                var groups = new[] { new FusedAdam.ParamGroup(ps.Take(FirstGroup)), new FusedAdam.ParamGroup(ps.Skip(FirstGroup), lr: Lr2, beta1: 0.5) };
                return k == Kind.AdamW
                    ? new FusedAdamW(groups, Lr, weight_decay: wd, amsgrad: true, max_grad_norm: maxNorm)
                    : new FusedAdam(groups, Lr, weight_decay: wd, max_grad_norm: maxNorm);
            default:
                return new HypergradientSGD(new[]
                {
                    new HypergradientSGD.ParamGroup(ps.Take(FirstGroup)),
                    new HypergradientSGD.ParamGroup(ps.Skip(FirstGroup), lr: Lr2),
                }, Lr, Beta(k), Scope(k), m, 0, wd, nesterov, maximize, Rule(k), lr_min: Lr / 100, lr_max: Lr * 100, max_grad_norm: maxNorm);
        }
    }

    // The reference: one step of the unfused optimizer on gradients already clipped by clip_grad_norm_.
    private sealed class Reference : IDisposable
    {
        private readonly Kind _kind;
        private readonly OptimizerHelper? _sgd;
        private readonly ReferenceAdam? _adam;
        public readonly ReferenceHd? Hd;

        public Reference(Kind k, IReadOnlyList<Parameter> ps)
        {
            _kind = k;
            var (m, wd, nesterov, maximize) = Options(k);
            if (k == Kind.Sgd)
            {
                _sgd = torch.optim.SGD(new[]
                {
                    new TorchSharp.Modules.SGD.ParamGroup(ps.Take(FirstGroup), Lr, m, 0, wd, nesterov, maximize),
                    new TorchSharp.Modules.SGD.ParamGroup(ps.Skip(FirstGroup), Lr2, m, 0, wd, nesterov, maximize),
                }, Lr);
            }
            else if (k is Kind.Adam or Kind.AdamW)
            {
                _adam = new ReferenceAdam(k == Kind.AdamW);
                _adam.AddGroup(ps.Take(FirstGroup), Lr, weight_decay: wd, amsgrad: k == Kind.AdamW);
                _adam.AddGroup(ps.Skip(FirstGroup), Lr2, 0.5, 0.999, 1e-8, wd, k == Kind.AdamW, false);
            }
            else
            {
                Hd = new ReferenceHd(Scope(k), Rule(k), Beta(k), Lr / 100, Lr * 100, rtol: 2e-5, atol: 2e-6);
                Hd.AddGroup(ps.Take(FirstGroup), Lr, m, 0, wd, nesterov, maximize);
                Hd.AddGroup(ps.Skip(FirstGroup), Scope(k) == HypergradientScope.Global ? Lr : Lr2, m, 0, wd, nesterov, maximize);
            }
        }

        public void Step()
        {
            if (_sgd is not null)
            {
                Harness.StepTorchSharp(_sgd);
            }
            _adam?.Step();
            Hd?.Step();
        }

        public void AssertMatches(OptimizerHelper ours, IReadOnlyList<Parameter> op, IReadOnlyList<Parameter> rp, string where)
        {
            if (Hd is not null)
            {
                Hd.AssertMatches((HypergradientSGD)ours, op, rp, where);
                return;
            }
            for (int i = 0; i < op.Count; i++)
            {
                Harness.AssertClose(op[i], rp[i], $"{where}, parameter {i}", 1e-4, 1e-5);
                if (_kind == Kind.Sgd)
                {
                    var theirs = ((TorchSharp.Modules.SGD.State)_sgd!.state_dict().State[i]).momentum_buffer;
                    var mine = Harness.FusedState((FusedSGD)ours, i).momentum_buffer;
                    Assert.That(mine is null, Is.EqualTo(theirs is null), $"{where}, momentum buffer {i} present in one only");
                    if (mine is not null)
                    {
                        Harness.AssertClose(mine, theirs!, $"{where}, momentum buffer {i}", 1e-4, 1e-5);
                    }
                }
                else
                {
                    var s = Harness.AdamState((FusedAdam)ours, i);
                    var r = _adam!.State(rp[i]);
                    Assert.That(s.step, Is.EqualTo(r?.Step ?? 0), $"{where}, step count {i}");
                    if (r is not null)
                    {
                        Harness.AssertClose(s.exp_avg!, r.ExpAvg, $"{where}, exp_avg {i}", 1e-4, 1e-5);
                        Harness.AssertClose(s.exp_avg_sq!, r.ExpAvgSq, $"{where}, exp_avg_sq {i}", 1e-4, 1e-7);
                        if (r.MaxExpAvgSq is not null)
                        {
                            Harness.AssertClose(s.max_exp_avg_sq!, r.MaxExpAvgSq, $"{where}, max_exp_avg_sq {i}", 1e-4, 1e-7);
                        }
                    }
                }
            }
        }

        public void Dispose()
        {
            _sgd?.Dispose();
            _adam?.Dispose();
            Hd?.Dispose();
        }
    }

    public static IEnumerable<TestCaseData> Cases() =>
        Enum.GetValues<Kind>().Select(k => new TestCaseData(k, ActiveNorm).SetName($"ClipMatchesClipGradNormThenStep({k}, active)"))
            .Concat(new[] { Kind.Sgd, Kind.AdamW, Kind.HdGlobal }
                .Select(k => new TestCaseData(k, InactiveNorm).SetName($"ClipMatchesClipGradNormThenStep({k}, inactive)")));

    [TestCaseSource(nameof(Cases))]
    public void MatchesClipGradNormThenStep(Kind kind, double maxNorm)
    {
        var ours = Threads.Select(_ => Harness.LargeParameters(7, ScalarType.Float32)).ToList();
        var theirs = Harness.LargeParameters(7, ScalarType.Float32);
        var fused = ours.Select(ps => Make(kind, ps, maxNorm)).ToList();
        using var reference = new Reference(kind, theirs);
        var gradients = new Harness.DriftingGradients(theirs, 5);
        bool clipped = false;
        try
        {
            for (int step = 1; step <= Steps; step++)
            {
                gradients.Next(ours.Append(theirs).ToArray());
                using var before = ours[0][0].grad!.clone();
                for (int t = 0; t < Threads.Length; t++)
                {
                    Harness.WithNativeThreads(Threads[t], () => fused[t].step());
                }
                double theirNorm = ClipLikeLibTorch(theirs, maxNorm);
                clipped |= theirNorm > maxNorm;
                reference.Step();
                using var norm = GradNorm(fused[0])!;
                Assert.That(norm.dtype, Is.EqualTo(ScalarType.Float64));
                Assert.That(norm.item<double>(), Is.EqualTo(theirNorm).Within(1e-10).Percent, $"step {step}: norm");
                Harness.AssertSame(ours[0][0].grad!, before, $"step {step}: the gradient itself is not scaled");
                reference.AssertMatches(fused[0], ours[0], theirs, $"step {step}");
                for (int t = 1; t < Threads.Length; t++)
                {
                    Harness.AssertSameState(fused[t], ours[t], fused[0], ours[0],
                        $"step {step}, {Threads[t]} threads against 1");
                    using var other = GradNorm(fused[t])!;
                    Assert.That(other.item<double>(), Is.EqualTo(norm.item<double>()), $"step {step}: norm on {Threads[t]} threads");
                }
            }
            Assert.That(clipped, Is.EqualTo(maxNorm == ActiveNorm), "whether the clip was active");
        }
        finally
        {
            fused.ForEach(f => f.Dispose());
        }
    }

    /// <summary>
    /// clip_grad_norm_ as PyTorch defines it, with the norm summed in float64 (as ours is): coefficient
    /// <c>max_norm / (norm + 1e-6)</c> in the gradients' dtype, clamped to 1 (a NaN stays NaN), then
    /// <c>grad.mul_(coef)</c>. Returns the norm.
    /// </summary>
    private static double ClipInDouble(IReadOnlyList<Parameter> ps, double maxNorm)
    {
        using var scope = torch.NewDisposeScope();
        var grads = ps.Where(p => p.grad is not null).Select(p => p.grad!).ToList();
        double norm = Math.Sqrt(grads.Sum(g => g.to(ScalarType.Float64).square().sum().item<double>()));
        float coef = (float)maxNorm / ((float)norm + 1e-6f);
        coef = float.IsNaN(coef) ? coef : Math.Min(coef, 1f);
        foreach (var g in grads)
        {
            g.mul_(coef);
        }
        return norm;
    }

    /// <summary>
    /// <see cref="ClipInDouble"/>, checked against TorchSharp's own <c>torch.nn.utils.clip_grad_norm_</c>
    /// on a copy: LibTorch sums the float32 norm in float32 (a relative error of about 5e-6 at this
    /// size, enough to move an Adam step where a gradient is near zero, or an HD rate over many steps), so
    /// its norm and clipped gradients agree to that precision; the comparisons of the steps use the norm
    /// in double.
    /// </summary>
    private static double ClipLikeLibTorch(IReadOnlyList<Parameter> ps, double maxNorm)
    {
        using var scope = torch.NewDisposeScope();
        var withGrad = ps.Where(p => p.grad is not null).ToList();
        var original = withGrad.Select(p => p.grad!.clone()).ToList();
        double torchNorm = torch.nn.utils.clip_grad_norm_(withGrad, maxNorm);
        var torchClipped = withGrad.Select(p => p.grad!.clone()).ToList();
        for (int i = 0; i < withGrad.Count; i++)
        {
            withGrad[i].grad!.copy_(original[i]);
        }
        double norm = ClipInDouble(ps, maxNorm);
        Assert.That(torchNorm, Is.EqualTo(norm).Within(2e-3).Percent, "clip_grad_norm_'s norm");
        for (int i = 0; i < withGrad.Count; i++)
        {
            Harness.AssertClose(withGrad[i].grad!, torchClipped[i], $"gradient {i} clipped by clip_grad_norm_", 2e-5, 1e-7);
        }
        return norm;
    }

    // The GradNorm of whichever fused optimizer (each derives from its own generic base).
    private static Tensor? GradNorm(OptimizerHelper o) => o switch
    {
        FusedSGD s => s.GradNorm,
        FusedAdam a => a.GradNorm,
        HypergradientSGD h => h.GradNorm,
        _ => throw new ArgumentException(o.GetType().Name),
    };

    /// <summary>
    /// A non-finite gradient element: without skipping (FusedSGD, FusedAdam, HD with
    /// <c>skip_nonfinite: false</c>) the step equals clip_grad_norm_ + step, whose coefficient is 0 for an
    /// infinite norm (the finite gradients contribute nothing, the infinite element becomes NaN) and NaN
    /// for a NaN norm; HypergradientSGD with <c>skip_nonfinite</c> skips the step and still reports the norm.
    /// </summary>
    [TestCase(float.PositiveInfinity)]
    [TestCase(float.NaN)]
    public void NonFiniteGradientsFollowClipGradNormOrSkip(float bad)
    {
        foreach (var kind in new[] { Kind.Sgd, Kind.Adam, Kind.HdGlobal })
        {
            var ours = Harness.LargeParameters(9, ScalarType.Float32);
            var theirs = Harness.LargeParameters(9, ScalarType.Float32);
            using var fused = Make(kind, ours, ActiveNorm);
            using var reference = new Reference(kind, theirs);
            var gradients = new Harness.DriftingGradients(theirs, 6);
            for (int step = 1; step <= 3; step++)
            {
                gradients.Next(ours, theirs);
                if (step == 2)
                {
                    ours[5].grad![3, 7] = bad;
                    theirs[5].grad![3, 7] = bad;
                }
                fused.step();
                ClipInDouble(theirs, ActiveNorm);
                if (kind == Kind.HdGlobal && step == 2)
                {
                    continue; // the reference does not skip; compared below
                }
                reference.Step();
            }
            if (kind == Kind.HdGlobal)
            {
                var hd = (HypergradientSGD)fused;
                Assert.That(hd.SkippedSteps, Is.EqualTo(1), "HD skips the step");
                using var norm = hd.GradNorm!;
                Assert.That(double.IsFinite(norm.item<double>()), Is.True, "the last (finite) step's norm");
            }
            // After the bad step everything is NaN where clip_grad_norm_ made it NaN (both sides alike);
            // HD, which skipped, matches a reference that never saw the step.
            for (int i = 0; i < ours.Count; i++)
            {
                using var ourNan = ours[i].isnan();
                using var theirNan = theirs[i].isnan();
                Harness.AssertSame(ourNan, theirNan, $"{kind}: NaN pattern of parameter {i}");
                using var o = torch.nan_to_num(ours[i], 0);
                using var r = torch.nan_to_num(theirs[i], 0);
                Harness.AssertClose(o, r, $"{kind}: parameter {i}", 1e-4, 1e-5);
            }
        }
    }

    [Test]
    public void HdWithoutSkippingFollowsClipGradNorm()
    {
        var ours = Harness.LargeParameters(10, ScalarType.Float32);
        using var hd = new HypergradientSGD(ours, Lr, 1e-9, HypergradientScope.Global, max_grad_norm: ActiveNorm, skip_nonfinite: false);
        var gradients = new Harness.DriftingGradients(ours, 7);
        gradients.Next(ours);
        ours[0].grad![5] = float.PositiveInfinity;
        hd.step();
        using var norm = hd.GradNorm!;
        Assert.That(double.IsPositiveInfinity(norm.item<double>()), Is.True, "an infinite element gives an infinite norm");
        Assert.That(hd.SkippedSteps, Is.Zero);
        Assert.That(float.IsNaN(ours[0][5].item<float>()), Is.True, "inf * 0 is NaN, as in clip_grad_norm_");
        Assert.That(ours[1].isnan().any().item<bool>(), Is.False, "finite gradients are clipped to zero");
    }

    [Test]
    public void BadMaxGradNormIsRejectedAndChangesNothing()
    {
        var ps = Harness.LargeParameters(11, ScalarType.Float32).Take(2).ToList();
        foreach (double bad in new[] { 0.0, -1.0, double.NaN, double.PositiveInfinity })
        {
            Assert.That(() => new FusedSGD(ps, 0.1, max_grad_norm: bad), Throws.ArgumentException.With.Message.Contains("max_grad_norm"));
            Assert.That(() => new FusedAdamW(ps, max_grad_norm: bad), Throws.ArgumentException.With.Message.Contains("max_grad_norm"));
            Assert.That(() => new HypergradientSGD(ps, 0.1, 0.001, max_grad_norm: bad), Throws.ArgumentException.With.Message.Contains("max_grad_norm"));
        }
        using var sgd = new FusedSGD(ps, 0.1, max_grad_norm: 1.0);
        Assert.That(() => sgd.MaxGradNorm = -2, Throws.ArgumentException);
        Assert.That(sgd.MaxGradNorm, Is.EqualTo(1.0));
        Assert.That(sgd.GradNorm, Is.Null, "no norm before the first step");
        sgd.MaxGradNorm = null;
        Assert.That(sgd.MaxGradNorm, Is.Null);
    }
}
