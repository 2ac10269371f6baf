using ScottPlot;

namespace Optim.Bench.Comparison;

/// <summary>
/// PNG figures in the manner of the GreedyLR paper's: the learning-rate schedule each method produced,
/// and the loss histories of GreedyLR against the SGD baseline and hypergradient descent.
/// </summary>
internal static class Plots
{
    /// <summary>Writes the figures of every task; returns the file names written, per task.</summary>
    public static Dictionary<string, List<string>> Write(IEnumerable<TaskPlan> plans, IReadOnlyList<RunResult> results, string dir)
    {
        Directory.CreateDirectory(dir);
        var written = new Dictionary<string, List<string>>();
        foreach (var plan in plans)
        {
            var runs = results.Where(r => r.Task == plan.Task.Name).ToList();
            var files = new List<string>();
            string lr = $"lr-{plan.Task.Name}.png";
            if (RateSchedules(plan, runs, Path.Combine(dir, lr)))
            {
                files.Add(lr);
            }
            string loss = $"loss-{plan.Task.Name}.png";
            if (LossHistories(plan, runs, Path.Combine(dir, loss)))
            {
                files.Add(loss);
            }
            string learned = LearnedFileName(plan.Task.Name);
            if (LearnedBesideGreedy(plan, runs, Path.Combine(dir, learned)))
            {
                files.Add(learned);
            }
            written[plan.Task.Name] = files;
        }
        return written;
    }

    /// <summary>Rate against step (seed 0, log scale): FusedSGD and HD on the left, Adam on the right.</summary>
    private static bool RateSchedules(TaskPlan plan, List<RunResult> runs, string path)
    {
        var panels = new[]
        {
            ("FusedSGD schedules and hypergradient descent", runs.Where(r => r.Seed == 0 && r.Method.Family is Family.Sgd or Family.Hd).ToList()),
            ("Adam schedules", runs.Where(r => r.Seed == 0 && r.Method.Family == Family.Adam).ToList()),
            ("AdamW schedules and hypergradient Adam", runs.Where(r => r.Seed == 0 && r.Method.Family is Family.AdamW or Family.AdamHd).ToList()),
        }.Where(p => p.Item2.Count > 0).ToList();
        if (panels.Count == 0)
        {
            return false;
        }
        var multiplot = new Multiplot();
        multiplot.AddPlots(panels.Count);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Columns();
        for (int i = 0; i < panels.Count; i++)
        {
            var plt = multiplot.GetPlot(i);
            var (title, panelRuns) = panels[i];
            foreach (var r in panelRuns)
            {
                var pts = r.Curve.Where(p => p.Lr > 0 && double.IsFinite(p.Lr)).ToList();
                if (pts.Count == 0)
                {
                    continue;
                }
                var line = plt.Add.ScatterLine(pts.Select(p => (double)p.Step).ToArray(), pts.Select(p => Math.Log10(p.Lr)).ToArray());
                line.LegendText = r.Method.Name;
                line.LineWidth = 2;
                line.LinePattern = r.Method.Family is Family.Hd or Family.AdamHd ? LinePattern.Dashed : LinePattern.Solid;
            }
            Style(plt, $"{plan.Task.Name}: {title} (seed 0)", "learning rate (log scale)");
        }
        multiplot.SavePng(path, 900 * panels.Count, 600);
        return true;
    }

    public static string LearnedFileName(string task) => $"lr-learned-{task}.png";

    /// <summary>The learned policy's rates (every seed, solid) beside GreedyLR's (every seed, dashed), FusedSGD, log scale.</summary>
    private static bool LearnedBesideGreedy(TaskPlan plan, List<RunResult> runs, string path)
    {
        var learned = runs.Where(r => r.Method.Learned).ToList();
        if (learned.Count == 0)
        {
            return false;
        }
        var plt = new Plot();
        foreach (var r in learned.Concat(runs.Where(r => r.Method.Name is "sgd-greedylr" or "sgd-greedylr-bounded")))
        {
            var pts = r.Curve.Where(p => p.Lr > 0 && double.IsFinite(p.Lr)).ToList();
            var line = plt.Add.ScatterLine(pts.Select(p => (double)p.Step).ToArray(), pts.Select(p => Math.Log10(p.Lr)).ToArray());
            line.LegendText = $"{r.Method.Name} seed {r.Seed}";
            line.LineWidth = 2;
            line.LinePattern = r.Method.Learned ? LinePattern.Solid : LinePattern.Dashed;
        }
        Style(plt, $"{plan.Task.Name}: the learned schedule beside GreedyLR (FusedSGD, every seed)", "learning rate (log scale)");
        plt.SavePng(path, 900, 600);
        return true;
    }

    /// <summary>Evaluation loss against step, mean over seeds (log scale), for the paper's comparison.</summary>
    private static bool LossHistories(TaskPlan plan, List<RunResult> runs, string path)
    {
        var names = new[] { "sgd-constant", "sgd-greedylr", "sgd-greedylr-trend", "hd-parameter", "hd-group", "adam-constant", "adam-greedylr", "adamw-constant", "adamw-cosine", "adamw-greedylr", "sgd-constant-bounded" };
        var plt = new Plot();
        bool any = false;
        foreach (var name in names)
        {
            var group = runs.Where(r => r.Method.Name == name && !r.Diverged).ToList();
            if (group.Count == 0)
            {
                continue;
            }
            int n = group.Min(r => r.Curve.Count);
            var xs = Enumerable.Range(0, n).Select(i => (double)group[0].Curve[i].Step).ToArray();
            var ys = Enumerable.Range(0, n).Select(i => Math.Log10(group.Average(r => r.Curve[i].EvalLoss))).ToArray();
            var line = plt.Add.ScatterLine(xs, ys);
            line.LegendText = name;
            line.LineWidth = 2;
            line.LinePattern = name.StartsWith("hd-", StringComparison.Ordinal) ? LinePattern.Dashed : name.StartsWith("adam-", StringComparison.Ordinal) ? LinePattern.Dotted : LinePattern.Solid;
            any = true;
        }
        if (!any)
        {
            return false;
        }
        Style(plt, $"{plan.Task.Name}: {plan.Task.EvalName}, mean over seeds", $"{plan.Task.EvalName} (log scale)");
        plt.SavePng(path, 900, 600);
        return true;
    }

    private static void Style(Plot plt, string title, string yLabel)
    {
        plt.Title(title);
        plt.XLabel("step");
        plt.YLabel(yLabel);
        plt.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            LabelFormatter = y => Math.Pow(10, y).ToString("g3", System.Globalization.CultureInfo.InvariantCulture),
        };
        plt.ShowLegend(Alignment.UpperRight);
    }
}
