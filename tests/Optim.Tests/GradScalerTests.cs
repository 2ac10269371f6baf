using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// <see cref="GradScaler"/>: the scale's growth and backoff against hand-derived traces; the unfused
/// path on TorchSharp's own optimizers against unscaling by hand; the fused path of every fused
/// optimizer against the scaler's unfused path on the same optimizer type, bitwise, over 55 steps
/// with injected infinite and NaN gradients, two param groups, 1.16M elements over many native chunks,
/// 1 to 3 native threads, with and without clipping, and through <c>unscale_</c> then step; a skipped
/// fused step changing nothing; save and load; bad input.
/// </summary>
[TestFixture]
[NonParallelizable]
public class GradScalerTests
{
    public enum Kind { Sgd, Adam, AdamW, HdGlobal, HdPerGroupNormalized, HdPerParameter }

    private const int FirstGroup = 4;
    private const double Lr = 0.01, Lr2 = 0.003;
    private const float InitScale = 1024;

    private static OptimizerHelper Make(Kind k, IReadOnlyList<Parameter> ps, double? maxNorm) => k switch
    {
        Kind.Sgd => new FusedSGD(new[] { new FusedSGD.ParamGroup(ps.Take(FirstGroup)), new FusedSGD.ParamGroup(ps.Skip(FirstGroup), lr: Lr2) },
            Lr, 0.9, 0, 0.01, nesterov: true, max_grad_norm: maxNorm),
        Kind.Adam => new FusedAdam(new[] { new FusedAdam.ParamGroup(ps.Take(FirstGroup)), new FusedAdam.ParamGroup(ps.Skip(FirstGroup), lr: Lr2, beta1: 0.5) },
            Lr, weight_decay: 0.05, max_grad_norm: maxNorm),
        Kind.AdamW => new FusedAdamW(new[] { new FusedAdam.ParamGroup(ps.Take(FirstGroup)), new FusedAdam.ParamGroup(ps.Skip(FirstGroup), lr: Lr2) },
            Lr, weight_decay: 0.01, amsgrad: true, max_grad_norm: maxNorm),
        _ => new HypergradientSGD(new[]
            {
                new HypergradientSGD.ParamGroup(ps.Take(FirstGroup)),
                new HypergradientSGD.ParamGroup(ps.Skip(FirstGroup), lr: Lr2),
            }, Lr,
            k == Kind.HdGlobal ? 1e-8 : k == Kind.HdPerGroupNormalized ? 0.02 : 1e-4,
            k == Kind.HdGlobal ? HypergradientScope.Global : k == Kind.HdPerGroupNormalized ? HypergradientScope.PerGroup : HypergradientScope.PerParameter,
            momentum: k == Kind.HdPerGroupNormalized ? 0 : 0.9, weight_decay: 0.01,
            rule: k == Kind.HdPerGroupNormalized ? HypergradientRule.Normalized : HypergradientRule.Additive,
            lr_min: Lr / 100, lr_max: Lr * 100, max_grad_norm: maxNorm),
    };

    // ---- The scale's trace ----------------------------------------------------------------------

    private static Tensor Loss() => torch.tensor(1.0f);

    // One iteration on a one-parameter SGD: gradient 1 (or infinite), scale, step, update.
    private static void Iterate(GradScaler scaler, OptimizerHelper opt, Parameter p, bool overflow)
    {
        using var scaled = scaler.scale(Loss());
        using var g = torch.full(p.shape, overflow ? float.PositiveInfinity : 1f);
        p.grad = g;
        scaler.step(opt);
        scaler.update();
    }

    [Test]
    public void ScaleGrowsAndBacksOffAsDerivedByHand()
    {
        // growth_interval 3: three clean updates double the scale; an overflow halves it and restarts the count.
        bool[] overflow = { false, false, false, false, true, false, false, false, true, true, false, false, false };
        float[] scales = { 8, 8, 16, 16, 8, 8, 8, 16, 8, 4, 4, 4, 8 };
        int[] trackers = { 1, 2, 0, 1, 0, 1, 2, 0, 0, 0, 1, 2, 0 };
        var p = new Parameter(torch.zeros(3));
        using var opt = torch.optim.SGD(new[] { p }, 0.1);
        var scaler = new GradScaler(init_scale: 8, growth_interval: 3);
        Assert.That(scaler.get_scale(), Is.EqualTo(8));
        for (int i = 0; i < overflow.Length; i++)
        {
            using var before = p.detach().clone();
            Iterate(scaler, opt, p, overflow[i]);
            Assert.That(scaler.get_scale(), Is.EqualTo(scales[i]), $"scale after update {i + 1}");
            Assert.That((int)scaler.state_dict()["_growth_tracker"], Is.EqualTo(trackers[i]), $"growth tracker after update {i + 1}");
            Assert.That(Harness.Same(p, before), Is.EqualTo(overflow[i]), $"update {i + 1}: the step was {(overflow[i] ? "not " : "")}skipped");
        }
    }

    [Test]
    public void ScaleIsFloat32AndDoesNotGrowPastFloat32()
    {
        var p = new Parameter(torch.zeros(2));
        using var opt = torch.optim.SGD(new[] { p }, 0.1);
        // 3e38 * 2 is beyond float32: the scale stays and the tracker restarts (PyTorch's rule).
        var scaler = new GradScaler(init_scale: 3e38, growth_interval: 1);
        Iterate(scaler, opt, p, false);
        Assert.That(scaler.get_scale(), Is.EqualTo((double)(float)3e38));
        Assert.That((int)scaler.state_dict()["_growth_tracker"], Is.EqualTo(0));
        // A factor that is not a power of two: the product in double, rounded to float32.
        var odd = new GradScaler(init_scale: 1000, growth_factor: 3.3, backoff_factor: 0.3, growth_interval: 1);
        Iterate(odd, opt, p, false);
        Assert.That(odd.get_scale(), Is.EqualTo((double)(float)(1000 * 3.3)));
        Iterate(odd, opt, p, true);
        Assert.That(odd.get_scale(), Is.EqualTo((double)(float)((double)(float)(1000 * 3.3) * 0.3)));
        odd.update(5.0); // no optimizer since the last update: update(new_scale) still sets it
        Assert.That(odd.get_scale(), Is.EqualTo(5.0));
    }

    // The optimizers that take GradScaler's unfused path: TorchSharp's, and ours whose native step takes no scaler.
    private static OptimizerHelper UnfusedOptimizer(string name, IList<Parameter> ps) => name switch
    {
        "torch Adam" => torch.optim.Adam(ps, 0.01),
        "HypergradientAdam" => new HypergradientAdam(ps, 0.01, hypergrad_lr: 1e-4, scope: HypergradientScope.PerTensor),
        _ => throw new ArgumentException(name),
    };

    [TestCase("torch Adam")]
    [TestCase("HypergradientAdam")]
    public void UnfusedPathEqualsUnscalingByHand(string optimizer)
    {
        var model = Harness.Mlp(3);
        var twin = Harness.Mlp(3);
        var (x, y) = Harness.Data(4);
        var ps = model.parameters().ToList();
        var tp = twin.parameters().ToList();
        using var opt = UnfusedOptimizer(optimizer, ps);
        using var reference = UnfusedOptimizer(optimizer, tp);
        var scaler = new GradScaler(init_scale: 256, growth_interval: 4);
        for (int step = 0; step < 20; step++)
        {
            opt.zero_grad();
            reference.zero_grad();
            using (var loss = nn.functional.mse_loss(model.call(x), y))
            using (var scaled = scaler.scale(loss))
            {
                scaled.backward();
            }
            float inv = (float)(1.0 / scaler.get_scale());
            bool overflow = step % 7 == 5;
            if (overflow)
            {
                using var g = ps[0].grad!;
                g.view(-1)[3].fill_(float.NaN);
            }
            // The reference: the same gradients, unscaled by hand in float32, stepped only when finite.
            Harness.CopyGradients(ps, tp);
            foreach (var p in tp)
            {
                using var g = p.grad!;
                g.mul_(inv);
            }
            if (!overflow)
            {
                Harness.StepTorchSharp(reference);
            }
            scaler.step(opt);
            scaler.update();
            for (int i = 0; i < ps.Count; i++)
            {
                Harness.AssertSame(ps[i], tp[i], $"step {step}, parameter {i}");
            }
        }
        Assert.That(scaler.get_scale(), Is.EqualTo(256.0), "grown after steps 0-3, 6-9 and 13-16, backed off at steps 5, 12 and 19");
    }

    // ---- The fused path -------------------------------------------------------------------------

    public static IEnumerable<TestCaseData> FusedCases() => new[]
    {
        new TestCaseData(Kind.Sgd, 300.0), new TestCaseData(Kind.Adam, null), new TestCaseData(Kind.AdamW, 300.0),
        new TestCaseData(Kind.HdGlobal, 300.0), new TestCaseData(Kind.HdPerGroupNormalized, null), new TestCaseData(Kind.HdPerParameter, 300.0),
    };

    // Gradients of about InitScale in magnitude (loss-scaled), with an infinity or a NaN on some steps.
    private static void Gradients(Harness.DriftingGradients drift, int step, params IReadOnlyList<Parameter>[] models)
    {
        drift.Next(models);
        float bad = step % 11 == 3 ? float.PositiveInfinity : step % 17 == 8 ? float.NaN : 0;
        if (bad != 0)
        {
            foreach (var ps in models)
            {
                using var g = ps[5].grad!;
                g.view(-1)[777 * 500].fill_(bad);
            }
        }
    }

    [TestCaseSource(nameof(FusedCases))]
    public void FusedPathEqualsUnfusedPathBitwise(Kind kind, double? maxNorm)
    {
        // Models: fused on 1, 2 and 3 native threads (the third through unscale_ then step), and the
        // scaler's unfused path on the same optimizer type.
        var models = Enumerable.Range(0, 4).Select(_ => Harness.LargeParameters(9, ScalarType.Float32)).ToList();
        var opts = models.Select(ps => Make(kind, ps, maxNorm)).ToList();
        var scalers = models.Select(_ => new GradScaler(init_scale: InitScale, growth_interval: 10)).ToList();
        scalers[3].FusedSteps = false;
        var drift = new Harness.DriftingGradients(models[0], 5, InitScale);
        try
        {
            for (int step = 0; step < 55; step++)
            {
                Gradients(drift, step, models.ToArray());
                for (int m = 0; m < models.Count; m++)
                {
                    using var scaled = scalers[m].scale(Loss());
                    Harness.WithNativeThreads(m == 3 ? 1 : m + 1, () =>
                    {
                        if (m == 2)
                        {
                            scalers[m].unscale_(opts[m]);
                        }
                        scalers[m].step(opts[m]);
                    });
                    scalers[m].update();
                }
                for (int m = 0; m < 3; m++)
                {
                    Assert.That(scalers[m].get_scale(), Is.EqualTo(scalers[3].get_scale()), $"step {step}: scale of model {m}");
                    Harness.AssertSameState(opts[m], models[m], opts[3], models[3], $"{kind}, step {step}, model {m} against the unfused path");
                }
            }
            Assert.That(scalers[3].get_scale(), Is.Not.EqualTo(InitScale), "the scale moved");
        }
        finally
        {
            foreach (var o in opts)
            {
                o.Dispose();
            }
        }
    }

    public static IEnumerable<Kind> Kinds() => Enum.GetValues<Kind>();

    [TestCaseSource(nameof(Kinds))]
    public void SkippedFusedStepChangesNothing(Kind kind)
    {
        // Model A meets an infinite gradient on its first and its fourth step; model B never does.
        // After each skipped step A must be bitwise in B's state: parameters, every state tensor, step
        // counters, rates, first-step flags (a later step of A must still equal B's).
        var a = Harness.LargeParameters(12, ScalarType.Float64);
        var b = Harness.LargeParameters(12, ScalarType.Float64);
        using var optA = Make(kind, a, 500.0);
        using var optB = Make(kind, b, 500.0);
        var scalerA = new GradScaler(init_scale: InitScale);
        var scalerB = new GradScaler(init_scale: InitScale);
        var drift = new Harness.DriftingGradients(a, 6, InitScale);
        for (int step = 0; step < 8; step++)
        {
            bool bad = step is 0 or 4;
            drift.Next(a, b);
            if (bad)
            {
                using var g = a[1].grad!;
                g.view(-1)[65_536].fill_(double.NegativeInfinity);
            }
            using (var s = scalerA.scale(Loss()))
            {
                scalerA.step(optA);
            }
            if (!bad)
            {
                using var s = scalerB.scale(Loss());
                scalerB.step(optB);
                scalerB.update();
            }
            Harness.AssertSameState(optA, a, optB, b, $"{kind}, after step {step}{(bad ? " (skipped)" : "")}");
            scalerA.update(scalerB.get_scale()); // A's backoff is not under test here
        }
    }

    // ---- Save and load --------------------------------------------------------------------------

    [Test]
    public void StateDictRoundTripsWithPyTorchsKeys()
    {
        var p = new Parameter(torch.zeros(2));
        using var opt = torch.optim.SGD(new[] { p }, 0.1);
        var scaler = new GradScaler(init_scale: 64, growth_factor: 4, backoff_factor: 0.25, growth_interval: 5);
        foreach (bool overflow in new[] { false, false, true, false, false, false })
        {
            Iterate(scaler, opt, p, overflow);
        }
        var state = scaler.state_dict();
        Assert.That(state.Keys, Is.EquivalentTo(new[] { "scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker" }));
        Assert.That(state["scale"], Is.EqualTo(16.0));
        Assert.That(state["_growth_tracker"], Is.EqualTo(3));

        var copy = new GradScaler();
        copy.load_state_dict(state);
        Assert.That(copy.state_dict(), Is.EqualTo(state));
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            scaler.save_state_dict(writer);
        }
        stream.Position = 0;
        var loaded = new GradScaler();
        using (var reader = new BinaryReader(stream))
        {
            loaded.load_state_dict(reader);
        }
        Assert.That(loaded.state_dict(), Is.EqualTo(state));
        // Both continue alike: two more clean updates grow the scale (tracker 3 -> 5).
        var q = new Parameter(torch.zeros(2));
        using var opt2 = torch.optim.SGD(new[] { q }, 0.1);
        for (int i = 0; i < 2; i++)
        {
            Iterate(scaler, opt, p, false);
            Iterate(loaded, opt2, q, false);
        }
        Assert.That(loaded.get_scale(), Is.EqualTo(64.0));
        Assert.That(loaded.state_dict(), Is.EqualTo(scaler.state_dict()));
    }

    [Test]
    public void BadStatesAreRefusedAndChangeNothing()
    {
        var scaler = new GradScaler(init_scale: 32, growth_interval: 7);
        var good = scaler.state_dict();
        var disabled = new GradScaler(enabled: false);
        Assert.That(disabled.state_dict(), Is.Empty);
        Assert.That(() => scaler.load_state_dict(disabled.state_dict()),
            Throws.ArgumentException.With.Message.Contains("saved from a disabled instance"));
        foreach (var (key, value, fragment) in new (string, object, string)[]
        {
            ("scale", 0.0, "init_scale"), ("growth_factor", 1.0, "growth factor"), ("backoff_factor", 1.5, "backoff factor"),
            ("growth_interval", 0, "growth_interval"), ("_growth_tracker", -1, "_growth_tracker"), ("scale", 3, "'scale' must be a Double"),
        })
        {
            var bad = new Dictionary<string, object>(good) { [key] = value };
            Assert.That(() => scaler.load_state_dict(bad), Throws.ArgumentException.With.Message.Contains(fragment), key);
            Assert.That(scaler.state_dict(), Is.EqualTo(good), $"{key}: unchanged");
        }
        var missing = new Dictionary<string, object>(good);
        missing.Remove("growth_interval");
        Assert.That(() => scaler.load_state_dict(missing), Throws.ArgumentException.With.Message.Contains("no 'growth_interval'"));
        using var stream = new MemoryStream(new byte[] { 1, 2, 3 });
        using var reader = new BinaryReader(stream);
        Assert.That(() => scaler.load_state_dict(reader), Throws.InstanceOf<InvalidDataException>());
        Assert.That(scaler.state_dict(), Is.EqualTo(good));
    }

    // ---- Bad input and the disabled scaler ------------------------------------------------------

    [Test]
    public void BadSettingsAreNamed()
    {
        Assert.That(() => new GradScaler(growth_factor: 1.0), Throws.ArgumentException.With.Message.Contains("growth factor must be finite and > 1.0"));
        Assert.That(() => new GradScaler(growth_factor: double.NaN), Throws.ArgumentException.With.Message.Contains("growth factor"));
        Assert.That(() => new GradScaler(backoff_factor: 1.0), Throws.ArgumentException.With.Message.Contains("backoff factor must be in (0, 1)"));
        Assert.That(() => new GradScaler(backoff_factor: 0), Throws.ArgumentException.With.Message.Contains("backoff factor"));
        Assert.That(() => new GradScaler(growth_interval: 0), Throws.ArgumentException.With.Message.Contains("growth_interval must be > 0"));
        Assert.That(() => new GradScaler(growth_interval: -3), Throws.ArgumentException.With.Message.Contains("growth_interval"));
        Assert.That(() => new GradScaler(init_scale: double.PositiveInfinity), Throws.ArgumentException.With.Message.Contains("init_scale"));
    }

    [Test]
    public void MisorderedCallsAreNamedAndChangeNothing()
    {
        var p = new Parameter(torch.ones(4));
        using var opt = torch.optim.SGD(new[] { p }, 0.1);
        var scaler = new GradScaler(init_scale: 4);
        using var g = torch.full(4, 8f);
        p.grad = g;
        Assert.That(() => scaler.step(opt), Throws.InvalidOperationException.With.Message.Contains("before any scale()"));
        Assert.That(() => scaler.unscale_(opt), Throws.InvalidOperationException.With.Message.Contains("before any scale()"));
        using var scaled = scaler.scale(Loss());
        Assert.That(scaled.item<float>(), Is.EqualTo(4f));
        Assert.That(() => scaler.update(), Throws.InvalidOperationException.With.Message.Contains("no inf checks were recorded"));
        scaler.unscale_(opt);
        Assert.That(p.grad!.data<float>().ToArray(), Is.EqualTo(new[] { 2f, 2f, 2f, 2f }), "unscale_ divides .grad in place");
        Assert.That(() => scaler.unscale_(opt), Throws.InvalidOperationException.With.Message.Contains("unscale_() has already been called"));
        Assert.That(p.grad!.data<float>().ToArray(), Is.EqualTo(new[] { 2f, 2f, 2f, 2f }), "a refused unscale_ does not unscale again");
        scaler.step(opt);
        using var after = p.detach().clone();
        Assert.That(() => scaler.step(opt), Throws.InvalidOperationException.With.Message.Contains("step() has already been called since the last update()"));
        Assert.That(() => scaler.unscale_(opt), Throws.InvalidOperationException.With.Message.Contains("unscale_() is being called after step()"));
        Assert.That(Harness.Same(p, after), Is.True, "a refused step does not step");
        Assert.That(() => scaler.update(0), Throws.ArgumentException.With.Message.Contains("new_scale must be finite and > 0"));
        scaler.update();
        scaler.step(opt); // a new iteration may step again (its gradients are unscaled again)
    }

    [Test]
    public void DisabledScalerIsAPassThrough()
    {
        var p = new Parameter(torch.ones(3));
        using var opt = new FusedSGD(new[] { p }, 0.5);
        var scaler = new GradScaler(enabled: false);
        using var loss = Loss();
        Assert.That(ReferenceEquals(scaler.scale(loss), loss), Is.True);
        using var g = torch.full(3, float.PositiveInfinity);
        p.grad = g;
        scaler.unscale_(opt);
        scaler.step(opt); // steps even with an infinite gradient: nothing is checked
        scaler.update();
        Assert.That(p.data<float>().ToArray(), Is.EqualTo(new[] { float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity }));
        Assert.That((scaler.get_scale(), scaler.is_enabled()), Is.EqualTo((1.0, false)));
    }
}
