using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Optim.Bench.Comparison;

/// <summary>
/// The learning-rate comparison: trains real models with each learning-rate method on the same data,
/// seeds, minibatches and step budget, from base rates chosen by a recorded sweep per task, and writes a
/// report (tables, plots, every curve). Deterministic for a given seed, thread count and machine.
/// </summary>
internal static class Compare
{
    public static int Run(CompareSettings o, TextWriter output)
    {
        var clock = Stopwatch.StartNew();
        var methods = o.Methods.Select(Method.Find).ToList();
        var digits = new Lazy<Digits>(() => Digits.Load(o.DataDir));
        var text = new Lazy<CharText>(() => CharText.Load(CharText.PathFor(o.DataDir)));
        var tasks = o.Tasks.Select(name => TrainingTask.Create(name, digits, text)).ToList();
        try
        {
            var runner = new Runner(o, new LiveProgress(output, 0));
            long total = 0;
            foreach (var task in tasks)
            {
                var (steps, evalEvery) = runner.Budget(task);
                total += (long)steps * methods.Count(m => Runs(task, m)) * Math.Min(o.Seeds, task.Seeds ?? o.Seeds);
                foreach (var f in RateFamilies(methods.Where(m => Runs(task, m))))
                {
                    bool swept = f != Family.Sls && ((f == Family.Adam ? o.AdamLr : o.SgdLr) ?? task.UsualRate(f)) is null;
                    total += swept ? (long)runner.SweepSteps(steps, evalEvery) * Runner.Grid(f).Length : 0;
                }
            }
            var progress = new LiveProgress(output, total);
            runner = new Runner(o, progress);
            output.WriteLine($"compare: {tasks.Count} tasks x {methods.Count} methods x {o.Seeds} seeds, {total:N0} training steps in all (sweep included)");
            var plans = new List<TaskPlan>();
            var sweep = new List<SweepPoint>();
            var results = new List<RunResult>();
            foreach (var task in tasks)
            {
                var (steps, evalEvery) = runner.Budget(task);
                var baseLr = new Dictionary<Family, double>();
                foreach (var f in RateFamilies(methods.Where(m => Runs(task, m))))
                {
                    baseLr[f] = runner.BaseRate(task, f, steps, evalEvery, sweep);
                    bool swept = sweep.Any(s => s.Task == task.Name && s.Family == f);
                    progress.Report($"{task.Name}: {f.ToString().ToLowerInvariant()} base rate {baseLr[f]:g3}{(swept ? " (best of the sweep)" : " (given)")}");
                }
                baseLr[Family.Hd] = baseLr.GetValueOrDefault(Family.Sgd);
                List<string> groupNames;
                using (var probe = task.Create(0))
                {
                    groupNames = probe.Groups.Select(g => g.Name).ToList();
                }
                plans.Add(new TaskPlan(task, steps, evalEvery, baseLr, groupNames));
                foreach (var method in methods.Where(m => Runs(task, m)))
                {
                    for (int seed = 0; seed < Math.Min(o.Seeds, task.Seeds ?? o.Seeds); seed++)
                    {
                        var r = runner.Train(task, method, seed, baseLr[method.RateFamily], steps, evalEvery, $"{task.Name} {method.Name} seed {seed}");
                        results.Add(r);
                        var last = r.Curve[^1];
                        string acc = task.HasAccuracy ? $", acc {last.EvalAccuracy:0.000}" : "";
                        progress.Report($"{task.Name} {method.Name} seed {seed}: " +
                            (r.Diverged ? $"diverged at step {last.Step}" : $"{task.EvalName} {last.EvalLoss:0.0000}{acc}, lr {last.Lr:g3}") + $", {r.Seconds:0.0} s");
                    }
                }
            }
            Directory.CreateDirectory(o.OutDir);
            Csv.WriteCurves(results, Path.Combine(o.OutDir, "curves.csv"));
            Csv.WriteRuns(results, Path.Combine(o.OutDir, "runs.csv"));
            Csv.WriteSweep(sweep, Path.Combine(o.OutDir, "sweep.csv"));
            var plots = o.Plots ? Plots.Write(plans, results, Path.Combine(o.OutDir, "plots")) : new Dictionary<string, List<string>>();
            var report = new Report(o, plans, sweep, results, plots, clock.Elapsed);
            File.WriteAllText(Path.Combine(o.OutDir, "report.md"), report.Markdown());
            output.WriteLine();
            output.WriteLine(report.ConsoleSummary());
            output.WriteLine($"Report: {Path.Combine(o.OutDir, "report.md")}; curves, runs and sweep as CSV beside it{(o.Plots ? ", plots in plots/" : "")} ({clock.Elapsed.TotalSeconds:0} s in all).");
            return 0;
        }
        finally
        {
            foreach (var t in tasks)
            {
                t.Dispose();
            }
            if (digits.IsValueCreated)
            {
                digits.Value.Dispose();
            }
            if (text.IsValueCreated)
            {
                text.Value.Dispose();
            }
        }
    }

    /// <summary>Whether <paramref name="method"/> runs on <paramref name="task"/>: the bounded methods need the task's stability bound.</summary>
    public static bool Runs(TrainingTask task, Method method) => (!method.Bounded || task.HasStabilityBound) && task.Suits(method);

    /// <summary>The families whose base rates <paramref name="methods"/> need (HD starts from FusedSGD's, AdamW from Adam's).</summary>
    private static List<Family> RateFamilies(IEnumerable<Method> methods) => methods.Select(m => m.RateFamily).Distinct().OrderBy(f => f).ToList();
}

/// <summary>The CSV files of a comparison (invariant culture, round-trip doubles).</summary>
internal static class Csv
{
    public static void WriteCurves(IEnumerable<RunResult> results, string path)
    {
        var sb = new StringBuilder("task,method,seed,base_lr,step,train_loss,eval_loss,eval_accuracy,lr\n");
        foreach (var r in results)
        {
            foreach (var p in r.Curve)
            {
                sb.Append(CultureInfo.InvariantCulture, $"{r.Task},{r.Method.Name},{r.Seed},{r.BaseLr:R},{p.Step},{p.TrainLoss:R},{p.EvalLoss:R},{p.EvalAccuracy:R},{p.Lr:R}\n");
            }
        }
        File.WriteAllText(path, sb.ToString());
    }

    public static void WriteRuns(IEnumerable<RunResult> results, string path)
    {
        var sb = new StringBuilder("task,method,seed,base_lr,steps,diverged,final_eval_loss,final_eval_accuracy,final_lr,wall_seconds\n");
        foreach (var r in results)
        {
            var last = r.Curve[^1];
            sb.Append(CultureInfo.InvariantCulture, $"{r.Task},{r.Method.Name},{r.Seed},{r.BaseLr:R},{last.Step},{(r.Diverged ? 1 : 0)},{r.FinalLoss:R},{last.EvalAccuracy:R},{last.Lr:R},{r.Seconds:0.###}\n");
        }
        File.WriteAllText(path, sb.ToString());
    }

    public static void WriteSweep(IEnumerable<SweepPoint> sweep, string path)
    {
        var sb = new StringBuilder("task,family,lr,steps,final_eval_loss,chosen\n");
        foreach (var s in sweep)
        {
            sb.Append(CultureInfo.InvariantCulture, $"{s.Task},{s.Family.ToString().ToLowerInvariant()},{s.Lr:R},{s.Steps},{s.FinalLoss:R},{(s.Chosen ? 1 : 0)}\n");
        }
        File.WriteAllText(path, sb.ToString());
    }
}
