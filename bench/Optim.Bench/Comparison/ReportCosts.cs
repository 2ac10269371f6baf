using System.Text;

namespace Optim.Bench.Comparison;

// The report's cross-method sections: GreedyLR against every method (whatever its optimizer), and what
// each method spent to reach each task's target in forward passes and training seconds.
internal sealed partial class Report
{
    /// <summary>The share the seed paper reports for GreedyLR: equal or better in more than 90% of its comparisons.</summary>
    public const double ClaimedShare = 0.9;

    /// <summary>
    /// Every GreedyLR method against every other method of the comparison, of any optimizer (Sls and
    /// Adam included), per task and seed, with the tolerance of <see cref="GreedyTable"/>.
    /// </summary>
    private void GreedyAgainstEveryMethod(StringBuilder sb)
    {
        double tol = _o.Tolerance;
        var greedy = _results.Select(r => r.Method).Distinct().Where(m => m.Schedule is "greedylr" or "greedylr-trend").ToList();
        sb.AppendLine("## GreedyLR against every method");
        sb.AppendLine();
        if (greedy.Count == 0)
        {
            sb.AppendLine("No GreedyLR method was run (see --methods).");
            return;
        }
        sb.AppendLine($"Each GreedyLR method against every other method run, whatever its optimizer, per task and seed (equal or better: final evaluation loss " +
            $"≤ the other's × {1 + tol:0.###}). The seed paper reports GreedyLR equal or better in more than {ClaimedShare * 100:0}% of its comparisons; " +
            "the last row says whether that held here.");
        sb.AppendLine();
        sb.AppendLine("| against | " + string.Join(" | ", greedy.Select(g => g.Name)) + " |");
        sb.AppendLine("|---|" + string.Concat(greedy.Select(_ => "---:|")));
        var totals = greedy.ToDictionary(g => g, _ => (Wins: 0, Count: 0));
        foreach (var other in _results.Select(r => r.Method).Distinct())
        {
            var cells = new List<string>();
            foreach (var g in greedy)
            {
                if (g == other)
                {
                    cells.Add("—");
                    continue;
                }
                var (wins, count) = Tally(g, other, tol);
                var t = totals[g];
                totals[g] = (t.Wins + wins, t.Count + count);
                cells.Add(count == 0 ? "—" : $"{wins}/{count} ({100.0 * wins / count:0}%)");
            }
            sb.AppendLine($"| {other.Name} | {string.Join(" | ", cells)} |");
        }
        sb.AppendLine("| all | " + string.Join(" | ", greedy.Select(g => Share(totals[g]))) + " |");
        sb.AppendLine($"| > {ClaimedShare * 100:0}% (the paper) | " + string.Join(" | ", greedy.Select(g =>
            totals[g].Count == 0 ? "—" : totals[g].Wins > ClaimedShare * totals[g].Count ? "yes" : "no")) + " |");
    }

    private (int Wins, int Count) Tally(Method greedy, Method other, double tol)
    {
        int wins = 0, count = 0;
        foreach (var r in _results.Where(r => r.Method == other))
        {
            var g = _results.FirstOrDefault(x => x.Task == r.Task && x.Seed == r.Seed && x.Method == greedy);
            if (g is null)
            {
                continue;
            }
            count++;
            wins += EqualOrBetter(g.FinalLoss, r.FinalLoss, tol) ? 1 : 0;
        }
        return (wins, count);
    }

    private static string Share((int Wins, int Count) t) => t.Count == 0 ? "—" : $"**{t.Wins}/{t.Count} ({100.0 * t.Wins / t.Count:0}%)**";

    /// <summary>
    /// Per task and method: forward passes and training seconds (evaluations excluded) until the first
    /// evaluation at or below the task's target (<see cref="Target"/>), averaged over the seeds that reached
    /// it, and forward passes per step. Every method costs one forward pass per step but Sls, which pays one
    /// per closure evaluation of its line search.
    /// </summary>
    private void CostToTarget(StringBuilder sb)
    {
        sb.AppendLine("## Forward passes and time to target");
        sb.AppendLine();
        sb.AppendLine("Steps alone flatter a method that evaluates the loss several times per step. Here every run is charged what it spent until its first " +
            "evaluation at or below the task's target (the best mean final loss of the constant-rate methods × 1.05, as in the tables above): " +
            "forward passes of training (one per step; Sls one per closure evaluation: the loss and gradient at θ and each trial of its line search) " +
            "and training seconds (evaluations excluded; the machine's load moves them, so compare within one report). " +
            "Averaged over the seeds that reached the target; `never` when none did.");
        foreach (var plan in _plans)
        {
            string task = plan.Task.Name;
            double target = Target(task);
            sb.AppendLine();
            sb.AppendLine($"### {task} (target {Loss(target)})");
            sb.AppendLine();
            sb.AppendLine("| method | forward passes to target | training s to target | forward passes per step | training s per run |");
            sb.AppendLine("|---|---:|---:|---:|---:|");
            foreach (var g in _results.Where(r => r.Task == task).GroupBy(r => r.Method.Name))
            {
                var runs = g.ToList();
                var reached = runs.Select(r => Reach(r, target)).Where(c => c is not null).Select(c => c!).ToList();
                string passes = reached.Count == 0 ? "never" : $"{reached.Average(c => (double)c.ForwardPasses):0} ({reached.Count}/{runs.Count})";
                string seconds = reached.Count == 0 ? "never" : $"{reached.Average(c => c.Seconds):0.00}";
                var ends = runs.Where(r => r.Costs.Count > 0 && r.Curve[^1].Step > 0).ToList();
                string perStep = ends.Count == 0 ? "—" : $"{ends.Average(r => (double)r.Costs[^1].ForwardPasses / r.Curve[^1].Step):0.00}";
                string total = ends.Count == 0 ? "—" : $"{ends.Average(r => r.Costs[^1].Seconds):0.0}";
                sb.AppendLine($"| {g.Key} | {passes} | {seconds} | {perStep} | {total} |");
            }
        }
    }

    /// <summary>The cost at a run's first evaluation at or below the target, or null.</summary>
    private static Cost? Reach(RunResult r, double target)
    {
        for (int i = 0; i < r.Curve.Count && i < r.Costs.Count; i++)
        {
            if (r.Curve[i].EvalLoss <= target)
            {
                return r.Costs[i];
            }
        }
        return null;
    }

    /// <summary>
    /// Where each method wins and loses, from this run's numbers alone: per task, the methods ranked by
    /// their final evaluation loss (mean over seeds; a diverged run counts as +∞), the best and worst three
    /// and GreedyLR's best rank; then per method, its mean rank and how often it was in the top or bottom
    /// three of a task.
    /// </summary>
    private void WinsAndLosses(StringBuilder sb)
    {
        sb.AppendLine("## Where each method wins and loses");
        sb.AppendLine();
        sb.AppendLine("Methods ranked per task by final evaluation loss (mean over seeds; a diverged run counts as +∞; rank 1 is best). " +
            "Generated from this run's numbers, not written by hand.");
        sb.AppendLine();
        var ranks = new Dictionary<Method, List<(int Rank, int Of)>>();
        foreach (var task in _results.Select(r => r.Task).Distinct())
        {
            var order = _results.Where(r => r.Task == task).GroupBy(r => r.Method)
                .Select(g => (Method: g.Key, Loss: g.Average(r => r.FinalLoss)))
                .OrderBy(m => double.IsNaN(m.Loss) ? double.PositiveInfinity : m.Loss).ToList();
            for (int i = 0; i < order.Count; i++)
            {
                (ranks.TryGetValue(order[i].Method, out var l) ? l : ranks[order[i].Method] = new()).Add((i + 1, order.Count));
            }
            static string Name((Method Method, double Loss) m) => $"{m.Method.Name} ({Loss(m.Loss)})";
            int greedy = order.FindIndex(m => m.Method.Schedule is "greedylr" or "greedylr-trend");
            // The worst three are listed only beyond the best three, so a task of few methods names each once.
            var worst = order.Skip(Math.Max(3, order.Count - 3)).Reverse().ToList();
            sb.AppendLine($"- **{task}** ({order.Count} methods): best {string.Join(", ", order.Take(3).Select(Name))}" +
                (worst.Count == 0 ? "" : $"; worst {string.Join(", ", worst.Select(Name))}") +
                (greedy < 0 ? "." : $"; GreedyLR's best: {order[greedy].Method.Name}, rank {greedy + 1}."));
        }
        sb.AppendLine();
        sb.AppendLine("Sorted by the mean relative rank (rank ÷ the task's number of methods, so tasks with more methods do not weigh more); " +
            "bottom 3 counts only ranks below the top 3.");
        sb.AppendLine();
        sb.AppendLine("| method | tasks | mean rank | mean relative rank | top 3 | bottom 3 |");
        sb.AppendLine("|---|---:|---:|---:|---:|---:|");
        foreach (var (method, list) in ranks.OrderBy(kv => kv.Value.Average(r => (double)r.Rank / r.Of)))
        {
            sb.AppendLine($"| {method.Name} | {list.Count} | {list.Average(r => r.Rank):0.0} | {list.Average(r => (double)r.Rank / r.Of):0.00} | " +
                $"{list.Count(r => r.Rank <= 3)} | {list.Count(r => r.Rank > Math.Max(3, r.Of - 3))} |");
        }
    }
}
