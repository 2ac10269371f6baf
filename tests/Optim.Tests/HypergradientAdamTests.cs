using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim.Tests;

/// <summary>
/// HypergradientAdam against the naive Adam-HD reference (<see cref="ReferenceHdAdam"/>) over 50 steps at a
/// size spanning many native chunks on 1, 2 and 3 threads: every scope and rule, two param groups, AMSGrad,
/// maximize and weight decay, every state piece and rate; with hypergrad_lr 0 it is FusedAdam bit for bit
/// and TorchSharp's Adam to rounding; a non-finite gradient changes nothing; save and load continue a run
/// bit for bit; bad input changes nothing.
/// </summary>
[TestFixture]
[NonParallelizable]
public class HypergradientAdamTests
{
    public sealed record HdAdamCase(HypergradientScope Scope, HypergradientRule Rule, bool Amsgrad, bool Maximize, double WeightDecay)
    {
        public override string ToString() => $"{Scope} {Rule} amsgrad={Amsgrad} maximize={Maximize} weight_decay={WeightDecay}";
    }

    private static readonly int[] Threads = { 1, 2, 3 };
    private const int FirstGroup = 4;
    private const double Lr = 0.01, Lr2 = 0.003, LrMin = 1e-4, LrMax = 0.05;
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

    // Each scope and rule once, the option sets alternating (plain; AMSGrad, maximize and weight decay).
    // The per-parameter normalized rule moves an element's rate by ±β with the sign of g̃·u_prev, which a
    // last-bit difference flips where it nearly cancels: compared in float64, where that does not happen
    // within 50 steps (the native tests compare float32 against a reference of the same arithmetic).
    public static IEnumerable<TestCaseData> Cases() =>
        from scope in Enum.GetValues<HypergradientScope>()
        from rule in Enum.GetValues<HypergradientRule>()
        let set = ((int)scope + (int)rule) % 2 == 0 ? (false, false, 0.0) : (true, true, 0.05)
        let dtype = scope == HypergradientScope.PerParameter && rule == HypergradientRule.Normalized ? ScalarType.Float64 : ScalarType.Float32
        let c = new HdAdamCase(scope, rule, set.Item1, set.Item2, set.Item3)
        select new TestCaseData(c, dtype).SetName($"HypergradientAdamAtManyChunks({dtype}, {c})");

    private static double Beta(HypergradientRule rule) => rule == HypergradientRule.Normalized ? 0.02 : 1e-6;

    // Two groups: parameters [0, FirstGroup) with the defaults, the rest with other options.
    private static HypergradientAdam Make(HdAdamCase c, IReadOnlyList<Parameter> ps, double beta, int split = FirstGroup) =>
        new(new[]
        {
            new HypergradientAdam.ParamGroup(ps.Take(split)),
            new HypergradientAdam.ParamGroup(ps.Skip(split), lr: Lr2, beta1: 0.5, beta2: 0.9, eps: 1e-6, amsgrad: !c.Amsgrad),
        }, Lr, beta, c.Scope, weight_decay: c.WeightDecay, amsgrad: c.Amsgrad, maximize: c.Maximize, rule: c.Rule,
            lr_min: LrMin, lr_max: LrMax);

    /// <summary>
    /// 50 steps at 1.16M elements (<see cref="Harness.LargeParameters"/>: parameter
    /// <see cref="Harness.LargeNoGradient"/> never has a gradient), every state piece and rate after steps
    /// 1-3 and every tenth, and the thread counts bit for bit after every step.
    /// </summary>
    [TestCaseSource(nameof(Cases))]
    public void MatchesTheReferenceOnEveryThreadCount(HdAdamCase c, ScalarType dtype)
    {
        var (rtol, atol) = dtype == ScalarType.Float64 ? (1e-10, 1e-12) : (2e-4, 2e-6);
        double beta = Beta(c.Rule);
        var ours = Threads.Select(_ => Harness.LargeParameters(1, dtype)).ToList();
        var theirs = Harness.LargeParameters(1, dtype);
        var hd = ours.Select(ps => Make(c, ps, beta)).ToList();
        using var reference = new ReferenceHdAdam(c.Scope, c.Rule, beta, LrMin, LrMax);
        reference.AddGroup(theirs.Take(FirstGroup), Lr, weight_decay: c.WeightDecay, amsgrad: c.Amsgrad, maximize: c.Maximize);
        reference.AddGroup(theirs.Skip(FirstGroup), Lr2, 0.5, 0.9, 1e-6, c.WeightDecay, !c.Amsgrad, c.Maximize);
        var gradients = new Harness.DriftingGradients(theirs, 2);
        bool moved = false;
        try
        {
            for (int step = 1; step <= 50; step++)
            {
                gradients.Next(ours.Append(theirs).ToArray());
                for (int t = 0; t < Threads.Length; t++)
                {
                    Harness.WithNativeThreads(Threads[t], () => hd[t].step());
                }
                reference.Step();
                for (int t = 1; t < Threads.Length; t++)
                {
                    AssertSameState(hd[t], ours[t], hd[0], ours[0], $"step {step}, {Threads[t]} threads against 1");
                }
                moved |= hd[0].TensorLearningRates().Any(r => r != Lr && r != Lr2);
                if (step > 3 && step % 10 != 0)
                {
                    continue;
                }
                var groups = hd[0].ParamGroups.ToList();
                for (int i = 0; i < theirs.Count; i++)
                {
                    string what = $"step {step}, parameter {i}";
                    Harness.AssertClose(ours[0][i], theirs[i], what, rtol, atol);
                    var s = State(hd[0], i);
                    var r = reference.State(theirs[i]);
                    Assert.That(s.step, Is.EqualTo(r.Step), $"{what}: step count");
                    if (r.Step == 0)
                    {
                        Assert.That(s.exp_avg, Is.Null, $"{what}: state without a gradient");
                        continue;
                    }
                    Harness.AssertClose(s.exp_avg!, r.ExpAvg, $"{what}: exp_avg", rtol, atol);
                    Harness.AssertClose(s.exp_avg_sq!, r.ExpAvgSq, $"{what}: exp_avg_sq", rtol, atol * atol);
                    Harness.AssertClose(s.prev_update!, r.PrevUpdate, $"{what}: previous update", rtol, atol);
                    Assert.That(s.max_exp_avg_sq is null, Is.EqualTo(r.MaxExpAvgSq is null), $"{what}: max_exp_avg_sq present in one only");
                    if (r.MaxExpAvgSq is not null)
                    {
                        Harness.AssertClose(s.max_exp_avg_sq!, r.MaxExpAvgSq, $"{what}: max_exp_avg_sq", rtol, atol * atol);
                    }
                    if (c.Scope == HypergradientScope.PerTensor)
                    {
                        Assert.That(s.tensor_rate, Is.EqualTo(r.TensorRate).Within(1e-4).Percent, $"{what}: rate");
                    }
                    if (c.Scope == HypergradientScope.PerParameter)
                    {
                        Harness.AssertClose(s.parameter_rates!, r.Rates!, $"{what}: rates", rtol, 1e-12);
                    }
                }
                if (c.Scope is HypergradientScope.Global or HypergradientScope.PerGroup)
                {
                    for (int g = 0; g < groups.Count; g++)
                    {
                        Assert.That(groups[g].LearningRate, Is.EqualTo(reference.GroupRate(g)).Within(1e-4).Percent, $"step {step}: rate of group {g}");
                    }
                }
            }
            Assert.That(moved, Is.True, "the rates never moved: the test would not see a wrong hypergradient");
            Assert.That(hd[0].Steps, Is.EqualTo(50));
        }
        finally
        {
            hd.ForEach(h => h.Dispose());
        }
    }

    internal static HypergradientAdam.State State(HypergradientAdam opt, int index) => (HypergradientAdam.State)opt.state_dict().State[index];

    private static void AssertSameState(HypergradientAdam a, IReadOnlyList<Parameter> ap, HypergradientAdam e, IReadOnlyList<Parameter> ep, string what)
    {
        Assert.That((a.Steps, a.SkippedSteps), Is.EqualTo((e.Steps, e.SkippedSteps)), $"{what}: Steps and SkippedSteps");
        Assert.That(a.TensorLearningRates(), Is.EqualTo(e.TensorLearningRates()), $"{what}: TensorLearningRates");
        for (int i = 0; i < ap.Count; i++)
        {
            Harness.AssertSame(ap[i], ep[i], $"{what}: parameter {i}");
            HypergradientAdam.State sa = State(a, i), se = State(e, i);
            Assert.That((sa.step, sa.tensor_rate), Is.EqualTo((se.step, se.tensor_rate)), $"{what}: step and rate of {i}");
            Harness.AssertSame(sa.exp_avg, se.exp_avg, $"{what}: exp_avg {i}");
            Harness.AssertSame(sa.exp_avg_sq, se.exp_avg_sq, $"{what}: exp_avg_sq {i}");
            Harness.AssertSame(sa.max_exp_avg_sq, se.max_exp_avg_sq, $"{what}: max_exp_avg_sq {i}");
            Harness.AssertSame(sa.prev_update, se.prev_update, $"{what}: previous update {i}");
            Harness.AssertSame(sa.parameter_rates, se.parameter_rates, $"{what}: rates {i}");
        }
    }

    public static IEnumerable<TestCaseData> ZeroCases() =>
        from scope in Enum.GetValues<HypergradientScope>()
        from amsgrad in new[] { false, true }
        select new TestCaseData(scope, amsgrad, amsgrad ? 0.01 : 0.0, !amsgrad);

    /// <summary>
    /// With hypergrad_lr 0 every scope is FusedAdam bit for bit (the rate 1/1024 is exact in float32, so the
    /// per-parameter rates hold it exactly) and TorchSharp's Adam to its rounding (it blends the first moment
    /// with mul_/add_ instead of lerp_); the rates never move. 50 steps on a model, two groups.
    /// </summary>
    [TestCaseSource(nameof(ZeroCases))]
    public void ZeroHypergradLrIsFusedAdamAndTorchSharpsAdam(HypergradientScope scope, bool amsgrad, double wd, bool maximize)
    {
        const double lr = 1.0 / 1024, lr2 = 1.0 / 512;
        using var ours = Harness.Mlp(5);
        using var fusedModel = Harness.Mlp(5);
        using var theirs = Harness.Mlp(5);
        var (x, y) = Harness.Data(6);
        var op = ours.parameters().ToList();
        var fp = fusedModel.parameters().ToList();
        var tp = theirs.parameters().ToList();
        double second = scope == HypergradientScope.Global ? lr : lr2; // the global scope has one rate
        using var hd = new HypergradientAdam(new[]
        {
            new HypergradientAdam.ParamGroup(op.Take(2)),
            new HypergradientAdam.ParamGroup(op.Skip(2), lr: lr2, beta1: 0.5, beta2: 0.9, eps: 1e-6),
        }, lr, 0, scope, weight_decay: wd, amsgrad: amsgrad, maximize: maximize);
        using var fused = new FusedAdam(new[]
        {
            new FusedAdam.ParamGroup(fp.Take(2)),
            new FusedAdam.ParamGroup(fp.Skip(2), lr: second, beta1: 0.5, beta2: 0.9, eps: 1e-6),
        }, lr, weight_decay: wd, amsgrad: amsgrad, maximize: maximize);
        using OptimizerHelper torchsharp = torch.optim.Adam(new[]
        {
            new Adam.ParamGroup(tp.Take(2), lr, 0.9, 0.999, 1e-8, wd, amsgrad, maximize),
            new Adam.ParamGroup(tp.Skip(2), second, 0.5, 0.9, 1e-6, wd, amsgrad, maximize),
        }, lr);
        Func<Tensor, Tensor, Tensor>? loss = maximize ? Harness.NegatedMse : null;
        for (int step = 1; step <= 50; step++)
        {
            Harness.Backward(ours, x, y, loss);
            Harness.Backward(fusedModel, x, y, loss);
            Harness.Backward(theirs, x, y, loss);
            hd.step();
            fused.step();
            Harness.StepTorchSharp(torchsharp);
            for (int i = 0; i < op.Count; i++)
            {
                Harness.AssertSame(op[i], fp[i], $"step {step}, parameter {i} against FusedAdam");
                var s = State(hd, i);
                var f = Harness.AdamState(fused, i);
                Harness.AssertSame(s.exp_avg, f.exp_avg, $"step {step}: exp_avg {i}");
                Harness.AssertSame(s.exp_avg_sq, f.exp_avg_sq, $"step {step}: exp_avg_sq {i}");
                Harness.AssertSame(s.max_exp_avg_sq, f.max_exp_avg_sq, $"step {step}: max_exp_avg_sq {i}");
                Harness.AssertClose(op[i], tp[i], $"step {step}, parameter {i} against TorchSharp's Adam", 1e-4, 1e-5);
            }
        }
        Assert.That(hd.TensorLearningRates(), Is.EqualTo(new[] { lr, lr, second, second }));
    }

    [TestCaseSource(typeof(HypergradientAdamTests), nameof(Scopes))]
    public void NonFiniteGradientSkipsTheWholeStep(HypergradientScope scope)
    {
        using var model = Harness.Mlp(3);
        var (x, y) = Harness.Data(4);
        var ps = model.parameters().ToList();
        using var hd = new HypergradientAdam(ps, 0.01, 1e-3, scope, amsgrad: true, weight_decay: 0.01, rule: HypergradientRule.Normalized);
        for (int step = 0; step < 3; step++)
        {
            Harness.Backward(model, x, y);
            hd.step();
        }
        Harness.Backward(model, x, y);
        using (var g = ps[2].grad!)
        {
            g[0, 1] = torch.tensor(float.NaN);
        }
        var before = Harness.Snapshot(ps);
        var states = Enumerable.Range(0, ps.Count).Select(i => State(hd, i)).ToList();
        var tensors = states.Select(s => Harness.Snapshot(new[] { s.exp_avg!, s.exp_avg_sq!, s.max_exp_avg_sq!, s.prev_update! })).ToList();
        var rates = hd.TensorLearningRates();
        hd.step();
        Assert.That((hd.Steps, hd.SkippedSteps), Is.EqualTo((3L, 1L)));
        Harness.AssertUnchanged(before, ps, "parameters");
        Assert.That(hd.TensorLearningRates(), Is.EqualTo(rates), "rates");
        for (int i = 0; i < ps.Count; i++)
        {
            var s = State(hd, i);
            Assert.That(s.step, Is.EqualTo(3), $"step count of {i}");
            Harness.AssertUnchanged(tensors[i], new[] { s.exp_avg!, s.exp_avg_sq!, s.max_exp_avg_sq!, s.prev_update! }, $"state of {i}");
        }
    }

    public static IEnumerable<HypergradientScope> Scopes() => Enum.GetValues<HypergradientScope>();

    [TestCaseSource(typeof(HypergradientAdamTests), nameof(Scopes))]
    public void SaveLoadContinueEqualsAnUninterruptedRun(HypergradientScope scope)
    {
        using var a = Harness.Mlp(8);
        using var b = Harness.Mlp(8);
        var (x, y) = Harness.Data(9);
        var ap = a.parameters().ToList();
        var bp = b.parameters().ToList();
        HypergradientAdam Make(IReadOnlyList<Parameter> ps) => new(new[]
        {
            new HypergradientAdam.ParamGroup(ps.Take(2)),
            new HypergradientAdam.ParamGroup(ps.Skip(2), lr: 0.02, amsgrad: true),
        }, 0.01, 1e-4, scope, rule: HypergradientRule.Normalized);
        using var first = Make(ap);
        for (int step = 0; step < 5; step++)
        {
            Harness.Backward(a, x, y);
            first.step();
        }
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            first.save_state_dict(writer);
        }
        for (int i = 0; i < ap.Count; i++)
        {
            using var noGrad = torch.no_grad();
            bp[i].copy_(ap[i]);
        }
        using var second = Make(bp);
        stream.Position = 0;
        using (var reader = new BinaryReader(stream))
        {
            second.load_state_dict(reader);
        }
        for (int step = 0; step < 5; step++)
        {
            Harness.Backward(a, x, y);
            Harness.Backward(b, x, y);
            first.step();
            second.step();
            AssertSameState(second, bp, first, ap, $"step {step} after the load");
        }
    }

    [Test]
    public void BadInputIsRejectedAndChangesNothing()
    {
        using var model = Harness.Mlp(1);
        var ps = model.parameters().ToList();
        Assert.Throws<ArgumentException>(() => new HypergradientAdam(ps, hypergrad_lr: -1));
        Assert.Throws<ArgumentException>(() => new HypergradientAdam(ps, lr_min: 1, lr_max: 0.5));
        Assert.Throws<ArgumentException>(() => new HypergradientAdam(ps, beta1: 1));
        Assert.Throws<ArgumentException>(() => new HypergradientAdam(ps, eps: -1));
        Assert.Throws<ArgumentException>(() => new HypergradientAdam(ps, max_grad_norm: 0));
        var (x, y) = Harness.Data(2);
        using var hd = new HypergradientAdam(ps, 0.01, 1e-4, HypergradientScope.PerParameter);
        Harness.Backward(model, x, y);
        hd.step();
        Harness.Backward(model, x, y);
        // A gradient of another dtype: the step is refused whole.
        using (var g = ps[1].grad!)
        {
            ps[1].grad = g.to_type(ScalarType.Float64);
        }
        var before = Harness.Snapshot(ps);
        var state = Harness.Snapshot(new[] { State(hd, 0).exp_avg!, State(hd, 0).parameter_rates! });
        Assert.Throws<ArgumentException>(() => hd.step());
        Harness.AssertUnchanged(before, ps, "parameters");
        Harness.AssertUnchanged(state, new[] { State(hd, 0).exp_avg!, State(hd, 0).parameter_rates! }, "state");
        Assert.That(hd.Steps, Is.EqualTo(1));
        ((HypergradientAdam.ParamGroup)hd.ParamGroups.First()).Options.beta2 = 2;
        Assert.Throws<ArgumentException>(() => hd.step());
    }

    [Test]
    public void RatesAreReadableAndBetasSchedulable()
    {
        using var model = Harness.Mlp(2);
        var ps = model.parameters().ToList();
        var (x, y) = Harness.Data(3);
        using var hd = new HypergradientAdam(ps, 0.01, 1e-3, HypergradientScope.PerParameter, rule: HypergradientRule.Normalized);
        hd.Betas = (0.8, 0.99);
        Assert.That(((IBetas)hd.ParamGroups.First()).Betas, Is.EqualTo((0.8, 0.99)));
        for (int step = 0; step < 3; step++)
        {
            Harness.Backward(model, x, y);
            hd.step();
        }
        using var rates = hd.ParameterLearningRates(ps[0]);
        Assert.That(rates.shape, Is.EqualTo(ps[0].shape));
        Assert.That(hd.TensorLearningRates(), Has.Count.EqualTo(ps.Count));
        Assert.That(rates.ne(0.01).any().item<bool>(), Is.True, "the rates moved");
        using var global = new HypergradientAdam(ps, 0.01, 1e-3);
        Assert.Throws<InvalidOperationException>(() => global.ParameterLearningRates(ps[0]));
    }
}
