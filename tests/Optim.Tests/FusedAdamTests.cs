using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim.Tests;

/// <summary>
/// FusedAdam and FusedAdamW against the PyTorch-order reference (<see cref="ReferenceAdam"/>) at a size
/// spanning many native chunks on 1, 2 and 3 threads, over 50 steps, every option and two param groups,
/// comparing every state piece (step, exp_avg, exp_avg_sq, max_exp_avg_sq); against TorchSharp's own
/// Adam and AdamW on a model; and the named semantics (per-parameter step counts, betas schedulers).
/// </summary>
[TestFixture]
[NonParallelizable]
public class FusedAdamTests
{
    public sealed record AdamCase(bool Decoupled, bool Amsgrad, bool Maximize, double WeightDecay)
    {
        public override string ToString() => $"{(Decoupled ? "AdamW" : "Adam")} amsgrad={Amsgrad} maximize={Maximize} weight_decay={WeightDecay}";
    }

    public static IEnumerable<AdamCase> AllCases() =>
        from d in new[] { false, true }
        from a in new[] { false, true }
        from m in new[] { false, true }
        from wd in new[] { 0.0, 0.05 }
        select new AdamCase(d, a, m, wd);

    private static readonly int[] Threads = { 1, 2, 3 };
    private const int FirstGroup = 4;
    private const double Lr = 0.01, Lr2 = 0.003;
    private const int LateParameter = 1;
    private const int LateSteps = 7;
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

    // Two groups: parameters [0, split) with the defaults, the rest with other options.
    private static FusedAdam Make(AdamCase c, IReadOnlyList<Parameter> ps, int split = FirstGroup)
    {
        var groups = new[]
        {
            new FusedAdam.ParamGroup(ps.Take(split)),
            new FusedAdam.ParamGroup(ps.Skip(split), lr: Lr2, beta1: 0.5, beta2: 0.9, eps: 1e-6),
        };
        return c.Decoupled
            ? new FusedAdamW(groups, Lr, weight_decay: c.WeightDecay, amsgrad: c.Amsgrad, maximize: c.Maximize)
            : new FusedAdam(groups, Lr, weight_decay: c.WeightDecay, amsgrad: c.Amsgrad, maximize: c.Maximize);
    }

    public static IEnumerable<TestCaseData> LargeCases() =>
        AllCases().Select(c => new TestCaseData(c, ScalarType.Float32).SetName($"FusedAdamAtManyChunks(Float32, {c})"))
            .Concat(AllCases().Where(c => c.WeightDecay != 0 && c.Amsgrad)
                .Select(c => new TestCaseData(c, ScalarType.Float64).SetName($"FusedAdamAtManyChunks(Float64, {c})")));

    /// <summary>
    /// 50 steps at 1.16M elements; parameter <see cref="LateParameter"/> gets its first gradient at step
    /// <see cref="LateSteps"/> + 1 (its bias corrections start there) and parameter
    /// <see cref="Harness.LargeNoGradient"/> never gets one (no state, step 0).
    /// </summary>
    [TestCaseSource(nameof(LargeCases))]
    public void MatchesTheReferenceOnEveryThreadCount(AdamCase c, ScalarType dtype)
    {
        var (rtol, atol) = dtype == ScalarType.Float64 ? (1e-11, 1e-12) : (1e-4, 1e-5);
        var ours = Threads.Select(_ => Harness.LargeParameters(1, dtype)).ToList();
        var theirs = Harness.LargeParameters(1, dtype);
        var fused = ours.Select(ps => Make(c, ps)).ToList();
        using var reference = new ReferenceAdam(c.Decoupled);
        reference.AddGroup(theirs.Take(FirstGroup), Lr, weight_decay: c.WeightDecay, amsgrad: c.Amsgrad, maximize: c.Maximize);
        reference.AddGroup(theirs.Skip(FirstGroup), Lr2, 0.5, 0.9, 1e-6, c.WeightDecay, c.Amsgrad, c.Maximize);
        var gradients = new Harness.DriftingGradients(theirs, 2);
        try
        {
            for (int step = 1; step <= 50; step++)
            {
                gradients.Next(ours.Append(theirs).ToArray());
                if (step <= LateSteps)
                {
                    foreach (var ps in ours.Append(theirs))
                    {
                        ps[LateParameter].grad = null;
                    }
                }
                for (int t = 0; t < Threads.Length; t++)
                {
                    Harness.WithNativeThreads(Threads[t], () => fused[t].step());
                }
                reference.Step();
                if (step > 3 && step % 10 != 0 && step != LateSteps + 1)
                {
                    continue; // every state piece after steps 1-3, the late parameter's first and every tenth
                }
                for (int i = 0; i < theirs.Count; i++)
                {
                    string what = $"step {step}, parameter {i}";
                    Harness.AssertClose(ours[0][i], theirs[i], what, rtol, atol);
                    var s = Harness.AdamState(fused[0], i);
                    var r = reference.State(theirs[i]);
                    Assert.That(s.step, Is.EqualTo(r?.Step ?? 0), $"{what}: step count");
                    Assert.That(s.exp_avg is null, Is.EqualTo(r is null), $"{what}: moments present in one only");
                    if (r is not null)
                    {
                        Harness.AssertClose(s.exp_avg!, r.ExpAvg, $"{what}: exp_avg", rtol, atol);
                        Harness.AssertClose(s.exp_avg_sq!, r.ExpAvgSq, $"{what}: exp_avg_sq", rtol, atol);
                        Assert.That(s.max_exp_avg_sq is null, Is.EqualTo(r.MaxExpAvgSq is null), $"{what}: max_exp_avg_sq present in one only");
                        if (r.MaxExpAvgSq is not null)
                        {
                            Harness.AssertClose(s.max_exp_avg_sq!, r.MaxExpAvgSq, $"{what}: max_exp_avg_sq", rtol, atol);
                        }
                    }
                }
                for (int t = 1; t < Threads.Length; t++)
                {
                    Harness.AssertSameState(fused[t], ours[t], fused[0], ours[0], $"step {step}, {Threads[t]} threads against 1");
                }
            }
            Assert.That(Harness.AdamState(fused[0], LateParameter).step, Is.EqualTo(50 - LateSteps));
        }
        finally
        {
            fused.ForEach(f => f.Dispose());
        }
    }

    // Maximize runs ascend the negated loss, so they converge like the minimize runs.
    private static Func<Tensor, Tensor, Tensor>? Loss(AdamCase c) => c.Maximize ? Harness.NegatedMse : null;

    /// <summary>
    /// TorchSharp 0.107's Adam and AdamW follow PyTorch's order too, except that they blend the first moment
    /// with <c>mul_(beta1).add_(g, 1 - beta1)</c> instead of <c>lerp_</c> (a rounding difference), and with
    /// <c>maximize</c> they throw for a parameter without a gradient (<c>-param.grad()</c> of null); every
    /// parameter here has one. 60 steps on a model, two groups, every state piece after every step.
    /// </summary>
    [TestCaseSource(nameof(AllCases))]
    public void MatchesTorchSharpsOwn(AdamCase c)
    {
        using var ours = Harness.Mlp(5);
        using var theirs = Harness.Mlp(5);
        var (x, y) = Harness.Data(6);
        var op = ours.parameters().ToList();
        var tp = theirs.parameters().ToList();
        using var fused = Make(c, op, 2);
        using OptimizerHelper torchsharp = c.Decoupled
            ? torch.optim.AdamW(new[]
            {
                new AdamW.ParamGroup(tp.Take(2), Lr, 0.9, 0.999, 1e-8, c.WeightDecay, c.Amsgrad, c.Maximize),
                new AdamW.ParamGroup(tp.Skip(2), Lr2, 0.5, 0.9, 1e-6, c.WeightDecay, c.Amsgrad, c.Maximize),
            }, Lr)
            : torch.optim.Adam(new[]
            {
                new Adam.ParamGroup(tp.Take(2), Lr, 0.9, 0.999, 1e-8, c.WeightDecay, c.Amsgrad, c.Maximize),
                new Adam.ParamGroup(tp.Skip(2), Lr2, 0.5, 0.9, 1e-6, c.WeightDecay, c.Amsgrad, c.Maximize),
            }, Lr);
        for (int step = 1; step <= 60; step++)
        {
            Harness.Backward(ours, x, y, Loss(c));
            Harness.Backward(theirs, x, y, Loss(c));
            fused.step();
            Harness.StepTorchSharp(torchsharp);
            var states = torchsharp.state_dict().State;
            for (int i = 0; i < op.Count; i++)
            {
                string what = $"step {step}, parameter {i}";
                Harness.AssertClose(op[i], tp[i], what, 1e-4, 1e-5);
                var s = Harness.AdamState(fused, i);
                var (tStep, tm, tv, tw) = states[i] switch
                {
                    Adam.State a => (a.step, a.exp_avg, a.exp_avg_sq, a.max_exp_avg_sq),
                    AdamW.State a => (a.step, a.exp_avg, a.exp_avg_sq, a.max_exp_avg_sq),
                    var other => throw new InvalidOperationException(other.GetType().Name),
                };
                Assert.That(s.step, Is.EqualTo(tStep), $"{what}: step");
                Harness.AssertClose(s.exp_avg!, tm, $"{what}: exp_avg", 1e-4, 1e-6);
                Harness.AssertClose(s.exp_avg_sq!, tv, $"{what}: exp_avg_sq", 1e-4, 1e-8);
                if (c.Amsgrad)
                {
                    Harness.AssertClose(s.max_exp_avg_sq!, tw, $"{what}: max_exp_avg_sq", 1e-4, 1e-8);
                }
            }
        }
    }

    [Test]
    public void OneCycleLRCyclesTheBetasOfEveryGroup()
    {
        using var model = Harness.Mlp(7);
        var named = model.named_parameters().ToList();
        using var opt = new FusedAdamW(new[]
        {
            new FusedAdam.ParamGroup(named.Take(2).Select(n => n.parameter)),
            new FusedAdam.ParamGroup(named.Skip(2).Select(n => n.parameter), lr: 0.02),
        }, 0.01);
        var scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr: 0.1, total_steps: 10, base_momentum: 0.8, max_momentum: 0.95);
        Assert.That(opt.ParamGroups.Select(g => ((IBetas)g).Betas.Item1), Is.All.EqualTo(0.95), "betas set to max_momentum at the start");
        var (x, y) = Harness.Data(8);
        for (int i = 0; i < 3; i++)
        {
            Harness.Backward(model, x, y);
            opt.step();
            scheduler.step();
        }
        var betas = opt.ParamGroups.Select(g => ((IBetas)g).Betas).ToList();
        Assert.That(betas.Select(b => b.Item1), Is.All.LessThan(0.95), "beta1 cycled down while the rate rises");
        Assert.That(betas.Select(b => b.Item2), Is.All.EqualTo(0.999), "beta2 kept");
    }

    /// <summary>
    /// A first step that fails in the native call (a gradient that is its parameter's own memory, found
    /// only there) leaves no state behind: the moments made for it are dropped and no step is counted.
    /// </summary>
    [Test]
    public void AStepThatFailsNativelyRollsBackTheStateItCreated()
    {
        var a = new Parameter(torch.randn(5));
        var b = new Parameter(torch.randn(3));
        a.grad = torch.randn(5);
        using var opt = new FusedAdamW(new[] { a, b }, amsgrad: true);
        using (var alias = b.detach())
        {
            b.grad = alias;
        }
        var before = Harness.Snapshot(new[] { a, b });
        Assert.That(() => opt.step(), Throws.ArgumentException.With.Message.Contains("the parameter and the gradient are the same memory"));
        Harness.AssertUnchanged(before, new List<Tensor> { a, b }, "parameter");
        for (int i = 0; i < 2; i++)
        {
            var s = Harness.AdamState(opt, i);
            Assert.That((s.step, s.exp_avg, s.exp_avg_sq, s.max_exp_avg_sq), Is.EqualTo((0L, (Tensor?)null, (Tensor?)null, (Tensor?)null)), $"state {i}");
        }
        b.grad = torch.randn(3);
        opt.step();
        Assert.That(Harness.AdamState(opt, 1).step, Is.EqualTo(1));
    }

    [Test]
    public void SettingBetasChecksThemAndSetsEveryGroup()
    {
        using var model = Harness.Mlp(9);
        using var opt = new FusedAdam(model.parameters(), beta1: 0.8);
        Assert.That(() => opt.Betas = (1.0, 0.9), Throws.ArgumentException.With.Message.Contains("Invalid beta parameter at index 0: 1"));
        Assert.That(opt.Betas, Is.EqualTo((0.8, 0.999)));
        opt.Betas = (0.7, 0.99);
        Assert.That(((IBetas)opt.ParamGroups.Single()).Betas, Is.EqualTo((0.7, 0.99)));
    }

    [Test]
    public void AdamWIsAdamWithDecoupledDecayAndItsOwnName()
    {
        using var a = Harness.Mlp(10);
        using var opt = new FusedAdamW(a.parameters(), weight_decay: 0.1);
        Assert.That(opt, Is.InstanceOf<FusedAdam>());
        Assert.That(new FusedAdamW.Options(), Is.InstanceOf<FusedAdam.Options>());
        var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream))
        {
            opt.save_state_dict(writer);
        }
        using var b = Harness.Mlp(10);
        using var adam = new FusedAdam(b.parameters(), weight_decay: 0.1);
        using var reader = new BinaryReader(new MemoryStream(stream.ToArray()));
        Assert.That(() => adam.load_state_dict(reader), Throws.TypeOf<InvalidDataException>().With.Message.Contains("not of a 'FusedAdam'"));
    }
}
