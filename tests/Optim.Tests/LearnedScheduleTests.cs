using System.Globalization;
using System.Text.Json.Nodes;
using Optim.Bench.Comparison;
using Optim.Bench.Comparison.Learned;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// The learned schedule (bench/Optim.Bench/Comparison/Learned, compare's sgd-learned): PPO's advantage
/// estimates and clipped objective against hand-computed values, the state features, the policy file,
/// PPO learning a trivial task, and the schedule driving a real run.
/// </summary>
[TestFixture]
public class LearnedScheduleTests
{
    [Test]
    public void GaeMatchesHandComputedValues()
    {
        // γ = 0.9, λ = 0.8: δ2 = 2 − 0.2 = 1.8; δ1 = 0 + 0.9 × 0.2 − 1 = −0.82; δ0 = 1 + 0.9 × 1 − 0.5 = 1.4;
        // A2 = 1.8, A1 = −0.82 + 0.72 × 1.8 = 0.476, A0 = 1.4 + 0.72 × 0.476 = 1.74272; returns = A + v.
        var (adv, ret) = PpoTrainer.Gae(new[] { 1.0, 0.0, 2.0 }, new[] { 0.5, 1.0, 0.2 }, gamma: 0.9, lambda: 0.8);
        Assert.That(adv, Is.EqualTo(new[] { 1.74272, 0.476, 1.8 }).Within(1e-12));
        Assert.That(ret, Is.EqualTo(new[] { 2.24272, 1.476, 2.0 }).Within(1e-12));
    }

    [Test]
    public void GaeWithLambdaOneAndNoDiscountIsTheReturnToGoMinusTheValue()
    {
        var (adv, ret) = PpoTrainer.Gae(new[] { 1.0, -2.0, 3.0, 0.5 }, new[] { 0.3, 0.1, -0.4, 2.0 }, gamma: 1, lambda: 1);
        Assert.That(ret, Is.EqualTo(new[] { 2.5, 1.5, 3.5, 0.5 }).Within(1e-12));
        Assert.That(adv, Is.EqualTo(new[] { 2.2, 1.4, 3.9, -1.5 }).Within(1e-12));
    }

    [Test]
    public void TheClippedSurrogateMatchesHandComputedValues()
    {
        // Ratios 1.5, 0.5, 1.1, 0.5 with advantages 1, 1, −2, −1 and ε = 0.2: min(ρA, clip(ρ)A) =
        // min(1.5, 1.2), min(0.5, 0.8), min(−2.2, −2.2), min(−0.5, −0.8) = 1.2, 0.5, −2.2, −0.8; loss = −mean = 0.325.
        using var logProb = torch.tensor(new[] { Math.Log(1.5), Math.Log(0.5), Math.Log(1.1), Math.Log(0.5) });
        using var old = torch.zeros(4, ScalarType.Float64);
        using var advantages = torch.tensor(new[] { 1.0, 1.0, -2.0, -1.0 });
        using var loss = PpoTrainer.ClippedSurrogateLoss(logProb, old, advantages, clip: 0.2);
        Assert.That(loss.ToDouble(), Is.EqualTo(0.325).Within(1e-12));
        // Within the clip range it is the plain policy-gradient surrogate −mean(ρA).
        using var near = torch.tensor(new[] { Math.Log(1.1), Math.Log(0.9) });
        using var old2 = torch.zeros(2, ScalarType.Float64);
        using var adv2 = torch.tensor(new[] { 2.0, -1.0 });
        using var plain = PpoTrainer.ClippedSurrogateLoss(near, old2, adv2, clip: 0.2);
        Assert.That(plain.ToDouble(), Is.EqualTo(-(1.1 * 2 - 0.9) / 2).Within(1e-12));
    }

    [Test]
    public void TheFeaturesMatchHandComputedValues()
    {
        var curve = new[]
        {
            new Point(0, double.NaN, 2.0, double.NaN, 0.1),
            new Point(10, 1.5, 1.0, double.NaN, 0.1),
            new Point(20, 1.2, 0.8, double.NaN, 0.2),
        };
        var f = ScheduleFeatures.Compute(curve, totalSteps: 40, rate: 0.2, baseRate: 0.1, gradMean: 2, gradStd: 1, firstGradMean: 4, clippedFraction: 0.25);
        var expected = new[]
        {
            Math.Log(0.8 / 2), 10 * Math.Log(0.8), 10 * Math.Log(0.8 / 2) / 2, 10 * Math.Log(1.2 / 1.5), Math.Log(1.2 / 0.8),
            Math.Log(2), 0.5, Math.Log(0.5), 0.5, 0.25,
        };
        Assert.That(f, Has.Length.EqualTo(ScheduleFeatures.Count));
        Assert.That(f.Select(v => (double)v), Is.EqualTo(expected).Within(1e-6));
    }

    [Test]
    public void TheFeaturesAreClippedAndMissingHistoryReadsAsNoChange()
    {
        var curve = new[]
        {
            new Point(0, double.NaN, 2.0, double.NaN, 0.1),
            new Point(10, 1.5, 1e-9, double.NaN, 0.1),
        };
        var f = ScheduleFeatures.Compute(curve, totalSteps: 20, rate: 0.1, baseRate: 0.1, gradMean: 0, gradStd: 0, firstGradMean: double.NaN, clippedFraction: 0);
        Assert.That(f[0], Is.EqualTo(-(float)ScheduleFeatures.Limit), "log(1e-9 / 2) is clipped");
        Assert.That(f[1], Is.EqualTo(-(float)ScheduleFeatures.Limit));
        Assert.That(f[3], Is.EqualTo(0), "no training-loss trend before two intervals");
        Assert.That(f[7], Is.EqualTo(0), "no gradient history");
        Assert.That(f[8], Is.EqualTo(0));
    }

    [Test]
    public void TheGradientStatisticsCoverOneIntervalAndTheFirstIntervalIsTheReference()
    {
        var features = new ScheduleFeatures();
        var curve = new List<Point> { new(0, double.NaN, 1, double.NaN, 0.1), new(2, 1, 1, double.NaN, 0.1) };
        features.ObserveStep(1, clipped: true);
        features.ObserveStep(3, clipped: false);
        var first = features.Take(curve, 10, 0.1, 0.1);
        Assert.That(first[7], Is.EqualTo(0), "the first interval is its own reference");
        Assert.That(first[8], Is.EqualTo(0.5f).Within(1e-6), "std 1 / mean 2");
        Assert.That(first[9], Is.EqualTo(0.5f), "one of two steps clipped");
        curve.Add(new Point(4, 1, 1, double.NaN, 0.1));
        features.ObserveStep(4, clipped: false);
        features.ObserveStep(4, clipped: false);
        var second = features.Take(curve, 10, 0.1, 0.1);
        Assert.That(second[7], Is.EqualTo((float)Math.Log(2)).Within(1e-6), "mean 4 against the first interval's 2");
        Assert.That(second[8], Is.EqualTo(0), "a constant norm");
        Assert.That(second[9], Is.EqualTo(0), "the clip count restarts each interval");
    }

    [Test]
    public void ThePolicyFileRoundTrips()
    {
        string path = Path.Combine(Path.GetTempPath(), $"policy-{Guid.NewGuid():N}.json");
        try
        {
            var policy = new PolicyNetwork(ScheduleFeatures.Count, 3, 8, seed: 7) { Training = new JsonObject { ["iterations"] = 12 } };
            // Train it a little so that the heads are not at their initial values.
            using (var trainer = new PpoTrainer(policy, new PpoSettings(), seed: 1))
            {
                var obs = Enumerable.Range(0, ScheduleFeatures.Count).Select(i => (float)(i * 0.1)).ToArray();
                trainer.Update(new[] { new[] { new Transition(obs, 2, Math.Log(1.0 / 3), 0, 1), new Transition(obs, 0, Math.Log(1.0 / 3), 0, -1) } });
            }
            policy.Save(path);
            var loaded = PolicyNetwork.Load(path);
            Assert.That((loaded.Inputs, loaded.Actions, loaded.Hidden), Is.EqualTo((ScheduleFeatures.Count, 3, 8)));
            Assert.That((int?)loaded.Training["iterations"], Is.EqualTo(12));
            using var x = torch.randn(new long[] { 5, ScheduleFeatures.Count }, generator: new torch.Generator(3));
            var (logitsA, valueA) = policy.Forward(x);
            var (logitsB, valueB) = loaded.Forward(x);
            Assert.That(logitsB.data<float>().ToArray(), Is.EqualTo(logitsA.data<float>().ToArray()), "bit for bit");
            Assert.That(valueB.data<float>().ToArray(), Is.EqualTo(valueA.data<float>().ToArray()));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void AForeignOrDamagedPolicyFileIsAClearError()
    {
        string path = Path.Combine(Path.GetTempPath(), $"policy-{Guid.NewGuid():N}.json");
        try
        {
            Assert.That(() => PolicyNetwork.Load(path), Throws.TypeOf<FileNotFoundException>().With.Message.Contains("train-schedule"));
            File.WriteAllText(path, "{ not json");
            Assert.That(() => PolicyNetwork.Load(path), Throws.TypeOf<InvalidDataException>().With.Message.Contains("not a policy file"));
            File.WriteAllText(path, "{\"format\": \"something-else\"}");
            Assert.That(() => PolicyNetwork.Load(path), Throws.TypeOf<InvalidDataException>().With.Message.Contains("format"));
            new PolicyNetwork(4, 3, 8, seed: 0).Save(path);
            string text = File.ReadAllText(path).Replace("\"hidden\":8", "\"hidden\":9", StringComparison.Ordinal);
            File.WriteAllText(path, text);
            Assert.That(() => PolicyNetwork.Load(path), Throws.TypeOf<InvalidDataException>().With.Message.Contains("shape"));
            Assert.That(() => new LearnedSchedule(new PolicyNetwork(4, 3, 8, seed: 0)), Throws.ArgumentException.With.Message.Contains("inputs"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// A trivial environment (the sign of the first feature says which of the outer actions pays 1; the
    /// middle one never pays): PPO must take the greedy policy from at most half the best return to nearly all of it.
    /// </summary>
    [Test]
    public void PpoLearnsATrivialEnvironment()
    {
        const int inputs = 3, length = 4;
        var policy = new PolicyNetwork(inputs, 3, 16, seed: 3);
        var rng = new Random(11);
        float[] Observe() => new[] { rng.Next(2) == 0 ? -1f : 1f, 0f, 0.5f };
        static double Reward(float[] o, int action) => action == (o[0] < 0 ? 0 : 2) ? 1 : 0;
        double GreedyScore()
        {
            var check = new Random(99);
            return Enumerable.Range(0, 200).Select(_ => new[] { check.Next(2) == 0 ? -1f : 1f, 0f, 0.5f })
                .Average(o => Reward(o, policy.Act(o, explore: null).Action));
        }
        double before = GreedyScore();
        using var trainer = new PpoTrainer(policy, new PpoSettings(), seed: 5);
        var explore = new Random(13);
        for (int iteration = 0; iteration < 25; iteration++)
        {
            var episodes = new List<IReadOnlyList<Transition>>();
            for (int e = 0; e < 16; e++)
            {
                var episode = new List<Transition>();
                for (int t = 0; t < length; t++)
                {
                    var o = Observe();
                    var (action, logProb, value) = policy.Act(o, explore);
                    episode.Add(new Transition(o, action, logProb, value, Reward(o, action)));
                }
                episodes.Add(episode);
            }
            trainer.Update(episodes);
        }
        double after = GreedyScore();
        Assert.That(before, Is.LessThanOrEqualTo(0.6), "the first policy is near uniform: its greedy action ignores the sign");
        Assert.That(after, Is.GreaterThan(0.95), $"PPO must learn the sign rule (greedy score {before:0.00} before)");
    }

    /// <summary>A policy that always doubles: the run's rates double each evaluation up to the ceiling, and the rewards are the log-improvements.</summary>
    [Test]
    public void TheScheduleSetsTheRateAndEarnsTheLogImprovement()
    {
        var policy = new PolicyNetwork(ScheduleFeatures.Count, LearnedSchedule.Multipliers.Length, 8, seed: 0);
        using (torch.no_grad())
        {
            var head = policy.named_parameters().Single(p => p.name == "_policyHead.bias").parameter;
            head.copy_(torch.tensor(new[] { 0f, 0f, 20f }));
        }
        using var task = TrainingTask.Create("nmf-synthetic", new Lazy<Digits>(() => throw new AssertionException("no digits needed")));
        var settings = new CompareSettings("/nonexistent", "/tmp", new[] { "nmf-synthetic" }, new[] { "sgd-learned" }, 1, 1, 100, 5, 0.01, null, 0.02,
            MetricStepping.Eval, 0.5, 0.01, false, "test");
        var runner = new Runner(settings, new LiveProgress(TextWriter.Null, 1));
        var schedule = new LearnedSchedule(policy);
        var run = runner.Train(task, Method.Find("sgd-learned"), seed: 0, lr: 0.01, steps: 40, evalEvery: 5, "test", schedule);
        Assert.That(run.Diverged, Is.False);
        Assert.That(run.Curve, Has.Count.EqualTo(9));
        var rates = run.Curve.Skip(1).Select(p => p.Lr).ToArray();
        var expected = Enumerable.Range(0, 8).Select(i => Math.Min(0.01 * Math.Pow(2, i), 0.01 * LearnedSchedule.MaxFactor)).ToArray();
        Assert.That(rates, Is.EqualTo(expected).Within(1e-12), "the rate of each interval: doubled at every evaluation, then held at 10 × base");
        var transitions = schedule.Transitions(run);
        Assert.That(transitions, Has.Count.EqualTo(7), "one decision at every evaluation but the start and the last");
        Assert.That(transitions.Select(t => t.Action), Has.All.EqualTo(2));
        var improvements = Enumerable.Range(1, 7).Select(i => Math.Log(run.Curve[i].EvalLoss / run.Curve[i + 1].EvalLoss));
        Assert.That(transitions.Select(t => t.Reward), Is.EqualTo(improvements).Within(1e-12));
    }

    /// <summary>The shipped policy loads, fits the schedule, and never trained on the tasks the docs call unseen.</summary>
    [Test]
    public void TheShippedPolicyLoadsAndLeftTheUnseenTasksOut()
    {
        var policy = PolicyNetwork.Load(LearnedSchedule.ShippedPath);
        Assert.That((policy.Inputs, policy.Actions), Is.EqualTo((ScheduleFeatures.Count, LearnedSchedule.Multipliers.Length)));
        Assert.That(new FileInfo(LearnedSchedule.ShippedPath).Length, Is.LessThan(100_000), "a small file");
        var tasks = LearnedSchedule.ShippedTrainingTasks();
        Assert.That(tasks, Is.EquivalentTo(ScheduleTraining.DefaultTasks));
        Assert.That(tasks, Has.None.EqualTo("nmf-digits").And.None.EqualTo("mnist-logreg"));
        Assert.That((int?)policy.Training["iterations"], Is.GreaterThan(0));
    }

    /// <summary>A comparison with sgd-learned reports it against step, cosine and GreedyLR and plots its rates beside GreedyLR's.</summary>
    [Test]
    public void AComparisonReportsTheLearnedScheduleBesideItsRivals()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"optim-learned-{Guid.NewGuid():N}");
        try
        {
            var methods = new[] { "sgd-step", "sgd-cosine", "sgd-greedylr", "sgd-learned" };
            var settings = new CompareSettings("/nonexistent", dir, new[] { "nmf-synthetic" }, methods, 2, 1, 100, 5, 0.1, null, 0.02,
                MetricStepping.Eval, 0.5, 0.01, true, "test");
            var output = new StringWriter();
            Assert.That(Compare.Run(settings, output), Is.Zero, output.ToString());
            string report = File.ReadAllText(Path.Combine(dir, "report.md"));
            Assert.That(report, Does.Contain("## The learned schedule"));
            foreach (var rival in new[] { "sgd-step", "sgd-cosine", "sgd-greedylr" })
            {
                Assert.That(report, Does.Match($@"\| nmf-synthetic \| yes \| [0-9.]+ ± [0-9.]+ \| {rival} \| [0-9.]+ ± [0-9.]+ \| [0-2]/2 \|"), rival);
            }
            string png = Plots.LearnedFileName("nmf-synthetic");
            var bytes = File.ReadAllBytes(Path.Combine(dir, "plots", png));
            Assert.That(bytes.Take(4), Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }));
            Assert.That(report, Does.Contain($"plots/{png}"));
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
    public void TheTrainingBaseRatesAreTheRecordedSweeps()
    {
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Optim.sln")))
        {
            dir = dir.Parent;
        }
        Assert.That(dir, Is.Not.Null, "the repository root");
        var chosen = File.ReadAllLines(Path.Combine(dir!.FullName, "bench", "results", "compare", "sweep.csv")).Skip(1)
            .Select(l => l.Split(','))
            .Where(c => c[1] == "sgd" && c[5] == "1")
            .ToDictionary(c => c[0], c => double.Parse(c[2], CultureInfo.InvariantCulture));
        foreach (var (task, rate) in ScheduleTraining.SweptBaseRates)
        {
            Assert.That(chosen[task], Is.EqualTo(rate), task);
        }
    }
}
