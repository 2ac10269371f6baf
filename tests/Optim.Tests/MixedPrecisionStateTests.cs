using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// The mixed-precision state across a save and a load, and under a <see cref="GradScaler"/>: FusedSGD, FusedAdam
/// and FusedAdamW on bfloat16 parameters with stochastic rounding or master weights (float16 with master weights),
/// over many native chunks and two param groups. Resumed from a saved state (or a copied <c>state_dict</c>), an
/// optimizer continues bitwise as the one that was not interrupted: the stochastic-rounding step count is saved.
/// The scaler's fused path with master weights and stochastic rounding (bfloat16: the unfused path's <c>unscale_</c>
/// refuses float16 gradients, as PyTorch's does) is bitwise its unfused path over 55 steps
/// with injected infinite and NaN gradients, on 1 and 3 native threads, with and without clipping: a skipped step
/// changes nothing, master copies and the rounding step count included.
/// </summary>
[TestFixture]
[NonParallelizable]
public class MixedPrecisionStateTests
{
    public enum Kind { Sgd, Adam, AdamW }

    public enum Mode { Stochastic, MasterBFloat16, MasterHalf }

    private const int FirstGroup = 4;
    private const double Lr = 0.01, Lr2 = 0.003;

    private static ScalarType DType(Mode mode) => mode == Mode.MasterHalf ? ScalarType.Float16 : ScalarType.BFloat16;

    private static OptimizerHelper Make(Kind kind, IReadOnlyList<Parameter> ps, Mode mode, double? maxNorm = null, long seed = 11)
    {
        bool master = mode != Mode.Stochastic, stochastic = mode == Mode.Stochastic;
        return kind switch
        {
            Kind.Sgd => new FusedSGD(new[]
                {
                    new FusedSGD.ParamGroup(ps.Take(FirstGroup)),
                    new FusedSGD.ParamGroup(ps.Skip(FirstGroup), lr: Lr2, momentum: 0.5, dampening: 0.1, nesterov: false),
                }, Lr, 0.9, 0, 0.01, nesterov: true, max_grad_norm: maxNorm, master_weights: master, stochastic_rounding: stochastic,
                rounding_seed: seed),
            Kind.Adam => new FusedAdam(new[]
                {
                    new FusedAdam.ParamGroup(ps.Take(FirstGroup)),
                    new FusedAdam.ParamGroup(ps.Skip(FirstGroup), lr: Lr2, beta1: 0.5, eps: 1e-4),
                }, Lr, eps: 1e-3, weight_decay: 0.05, max_grad_norm: maxNorm, master_weights: master, stochastic_rounding: stochastic,
                rounding_seed: seed),
            _ => new FusedAdamW(new[]
                {
                    new FusedAdam.ParamGroup(ps.Take(FirstGroup)),
                    new FusedAdam.ParamGroup(ps.Skip(FirstGroup), lr: Lr2, eps: 1e-4),
                }, Lr, eps: 1e-3, weight_decay: 0.01, amsgrad: true, max_grad_norm: maxNorm, master_weights: master,
                stochastic_rounding: stochastic, rounding_seed: seed),
        };
    }

    private static List<Parameter> LowParameters(ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        return Harness.LargeParameters(3, ScalarType.Float32).Select(p => new Parameter(p.detach().to(dtype).DetachFromDisposeScope())).ToList();
    }

    // The same gradients for every model: sign(r) * (0.5 + |r|) * scale in the 16-bit dtype, r standard normal
    // (at least half the scale in magnitude, so unscaling by a power of two is exact in float16 too), with an
    // element of one tensor set to `bad` when it is not 0; none for the parameter without a gradient unless
    // `every` (a saved state holds zero moments for a parameter that never stepped, where the original has none).
    private static void Gradients(int step, ScalarType dtype, float scale, float bad, bool every, params IReadOnlyList<Parameter>[] models)
    {
        using var scope = torch.NewDisposeScope();
        var gen = new torch.Generator((ulong)(3000 + step));
        for (int i = 0; i < models[0].Count; i++)
        {
            if (i == Harness.LargeNoGradient && !every)
            {
                continue;
            }
            var r = torch.randn(models[0][i].shape, dtype: ScalarType.Float32, generator: gen);
            var g = (r.sign() * (r.abs() + 0.5) * scale).to(dtype);
            if (bad != 0 && i == 5)
            {
                g.view(-1)[777 * 500].fill_(bad);
            }
            foreach (var ps in models)
            {
                ps[i].grad = g.clone();
            }
        }
    }

    private static void AssertSame(OptimizerHelper a, IReadOnlyList<Parameter> pa, OptimizerHelper b, IReadOnlyList<Parameter> pb, string what) =>
        Harness.AssertSameState((torch.optim.Optimizer)a, pa, (torch.optim.Optimizer)b, pb, what);

    public static IEnumerable<TestCaseData> ResumeCases() =>
        from kind in Enum.GetValues<Kind>()
        from mode in new[] { Mode.Stochastic, Mode.MasterBFloat16 }
        from copy in new[] { false, true }
        select new TestCaseData(kind, mode, copy).SetName($"{{m}}({kind}, {mode}, {(copy ? "state_dict copy" : "save and load")})");

    /// <summary>
    /// Train 6 steps, save (or copy the <c>state_dict</c>), load into a fresh optimizer over a copy of the
    /// parameters, train 6 more: bitwise the 12 steps of the optimizer that was not interrupted (with
    /// stochastic rounding the bits of steps 7 to 12 depend on the restored step count).
    /// </summary>
    [TestCaseSource(nameof(ResumeCases))]
    public void ResumedRunIsBitwiseTheUninterruptedOne(Kind kind, Mode mode, bool copy)
    {
        var dtype = DType(mode);
        var a = LowParameters(dtype);
        var b = LowParameters(dtype);
        var first = Make(kind, a, mode);
        OptimizerHelper? second = null;
        try
        {
            for (int step = 1; step <= 6; step++)
            {
                Gradients(step, dtype, 1, 0, true, a);
                first.step();
            }
            Harness.CopyParameters(a, b);
            second = Make(kind, b, mode);
            switch (first, second)
            {
                case (FusedSGD f, FusedSGD s) when copy:
                    s.load_state_dict(f.state_dict());
                    break;
                case (FusedSGD f, FusedSGD s):
                    Harness.SaveAndLoad(f, s);
                    break;
                case (FusedAdam f, FusedAdam s) when copy:
                    s.load_state_dict(f.state_dict());
                    break;
                case (FusedAdam f, FusedAdam s):
                    Harness.SaveAndLoad(f, s);
                    break;
            }
            for (int step = 7; step <= 12; step++)
            {
                Gradients(step, dtype, 1, 0, true, a, b);
                first.step();
                second.step();
                AssertSame(second, b, first, a, $"{kind} {mode}, step {step} after the load");
            }
        }
        finally
        {
            first.Dispose();
            second?.Dispose();
        }
    }

    public static IEnumerable<TestCaseData> ScalerCases() =>
        from kind in Enum.GetValues<Kind>()
        from mode in new[] { Mode.Stochastic, Mode.MasterBFloat16 } // GradScaler.unscale_ refuses float16 gradients, as PyTorch's does
        select new TestCaseData(kind, mode, kind == Kind.Adam ? null : 600.0).SetName($"{{m}}({kind}, {mode})");

    /// <summary>
    /// The scaler's fused path (on 1 and 3 native threads, and through <c>unscale_</c> then step) is bitwise its
    /// unfused path over 55 steps: gradients scaled by 1024 (a power of two, so the unfused path's unscaling in
    /// bfloat16 is exact), an infinity or a NaN on steps 3, 8, 14, 19, 25, 30, 36, 41, 47 and 52 (each skipped and
    /// the scale backed off), parameters, master copies and state compared after every step (a stochastic-rounding
    /// count that a skipped step advanced would show in the next step's bits).
    /// </summary>
    [TestCaseSource(nameof(ScalerCases))]
    public void FusedScalerIsBitwiseTheUnfusedPath(Kind kind, Mode mode, double? maxNorm)
    {
        var dtype = DType(mode);
        var models = Enumerable.Range(0, 4).Select(_ => LowParameters(dtype)).ToList();
        var opts = models.Select(ps => Make(kind, ps, mode, maxNorm)).ToList();
        var scalers = models.Select(_ => new GradScaler(init_scale: 1024, growth_interval: 1000)).ToList();
        scalers[3].FusedSteps = false;
        try
        {
            for (int step = 0; step < 55; step++)
            {
                float bad = step % 11 == 3 ? float.PositiveInfinity : step % 11 == 8 ? float.NaN : 0;
                Gradients(step, dtype, (float)scalers[3].get_scale(), bad, false, models.ToArray());
                for (int m = 0; m < models.Count; m++)
                {
                    using var scaled = scalers[m].scale(torch.tensor(1.0f));
                    Harness.WithNativeThreads(m == 1 ? 3 : 1, () =>
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
                    AssertSame(opts[m], models[m], opts[3], models[3], $"{kind} {mode}, step {step}, model {m} against the unfused path");
                }
            }
            Assert.That(scalers[3].get_scale(), Is.EqualTo(1.0), "backed off at each of the 10 bad steps, never grown");
        }
        finally
        {
            opts.ForEach(o => o.Dispose());
        }
    }
}
