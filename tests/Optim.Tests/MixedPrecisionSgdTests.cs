using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// FusedSGD on float16 and bfloat16 parameters against the float32 reference written with TorchSharp tensor
/// operations in PyTorch's order (<see cref="ReferenceSgd"/>), at sizes spanning many native chunks, two param
/// groups (momentum with Nesterov and weight decay; momentum with dampening and maximize) and 1 to 3 threads,
/// over 60 steps, with and without clipping (<c>clip_grad_norm_</c>, the norm in double, on the reference's gradients): with master
/// weights the master copy follows the float32 reference and the parameter is exactly its rounding; in place each
/// step is the float32 step of the 16-bit parameter, rounded to nearest. State saved and loaded with the master
/// copies; stochastic rounding (deterministic per seed and step, unbiased); the refusals, worded as FusedAdam's.
/// </summary>
[TestFixture]
[NonParallelizable]
public class MixedPrecisionSgdTests
{
    private static readonly int[] Threads = { 1, 2, 3 };
    private const int FirstGroup = 4, Steps = 60;
    private const double Lr = 0.01, Lr2 = 0.003, MaxNorm = 500;
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
        from clip in new[] { false, true }
        select new TestCaseData(dtype, clip).SetName($"{{m}}({dtype}, {(clip ? "clipped" : "unclipped")})");

    // The large parameters in the 16-bit dtype (their float32 values are exact copies).
    private static List<Parameter> LowParameters(ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        return Harness.LargeParameters(1, ScalarType.Float32).Select(p => new Parameter(p.detach().to(dtype).DetachFromDisposeScope())).ToList();
    }

    private static List<Parameter> Float32Copies(IEnumerable<Parameter> ps) =>
        ps.Select(p => new Parameter(p.detach().to(ScalarType.Float32, copy: true))).ToList();

    private static FusedSGD Make(IReadOnlyList<Parameter> ps, bool master, bool clip = false, bool stochastic = false, long seed = 0) =>
        new(new[]
        {
            new FusedSGD.ParamGroup(ps.Take(FirstGroup)),
            new FusedSGD.ParamGroup(ps.Skip(FirstGroup), lr: Lr2, momentum: 0.5, dampening: 0.1, weight_decay: 0.01, nesterov: false, maximize: true),
        }, Lr, momentum: 0.9, weight_decay: 0.05, nesterov: true, max_grad_norm: clip ? MaxNorm : null,
            master_weights: master, stochastic_rounding: stochastic, rounding_seed: seed);

    private static ReferenceSgd Reference(IReadOnlyList<Parameter> ps)
    {
        var reference = new ReferenceSgd();
        reference.AddGroup(ps.Take(FirstGroup), Lr, 0.9, 0, 0.05, true);
        reference.AddGroup(ps.Skip(FirstGroup), Lr2, 0.5, 0.1, 0.01, false, true);
        return reference;
    }

    // A step's gradients: random float32 values rounded to the 16-bit dtype, given to every 16-bit model, and
    // their exact float32 values to the reference (none for the parameter without a gradient).
    private static void Gradients(int step, ScalarType dtype, IReadOnlyList<Parameter> reference, params IReadOnlyList<Parameter>[] models)
    {
        using var scope = torch.NewDisposeScope();
        var gen = new torch.Generator((ulong)(2000 + step));
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

    // The reference step: clip_grad_norm_ over the reference's float32 gradients first when clipping, as
    // ClipTests.ClipInDouble spells it (checked there against LibTorch's own clip_grad_norm_): the norm summed in
    // double, as ours is; LibTorch's float32 sum differs by about 5e-6 relative, which the momentum buffers
    // carry on as an absolute error of that size times the gradients they sum.
    private static void ReferenceStep(ReferenceSgd reference, IReadOnlyList<Parameter> ps, bool clip)
    {
        if (clip)
        {
            using var scope = torch.NewDisposeScope();
            var grads = ps.Where(p => p.grad is not null).Select(p => p.grad!).ToList();
            double norm = Math.Sqrt(grads.Sum(g => g.to(ScalarType.Float64).square().sum().item<double>()));
            Assert.That(norm, Is.GreaterThan(MaxNorm), "the clip is not active: the test's premise does not hold");
            float coef = Math.Min((float)MaxNorm / ((float)norm + 1e-6f), 1f);
            foreach (var g in grads)
            {
                g.mul_(coef);
            }
        }
        reference.Step();
    }

    /// <summary>
    /// Master weights: the float32 copy is the float32 reference within float32 rounding (the fused update and
    /// the reference's separate passes round differently), the
    /// parameter is exactly the copy rounded to nearest, the momentum buffers are float32 and follow the
    /// reference's; every thread count gives bitwise the same state.
    /// </summary>
    [TestCaseSource(nameof(Cases))]
    public void MasterWeightsFollowTheFloat32Reference(ScalarType dtype, bool clip)
    {
        var ours = Threads.Select(_ => LowParameters(dtype)).ToList();
        var theirs = Float32Copies(ours[0]);
        var fused = ours.Select(ps => Make(ps, master: true, clip)).ToList();
        using var reference = Reference(theirs);
        try
        {
            for (int step = 1; step <= Steps; step++)
            {
                Gradients(step, dtype, theirs, ours.ToArray());
                for (int t = 0; t < Threads.Length; t++)
                {
                    Harness.WithNativeThreads(Threads[t], () => fused[t].step());
                }
                ReferenceStep(reference, theirs, clip);
                if (step > 3 && step % 10 != 0)
                {
                    continue;
                }
                for (int i = 0; i < theirs.Count; i++)
                {
                    string what = $"step {step}, parameter {i}";
                    var s = Harness.FusedState(fused[0], i);
                    var buffer = reference.Buffer(theirs[i]);
                    if (buffer is null)
                    {
                        Assert.That(s.master_param, Is.Null, $"{what}: a master copy without a step");
                        Assert.That(s.momentum_buffer, Is.Null, $"{what}: a momentum buffer without a step");
                        continue;
                    }
                    Assert.That(s.master_param!.dtype, Is.EqualTo(ScalarType.Float32), what);
                    Assert.That(s.momentum_buffer!.dtype, Is.EqualTo(ScalarType.Float32), what);
                    Harness.AssertClose(s.master_param, theirs[i], $"{what}: master copy", 1e-4, 1e-5);
                    Harness.AssertClose(s.momentum_buffer, buffer, $"{what}: momentum buffer", 1e-4, 1e-5);
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
    /// In place (round to nearest): each step is the float32 reference step of the current 16-bit parameter (the
    /// reference restarts from it every step, so the two see the same input), rounded to nearest. Tolerance: one
    /// 16-bit place (2^-8 relative for bfloat16, 2^-11 for float16) plus 1e-6, since the fused float32 math and the
    /// reference's separate passes may differ in the last float32 bit, which can move a value across a rounding
    /// boundary. No master copy is made; the momentum buffers are float32 and follow the reference's.
    /// </summary>
    [TestCaseSource(nameof(Cases))]
    public void InPlaceIsTheRoundedFloat32Step(ScalarType dtype, bool clip)
    {
        double place = dtype == ScalarType.BFloat16 ? 1.0 / 256 : 1.0 / 2048;
        var ours = Threads.Select(_ => LowParameters(dtype)).ToList();
        var theirs = Float32Copies(ours[0]);
        var fused = ours.Select(ps => Make(ps, master: false, clip)).ToList();
        using var reference = Reference(theirs);
        try
        {
            for (int step = 1; step <= Steps; step++)
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
                ReferenceStep(reference, theirs, clip);
                for (int i = 0; i < theirs.Count; i++)
                {
                    string what = $"step {step}, parameter {i}";
                    using var got = ours[0][i].to(ScalarType.Float32);
                    Harness.AssertClose(got, theirs[i], what, place, 1e-6);
                    var s = Harness.FusedState(fused[0], i);
                    Assert.That(s.master_param, Is.Null, $"{what}: a master copy without master_weights");
                    var buffer = reference.Buffer(theirs[i]);
                    if (buffer is not null && (step <= 3 || step % 10 == 0))
                    {
                        Assert.That(s.momentum_buffer!.dtype, Is.EqualTo(ScalarType.Float32), what);
                        Harness.AssertClose(s.momentum_buffer, buffer, $"{what}: momentum buffer", 1e-4, 1e-5);
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

    /// <summary>Saved and loaded with its master copies, an optimizer continues bitwise as the one that was not interrupted.</summary>
    [Test]
    public void SaveAndLoadKeepTheMasterWeights()
    {
        var a = LowParameters(ScalarType.BFloat16);
        var b = LowParameters(ScalarType.BFloat16);
        using var first = Make(a, master: true, clip: true);
        for (int step = 1; step <= 5; step++)
        {
            Gradients(step, ScalarType.BFloat16, Float32Copies(a), a);
            first.step();
        }
        Harness.CopyParameters(a, b);
        using var second = Make(b, master: true, clip: true);
        Harness.SaveAndLoad(first, second);
        Assert.That(Harness.FusedState(second, 0).master_param, Is.Not.Null, "the master copy was not loaded");
        for (int step = 6; step <= 10; step++)
        {
            Gradients(step, ScalarType.BFloat16, Float32Copies(a), a, b);
            first.step();
            second.step();
        }
        Harness.AssertSameState(second, b, first, a, "after the load and 5 more steps");
    }

    // 100 steps at rate 1e-4 on bfloat16 parameters near 1 (one place there is 2^-7): each update is about
    // 1e-4, far below half a place, so rounding to nearest never moves them.
    private static (List<Parameter> Ps, FusedSGD Opt) SmallSteps(bool stochastic, long seed)
    {
        var ps = new List<Parameter> { new(torch.ones(200_000, dtype: ScalarType.BFloat16)) };
        return (ps, new FusedSGD(ps, 1e-4, stochastic_rounding: stochastic, rounding_seed: seed));
    }

    private static void NegativeGradient(IReadOnlyList<Parameter> ps)
    {
        using var g = torch.full(ps[0].shape, -1.0, ScalarType.BFloat16);
        ps[0].grad = g;
    }

    /// <summary>
    /// Stochastic rounding: the same seed gives the same parameters at every step, another seed others, and two
    /// steps of one run draw different bits; the mean over 200,000 draws per step follows the float32 run
    /// (1 + 100 * 1e-4 = 1.01) within 1e-3, 20 of its standard deviations (at most 2^-8 * sqrt(100) / sqrt(200,000)
    /// = 9e-5; fixed seeds, so not a flaky test), where rounding to nearest stays at 1.
    /// </summary>
    [Test]
    public void StochasticRoundingIsDeterministicAndUnbiased()
    {
        var runs = new[] { SmallSteps(true, 7), SmallSteps(true, 7), SmallSteps(true, 8), SmallSteps(false, 7) };
        try
        {
            Tensor? firstStep = null;
            for (int step = 0; step < 100; step++)
            {
                foreach (var (ps, opt) in runs)
                {
                    NegativeGradient(ps);
                    opt.step();
                }
                Assert.That(Harness.Same(runs[0].Ps[0], runs[1].Ps[0]), Is.True, $"step {step}: the same seed gave different parameters");
                if (step == 0)
                {
                    firstStep = runs[0].Ps[0].detach().clone();
                }
            }
            Assert.That(Harness.Same(runs[0].Ps[0], runs[2].Ps[0]), Is.False, "another seed gave the same parameters");
            // After step 1 about 1e-4 / 2^-7 = 1.3% of the elements moved up; the same bits at every step would
            // move those same elements again and leave the others: the mean would stay near 1 + 2^-7 * 0.0128.
            using (firstStep)
            {
                double moved = firstStep!.to(ScalarType.Float64).gt(1.0).to(ScalarType.Float64).mean().item<double>();
                Assert.That(moved, Is.EqualTo(1e-4 * 128).Within(2e-3), "the first step's share of elements rounded up");
            }
            double mean = runs[0].Ps[0].to(ScalarType.Float64).mean().item<double>();
            double nearest = runs[3].Ps[0].to(ScalarType.Float64).mean().item<double>();
            Assert.That(nearest, Is.EqualTo(1.0), "rounding to nearest moved: the test's premise does not hold");
            Assert.That(mean, Is.EqualTo(1.01).Within(1e-3), "stochastic rounding is biased: it does not follow the float32 run");
        }
        finally
        {
            foreach (var (_, opt) in runs)
            {
                opt.Dispose();
            }
        }
    }

    /// <summary>The refusals, worded as FusedAdam's (the shared base writes them), with nothing changed.</summary>
    [Test]
    public void RefusesWhatItCannotDo()
    {
        var bf = new List<Parameter> { new(torch.ones(10, dtype: ScalarType.BFloat16)) };
        var ex = Assert.Throws<ArgumentException>(() => new FusedSGD(bf, 0.1, master_weights: true, stochastic_rounding: true));
        var adam = Assert.Throws<ArgumentException>(() => new FusedAdam(bf, master_weights: true, stochastic_rounding: true));
        Assert.That(ex!.Message, Is.EqualTo(adam!.Message.Replace("FusedAdam", "FusedSGD")));

        var half = new List<Parameter> { new(torch.ones(10, dtype: ScalarType.Float16)) };
        using var opt = new FusedSGD(half, 0.1, momentum: 0.9, stochastic_rounding: true);
        using (var g = torch.ones(10, dtype: ScalarType.Float16))
        {
            half[0].grad = g;
        }
        using var before = half[0].detach().clone();
        ex = Assert.Throws<ArgumentException>(() => opt.step());
        Assert.That(ex!.Message, Does.Contain("stochastic_rounding is for bfloat16 parameters"));
        Assert.That(Harness.Same(half[0], before), Is.True, "a refused step changed the parameter");
        Assert.That(Harness.FusedState(opt, 0).momentum_buffer, Is.Null, "a refused step created state");

        var mixed = new List<Parameter> { new(torch.ones(3, dtype: ScalarType.BFloat16)), new(torch.ones(3, dtype: ScalarType.Float32)) };
        ex = Assert.Throws<ArgumentException>(() => new FusedSGD(mixed, 0.1));
        Assert.That(ex!.Message, Does.Contain("share one dtype"));
    }

    /// <summary>A gradient whose dtype is not its parameter's: a clear error, nothing changed, no master copy made.</summary>
    [Test]
    public void AGradientOfAnotherDtypeIsRefused()
    {
        var ps = new List<Parameter> { new(torch.ones(10, dtype: ScalarType.BFloat16)) };
        using var opt = new FusedSGD(ps, 0.1, momentum: 0.9, master_weights: true);
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
        Assert.That(Harness.FusedState(opt, 0).master_param, Is.Null, "a refused step created a master copy");
    }

    /// <summary>A failed step (a master copy of the wrong dtype, set from outside) names it and changes nothing.</summary>
    [Test]
    public void AMasterCopyThatDoesNotFitIsRefused()
    {
        var ps = new List<Parameter> { new(torch.ones(10, dtype: ScalarType.BFloat16)) };
        using var opt = new FusedSGD(ps, 0.1, master_weights: true);
        using (var g = torch.ones(10, dtype: ScalarType.BFloat16))
        {
            ps[0].grad = g;
        }
        var s = Harness.FusedState(opt, 0);
        s.master_param = torch.ones(10, dtype: ScalarType.Float64);
        using var before = ps[0].detach().clone();
        var ex = Assert.Throws<ArgumentException>(() => opt.step());
        Assert.That(ex!.Message, Does.Contain("master_param"));
        Assert.That(Harness.Same(ps[0], before), Is.True, "a refused step changed the parameter");
    }
}
