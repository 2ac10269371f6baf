using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// FusedAdam and FusedAdamW on float16 and bfloat16 parameters against the float32 reference written with
/// TorchSharp tensor operations (<see cref="ReferenceAdam"/>), at sizes spanning many native chunks, two param
/// groups and 1 to 3 threads, over 50 steps: with master weights the master copy follows the float32 reference
/// within float32 rounding and the parameter is exactly its rounding; in place each step is the float32 step of
/// the 16-bit parameter, rounded (within one 16-bit place: see there). State saved and loaded with the master
/// copies; stochastic rounding (deterministic per seed, tracks float32 where rounding to nearest stalls); the
/// refusals.
/// </summary>
[TestFixture]
[NonParallelizable]
public class MixedPrecisionTests
{
    private static readonly int[] Threads = { 1, 2, 3 };
    private const int FirstGroup = 4;
    private const double Lr = 0.01, Lr2 = 0.003;
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

    public static IEnumerable<TestCaseData> Cases() =>
        from dtype in new[] { ScalarType.BFloat16, ScalarType.Float16 }
        from decoupled in new[] { true, false }
        select new TestCaseData(dtype, decoupled).SetName($"{{m}}({dtype}, {(decoupled ? "AdamW" : "Adam")})");

    // The large parameters in the 16-bit dtype, and their exact float32 values.
    private static List<Parameter> LowParameters(ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        return Harness.LargeParameters(1, ScalarType.Float32).Select(p => new Parameter(p.detach().to(dtype).DetachFromDisposeScope())).ToList();
    }

    private static List<Parameter> Float32Copies(IEnumerable<Parameter> ps) =>
        ps.Select(p => new Parameter(p.detach().to(ScalarType.Float32, copy: true))).ToList();

    // eps 1e-3 and 1e-4 rather than 1e-8: 16-bit gradients and parameters lie on a coarse grid, so Adam's
    // coupled g + weight_decay * p cancels exactly on some elements in one implementation and leaves a residue
    // of about 1e-9 in the other (LibTorch's add rounds once, as a fused multiply-add); with eps 1e-8 that
    // residue alone makes a step of lr / 6. A larger eps keeps such elements' steps a rounding apart.
    private const double Eps = 1e-3, Eps2 = 1e-4;

    private static FusedAdam Make(bool decoupled, IReadOnlyList<Parameter> ps, bool master)
    {
        var groups = new[]
        {
            new FusedAdam.ParamGroup(ps.Take(FirstGroup)),
            new FusedAdam.ParamGroup(ps.Skip(FirstGroup), lr: Lr2, beta1: 0.5, beta2: 0.9, eps: Eps2),
        };
        return decoupled
            ? new FusedAdamW(groups, Lr, eps: Eps, weight_decay: 0.05, amsgrad: true, master_weights: master)
            : new FusedAdam(groups, Lr, eps: Eps, weight_decay: 0.05, amsgrad: true, master_weights: master);
    }

    private static ReferenceAdam Reference(bool decoupled, IReadOnlyList<Parameter> ps)
    {
        var reference = new ReferenceAdam(decoupled);
        reference.AddGroup(ps.Take(FirstGroup), Lr, eps: Eps, weight_decay: 0.05, amsgrad: true);
        reference.AddGroup(ps.Skip(FirstGroup), Lr2, 0.5, 0.9, Eps2, 0.05, true);
        return reference;
    }

    // A step's gradients: random float32 values rounded to the 16-bit dtype, given to every 16-bit model, and
    // their exact float32 values to the reference (none for the parameter without a gradient).
    private static void Gradients(int step, ScalarType dtype, IReadOnlyList<Parameter> reference, params IReadOnlyList<Parameter>[] models)
    {
        using var scope = torch.NewDisposeScope();
        var gen = new torch.Generator((ulong)(1000 + step));
        for (int i = 0; i < reference.Count; i++)
        {
            if (i == Harness.LargeNoGradient)
            {
                continue;
            }
            var low = torch.randn(reference[i].shape, dtype: ScalarType.Float32, generator: gen).to(dtype);
            reference[i].grad = low.to(ScalarType.Float32);
            foreach (var ps in models)
            {
                ps[i].grad = low.clone();
            }
        }
    }

    /// <summary>
    /// Master weights: the float32 copy is the float32 reference within float32 rounding (the tolerance of the
    /// float32 tests: the fused update and the reference's separate passes round differently), the parameter is
    /// exactly the copy rounded to nearest, the moments are float32 and follow the reference's.
    /// </summary>
    [TestCaseSource(nameof(Cases))]
    public void MasterWeightsFollowTheFloat32Reference(ScalarType dtype, bool decoupled)
    {
        var ours = Threads.Select(_ => LowParameters(dtype)).ToList();
        var theirs = Float32Copies(ours[0]);
        var fused = ours.Select(ps => Make(decoupled, ps, master: true)).ToList();
        using var reference = Reference(decoupled, theirs);
        try
        {
            for (int step = 1; step <= 50; step++)
            {
                Gradients(step, dtype, theirs, ours.ToArray());
                for (int t = 0; t < Threads.Length; t++)
                {
                    Harness.WithNativeThreads(Threads[t], () => fused[t].step());
                }
                reference.Step();
                if (step > 3 && step % 10 != 0)
                {
                    continue;
                }
                for (int i = 0; i < theirs.Count; i++)
                {
                    string what = $"step {step}, parameter {i}";
                    var s = Harness.AdamState(fused[0], i);
                    var r = reference.State(theirs[i]);
                    if (r is null)
                    {
                        Assert.That(s.master_param, Is.Null, $"{what}: a master copy without a step");
                        continue;
                    }
                    Assert.That(s.master_param!.dtype, Is.EqualTo(ScalarType.Float32), what);
                    Assert.That(s.exp_avg!.dtype, Is.EqualTo(ScalarType.Float32), what);
                    Harness.AssertClose(s.master_param, theirs[i], $"{what}: master copy", 1e-4, 1e-5);
                    Harness.AssertClose(s.exp_avg, r.ExpAvg, $"{what}: exp_avg", 1e-4, 1e-5);
                    Harness.AssertClose(s.exp_avg_sq!, r.ExpAvgSq, $"{what}: exp_avg_sq", 1e-4, 1e-5);
                    Harness.AssertClose(s.max_exp_avg_sq!, r.MaxExpAvgSq!, $"{what}: max_exp_avg_sq", 1e-4, 1e-5);
                    using var rounded = s.master_param.to(dtype);
                    Assert.That(Harness.Same(ours[0][i], rounded), Is.True, $"{what}: the parameter is not its master copy rounded to nearest");
                }
                for (int t = 1; t < Threads.Length; t++)
                {
                    Harness.AssertSameState(fused[t], ours[t], fused[0], ours[0], $"step {step}, {Threads[t]} threads against 1");
                }
            }
        }
        finally
        {
            fused.ForEach(f => f.Dispose());
        }
    }

    /// <summary>
    /// In place: each step is the float32 reference step of the current 16-bit parameter (the reference restarts
    /// from it every step, so the two see the same input), rounded to nearest. Tolerance: one 16-bit place
    /// (2^-8 relative for bfloat16, 2^-11 for float16) plus 1e-6: the fused float32 math and the reference's
    /// separate passes may differ in the last float32 bit, which can move a value across a rounding boundary.
    /// The moments are float32 and follow the reference's within float32 rounding.
    /// </summary>
    [TestCaseSource(nameof(Cases))]
    public void InPlaceIsTheRoundedFloat32Step(ScalarType dtype, bool decoupled)
    {
        double place = dtype == ScalarType.BFloat16 ? 1.0 / 256 : 1.0 / 2048;
        var ours = Threads.Select(_ => LowParameters(dtype)).ToList();
        var theirs = Float32Copies(ours[0]);
        var fused = ours.Select(ps => Make(decoupled, ps, master: false)).ToList();
        using var reference = Reference(decoupled, theirs);
        try
        {
            for (int step = 1; step <= 50; step++)
            {
                using (torch.no_grad())
                {
                    for (int i = 0; i < theirs.Count; i++)
                    {
                        theirs[i].copy_(ours[0][i]);
                    }
                }
                Gradients(step, dtype, theirs, ours.ToArray());
                for (int t = 0; t < Threads.Length; t++)
                {
                    Harness.WithNativeThreads(Threads[t], () => fused[t].step());
                }
                reference.Step();
                for (int i = 0; i < theirs.Count; i++)
                {
                    string what = $"step {step}, parameter {i}";
                    using var got = ours[0][i].to(ScalarType.Float32);
                    Harness.AssertClose(got, theirs[i], what, place, 1e-6);
                    var r = reference.State(theirs[i]);
                    if (r is not null && (step <= 3 || step % 10 == 0))
                    {
                        var s = Harness.AdamState(fused[0], i);
                        Harness.AssertClose(s.exp_avg!, r.ExpAvg, $"{what}: exp_avg", 1e-4, 1e-5);
                        Harness.AssertClose(s.exp_avg_sq!, r.ExpAvgSq, $"{what}: exp_avg_sq", 1e-4, 1e-5);
                    }
                }
                for (int t = 1; t < Threads.Length; t++)
                {
                    Harness.AssertSameState(fused[t], ours[t], fused[0], ours[0], $"step {step}, {Threads[t]} threads against 1");
                }
            }
        }
        finally
        {
            fused.ForEach(f => f.Dispose());
        }
    }

    /// <summary>Saved and loaded with its master copies, an optimizer continues exactly as the one that was not interrupted.</summary>
    [Test]
    public void SaveAndLoadKeepTheMasterWeights()
    {
        var a = LowParameters(ScalarType.BFloat16);
        var b = LowParameters(ScalarType.BFloat16);
        using var first = Make(true, a, master: true);
        for (int step = 1; step <= 5; step++)
        {
            Gradients(step, ScalarType.BFloat16, Float32Copies(a), a);
            first.step();
        }
        using (torch.no_grad())
        {
            for (int i = 0; i < a.Count; i++)
            {
                b[i].copy_(a[i]);
            }
        }
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            first.save_state_dict(writer);
        }
        stream.Position = 0;
        using var second = Make(true, b, master: true);
        using (var reader = new BinaryReader(stream))
        {
            second.load_state_dict(reader);
        }
        Assert.That(Harness.AdamState(second, 0).master_param, Is.Not.Null, "the master copy was not loaded");
        for (int step = 6; step <= 10; step++)
        {
            Gradients(step, ScalarType.BFloat16, Float32Copies(a), a, b);
            first.step();
            second.step();
        }
        // Every piece of state but the moments of the parameter without a gradient (saved as zeros, as
        // TorchSharp's format does, so loaded where the original has none).
        for (int i = 0; i < a.Count; i++)
        {
            string what = $"after the load and 5 more steps, parameter {i}";
            Harness.AssertSame(b[i], a[i], what);
            FusedAdam.State s = Harness.AdamState(second, i), f = Harness.AdamState(first, i);
            Assert.That(s.step, Is.EqualTo(f.step), $"{what}: step");
            Harness.AssertSame(s.master_param, f.master_param, $"{what}: master copy");
            if (i != Harness.LargeNoGradient)
            {
                Harness.AssertSame(s.exp_avg, f.exp_avg, $"{what}: exp_avg");
                Harness.AssertSame(s.exp_avg_sq, f.exp_avg_sq, $"{what}: exp_avg_sq");
                Harness.AssertSame(s.max_exp_avg_sq, f.max_exp_avg_sq, $"{what}: max_exp_avg_sq");
            }
        }
    }

    // 100 AdamW steps at rate 1e-4 on bfloat16 parameters near 1 (one place there is 2^-7): each update is
    // about 1e-4, far below half a place, so rounding to nearest never moves them.
    private static (List<Parameter> Ps, FusedAdamW Opt) SmallSteps(bool stochastic, long seed)
    {
        var ps = new List<Parameter> { new(torch.ones(200_000, dtype: ScalarType.BFloat16)) };
        return (ps, new FusedAdamW(ps, 1e-4, stochastic_rounding: stochastic, rounding_seed: seed));
    }

    private static void NegativeGradient(IReadOnlyList<Parameter> ps)
    {
        using var g = torch.full(ps[0].shape, -1.0, ScalarType.BFloat16);
        ps[0].grad = g;
    }

    /// <summary>
    /// Stochastic rounding: the same seed gives the same parameters, another seed others; over 100 steps of
    /// 1e-4 (each below half a bfloat16 place, so rounding to nearest stays at 1) the mean parameter follows
    /// the float32 run (1 + 100 * 1e-4 = 1.01) within 1e-3, 20 of its standard deviations (at most
    /// 2^-8 * sqrt(100) / sqrt(200,000) = 9e-5; fixed seeds, so not a flaky test).
    /// </summary>
    [Test]
    public void StochasticRoundingIsDeterministicAndTracksFloat32()
    {
        var runs = new[] { SmallSteps(true, 7), SmallSteps(true, 7), SmallSteps(true, 8), SmallSteps(false, 7) };
        try
        {
            for (int step = 0; step < 100; step++)
            {
                foreach (var (ps, opt) in runs)
                {
                    NegativeGradient(ps);
                    opt.step();
                }
            }
            Assert.That(Harness.Same(runs[0].Ps[0], runs[1].Ps[0]), Is.True, "the same seed gave different parameters");
            Assert.That(Harness.Same(runs[0].Ps[0], runs[2].Ps[0]), Is.False, "another seed gave the same parameters");
            double mean = runs[0].Ps[0].to(ScalarType.Float64).mean().item<double>();
            double nearest = runs[3].Ps[0].to(ScalarType.Float64).mean().item<double>();
            Assert.That(nearest, Is.EqualTo(1.0), "rounding to nearest moved: the test's premise does not hold");
            Assert.That(mean, Is.EqualTo(1.01).Within(1e-3), "stochastic rounding does not follow the float32 run");
        }
        finally
        {
            foreach (var (_, opt) in runs)
            {
                opt.Dispose();
            }
        }
    }

    [Test]
    public void RefusesWhatItCannotDo()
    {
        var bf = new List<Parameter> { new(torch.ones(10, dtype: ScalarType.BFloat16)) };
        var ex = Assert.Throws<ArgumentException>(() => new FusedAdamW(bf, master_weights: true, stochastic_rounding: true));
        Assert.That(ex!.Message, Does.Contain("stochastic_rounding"));

        var half = new List<Parameter> { new(torch.ones(10, dtype: ScalarType.Float16)) };
        using var opt = new FusedAdamW(half, stochastic_rounding: true);
        using (var g = torch.ones(10, dtype: ScalarType.Float16))
        {
            half[0].grad = g;
        }
        using var before = half[0].detach().clone();
        ex = Assert.Throws<ArgumentException>(() => opt.step());
        Assert.That(ex!.Message, Does.Contain("bfloat16"));
        Assert.That(Harness.Same(half[0], before), Is.True, "a refused step changed the parameter");
        Assert.That(Harness.AdamState(opt, 0).exp_avg, Is.Null, "a refused step created state");

        // Parameters of two dtypes in one optimizer.
        var mixed = new List<Parameter> { new(torch.ones(3, dtype: ScalarType.BFloat16)), new(torch.ones(3, dtype: ScalarType.Float32)) };
        ex = Assert.Throws<ArgumentException>(() => new FusedAdam(mixed));
        Assert.That(ex!.Message, Does.Contain("share one dtype"));
    }

    /// <summary>A gradient whose dtype is not its parameter's: a clear error, nothing changed.</summary>
    [Test]
    public void AGradientOfAnotherDtypeIsRefused()
    {
        var ps = new List<Parameter> { new(torch.ones(10, dtype: ScalarType.BFloat16)) };
        using var opt = new FusedAdamW(ps, master_weights: true);
        using (var g = torch.ones(10, dtype: ScalarType.Float32))
        {
            try
            {
                ps[0].grad = g;
            }
            catch (Exception e)
            {
                Assert.Ignore($"LibTorch itself refuses the gradient ({e.Message.Split('\n')[0]})");
            }
        }
        using var before = ps[0].detach().clone();
        var ex = Assert.Throws<ArgumentException>(() => opt.step());
        Assert.That(ex!.Message, Does.Contain("gradient of dtype Float32"));
        Assert.That(Harness.Same(ps[0], before), Is.True);
        Assert.That(Harness.AdamState(opt, 0).master_param, Is.Null, "a refused step created a master copy");
    }
}
