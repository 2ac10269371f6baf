using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Optim.Interop;
using TorchSharp;

namespace Optim.Bench.Comparison;

/// <summary>The summary tables and the Markdown report of a comparison.</summary>
internal sealed partial class Report
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    private readonly CompareSettings _o;
    private readonly List<TaskPlan> _plans;
    private readonly List<SweepPoint> _sweep;
    private readonly List<RunResult> _results;
    private readonly Dictionary<string, List<string>> _plots;
    private readonly TimeSpan _elapsed;

    public Report(CompareSettings o, List<TaskPlan> plans, List<SweepPoint> sweep, List<RunResult> results, Dictionary<string, List<string>> plots, TimeSpan elapsed)
    {
        (_o, _plans, _sweep, _results, _plots, _elapsed) = (o, plans, sweep, results, plots, elapsed);
    }

    /// <summary>The target of a task: the best mean final loss of its constant-rate methods × 1.05.</summary>
    public double Target(string task)
    {
        var runs = _results.Where(r => r.Task == task).ToList();
        var constant = runs.Where(r => r.Method.Schedule == "constant").GroupBy(r => r.Method.Name).Select(g => g.Average(r => r.FinalLoss)).Where(double.IsFinite).ToList();
        var pool = constant.Count > 0 ? constant : runs.GroupBy(r => r.Method.Name).Select(g => g.Average(r => r.FinalLoss)).Where(double.IsFinite).ToList();
        return pool.Count > 0 ? pool.Min() * 1.05 : double.NaN;
    }

    public string ConsoleSummary()
    {
        var sb = new StringBuilder();
        foreach (var plan in _plans)
        {
            sb.AppendLine(Inv, $"{plan.Task.Name}: {plan.Task.Description}");
            TaskTable(sb, plan);
            sb.AppendLine();
        }
        GreedyTable(sb);
        return sb.ToString();
    }

    public string Markdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Learning-rate comparison");
        sb.AppendLine();
        sb.AppendLine(Inv, $"Command: `{_o.CommandLine}`  ");
        sb.AppendLine(Inv, $"Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; {_elapsed.TotalSeconds:0} s in all  ");
        sb.AppendLine(Inv, $"Machine: {Environment.ProcessorCount} logical CPUs, {RuntimeInformation.OSDescription}, .NET {Environment.Version}; " +
            $"TorchSharp threads {torch.get_num_threads()}; native: {OptimNative.BuildInfo}");
        sb.AppendLine();
        sb.AppendLine($"Every method trains from the same initialisation and sees the same minibatches (batch {_o.BatchSize}) for the same number of steps " +
            $"for each seed ({_o.Seeds} seeds: {string.Join(", ", Enumerable.Range(0, _o.Seeds))}). " +
            "FusedSGD and HypergradientSGD use heavy-ball momentum 0.9; Adam uses TorchSharp's defaults (β 0.9, 0.999). " +
            $"Hypergradient descent uses the normalized rule with hypergradient rate β = {_o.HypergradLr.ToString(Inv)} and starts from the SGD base rate. " +
            (_o.Stepping == MetricStepping.Eval
                ? "ReduceLROnPlateau and GreedyLR are stepped with the evaluation loss once per evaluation (the reference usage)."
                : "ReduceLROnPlateau and GreedyLR are stepped with the training loss of every step (patience, warmup and cooldown × the evaluation interval; GreedyLR smooths over one interval)."));
        sb.AppendLine();
        sb.AppendLine("Methods:");
        sb.AppendLine();
        foreach (var m in _results.Select(r => r.Method).Distinct())
        {
            sb.AppendLine(Inv, $"- `{m.Name}`: {m.Description}");
        }
        sb.AppendLine();
        sb.AppendLine("## Base rates");
        sb.AppendLine();
        if (_sweep.Count > 0)
        {
            var first = _sweep[0];
            sb.AppendLine($"Each family's base rate is the best final evaluation loss of a constant-rate run at each rate of the grid, on seed {Runner.SweepSeed} " +
                $"(not one of the reported seeds), for {_o.SweepFraction.ToString("0.##", Inv)} of the step budget. HD starts from the SGD rate. " +
                "`—` marks a diverged run; **bold** the rate chosen.");
            sb.AppendLine();
            foreach (var group in _sweep.GroupBy(s => (s.Task, s.Family)))
            {
                var points = group.ToList();
                sb.AppendLine($"- {group.Key.Task}, {group.Key.Family.ToString().ToLowerInvariant()} ({points[0].Steps} steps): " +
                    string.Join(", ", points.Select(p => (p.Chosen ? "**" : "") + $"{p.Lr.ToString("g3", Inv)} → {Loss(p.FinalLoss)}" + (p.Chosen ? "**" : ""))) +
                    (points[0].Chosen || points[^1].Chosen ? " (the best is at the edge of the grid)" : ""));
            }
        }
        foreach (var plan in _plans.Where(p => !_sweep.Any(s => s.Task == p.Task.Name)))
        {
            sb.AppendLine($"- {plan.Task.Name}: given on the command line or the task's usual rate (not swept): " + string.Join(", ", plan.BaseLr.Select(kv => $"{kv.Key.ToString().ToLowerInvariant()} {kv.Value.ToString("g3", Inv)}")));
        }
        foreach (var plan in _plans)
        {
            sb.AppendLine();
            sb.AppendLine(Inv, $"## {plan.Task.Name}");
            sb.AppendLine();
            sb.AppendLine($"{plan.Task.Description}. {plan.Steps} steps, evaluated every {plan.EvalEvery}; the evaluation loss is the {plan.Task.EvalName}; param groups (HD's per-group scope): {string.Join(", ", plan.Groups)}. " +
                "Mean ± half the range over seeds. *Steps to target*: the first evaluation at or below the target " +
                "(the best mean final loss of the constant-rate methods × 1.05), averaged over the seeds that reached it.");
            sb.AppendLine();
            TaskTable(sb, plan);
            PerplexityLine(sb, plan);
            foreach (var png in _plots.GetValueOrDefault(plan.Task.Name) ?? new List<string>())
            {
                sb.AppendLine();
                sb.AppendLine(Inv, $"![{Path.GetFileNameWithoutExtension(png)}](plots/{png})");
            }
        }
        BoundSection(sb);
        LearnedSection(sb);
        sb.AppendLine();
        sb.AppendLine("## How often GreedyLR was equal or better");
        sb.AppendLine();
        GreedyTable(sb);
        sb.AppendLine();
        GreedyAgainstEveryMethod(sb);
        sb.AppendLine();
        CostToTarget(sb);
        sb.AppendLine();
        WinsAndLosses(sb);
        sb.AppendLine();
        sb.AppendLine("Files: `curves.csv` (every evaluation of every run), `runs.csv` (final values), `sweep.csv` (the base-rate sweep).");
        return sb.ToString();
    }

    private void TaskTable(StringBuilder sb, TaskPlan plan)
    {
        string task = plan.Task.Name;
        double target = Target(task);
        var byMethod = _results.Where(r => r.Task == task).GroupBy(r => r.Method.Name).ToList();
        double best = byMethod.Select(g => g.Average(r => r.FinalLoss)).Where(double.IsFinite).DefaultIfEmpty(double.NaN).Min();
        sb.AppendLine(Inv, $"| method | base lr | final {plan.Task.EvalName} |{(plan.Task.HasAccuracy ? " final accuracy |" : "")} final lr | steps to target {Loss(target)} | wall s |");
        sb.AppendLine(plan.Task.HasAccuracy ? "|---|---:|---:|---:|---:|---:|---:|" : "|---|---:|---:|---:|---:|---:|");
        foreach (var g in byMethod)
        {
            var runs = g.ToList();
            double mean = runs.Average(r => r.FinalLoss);
            string loss = MeanSpread(runs.Select(r => r.FinalLoss), "0.0000");
            if (mean == best)
            {
                loss = $"**{loss}**";
            }
            var reach = runs.Select(r => r.Curve.FirstOrDefault(p => p.EvalLoss <= target)?.Step).Where(s => s is not null).Select(s => (double)s!.Value).ToList();
            string steps = reach.Count == 0 ? "never" : $"{reach.Average():0} ({reach.Count}/{runs.Count})";
            string acc = plan.Task.HasAccuracy ? $" {MeanSpread(runs.Where(r => !r.Diverged).Select(r => r.Curve[^1].EvalAccuracy), "0.000")} |" : "";
            sb.AppendLine(Inv, $"| {g.Key} | {runs[0].BaseLr.ToString("g3", Inv)} | {loss} |{acc} {MeanSpread(runs.Where(r => !r.Diverged).Select(r => r.Curve[^1].Lr), "g3")} | {steps} | {runs.Average(r => r.Seconds):0.0} |");
        }
    }

    /// <summary>
    /// GreedyLR (reference and trend) against every other method of the same optimizer (HD against
    /// GreedyLR on FusedSGD): per task and seed, equal or better when its final loss is at most the
    /// other's × (1 + tolerance).
    /// </summary>
    private void GreedyTable(StringBuilder sb)
    {
        double tol = _o.Tolerance;
        if (!_results.Any(r => r.Method.Schedule is "greedylr" or "greedylr-trend"))
        {
            sb.AppendLine("No GreedyLR method was run (see --methods).");
            return;
        }
        var greedyNames = new[] { "greedylr", "greedylr-trend" };
        var others = _results.Select(r => r.Method).Distinct().ToList();
        sb.AppendLine($"Per task and seed, GreedyLR counts as equal or better when its final evaluation loss ≤ the other method's × {1 + tol:0.###} " +
            $"(tolerance {tol * 100:0.##}%); it is compared with the methods of the same optimizer (Adam and HD-Adam with Adam, AdamW with AdamW; FusedSGD and HD with FusedSGD). " +
            "The paper reports GreedyLR equal or better more than 90% of the time; this is what we measured.");
        sb.AppendLine();
        sb.AppendLine("| against | GreedyLR | GreedyLR (trend) |");
        sb.AppendLine("|---|---:|---:|");
        var totals = new Dictionary<string, (int Wins, int Count)> { ["greedylr"] = (0, 0), ["greedylr-trend"] = (0, 0) };
        foreach (var other in others)
        {
            var cells = new List<string>();
            foreach (var schedule in greedyNames)
            {
                string family = other.Family switch { Family.Adam or Family.AdamHd => "adam", Family.AdamW => "adamw", _ => "sgd" };
                string greedyName = $"{family}-{schedule}";
                if (other.Name == greedyName)
                {
                    cells.Add("—");
                    continue;
                }
                int wins = 0, count = 0;
                foreach (var r in _results.Where(r => r.Method == other))
                {
                    var g = _results.FirstOrDefault(x => x.Task == r.Task && x.Seed == r.Seed && x.Method.Name == greedyName);
                    if (g is null)
                    {
                        continue;
                    }
                    count++;
                    if (EqualOrBetter(g.FinalLoss, r.FinalLoss, tol))
                    {
                        wins++;
                    }
                }
                var t = totals[schedule];
                totals[schedule] = (t.Wins + wins, t.Count + count);
                cells.Add(count == 0 ? "—" : $"{wins}/{count} ({100.0 * wins / count:0}%)");
            }
            if (cells.Any(c => c != "—"))
            {
                sb.AppendLine(Inv, $"| {other.Name} | {cells[0]} | {cells[1]} |");
            }
        }
        string Total(string s) => totals[s].Count == 0 ? "—" : $"**{totals[s].Wins}/{totals[s].Count} ({100.0 * totals[s].Wins / totals[s].Count:0}%)**";
        sb.AppendLine(Inv, $"| all | {Total("greedylr")} | {Total("greedylr-trend")} |");
    }

    /// <summary>For the language model: the validation perplexity (e to the loss in nats per character) of each method, mean over seeds.</summary>
    private void PerplexityLine(StringBuilder sb, TaskPlan plan)
    {
        if (plan.Task is not CharLanguageModel)
        {
            return;
        }
        var cells = _results.Where(r => r.Task == plan.Task.Name).GroupBy(r => r.Method.Name)
            .Select(g => $"{g.Key} {MeanSpread(g.Select(r => Math.Exp(r.FinalLoss)), "0.00")}");
        sb.AppendLine();
        sb.AppendLine($"Validation perplexity (e^loss): {string.Join("; ", cells)}.");
    }

    /// <summary>
    /// Each FusedSGD schedule beside its <c>-bounded</c> variant (the NMF stability clip, docs/nmf-bound.md):
    /// final losses, their ratio, and in how many seeds the clip was equal or better.
    /// </summary>
    private void BoundSection(StringBuilder sb)
    {
        var bounded = _results.Where(r => r.Method.Bounded).ToList();
        if (bounded.Count == 0)
        {
            return;
        }
        sb.AppendLine();
        sb.AppendLine("## The NMF stability clip");
        sb.AppendLine();
        sb.AppendLine($"Each `-bounded` method is its FusedSGD schedule with the rate clipped at every step to {Method.BoundFraction.ToString(Inv)} × 2(1 + β) / L, L the curvature bound " +
            "of the step's minibatch loss at the current factors (docs/nmf-bound.md); the schedule itself is unchanged. " +
            $"*Clip equal or better*: seeds where the bounded run's final loss ≤ the plain run's × {1 + _o.Tolerance:0.###}.");
        sb.AppendLine();
        sb.AppendLine("| task | schedule | plain final | bounded final | bounded / plain | clip equal or better |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|");
        foreach (var group in bounded.GroupBy(r => (r.Task, r.Method.Schedule)))
        {
            var plain = _results.Where(r => r.Task == group.Key.Task && !r.Method.Bounded && r.Method.Family == Family.Sgd && r.Method.Schedule == group.Key.Schedule).ToList();
            var clipped = group.ToList();
            int wins = 0, count = 0;
            foreach (var c in clipped)
            {
                var p = plain.FirstOrDefault(r => r.Seed == c.Seed);
                if (p is not null)
                {
                    count++;
                    wins += EqualOrBetter(c.FinalLoss, p.FinalLoss, _o.Tolerance) ? 1 : 0;
                }
            }
            double plainMean = plain.Count == 0 ? double.NaN : plain.Average(r => r.FinalLoss);
            double clippedMean = clipped.Average(r => r.FinalLoss);
            string ratio = double.IsFinite(plainMean) && double.IsFinite(clippedMean) ? (clippedMean / plainMean).ToString("0.000", Inv) : "—";
            string plainCell = plain.Count == 0 ? "not run" : MeanSpread(plain.Select(r => r.FinalLoss), "0.0000");
            string seeds = count == 0 ? "—" : $"{wins}/{count}";
            sb.AppendLine(Inv, $"| {group.Key.Task} | {group.Key.Schedule} | {plainCell} | {MeanSpread(clipped.Select(r => r.FinalLoss), "0.0000")} | {ratio} | {seeds} |");
        }
    }

    public static bool EqualOrBetter(double greedy, double other, double tolerance) =>
        double.IsFinite(greedy) && (!double.IsFinite(other) || greedy <= other * (1 + tolerance));

    private static string Loss(double v) => double.IsFinite(v) ? v.ToString("0.0000", Inv) : "—";

    private static string MeanSpread(IEnumerable<double> values, string format)
    {
        var a = values.ToArray();
        if (a.Length == 0)
        {
            return "—";
        }
        int diverged = a.Count(v => !double.IsFinite(v));
        var finite = a.Where(double.IsFinite).ToArray();
        if (finite.Length == 0)
        {
            return "diverged";
        }
        string s = $"{finite.Average().ToString(format, Inv)} ± {((finite.Max() - finite.Min()) / 2).ToString(format, Inv)}";
        return diverged > 0 ? $"{s} ({diverged} diverged)" : s;
    }
}
