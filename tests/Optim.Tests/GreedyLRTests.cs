using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim.Tests;

/// <summary>
/// GreedyLR against the worked example and the traces written out in docs/greedylr.md, derived by hand from the
/// behaviour of the authors' reference (the remarks of <see cref="GreedyLR"/> list where ours differs), one per feature; state round trip; driving real optimizers; bad input.
/// Factor 0.5 keeps every expected rate exact in binary.
/// </summary>
[TestFixture]
public class GreedyLRTests
{
    /// <summary>A TorchSharp SGD with one param group per initial rate.</summary>
    private static SGD Optimizer(params double[] rates)
    {
        var groups = rates.Select(lr => new SGD.ParamGroup(new[] { new Parameter(torch.zeros(2)) }, lr: lr)).ToArray();
        return torch.optim.SGD(groups, rates[0]);
    }

    /// <summary>Steps the scheduler through the metrics; returns each group's rate after each step.</summary>
    private static double[][] Trace(GreedyLR scheduler, torch.optim.Optimizer optimizer, params double[] metrics)
    {
        var result = new List<double[]>();
        foreach (var m in metrics)
        {
            scheduler.step(m);
            var fromGroups = optimizer.ParamGroups.Select(g => g.LearningRate).ToArray();
            Assert.That(scheduler.LearningRates, Is.EqualTo(fromGroups), "param groups must hold the new rates right after step");
            Assert.That(scheduler.get_last_lr(), Is.EqualTo(fromGroups), "get_last_lr() must be current");
            result.Add(fromGroups);
        }
        return result.ToArray();
    }

    private static void AssertRates(double[][] trace, int group, params double[] expected)
    {
        var actual = trace.Select(r => r[group]).ToArray();
        Assert.That(actual, Is.EqualTo(expected).Within(1e-15), $"rates of group {group}: [{string.Join(", ", actual)}]");
    }

    [Test]
    public void WorkedExampleOfTheSpec()
    {
        using var opt = Optimizer(0.1);
        var s = new GreedyLR(opt, factor: 0.5, patience: 1, min_lr: new[] { 0.01 }, max_lr: new[] { 0.3 });
        var trace = Trace(s, opt, 1.0, 0.9, 0.8, 0.7, 0.6, 0.65, 0.62, 0.61, 0.7, 0.55, 0.5);
        AssertRates(trace, 0, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3, 0.15, 0.15, 0.075, 0.075, 0.15);
    }

    [Test]
    public void PatienceWaitsForThePatiencePlusFirstConsecutiveEvaluation()
    {
        using var opt = Optimizer(0.1);
        var s = new GreedyLR(opt, factor: 0.5, patience: 2, threshold: 0, min_lr: new[] { 0.001 }, max_lr: new[] { 1.0 });
        var trace = Trace(s, opt, 5, 4, 3, 3, 3, 3, 2, 1, 1);
        AssertRates(trace, 0, 0.1, 0.1, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1);
        Assert.That(s.State.NumBad, Is.EqualTo(1));
        Assert.That(s.State.Best, Is.EqualTo(1.0));
    }

    [Test]
    public void CooldownIgnoresEvaluationsAfterADecrease()
    {
        using var opt = Optimizer(0.1);
        var s = new GreedyLR(opt, factor: 0.5, patience: 0, threshold: 0, cooldown: 2, min_lr: new[] { 0.001 }, max_lr: new[] { 1.0 });
        var trace = Trace(s, opt, 1, 2, 0.5, 0.4, 3, 0.1);
        AssertRates(trace, 0, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05);
        Assert.That(s.State.Best, Is.EqualTo(1.0), "evaluations during cooldown must not update the best");
        Assert.That(s.State.CooldownCounter, Is.EqualTo(1));
    }

    [Test]
    public void WarmupIgnoresEvaluationsAfterAnIncrease()
    {
        using var opt = Optimizer(0.1);
        var s = new GreedyLR(opt, factor: 0.5, patience: 0, threshold: 0, warmup: 2, min_lr: new[] { 0.001 }, max_lr: new[] { 1.0 });
        var trace = Trace(s, opt, 1, 0.9, 0.8, 0.7, 0.6);
        AssertRates(trace, 0, 0.2, 0.2, 0.2, 0.4, 0.4);
        Assert.That(s.State.Best, Is.EqualTo(0.7));
        Assert.That(s.State.WarmupCounter, Is.EqualTo(1));
    }

    [Test]
    public void SmoothingComparesTheRollingMean()
    {
        using var opt = Optimizer(0.1);
        var s = new GreedyLR(opt, factor: 0.5, patience: 0, threshold: 0, smooth: true, window_size: 2, min_lr: new[] { 0.001 }, max_lr: new[] { 1.0 });
        // Means: 4, (4+2)/2 = 3, (2+3)/2 = 2.5, (3+5)/2 = 4.
        var trace = Trace(s, opt, 4, 2, 3, 5);
        AssertRates(trace, 0, 0.2, 0.4, 0.8, 0.4);
        Assert.That(s.State.Best, Is.EqualTo(2.5));
        Assert.That(s.State.Window, Is.EqualTo(new[] { 3.0, 5.0 }));
    }

    [Test]
    public void MaxModeTreatsHigherAsBetter()
    {
        using var opt = Optimizer(0.1);
        var s = new GreedyLR(opt, mode: "max", factor: 0.5, patience: 0, threshold: 0, min_lr: new[] { 0.001 }, max_lr: new[] { 1.0 });
        var trace = Trace(s, opt, 0.5, 0.6, 0.55, 0.7);
        AssertRates(trace, 0, 0.2, 0.4, 0.2, 0.4);
    }

    [Test]
    public void RelativeThresholdScalesWithTheBest()
    {
        using var opt = Optimizer(0.1);
        var s = new GreedyLR(opt, factor: 0.5, patience: 0, threshold: 0.1, threshold_mode: "rel", min_lr: new[] { 0.001 }, max_lr: new[] { 1.0 });
        // Better means v < best * 0.9: 0.95 is not (< 0.9), 0.85 is, 0.8 is not (< 0.765).
        var trace = Trace(s, opt, 1.0, 0.95, 0.85, 0.8);
        AssertRates(trace, 0, 0.2, 0.1, 0.2, 0.1);
    }

    [Test]
    public void SeveralGroupsMoveTogetherUntilEachMeetsItsOwnBound()
    {
        using var opt = Optimizer(0.1, 0.01);
        var s = new GreedyLR(opt, factor: 0.5, patience: 0, threshold: 0, min_lr: new[] { 0.05, 0.001 }, max_lr: new[] { 0.3, 0.1 });
        var trace = Trace(s, opt, 1, 0.9, 0.8, 2, 3, 4);
        AssertRates(trace, 0, 0.2, 0.3, 0.3, 0.15, 0.075, 0.05);
        AssertRates(trace, 1, 0.02, 0.04, 0.08, 0.04, 0.02, 0.01);
    }

    [Test]
    public void DefaultBoundsAreRelativeToEachGroupsInitialRate()
    {
        using var opt = Optimizer(2e-5, 0.1);
        var s = new GreedyLR(opt, factor: 0.5, patience: 0);
        Assert.That(s.State.MinLr, Is.EqualTo(new[] { 2e-7, 1e-3 }).Within(1e-20));
        Assert.That(s.State.MaxLr, Is.EqualTo(new[] { 2e-4, 1.0 }).Within(1e-15));
        // The loss only gets worse: the fine-tuning rate halves down to its own floor, not to 1e-3.
        var trace = Trace(s, opt, Enumerable.Range(1, 10).Select(i => (double)i).ToArray());
        Assert.That(trace[^1][0], Is.EqualTo(2e-7).Within(1e-20));
        Assert.That(trace[^1][1], Is.EqualTo(1e-3).Within(1e-18));
    }

    [Test]
    public void ResetRestoresTheInitialRatesAfterTheBudgetIsSpentAtTheFloor()
    {
        using var opt = Optimizer(0.1);
        var s = new GreedyLR(opt, factor: 0.5, patience: 0, threshold: 0, reset_start: 2, min_lr: new[] { 0.025 }, max_lr: new[] { 1.0 });
        // 1: up to 0.2. Then bad: 0.1, 0.05, 0.025 (lands on the floor: budget 1), stays 0.025 (budget 0:
        // reset to 0.1, best forgotten). 0.5 is then better than +inf: up to 0.2.
        var trace = Trace(s, opt, 1, 2, 2, 2, 2, 0.5);
        AssertRates(trace, 0, 0.2, 0.1, 0.05, 0.025, 0.1, 0.2);
        Assert.That(s.State.Resets, Is.EqualTo(1));
        Assert.That(s.State.Best, Is.EqualTo(0.5));
        Assert.That(s.State.ResetBudget, Is.EqualTo(2));
    }

    [Test]
    public void TrendModeKeepsMovingThroughWarmupAndCooldown()
    {
        using var a = Optimizer(0.1);
        var trend = new GreedyLR(a, factor: 0.5, patience: 0, threshold: 0, cooldown: 1, warmup: 1, min_lr: new[] { 0.001 }, max_lr: new[] { 1.0 }, trend: true);
        AssertRates(Trace(trend, a, 1, 0.9, 2, 3, 0.5), 0, 0.2, 0.4, 0.2, 0.1, 0.2);
        using var b = Optimizer(0.1);
        var reference = new GreedyLR(b, factor: 0.5, patience: 0, threshold: 0, cooldown: 1, warmup: 1, min_lr: new[] { 0.001 }, max_lr: new[] { 1.0 });
        AssertRates(Trace(reference, b, 1, 0.9, 2, 3, 0.5), 0, 0.2, 0.2, 0.1, 0.1, 0.2);
    }

    [TestCase(double.NaN)]
    [TestCase(double.PositiveInfinity)]
    [TestCase(double.NegativeInfinity)]
    public void NonFiniteMetricCountsAsNotBetterAndLeavesTheBest(double metric)
    {
        using var opt = Optimizer(0.1);
        var s = new GreedyLR(opt, factor: 0.5, patience: 0, threshold: 0, smooth: true, window_size: 3, min_lr: new[] { 0.001 }, max_lr: new[] { 1.0 });
        var trace = Trace(s, opt, 1, metric, 0.5);
        AssertRates(trace, 0, 0.2, 0.1, 0.2);
        Assert.That(s.State.Best, Is.EqualTo(0.75), "window [1, 0.5]: the non-finite metric never entered it");
        Assert.That(s.State.Window, Is.EqualTo(new[] { 1.0, 0.5 }));
    }

    [Test]
    public void MetricTensorOnTheCpuEqualsTheDouble()
    {
        using var a = Optimizer(0.1);
        using var b = Optimizer(0.1);
        var sa = new GreedyLR(a, factor: 0.5, patience: 1);
        var sb = new GreedyLR(b, factor: 0.5, patience: 1);
        foreach (var m in new[] { 3.0, 2.5, 2.0, 2.2, 2.4, 1.0 })
        {
            sa.step(m);
            sb.step(torch.tensor(m));
        }
        Assert.That((sb.State.Best, sb.State.NumGood, sb.State.NumBad, sb.State.Steps), Is.EqualTo((sa.State.Best, sa.State.NumGood, sa.State.NumBad, sa.State.Steps)));
        Assert.That(sb.LearningRates, Is.EqualTo(sa.LearningRates));
        Assert.Throws<ArgumentException>(() => sb.step(torch.ones(2)));
    }

    [Test]
    public void MetricLessStepsThrow()
    {
        using var opt = Optimizer(0.1);
        var s = new GreedyLR(opt);
        lr_scheduler.LRScheduler asBase = s;
        Assert.That(() => asBase.step(), Throws.InvalidOperationException.With.Message.Contains("Use step(double metric)"));
        Assert.That(() => asBase.step(3), Throws.InvalidOperationException.With.Message.Contains("Use step(double metric)"));
        // Through the base class, step(metric) reaches GreedyLR too.
        asBase.step(1.0, null);
        Assert.That(s.State.Steps, Is.EqualTo(1));
    }

    [Test]
    public void SaveLoadContinueEvolvesIdentically()
    {
        var metrics = Enumerable.Range(0, 80).Select(i => Math.Sin(i * 0.7) + 3.0 / (1 + i)).ToArray();
        GreedyLR Make(SGD o) => new(o, factor: 0.7, patience: 2, cooldown: 1, warmup: 1, smooth: true, window_size: 5, reset_start: 3,
            min_lr: new[] { 0.02, 0.001 }, max_lr: new[] { 0.5, 0.1 }, threshold: 1e-3, threshold_mode: "rel", trend: true);

        using var a = Optimizer(0.1, 0.01);
        var sa = Make(a);
        var full = Trace(sa, a, metrics);

        using var b = Optimizer(0.1, 0.01);
        var sb = Make(b);
        var firstHalf = Trace(sb, b, metrics.Take(40).ToArray());
        Assert.That(firstHalf, Is.EqualTo(full.Take(40)), "the interrupted run must follow the uninterrupted one up to the save");
        var stream = new MemoryStream();
        sb.save_state_dict(new BinaryWriter(stream));
        var rates = b.ParamGroups.Select(g => g.LearningRate).ToArray();

        // A fresh optimizer at the saved rates, and a scheduler built with other settings: the state brings its own.
        using var c = Optimizer(rates);
        var sc = new GreedyLR(c);
        Assert.That(sc.Config, Is.EqualTo(new GreedyLRSettings("min", 0.95, 10, 1e-6, "abs", 0, 0, 1e-8, false, 50, 500, false)));
        stream.Position = 0;
        sc.load_state_dict(new BinaryReader(stream));
        Assert.That(sc.Config, Is.EqualTo(new GreedyLRSettings("min", 0.7, 2, 1e-3, "rel", 1, 1, 1e-8, true, 5, 3, true)));
        Assert.That(sc.Config, Is.EqualTo(sb.Config));
        var resumed = Trace(sc, c, metrics.Skip(40).ToArray());

        for (int i = 0; i < 40; i++)
        {
            Assert.That(resumed[i], Is.EqualTo(full[40 + i]), $"rates differ at evaluation {40 + i}");
        }
        Assert.That(sc.State.Window, Is.EqualTo(sa.State.Window));
        Assert.That(sc.State.Best, Is.EqualTo(sa.State.Best));
        Assert.That(sc.State.Steps, Is.EqualTo(sa.State.Steps));
        Assert.That(sc.State.Resets, Is.EqualTo(sa.State.Resets));
        Assert.That(sa.State.Resets, Is.GreaterThanOrEqualTo(1), "the trace should exercise at least one reset");
    }

    [Test]
    public void AStateWithoutResetsLoadsAfterManyDecreasesAtTheFloor()
    {
        // reset_start 0: the reset budget counts down past 0 at every decrease at the floor.
        using var a = Optimizer(0.1);
        var sa = new GreedyLR(a, patience: 0, reset_start: 0, min_lr: new[] { 0.05 });
        Trace(sa, a, Enumerable.Range(0, 30).Select(i => 1.0 + i).ToArray());
        Assert.That(sa.State.ResetBudget, Is.LessThan(0));
        var stream = new MemoryStream();
        sa.save_state_dict(new BinaryWriter(stream));

        using var b = Optimizer(a.ParamGroups.First().LearningRate);
        var sb = new GreedyLR(b);
        stream.Position = 0;
        sb.load_state_dict(new BinaryReader(stream));
        Assert.That(sb.State.ResetBudget, Is.EqualTo(sa.State.ResetBudget));
        sa.step(100.0);
        sb.step(100.0);
        Assert.That(sb.State, Is.EqualTo(sa.State).Using<GreedyLRState>((x, y) => x.ResetBudget == y.ResetBudget && x.Steps == y.Steps &&
            x.LearningRates.SequenceEqual(y.LearningRates) && x.NumBad == y.NumBad));
    }

    [Test]
    public void LoadingGarbageChangesNothing()
    {
        using var opt = Optimizer(0.1);
        var s = new GreedyLR(opt, factor: 0.5, patience: 0);
        s.step(1.0);
        var before = s.State;
        var stream = new MemoryStream();
        var w = new BinaryWriter(stream);
        w.Write("SomethingElse");
        stream.Position = 0;
        Assert.Throws<InvalidDataException>(() => s.load_state_dict(new BinaryReader(stream)));
        Assert.That(s.State.Best, Is.EqualTo(before.Best));
        Assert.That(s.State.Steps, Is.EqualTo(before.Steps));
    }

    private static IEnumerable<TestCaseData> BadArguments()
    {
        yield return new TestCaseData((Func<torch.optim.Optimizer, GreedyLR>)(o => new GreedyLR(o, factor: 1.0)), "factor", "factor must be in (0, 1)").SetName("Factor1");
        yield return new TestCaseData((Func<torch.optim.Optimizer, GreedyLR>)(o => new GreedyLR(o, factor: 0.0)), "factor", "factor must be in (0, 1)").SetName("Factor0");
        yield return new TestCaseData((Func<torch.optim.Optimizer, GreedyLR>)(o => new GreedyLR(o, patience: -1)), "patience", "patience must be >= 0").SetName("NegativePatience");
        yield return new TestCaseData((Func<torch.optim.Optimizer, GreedyLR>)(o => new GreedyLR(o, cooldown: -1)), "cooldown", "cooldown must be >= 0").SetName("NegativeCooldown");
        yield return new TestCaseData((Func<torch.optim.Optimizer, GreedyLR>)(o => new GreedyLR(o, warmup: -2)), "warmup", "warmup must be >= 0").SetName("NegativeWarmup");
        yield return new TestCaseData((Func<torch.optim.Optimizer, GreedyLR>)(o => new GreedyLR(o, window_size: 0)), "window_size", "window_size must be >= 1").SetName("ZeroWindow");
        yield return new TestCaseData((Func<torch.optim.Optimizer, GreedyLR>)(o => new GreedyLR(o, mode: "minimum")), "mode", "mode 'minimum' is unknown").SetName("UnknownMode");
        yield return new TestCaseData((Func<torch.optim.Optimizer, GreedyLR>)(o => new GreedyLR(o, threshold_mode: "absolute")), "threshold_mode", "threshold_mode 'absolute' is unknown").SetName("UnknownThresholdMode");
        yield return new TestCaseData((Func<torch.optim.Optimizer, GreedyLR>)(o => new GreedyLR(o, min_lr: new[] { 0.5 }, max_lr: new[] { 0.1 })), "min_lr", "min_lr[0] = 0.5 is greater than max_lr[0] = 0.1").SetName("MinAboveMax");
        yield return new TestCaseData((Func<torch.optim.Optimizer, GreedyLR>)(o => new GreedyLR(o, min_lr: new[] { 1e-4, 1e-4 })), "min_lr", "min_lr has 2 values but the optimizer has 3 param groups").SetName("WrongBoundCount");
    }

    [TestCaseSource(nameof(BadArguments))]
    public void BadArgumentsAreRejectedWithAClearMessage(Func<torch.optim.Optimizer, GreedyLR> make, string param, string message)
    {
        using var opt = Optimizer(0.1, 0.05, 0.01);
        var ex = Assert.Throws<ArgumentException>(() => make(opt));
        Assert.That(ex!.Message, Does.Contain(message));
        Assert.That(ex.ParamName, Is.EqualTo(param));
        Assert.That(opt.ParamGroups.Select(g => g.LearningRate), Is.EqualTo(new[] { 0.1, 0.05, 0.01 }));
    }

    [TestCase("sgd")]
    [TestCase("adam")]
    [TestCase("fused")]
    public void DrivesRealOptimizersOnARealModel(string which)
    {
        // A student learning a teacher network: training and validation losses fall together early on.
        using var model = Harness.Mlp(50);
        using var teacher = Harness.Mlp(53);
        var (x, _) = Harness.Data(51, rows: 64);
        var (vx, _) = Harness.Data(52, rows: 64);
        Tensor y, vy;
        using (torch.no_grad())
        {
            y = teacher.call(x);
            vy = teacher.call(vx);
        }
        torch.optim.Optimizer opt = which switch
        {
            "sgd" => torch.optim.SGD(model.parameters(), 0.05, momentum: 0.9),
            "adam" => torch.optim.Adam(model.parameters(), 0.01),
            _ => new FusedSGD(model.parameters(), 0.05, momentum: 0.9),
        };
        using var _ = opt;
        double lr0 = opt.ParamGroups.First().LearningRate;
        var s = new GreedyLR(opt, factor: 0.8, patience: 1);
        double first = double.NaN, last = double.NaN;
        var seen = new HashSet<double>();
        for (int epoch = 0; epoch < 30; epoch++)
        {
            for (int i = 0; i < 5; i++)
            {
                Harness.Backward(model, x, y);
                if (opt is FusedSGD)
                {
                    opt.step();
                }
                else
                {
                    Harness.StepTorchSharp(opt);
                }
            }
            double val;
            using (torch.no_grad())
            {
                val = nn.functional.mse_loss(model.call(vx), vy).ToDouble();
            }
            first = double.IsNaN(first) ? val : first;
            last = val;
            s.step(val);
            Assert.That(opt.ParamGroups.First().LearningRate, Is.EqualTo(s.LearningRates[0]));
            seen.Add(s.LearningRates[0]);
        }
        Assert.That(seen.Count, Is.GreaterThan(1), "GreedyLR never changed the rate");
        Assert.That(seen.Max(), Is.GreaterThan(lr0), "the validation loss improved early on, so the rate must have risen");
        Assert.That(double.IsFinite(last), Is.True);
        Assert.That(s.State.Steps, Is.EqualTo(30));
    }
}
