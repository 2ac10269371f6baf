using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// HypergradientSGD and HypergradientAdam on float16 and bfloat16 parameters, against the same optimizer on
/// float32 copies (the float32 path is itself checked against the naive references in
/// <see cref="HypergradientSgdTests"/> and <see cref="HypergradientAdamTests"/>). Every scope, both rules, two
/// param groups, 55 steps. With master weights the master copy follows the float32 run within float32 tolerance
/// (natively it is that run bit for bit: the reduction and the update read the copy and the gradients' exact
/// float32 values) and the 16-bit parameter is exactly the copy rounded to nearest. In place, each step is
/// compared with the float32 step of the same rounded parameter and the same state: within one 16-bit place
/// (2^-8 relative for bfloat16, 2^-11 for float16), because the two are rounded from float32 results that may
/// differ in their last bit when the float32 run's state has drifted by a rounding; the state and rates within
/// float32 tolerance. Stochastic rounding is deterministic per seed; a saved and loaded (or copied) state
/// continues bitwise as the uninterrupted run; bad options fail clearly and change nothing.
/// </summary>
[TestFixture]
[NonParallelizable]
public class MixedPrecisionHdTests
{
    public enum Kind { Sgd, Adam }

    public enum Mode { InPlace, Master, Stochastic }

    private static readonly long[][] Shapes = [[37, 19], [300], [5, 7, 3], [1000]];

    private static List<Parameter> Parameters(ScalarType dtype, long seed = 5)
    {
        var gen = new torch.Generator((ulong)seed);
        return Shapes.Select(s => new Parameter(torch.randn(s, ScalarType.Float32, generator: gen).to(dtype))).ToList();
    }

    private static OptimizerHelper Make(Kind kind, IReadOnlyList<Parameter> ps, HypergradientScope scope, HypergradientRule rule,
        Mode mode, long seed = 11, double? maxNorm = null)
    {
        bool master = mode == Mode.Master, stochastic = mode == Mode.Stochastic;
        double beta = rule == HypergradientRule.Additive ? (kind == Kind.Sgd ? 1e-4 : 1e-6) : 0.02;
        return kind == Kind.Sgd
            ? new HypergradientSGD(new[]
                {
                    new HypergradientSGD.ParamGroup(ps.Take(2), momentum: 0.9, weight_decay: 1e-3),
                    new HypergradientSGD.ParamGroup(ps.Skip(2), lr: 0.005, momentum: 0.8, nesterov: true),
                }, 0.01, beta, scope, rule: rule, lr_max: 1, max_grad_norm: maxNorm, master_weights: master,
                stochastic_rounding: stochastic, rounding_seed: seed)
            : new HypergradientAdam(new[]
                {
                    new HypergradientAdam.ParamGroup(ps.Take(2), weight_decay: 1e-2, amsgrad: true),
                    new HypergradientAdam.ParamGroup(ps.Skip(2), lr: 0.003, beta1: 0.8),
                }, 0.001, beta, scope, rule: rule, lr_max: 1, max_grad_norm: maxNorm, master_weights: master,
                stochastic_rounding: stochastic, rounding_seed: seed);
    }

    // The same gradients (16-bit values) for every model, drawn from the step number.
    private static void Gradients(int step, ScalarType dtype, IReadOnlyList<Parameter> low, IReadOnlyList<Parameter>? f32 = null)
    {
        using var scope = torch.NewDisposeScope();
        var gen = new torch.Generator((ulong)(100 + step));
        for (int i = 0; i < low.Count; i++)
        {
            var g = torch.randn(low[i].shape, ScalarType.Float32, generator: gen).to(dtype);
            low[i].grad = g.DetachFromDisposeScope();
            if (f32 is not null)
            {
                f32[i].grad = g.to(ScalarType.Float32).DetachFromDisposeScope();
            }
        }
    }

    private static Tensor? Master(OptimizerHelper opt, int i) => opt switch
    {
        HypergradientSGD s => ((HypergradientSGD.State)s.state_dict().State[i]).master_param,
        HypergradientAdam a => ((HypergradientAdam.State)a.state_dict().State[i]).master_param,
        _ => null,
    };

    // Every float32 state tensor of parameter i (by name), for the in-place comparison.
    private static IEnumerable<(string, Tensor?)> StateTensors(OptimizerHelper opt, int i) => opt switch
    {
        HypergradientSGD s when s.state_dict().State[i] is HypergradientSGD.State t =>
            [("momentum buffer", t.momentum_buffer), ("previous update", t.prev_update), ("rates", t.parameter_rates)],
        HypergradientAdam a when a.state_dict().State[i] is HypergradientAdam.State t =>
            [("exp_avg", t.exp_avg), ("exp_avg_sq", t.exp_avg_sq), ("max_exp_avg_sq", t.max_exp_avg_sq), ("previous update", t.prev_update),
             ("rates", t.parameter_rates)],
        _ => [],
    };

    private static IReadOnlyList<double> TensorRates(OptimizerHelper opt) => opt switch
    {
        HypergradientSGD s => s.TensorLearningRates(),
        HypergradientAdam a => a.TensorLearningRates(),
        _ => [],
    };

    public static IEnumerable<TestCaseData> FollowCases() =>
        from kind in Enum.GetValues<Kind>()
        from scope in Enum.GetValues<HypergradientScope>()
        from rule in Enum.GetValues<HypergradientRule>()
        from dtype in new[] { ScalarType.BFloat16, ScalarType.Float16 }
        from mode in new[] { Mode.Master, Mode.InPlace }
        select new TestCaseData(kind, scope, rule, dtype, mode).SetName($"{{m}}({kind}, {scope}, {rule}, {dtype}, {mode})");

    /// <summary>55 steps of the 16-bit optimizer against the same optimizer on float32 (see the class remarks).</summary>
    [TestCaseSource(nameof(FollowCases))]
    public void FollowsTheFloat32Run(Kind kind, HypergradientScope scope, HypergradientRule rule, ScalarType dtype, Mode mode)
    {
        var low = Parameters(dtype);
        var f32 = low.Select(p => new Parameter(p.detach().to(ScalarType.Float32))).ToList();
        using var a = Make(kind, low, scope, rule, mode);
        using var b = Make(kind, f32, scope, rule, Mode.InPlace);
        double place = dtype == ScalarType.BFloat16 ? 1.0 / 256 : 1.0 / 2048;
        var initial = TensorRates(b).ToArray();
        for (int step = 1; step <= 55; step++)
        {
            string at = $"{kind} {scope} {rule} {dtype} {mode}, step {step}";
            Gradients(step, dtype, low, f32);
            if (mode == Mode.InPlace)
            {
                Harness.CopyParameters(low, f32); // the float32 step of the same rounded parameter
            }
            a.step();
            b.step();
            Assert.That(TensorRates(a), Is.EqualTo(TensorRates(b)).Within(1e-6).Percent, $"{at}: rates");
            for (int i = 0; i < low.Count; i++)
            {
                if (mode == Mode.Master)
                {
                    var master = Master(a, i) ?? throw new AssertionException($"{at}: no master copy of parameter {i}");
                    Assert.That(master.dtype, Is.EqualTo(ScalarType.Float32));
                    Harness.AssertClose(master, f32[i], $"{at}: master copy {i}", 1e-5, 1e-6);
                    Harness.AssertSame(low[i], master.to(dtype), $"{at}: parameter {i} is its master copy rounded");
                }
                else
                {
                    Harness.AssertClose(low[i].to(ScalarType.Float32), f32[i], $"{at}: parameter {i}", place, 1e-6);
                }
                foreach (var ((name, x), (_, y)) in StateTensors(a, i).Zip(StateTensors(b, i)))
                {
                    Assert.That(x is null, Is.EqualTo(y is null), $"{at}: {name} {i} present in one run only");
                    if (x is not null)
                    {
                        Assert.That(x.dtype, Is.EqualTo(ScalarType.Float32), $"{at}: {name} {i} dtype");
                        Harness.AssertClose(x, y!, $"{at}: {name} {i}", 1e-4, 1e-6);
                    }
                }
            }
        }
        Assert.That(TensorRates(b), Is.Not.EqualTo(initial), "the rates moved (else the rule went untested)");
    }

    /// <summary>Stochastic rounding (bfloat16 in place): the same seed gives the same bits, another seed others.</summary>
    [TestCase(Kind.Sgd)]
    [TestCase(Kind.Adam)]
    public void StochasticRoundingIsDeterministicPerSeed(Kind kind)
    {
        List<Tensor> Run(long seed)
        {
            var ps = Parameters(ScalarType.BFloat16);
            using var opt = Make(kind, ps, HypergradientScope.PerGroup, HypergradientRule.Normalized, Mode.Stochastic, seed);
            for (int step = 1; step <= 8; step++)
            {
                Gradients(step, ScalarType.BFloat16, ps);
                opt.step();
            }
            return ps.Select(p => p.detach().clone()).ToList();
        }
        var a = Run(3);
        var b = Run(3);
        var c = Run(4);
        for (int i = 0; i < a.Count; i++)
        {
            Harness.AssertSame(a[i], b[i], $"parameter {i}, same seed");
        }
        Assert.That(a.Zip(c).Any(x => !Harness.Same(x.First, x.Second)), Is.True, "another seed draws other bits");
    }

    public static IEnumerable<TestCaseData> ResumeCases() =>
        from kind in Enum.GetValues<Kind>()
        from mode in new[] { Mode.Stochastic, Mode.Master }
        from copy in new[] { false, true }
        select new TestCaseData(kind, mode, copy).SetName($"{{m}}({kind}, {mode}, {(copy ? "state_dict copy" : "save and load")})");

    /// <summary>
    /// 6 steps, save (or copy the <c>state_dict</c>), load into a fresh optimizer over a copy of the parameters,
    /// 6 more: bitwise the uninterrupted run (master copies, the rounding step count and the rates travel).
    /// </summary>
    [TestCaseSource(nameof(ResumeCases))]
    public void ResumedRunIsBitwiseTheUninterruptedOne(Kind kind, Mode mode, bool copy)
    {
        const HypergradientScope scope = HypergradientScope.PerTensor;
        var a = Parameters(ScalarType.BFloat16);
        var b = Parameters(ScalarType.BFloat16);
        using var first = Make(kind, a, scope, HypergradientRule.Additive, mode);
        for (int step = 1; step <= 6; step++)
        {
            Gradients(step, ScalarType.BFloat16, a);
            first.step();
        }
        Harness.CopyParameters(a, b);
        using var second = Make(kind, b, scope, HypergradientRule.Additive, mode);
        switch (first, second)
        {
            case (HypergradientSGD f, HypergradientSGD s) when copy:
                s.load_state_dict(f.state_dict());
                break;
            case (HypergradientSGD f, HypergradientSGD s):
                Harness.SaveAndLoad(f, s);
                break;
            case (HypergradientAdam f, HypergradientAdam s) when copy:
                s.load_state_dict(f.state_dict());
                break;
            case (HypergradientAdam f, HypergradientAdam s):
                Harness.SaveAndLoad(f, s);
                break;
        }
        for (int step = 7; step <= 12; step++)
        {
            Gradients(step, ScalarType.BFloat16, a);
            Harness.CopyGradients(a, b);
            first.step();
            second.step();
            Harness.AssertSameState((torch.optim.Optimizer)second, b, (torch.optim.Optimizer)first, a, $"{kind} {mode}, step {step} after the load");
        }
    }

    /// <summary>
    /// Bad options: stochastic rounding on float16 parameters fails at the step, naming the problem, with nothing
    /// written (parameters, no state made); master weights with stochastic rounding fail at construction.
    /// </summary>
    [TestCase(Kind.Sgd)]
    [TestCase(Kind.Adam)]
    public void BadOptionsFailClearlyAndChangeNothing(Kind kind)
    {
        var ps = Parameters(ScalarType.Float16);
        var before = Harness.Snapshot(ps);
        using var opt = Make(kind, ps, HypergradientScope.Global, HypergradientRule.Additive, Mode.Stochastic);
        Gradients(1, ScalarType.Float16, ps);
        var e = Assert.Throws<ArgumentException>(() => opt.step());
        Assert.That(e!.Message, Does.Contain("stochastic_rounding is for bfloat16 parameters"));
        Harness.AssertUnchanged(before, ps.Cast<Tensor>().ToList(), "parameters after the refused step");
        for (int i = 0; i < ps.Count; i++)
        {
            Assert.That(Master(opt, i), Is.Null, $"no master copy of parameter {i}");
            Assert.That(StateTensors(opt, i).All(t => t.Item2 is null), Is.True, $"no state tensor of parameter {i}");
        }
        var both = Assert.Throws<ArgumentException>(() =>
        {
            using var _ = kind == Kind.Sgd
                ? new HypergradientSGD(ps, 0.01, 1e-4, master_weights: true, stochastic_rounding: true)
                : (OptimizerHelper)new HypergradientAdam(ps, master_weights: true, stochastic_rounding: true);
        });
        Assert.That(both!.Message, Does.Contain("stochastic_rounding is for parameters updated in place"));
    }

    /// <summary>
    /// GradScaler's rule: HypergradientSGD with master weights or stochastic rounding takes the scaler's unfused
    /// path (there is no scaled mixed HD step), in place on 16-bit parameters the fused one; HypergradientAdam the
    /// unfused one always.
    /// </summary>
    [Test]
    public void GradScalerTakesTheUnfusedPathWithPrecisionOptions()
    {
        var ps = Parameters(ScalarType.BFloat16);
        using var inPlace = new HypergradientSGD(ps, 0.01, 1e-4);
        using var master = new HypergradientSGD(ps, 0.01, 1e-4, master_weights: true);
        using var stochastic = new HypergradientSGD(ps, 0.01, 1e-4, stochastic_rounding: true);
        using var adam = new HypergradientAdam(ps, master_weights: true);
        Assert.That(((IFusedGradScaling)inPlace).SupportsGradScaling, Is.True);
        Assert.That(((IFusedGradScaling)master).SupportsGradScaling, Is.False);
        Assert.That(((IFusedGradScaling)stochastic).SupportsGradScaling, Is.False);
        Assert.That(((IFusedGradScaling)adam).SupportsGradScaling, Is.False);

        // The unfused path with master weights: the step happens (bfloat16 gradients unscaled in place).
        var before = Harness.Snapshot(ps);
        var scaler = new GradScaler(init_scale: 1024);
        using var loss = scaler.scale(torch.tensor(1.0f));
        Gradients(1, ScalarType.BFloat16, ps);
        using (torch.no_grad())
        {
            foreach (var p in ps)
            {
                p.grad!.mul_(1024);
            }
        }
        scaler.step(master);
        scaler.update();
        Assert.That(master.Steps, Is.EqualTo(1));
        Assert.That(ps.Zip(before).Any(x => !Harness.Same(x.First, x.Second)), Is.True, "the parameters moved");
    }
}
