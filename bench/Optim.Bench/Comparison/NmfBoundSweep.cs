using System.Diagnostics;
using System.Globalization;
using System.Text;
using ScottPlot;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Bench.Comparison;

/// <summary>What the <c>nmf-bound</c> command is told.</summary>
internal sealed record NmfBoundSettings(string DataDir, string OutDir, string[] Tasks, double[] Multipliers, int Epochs, int BatchSize, double Momentum, int Seed, bool Plots);

/// <summary>One run of the sweep: a rate that is a fixed multiple of the bound each step, or a constant rate.</summary>
internal sealed record BoundRun(string Task, string Rate, double Multiplier, double ConstantRate, IReadOnlyList<BoundPoint> Curve, double AboveFraction, double MaxRatio, int DivergedAt)
{
    public double Start => Curve[0].Objective;

    public double Final => DivergedAt > 0 ? double.PositiveInfinity : Curve[^1].Objective;

    /// <summary>Evaluations where the objective rose against the previous one: the oscillation count.</summary>
    public int Rises => Enumerable.Range(1, Curve.Count - 1).Count(i => Curve[i].Objective > Curve[i - 1].Objective);
}

/// <summary>One evaluation: the full objective, the rate used and the bound at the last step.</summary>
internal sealed record BoundPoint(int Step, double Objective, double Rate, double Bound);

/// <summary>
/// The stability bound's check on the NMF tasks (docs/nmf-bound.md): FusedSGD with heavy-ball momentum
/// runs once with its rate set each step to k × the bound for each multiplier k, and once at each
/// constant rate of the compare sweep grid (recording how often that rate was above the bound);
/// the report says which runs converged, oscillated or diverged.
/// </summary>
internal static class NmfBoundSweep
{
    public static readonly double[] DefaultMultipliers = { 0.25, 0.5, 0.9, 1.1, 1.5, 2, 4 };

    public static int Run(NmfBoundSettings o, TextWriter output)
    {
        var clock = Stopwatch.StartNew();
        var digits = new Lazy<Digits>(() => Digits.Load(o.DataDir));
        var runs = new List<BoundRun>();
        try
        {
            foreach (string name in o.Tasks)
            {
                using var task = TrainingTask.Create(name, digits);
                if (!task.HasStabilityBound)
                {
                    throw new ArgumentException($"nmf-bound: task '{name}' has no stability bound (only the NMF tasks do)");
                }
                foreach (double k in o.Multipliers)
                {
                    runs.Add(Train(task, o, $"{k.ToString("0.##", CultureInfo.InvariantCulture)} × bound", k, double.NaN));
                    output.WriteLine(Line(runs[^1]));
                }
                foreach (double lr in Runner.SgdGrid)
                {
                    runs.Add(Train(task, o, $"constant {lr.ToString("g3", CultureInfo.InvariantCulture)}", double.NaN, lr));
                    output.WriteLine(Line(runs[^1]));
                }
            }
        }
        finally
        {
            if (digits.IsValueCreated)
            {
                digits.Value.Dispose();
            }
        }
        Directory.CreateDirectory(o.OutDir);
        var plots = o.Plots ? WritePlots(runs, o.OutDir) : new List<string>();
        string report = Markdown(o, runs, plots, clock.Elapsed);
        File.WriteAllText(Path.Combine(o.OutDir, "report.md"), report);
        WriteCsv(runs, Path.Combine(o.OutDir, "curves.csv"));
        output.WriteLine();
        output.WriteLine(Table(runs));
        output.WriteLine($"Report: {Path.Combine(o.OutDir, "report.md")} ({clock.Elapsed.TotalSeconds:0} s)");
        return 0;
    }

    /// <summary>One run: rate k × bound each step when <paramref name="multiplier"/> is a number, else the constant <paramref name="constant"/>.</summary>
    public static BoundRun Train(TrainingTask task, NmfBoundSettings o, string label, double multiplier, double constant)
    {
        using var scope = torch.NewDisposeScope();
        using var learner = task.Create(o.Seed);
        using var opt = new FusedSGD(learner.Groups.Select(g => new FusedSGD.ParamGroup(g.Parameters)), 0.01, momentum: o.Momentum);
        using var gen = new torch.Generator((ulong)(1000 + o.Seed));
        long n = task.TrainExamples;
        int perEpoch = (int)(n / o.BatchSize);
        int steps = perEpoch * o.Epochs;
        int evalEvery = Math.Max(1, steps / 40);
        var curve = new List<BoundPoint> { new(0, learner.Evaluate().Loss, double.NaN, double.NaN) };
        int above = 0, divergedAt = 0;
        double maxRatio = 0;
        Tensor? order = null;
        for (int step = 1; step <= steps; step++)
        {
            int b = (step - 1) % perEpoch;
            if (b == 0)
            {
                order?.Dispose();
                order = torch.randperm(n, generator: gen).DetachFromDisposeScope();
            }
            using var inner = torch.NewDisposeScope();
            var batch = order!.narrow(0, (long)b * o.BatchSize, o.BatchSize);
            opt.zero_grad();
            var loss = learner.Loss(batch);
            double bound = learner.MeasureCurvature(batch)!.StableRate(o.Momentum);
            double rate = double.IsNaN(multiplier) ? constant : multiplier * bound;
            if (!double.IsFinite(loss.ToDouble()) || !double.IsFinite(bound))
            {
                divergedAt = step;
                curve.Add(new BoundPoint(step, double.PositiveInfinity, rate, bound));
                break;
            }
            above += rate > bound ? 1 : 0;
            maxRatio = Math.Max(maxRatio, rate / bound);
            foreach (var g in opt.ParamGroups)
            {
                g.LearningRate = rate;
            }
            loss.backward();
            opt.step();
            learner.AfterStep();
            if (step % evalEvery == 0 || step == steps)
            {
                double objective = learner.Evaluate().Loss;
                curve.Add(new BoundPoint(step, objective, rate, bound));
                if (!double.IsFinite(objective))
                {
                    divergedAt = step;
                    break;
                }
            }
        }
        order?.Dispose();
        return new BoundRun(task.Name, label, multiplier, constant, curve, (double)above / Math.Max(1, curve[^1].Step), maxRatio, divergedAt);
    }

    /// <summary>From the curve: diverged when the objective became non-finite or ended above its start; else converges, oscillating when it rose at more than a quarter of the evaluations.</summary>
    public static string Verdict(BoundRun r) => r.DivergedAt > 0 || !(r.Final < r.Start) ? "diverged" : r.Rises > r.Curve.Count / 4 ? "converges, oscillating" : "converges";

    private static string Line(BoundRun r) =>
        $"{r.Task} {r.Rate}: {Verdict(r)}, objective {r.Start:g4} → {(double.IsFinite(r.Final) ? r.Final.ToString("g4", CultureInfo.InvariantCulture) : "∞")}" +
        $", {r.Rises} rises, rate above the bound on {100 * r.AboveFraction:0}% of steps (max rate/bound {r.MaxRatio:0.00})";

    public static string Table(IEnumerable<BoundRun> runs)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| task | rate | start objective | final objective | rises | steps above the bound | max rate / bound | verdict |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|---:|---|");
        foreach (var r in runs)
        {
            string final = double.IsFinite(r.Final) ? r.Final.ToString("0.0000", CultureInfo.InvariantCulture) : $"∞ (step {r.DivergedAt})";
            sb.AppendLine(CultureInfo.InvariantCulture, $"| {r.Task} | {r.Rate} | {r.Start:0.0000} | {final} | {r.Rises}/{r.Curve.Count - 1} | {100 * r.AboveFraction:0}% | {r.MaxRatio:0.00} | {Verdict(r)} |");
        }
        return sb.ToString();
    }

    private static string Markdown(NmfBoundSettings o, List<BoundRun> runs, List<string> plots, TimeSpan elapsed)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# The NMF stability bound, checked");
        sb.AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture, $"Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; {elapsed.TotalSeconds:0} s; {Environment.ProcessorCount} logical CPUs, TorchSharp threads {torch.get_num_threads()}.");
        sb.AppendLine();
        sb.AppendLine($"FusedSGD (momentum {o.Momentum.ToString(CultureInfo.InvariantCulture)}) on the minibatch NMF loss, projected onto W, H ≥ 0 after each step; {o.Epochs} epochs of batch {o.BatchSize}, seed {o.Seed}. " +
            "The bound is 2(1 + β) / L with L = (2/b)(‖W_B‖₂² + ‖H‖₂² + ‖R_B‖₂) at the factors the step starts from (docs/nmf-bound.md). " +
            "*k × bound* runs set the rate to k times the bound at every step; *constant* runs use the compare grid's rates unclipped. " +
            "*Rises*: evaluations (40 a run) where the full objective went up. Verdict: diverged when the objective became non-finite or ended above its start; else converges, *oscillating* when it rose at more than a quarter of the evaluations.");
        sb.AppendLine();
        sb.AppendLine(Table(runs));
        foreach (var png in plots)
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"![{Path.GetFileNameWithoutExtension(png)}]({png})");
            sb.AppendLine();
        }
        return sb.ToString();
    }

    private static void WriteCsv(IEnumerable<BoundRun> runs, string path)
    {
        var sb = new StringBuilder("task,rate,multiplier,constant_rate,step,objective,lr,bound\n");
        foreach (var r in runs)
        {
            foreach (var p in r.Curve)
            {
                sb.Append(CultureInfo.InvariantCulture, $"{r.Task},{r.Rate},{r.Multiplier:R},{r.ConstantRate:R},{p.Step},{p.Objective:R},{p.Rate:R},{p.Bound:R}\n");
            }
        }
        File.WriteAllText(path, sb.ToString());
    }

    /// <summary>Objective against step (log scale) of the k × bound runs, one figure per task.</summary>
    private static List<string> WritePlots(List<BoundRun> runs, string dir)
    {
        var files = new List<string>();
        foreach (var group in runs.Where(r => !double.IsNaN(r.Multiplier)).GroupBy(r => r.Task))
        {
            var plt = new Plot();
            foreach (var r in group)
            {
                var pts = r.Curve.Where(p => double.IsFinite(p.Objective) && p.Objective > 0).ToList();
                var line = plt.Add.ScatterLine(pts.Select(p => (double)p.Step).ToArray(), pts.Select(p => Math.Log10(p.Objective)).ToArray());
                line.LegendText = $"{r.Rate}{(r.DivergedAt > 0 ? " (diverged)" : "")}";
                line.LineWidth = 2;
                line.LinePattern = r.Multiplier > 1 ? LinePattern.Dashed : LinePattern.Solid;
            }
            plt.Title($"{group.Key}: rate = k × stability bound each step");
            plt.XLabel("step");
            plt.YLabel("full objective (log scale)");
            plt.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                LabelFormatter = y => Math.Pow(10, y).ToString("g3", CultureInfo.InvariantCulture),
            };
            plt.ShowLegend(Alignment.UpperRight);
            string file = $"nmf-bound-{group.Key}.png";
            plt.SavePng(Path.Combine(dir, file), 900, 600);
            files.Add(file);
        }
        return files;
    }
}
