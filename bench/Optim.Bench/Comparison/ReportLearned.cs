using System.Text;
using Optim.Bench.Comparison.Learned;

namespace Optim.Bench.Comparison;

// The report's section on the learned schedule: sgd-learned against step decay, cosine and GreedyLR per
// task (plain, and the -bounded variants on NMF where the learned rates are clipped too), and which tasks
// the shipped policy trained on.
internal sealed partial class Report
{
    /// <summary>The schedules the learned one is measured against (issue 15: step decay, cosine, GreedyLR).</summary>
    public static readonly string[] LearnedRivals = { "step", "cosine", "greedylr" };

    private void LearnedSection(StringBuilder sb)
    {
        var learned = _results.Where(r => r.Method.Learned).ToList();
        if (learned.Count == 0)
        {
            return;
        }
        var trained = LearnedSchedule.ShippedTrainingTasks();
        sb.AppendLine();
        sb.AppendLine("## The learned schedule");
        sb.AppendLine();
        sb.AppendLine("`sgd-learned` runs the shipped PPO policy (docs/learned-schedules.md) greedily, untrained here: at every evaluation it multiplies the rate by 0.5, 1 or 2 " +
            "(on NMF every step's rate is also clipped to half the stability bound, so it is measured against the `-bounded` schedules there as well). " +
            $"The policy trained on {(trained.Count == 0 ? "(unknown tasks)" : string.Join(", ", trained))} with training seeds from {ScheduleTraining.FirstTrainingSeed}; " +
            "the seeds here are held out, and tasks outside that list are tasks it never saw. " +
            $"*Learned equal or better*: seeds where its final loss ≤ the other's × {1 + _o.Tolerance:0.###}.");
        sb.AppendLine();
        sb.AppendLine("| task | seen in training | sgd-learned final | against | its final | learned equal or better |");
        sb.AppendLine("|---|---|---:|---|---:|---:|");
        foreach (var group in learned.GroupBy(r => r.Task))
        {
            var mine = group.ToList();
            string seen = trained.Contains(group.Key) ? "yes" : "**no**";
            var rivals = _results.Where(r => r.Task == group.Key && r.Method.Family == Family.Sgd && LearnedRivals.Contains(r.Method.Schedule)).GroupBy(r => r.Method.Name);
            foreach (var rival in rivals)
            {
                int wins = 0, count = 0;
                foreach (var m in mine)
                {
                    var other = rival.FirstOrDefault(r => r.Seed == m.Seed);
                    if (other is not null)
                    {
                        count++;
                        wins += EqualOrBetter(m.FinalLoss, other.FinalLoss, _o.Tolerance) ? 1 : 0;
                    }
                }
                sb.AppendLine(Inv, $"| {group.Key} | {seen} | {MeanSpread(mine.Select(r => r.FinalLoss), "0.0000")} | {rival.Key} | " +
                    $"{MeanSpread(rival.Select(r => r.FinalLoss), "0.0000")} | {(count == 0 ? "—" : $"{wins}/{count}")} |");
            }
        }
        foreach (var task in learned.Select(r => r.Task).Distinct())
        {
            string png = Plots.LearnedFileName(task);
            if ((_plots.GetValueOrDefault(task) ?? new List<string>()).Contains(png))
            {
                sb.AppendLine();
                sb.AppendLine(Inv, $"![{Path.GetFileNameWithoutExtension(png)}](plots/{png})");
            }
        }
    }
}
