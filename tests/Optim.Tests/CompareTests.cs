using System.Text.RegularExpressions;
using Optim.Bench.Comparison;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// The learning-rate comparison (bench/Optim.Bench, `compare`): runs are deterministic for a seed, every
/// method of a seed starts from the same point, the sweep picks its best rate, divergence is reported,
/// and a whole comparison writes its report, CSV files and plots. Uses the synthetic NMF task, which
/// needs no downloaded data.
/// </summary>
[TestFixture]
public class CompareTests
{
    private static CompareSettings Settings(string outDir, string[] methods, double? lr = 0.1, double? adamLr = 0.01,
        MetricStepping stepping = MetricStepping.Eval, int epochs = 2) =>
        new(DataDir: "/nonexistent", OutDir: outDir, Tasks: new[] { "nmf-synthetic" }, Methods: methods, Seeds: 2, Epochs: epochs, BatchSize: 100,
            EvalEvery: 10, SgdLr: lr, AdamLr: adamLr, HypergradLr: 0.02, Stepping: stepping, SweepFraction: 0.5, Tolerance: 0.01, Plots: true,
            CommandLine: "test");

    private static TrainingTask Synthetic() => TrainingTask.Create("nmf-synthetic", new Lazy<Digits>(() => throw new AssertionException("no digits needed")));

    private static RunResult Train(Runner runner, TrainingTask task, string method, int seed, double lr = 0.1, int steps = 40) =>
        runner.Train(task, Method.Find(method), seed, lr, steps, 10, method);

    [TestCase("sgd-greedylr", false)]
    [TestCase("sgd-plateau", true)]
    [TestCase("adam-greedylr-trend", true)]
    [TestCase("hd-parameter", false)]
    [TestCase("adam-cosine", false)]
    [TestCase("sgd-sls", false)]
    [TestCase("adamw-cosine", false)]
    [TestCase("adamw-greedylr", true)]
    [TestCase("sgd-cosine-bounded", false)]
    [TestCase("sgd-learned", false)]
    public void RunsAreDeterministicForASeed(string method, bool metricPerStep)
    {
        var stepping = metricPerStep ? MetricStepping.Step : MetricStepping.Eval;
        using var task = Synthetic();
        var runner = new Runner(Settings("/tmp", new[] { method }, stepping: stepping), new LiveProgress(TextWriter.Null, 1));
        var a = Train(runner, task, method, seed: 1);
        var b = Train(runner, task, method, seed: 1);
        var c = Train(runner, task, method, seed: 2);
        Assert.That(a.Curve, Has.Count.EqualTo(5), "step 0 and every 10 steps up to 40");
        Assert.That(b.Curve, Is.EqualTo(a.Curve), "the same seed must give the same curve, bit for bit");
        Assert.That(c.Curve.Select(p => p.EvalLoss), Is.Not.EqualTo(a.Curve.Select(p => p.EvalLoss)), "another seed must give another run");
    }

    [Test]
    public void EveryMethodOfASeedStartsFromTheSamePointAndBaseRate()
    {
        using var task = Synthetic();
        var runner = new Runner(Settings("/tmp", Method.All.Select(m => m.Name).ToArray()), new LiveProgress(TextWriter.Null, 1));
        foreach (var seed in new[] { 0, 1 })
        {
            var starts = Method.All.ToDictionary(m => m, m => Train(runner, task, m.Name, seed, steps: 10).Curve[0]);
            Assert.That(starts.Values.Select(p => p.EvalLoss).Distinct().Count(), Is.EqualTo(1), $"seed {seed}: every method must start from one initialisation");
            foreach (var (m, p) in starts)
            {
                // Cosine's warmup starts at 10% of the base rate; Sls's first step size is the base rate.
                // HD's per-parameter rates are float32 tensors like the parameters.
                double expected = m.Schedule == "cosine" ? 0.01 : 0.1;
                Assert.That(p.Lr, Is.EqualTo(expected).Within(1e-5).Percent, $"seed {seed}, {m.Name}: the rate at step 0");
            }
        }
    }

    /// <summary>
    /// Every run records its cost at each evaluation: one forward pass per step, except Sls, charged one per
    /// closure evaluation (at least one per step, more when its line search tries several step sizes).
    /// </summary>
    [Test]
    public void RunsAreChargedTheirForwardPasses()
    {
        using var task = Synthetic();
        var runner = new Runner(Settings("/tmp", new[] { "sgd-constant", "sgd-sls" }), new LiveProgress(TextWriter.Null, 1));
        var constant = Train(runner, task, "sgd-constant", seed: 0);
        var sls = Train(runner, task, "sgd-sls", seed: 0);
        Assert.That(constant.Costs.Select(c => c.ForwardPasses), Is.EqualTo(constant.Curve.Select(p => (long)p.Step)), "one forward pass per step");
        Assert.That(sls.Costs, Has.Count.EqualTo(sls.Curve.Count));
        Assert.That(sls.Costs.Zip(sls.Curve).All(x => x.First.ForwardPasses >= x.Second.Step), Is.True, "at least one per step");
        Assert.That(sls.Costs[^1].ForwardPasses, Is.GreaterThan(40), "its line search evaluated more than once somewhere");
        Assert.That(sls.Costs.Select(c => c.Seconds), Is.Ordered, "training seconds only grow");
        Assert.That(sls.Curve.Skip(1).Select(p => p.Lr).Distinct().Count(), Is.GreaterThan(1), "its step size moves");
    }

    [Test]
    public void TheSweepChoosesItsBestFiniteRate()
    {
        using var task = Synthetic();
        var runner = new Runner(Settings("/tmp", new[] { "sgd-constant" }, lr: null, epochs: 1), new LiveProgress(TextWriter.Null, 1));
        var sweep = new List<SweepPoint>();
        double chosen = runner.BaseRate(task, Family.Sgd, steps: 20, evalEvery: 10, sweep);
        Assert.That(sweep.Select(s => s.Lr), Is.EqualTo(Runner.SgdGrid), "one point per rate of the grid");
        Assert.That(sweep.Count(s => s.Chosen), Is.EqualTo(1));
        var best = sweep.Where(s => double.IsFinite(s.FinalLoss)).MinBy(s => s.FinalLoss)!;
        Assert.That(chosen, Is.EqualTo(best.Lr));
        Assert.That(sweep.Single(s => s.Chosen).Lr, Is.EqualTo(chosen));
        Assert.That(sweep.Select(s => s.Steps), Has.All.EqualTo(10), "half of the 20-step budget");
    }

    [Test]
    public void ADivergingRunIsReportedNotThrown()
    {
        using var task = new LeastSquares();
        var runner = new Runner(Settings("/tmp", new[] { "sgd-constant" }), new LiveProgress(TextWriter.Null, 1));
        var fine = Train(runner, task, "sgd-constant", seed: 0, lr: 0.01);
        Assert.That(fine.Diverged, Is.False);
        Assert.That(fine.FinalLoss, Is.LessThan(fine.Curve[0].EvalLoss), "a small rate trains");
        var r = Train(runner, task, "sgd-constant", seed: 0, lr: 1e6);
        Assert.That(r.Diverged, Is.True);
        Assert.That(r.FinalLoss, Is.EqualTo(double.PositiveInfinity));
        Assert.That(r.Curve[^1].Step, Is.LessThan(40), "training stops at the first non-finite loss");
    }

    /// <summary>Least squares on random data: a rate far above 2 / curvature overflows within a few steps.</summary>
    private sealed class LeastSquares : TrainingTask
    {
        private readonly Tensor _x = torch.randn(new long[] { 1000, 10 }, generator: new torch.Generator(5));
        private readonly Tensor _y = torch.randn(new long[] { 1000 }, generator: new torch.Generator(6));

        public override string Name => "least-squares";

        public override string Description => "least squares";

        public override string EvalName => "training objective";

        public override bool HasAccuracy => false;

        public override long TrainExamples => 1000;

        public override int DefaultEpochs => 1;

        public override Learner Create(int seed) => new Fit(_x, _y, new Parameter(torch.zeros(10)));

        public override void Dispose()
        {
            _x.Dispose();
            _y.Dispose();
        }

        private sealed class Fit : Learner
        {
            private readonly Tensor _x;
            private readonly Tensor _y;
            private readonly Parameter _w;

            public Fit(Tensor x, Tensor y, Parameter w)
            {
                (_x, _y, _w) = (x, y, w);
                Groups = new[] { new ParameterGroup("w", new[] { w }) };
            }

            public override IReadOnlyList<ParameterGroup> Groups { get; }

            public override Tensor Loss(Tensor batch) => (_x.index_select(0, batch).matmul(_w) - _y.index_select(0, batch)).square().mean();

            public override (double Loss, double Accuracy) Evaluate()
            {
                using var noGrad = torch.no_grad();
                return ((_x.matmul(_w) - _y).square().mean().ToDouble(), double.NaN);
            }

            public override void Dispose() => _w.Dispose();
        }
    }

    [Test]
    public void BoundedMethodsRunOnlyOnTasksWithABound()
    {
        using var nmf = Synthetic();
        using var ls = new LeastSquares();
        var bounded = Method.Find("sgd-constant-bounded");
        Assert.That(Compare.Runs(nmf, bounded), Is.True);
        Assert.That(Compare.Runs(ls, bounded), Is.False);
        Assert.That(Compare.Runs(ls, Method.Find("sgd-constant")), Is.True);
        var runner = new Runner(Settings("/tmp", new[] { bounded.Name }), new LiveProgress(TextWriter.Null, 1));
        var e = Assert.Throws<InvalidOperationException>(() => Train(runner, ls, bounded.Name, seed: 0));
        Assert.That(e!.Message, Does.Contain("stability bound"));
        foreach (var schedule in Method.Schedules)
        {
            var m = Method.Find($"sgd-{schedule}-bounded");
            Assert.That((m.Family, m.Schedule, m.Bounded), Is.EqualTo((Family.Sgd, schedule, true)), m.Name);
        }
    }

    [Test]
    public void TheClipIsInactiveBelowTheBoundAndHoldsARateFarAboveIt()
    {
        using var task = Synthetic();
        var runner = new Runner(Settings("/tmp", new[] { "sgd-constant" }), new LiveProgress(TextWriter.Null, 1));
        // A small rate stays under the bound at every step: the bounded run is the plain run, bit for bit.
        var plainSmall = Train(runner, task, "sgd-constant", seed: 0, lr: 1e-3);
        var boundedSmall = Train(runner, task, "sgd-constant-bounded", seed: 0, lr: 1e-3);
        Assert.That(boundedSmall.Curve, Is.EqualTo(plainSmall.Curve));
        // Far above the bound the plain run fails (diverges, or collapses a factor to zero); the clipped one trains
        // (after an early rise while momentum builds up: 120 steps, docs/design.md).
        var plain = Train(runner, task, "sgd-constant", seed: 0, lr: 100, steps: 120);
        var bounded = Train(runner, task, "sgd-constant-bounded", seed: 0, lr: 100, steps: 120);
        Assert.That(bounded.Diverged, Is.False);
        Assert.That(bounded.FinalLoss, Is.LessThan(bounded.Curve[0].EvalLoss / 2), "the clipped run trains");
        Assert.That(plain.Diverged || plain.FinalLoss > 10 * bounded.FinalLoss, Is.True, $"plain {plain.FinalLoss}, bounded {bounded.FinalLoss}");
        Assert.That(bounded.Curve.Select(p => p.Lr), Has.All.EqualTo(100.0), "the curve records the scheduled rate; the clip never feeds back");
    }

    [Test]
    public void AdamWMethodsDriveFusedAdamWFromTheAdamRate()
    {
        var m = Method.Find("adamw-cosine");
        Assert.That((m.Family, m.RateFamily), Is.EqualTo((Family.AdamW, Family.Adam)));
        using var p = new Parameter(torch.ones(4));
        using var opt = m.CreateOptimizer(new[] { new ParameterGroup("p", new[] { p }) }, 0.003, new MethodContext(100, 10, MetricStepping.Eval, 0.02));
        Assert.That(opt, Is.InstanceOf<FusedAdamW>());
        Assert.That(opt.ParamGroups.Single().LearningRate, Is.EqualTo(0.003));
        Assert.That(Method.All.Where(x => x.Family == Family.AdamW).Select(x => x.Name), Is.EquivalentTo(new[] { "adamw-constant", "adamw-cosine", "adamw-greedylr" }));
        // They run where Adam is the usual choice, not on NMF.
        using var nmf = Synthetic();
        Assert.That(Compare.Runs(nmf, m), Is.False);
        Assert.That(Compare.Runs(nmf, Method.Find("adam-cosine")), Is.True);
    }

    [Test]
    public void AdamHdMethodsDriveHypergradientAdamFromTheAdamRate()
    {
        Assert.That(Method.All.Where(x => x.Family == Family.AdamHd).Select(x => x.Name), Is.EquivalentTo(new[] { "adam-hd-tensor", "adam-hd-param" }));
        using var p = new Parameter(torch.ones(4));
        foreach (var (name, scope) in new[] { ("adam-hd-tensor", HypergradientScope.PerTensor), ("adam-hd-param", HypergradientScope.PerParameter) })
        {
            var m = Method.Find(name);
            Assert.That((m.Family, m.RateFamily), Is.EqualTo((Family.AdamHd, Family.Adam)));
            using var opt = m.CreateOptimizer(new[] { new ParameterGroup("p", new[] { p }) }, 0.003, new MethodContext(100, 10, MetricStepping.Eval, 0.02));
            Assert.That(opt, Is.InstanceOf<HypergradientAdam>());
            Assert.That(((HypergradientAdam)opt).Scope, Is.EqualTo(scope));
            Assert.That(Method.CurrentRate(opt), Is.EqualTo(0.003).Within(1e-9));
            // They run where Adam is the usual choice, not on NMF.
            using var nmf = Synthetic();
            Assert.That(Compare.Runs(nmf, m), Is.False);
        }
    }

    [Test]
    public void TheLanguageModelNeedsItsText()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"optim-lm-{Guid.NewGuid():N}");
        var e = Assert.Throws<FileNotFoundException>(() => CharText.Load(CharText.PathFor(Path.Combine(dir, "mnist"))));
        Assert.That(e!.Message, Does.Contain("scripts/setup.sh").And.Contain(Path.Combine(dir, "text", "kjv.txt")));
    }

    [Test]
    public void TheLanguageModelTrainsAndHasAMillionParameters()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"optim-lm-{Guid.NewGuid():N}");
        try
        {
            // A stand-in text: a few sentences repeated to 1.1 MB (the real one is the King James text setup.sh writes).
            Directory.CreateDirectory(Path.Combine(dir, "text"));
            var sentences = new[] { "In the beginning was the word.\n", "And the light shineth in darkness.\n", "Let there be light: and there was light.\n" };
            var sb = new System.Text.StringBuilder();
            for (int i = 0; sb.Length < 1_100_000; i++)
            {
                sb.Append(sentences[i * 7 % 3]);
            }
            string path = Path.Combine(dir, "text", CharText.FileName);
            File.WriteAllText(path, sb.ToString());
            Assert.That(CharText.PathFor(Path.Combine(dir, "mnist")), Is.EqualTo(path));
            var text = new Lazy<CharText>(() => CharText.Load(path));
            using var task = TrainingTask.Create("char-lm", new Lazy<Digits>(() => throw new AssertionException("no digits needed")), text);
            Assert.That(task.Suits(Method.Find("adamw-cosine")), Is.True);
            Assert.That(task.Suits(Method.Find("sgd-cosine")), Is.False, "the LM runs the AdamW methods");
            Assert.That(task.Seeds, Is.EqualTo(1), "one seed in the default run, for the time budget");
            using (var learner = task.Create(0))
            {
                long count = learner.Groups.SelectMany(g => g.Parameters).Sum(p => p.numel());
                Assert.That(count, Is.EqualTo(CharLanguageModel.ParameterCount(text.Value.Vocabulary)));
                Assert.That(count, Is.GreaterThan(1_000_000));
            }
            var runner = new Runner(Settings("/tmp", new[] { "adamw-constant" }), new LiveProgress(TextWriter.Null, 1));
            Assert.That(runner.Budget(task).Steps, Is.EqualTo(TrainingTask.LanguageModelSteps).Or.EqualTo(2 * (int)(task.TrainExamples / CharLanguageModel.Sequences)),
                "its own step budget unless --epochs is given");
            var r = runner.Train(task, Method.Find("adamw-constant"), 0, 3e-3, 6, 3, "lm");
            Assert.That(r.Diverged, Is.False);
            Assert.That(r.Curve[0].EvalLoss, Is.EqualTo(Math.Log(text.Value.Vocabulary)).Within(1.0), "an untrained model is near uniform");
            Assert.That(r.Curve[^1].EvalLoss, Is.LessThan(r.Curve[0].EvalLoss), "six AdamW steps lower the validation loss");
            text.Value.Dispose();
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    [Test]
    public void GreedyEqualOrBetterUsesTheRelativeTolerance()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Report.EqualOrBetter(1.0, 1.0, 0.01), Is.True);
            Assert.That(Report.EqualOrBetter(1.0099, 1.0, 0.01), Is.True);
            Assert.That(Report.EqualOrBetter(1.0101, 1.0, 0.01), Is.False);
            Assert.That(Report.EqualOrBetter(1.0101, 1.0, 0.0), Is.False);
            Assert.That(Report.EqualOrBetter(double.PositiveInfinity, 1.0, 0.01), Is.False, "a diverged GreedyLR run is never better");
            Assert.That(Report.EqualOrBetter(5.0, double.PositiveInfinity, 0.01), Is.True, "a finite run beats a diverged one");
        });
    }

    [Test]
    public void WarmupCosineRisesThenAnnealsToZero()
    {
        const int total = 400;
        Assert.That(Method.WarmupCosine(0, total), Is.EqualTo(0.1).Within(1e-12));
        Assert.That(Method.WarmupCosine(total / 20, total), Is.EqualTo(1.0).Within(1e-12));
        Assert.That(Method.WarmupCosine(total, total), Is.EqualTo(0.0).Within(1e-12));
        var after = Enumerable.Range(total / 20, total - total / 20 + 1).Select(s => Method.WarmupCosine(s, total)).ToArray();
        Assert.That(after, Is.Ordered.Descending);
    }

    /// <summary>The report charges every method its forward passes and time to target, and tallies GreedyLR against every method, Sls and Adam included.</summary>
    [Test]
    public void TheReportTalliesGreedyLRAgainstEveryMethodAndChargesForwardPasses()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"optim-compare-{Guid.NewGuid():N}");
        try
        {
            var methods = new[] { "sgd-constant", "sgd-greedylr", "sgd-sls", "adam-constant" };
            var output = new StringWriter();
            Assert.That(Compare.Run(Settings(dir, methods), output), Is.Zero, output.ToString());
            string report = File.ReadAllText(Path.Combine(dir, "report.md"));
            int tally = report.IndexOf("## GreedyLR against every method", StringComparison.Ordinal);
            int cost = report.IndexOf("## Forward passes and time to target", StringComparison.Ordinal);
            Assert.That(tally, Is.GreaterThan(0));
            Assert.That(cost, Is.GreaterThan(tally));
            string tallySection = report[tally..cost];
            // Against 3 other methods on 2 seeds: adam-constant too (the same-optimizer table leaves it out).
            Assert.That(tallySection, Does.Contain("| adam-constant |"));
            Assert.That(tallySection, Does.Contain("| sgd-sls |"));
            Assert.That(tallySection, Does.Match(@"\| all \| \*\*\d/6 "));
            Assert.That(tallySection, Does.Contain("(the paper) |"));
            string costSection = report[cost..];
            foreach (var m in methods)
            {
                Assert.That(costSection, Does.Contain($"| {m} |"), m);
            }
            Assert.That(costSection, Does.Contain("| sgd-constant | ").And.Contain(" | 1.00 | "), "one forward pass per step");
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    [Test]
    public void AComparisonWritesItsReportCsvAndPlots()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"optim-compare-{Guid.NewGuid():N}");
        try
        {
            var methods = new[] { "sgd-constant", "sgd-greedylr", "hd-group", "adam-plateau", "adam-greedylr", "sgd-constant-bounded" };
            var output = new StringWriter();
            int rc = Compare.Run(Settings(dir, methods), output);
            Assert.That(rc, Is.Zero, output.ToString());
            string report = File.ReadAllText(Path.Combine(dir, "report.md"));
            Assert.That(report, Does.Contain("## nmf-synthetic"));
            Assert.That(report, Does.Contain("How often GreedyLR was equal or better"));
            Assert.That(report, Does.Contain("## The NMF stability clip"));
            Assert.That(report, Does.Contain("| nmf-synthetic | constant |"), "the bounded method beside its plain schedule");
            Assert.That(report, Does.Contain("## Where each method wins and loses"));
            Assert.That(report, Does.Match(@"- \*\*nmf-synthetic\*\* \(\d+ methods\): best .*GreedyLR's best: [a-z-]+, rank \d+\."));
            Assert.That(report, Does.Contain("| method | tasks | mean rank | mean relative rank | top 3 | bottom 3 |"));
            foreach (var line in report.Split('\n').Where(l => l.StartsWith("- **") && l.Contains(" methods): best ")))
            {
                var parts = line.Split("; ");
                var best = Regex.Matches(parts[0], @"([a-z0-9-]+) \(").Select(m => m.Groups[1].Value).ToHashSet();
                var worst = parts.Where(p => p.StartsWith("worst ")).SelectMany(p => Regex.Matches(p, @"([a-z0-9-]+) \(").Select(m => m.Groups[1].Value));
                Assert.That(best.Intersect(worst), Is.Empty, $"a method named both best and worst: {line}");
            }
            foreach (var m in methods)
            {
                Assert.That(report, Does.Contain($"| {m} |"), m);
            }
            var runs = File.ReadAllLines(Path.Combine(dir, "runs.csv"));
            Assert.That(runs, Has.Length.EqualTo(1 + methods.Length * 2), "a header and one line per method and seed");
            var curves = File.ReadAllLines(Path.Combine(dir, "curves.csv"));
            Assert.That(curves, Has.Length.EqualTo(1 + methods.Length * 2 * 5), "step 0 and 4 evaluations per run (40 steps, every 10)");
            foreach (var png in new[] { "lr-nmf-synthetic.png", "loss-nmf-synthetic.png" })
            {
                var bytes = File.ReadAllBytes(Path.Combine(dir, "plots", png));
                Assert.That(bytes.Take(4), Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }), png);
                Assert.That(report, Does.Contain($"plots/{png}"));
            }
            Assert.That(File.ReadAllLines(Path.Combine(dir, "sweep.csv")), Has.Length.EqualTo(1), "rates given: no sweep");
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }
}
