using System.Globalization;
using System.Text;

namespace Optim.Benchmarks;

/// <summary>How, when and where a run happened: the header of the results file.</summary>
internal sealed record RunInfo(string Command, DateTime StartedUtc, TimeSpan Duration, string Commit, IReadOnlyList<string> Machine,
    string Job, string ArtifactsPath, bool Partial, string LoadBefore, string LoadAfter);

/// <summary>
/// Writes the results file (bench/results/benchmarks-cpu.md by default): the command, date and machine, a
/// table per category with the in-run comparisons, the scheduler table, and the goals of issue 5 with
/// what this run measured against each.
/// </summary>
internal static class Report
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Markdown(Results results, RunInfo run)
    {
        var md = new StringBuilder();
        md.AppendLine("# Step benchmarks on the CPU (BenchmarkDotNet)");
        md.AppendLine();
        md.AppendLine("```");
        md.AppendLine(run.Command);
        md.AppendLine("```");
        md.AppendLine();
        string took = run.Duration.TotalMinutes >= 1 ? $"{run.Duration.TotalMinutes:0.0} min" : $"{run.Duration.TotalSeconds:0} s";
        md.Append(Inv, $"Run {run.StartedUtc:yyyy-MM-dd HH:mm} UTC at commit {run.Commit}; took {took}.");
        md.AppendLine(run.Partial ? " **Partial run** (a filter, other sizes, the quick job or a failed case): compare only what is here." : "");
        md.AppendLine();
        foreach (var line in run.Machine)
        {
            md.AppendLine("- " + line);
        }
        md.AppendLine("- Job: " + run.Job);
        md.AppendLine(Inv, $"- Load average (1, 5, 15 min) before the run: {run.LoadBefore}; after: {run.LoadAfter}.");
        md.AppendLine("  The steps use every core: other work on the machine stalls their parallel regions, and the numbers then mean little.");
        md.AppendLine(Inv, $"- BenchmarkDotNet's own logs and reports: `{run.ArtifactsPath}`");
        md.AppendLine();
        md.AppendLine("How to read the tables. Every ratio compares two cases of this run only (the machine's bandwidth varies " +
            "between runs). **MB/step**: what the step must move, bytes per float32 element (counted from the passes it makes, " +
            "listed under *traffic*) times parameters; TorchSharp's at its own sequence of tensor ops. **GB/s**: MB/step / median. " +
            "**of ref**: GB/s / GB/s of the bandwidth reference that makes the same passes over the same kind and number of " +
            "arrays in the same case (`optim_stream_reference`, docs/design.md): for our steps, reference time / step time; " +
            "for TorchSharp, whose bytes differ, relative to the reference of our step. **vs torch**: TorchSharp's median / " +
            "this median (above 1: faster). **alloc/step**: managed bytes allocated per step (MemoryDiagnoser, which counts the whole " +
            "process during one extra iteration, so a few hundred bytes from runtime threads can show up divided over few slow steps; " +
            "tests/Optim.Tests/AllocationTests.cs pins zero on the stepping thread for our optimizers and GreedyLR). " +
            "All optimizers run over one param group.");
        md.AppendLine();

        WriteGoals(md, results);
        WriteAdamGoals(md, results);

        foreach (var (category, title) in new[]
        {
            (Catalog.Plain, "Plain SGD (lr only)"),
            (Catalog.Momentum, "Momentum 0.9: SGD and hypergradient descent at each scope (β = 1e-9)"),
            (Catalog.NesterovWd, "Nesterov momentum 0.9, weight decay 1e-4"),
        })
        {
            var rows = results.Rows.Where(r => r.Kind.Category == category).ToList();
            if (rows.Count == 0)
            {
                continue;
            }
            md.AppendLine("## " + title);
            md.AppendLine();
            if (category == Catalog.Momentum)
            {
                md.AppendLine("With one param group, the per-group scope keeps one rate like the global scope; it differs only in how " +
                    "rates are indexed.");
                md.AppendLine();
            }
            md.AppendLine("| params | tensors | implementation | mean ms | median ms | MB/step | GB/s | of ref | vs torch | alloc/step |");
            md.AppendLine("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var r in rows.OrderBy(r => r.Parameters).ThenBy(r => r.Tensors))
            {
                md.AppendLine(Inv, $"| {SuiteSettings.Short(r.Parameters)} | {r.Tensors} | {r.Kind.Label} | {r.MeanNs / 1e6:0.000} ± {r.StdErrNs / 1e6:0.000} | " +
                    $"{r.MedianNs / 1e6:0.000} | {r.BytesPerStep / 1e6:0} | {r.GBps:0.0} | {Percent(results.FractionOfReference(r))} | " +
                    $"{Times(results.SpeedUp(r))} | {Bytes(r.AllocatedBytes)} |");
            }
            md.AppendLine();
            md.AppendLine("Traffic per element:");
            md.AppendLine();
            foreach (var kind in rows.Select(r => r.Kind).Distinct())
            {
                md.AppendLine(Inv, $"- {kind.Label}: {kind.BytesPerElement} B — {kind.Traffic}");
            }
            md.AppendLine();
        }

        var training = results.Rows.Where(r => r.Kind.Category == Catalog.TrainingStep).OrderBy(r => r.Parameters).ThenBy(r => r.IsBaseline ? 0 : 1).ToList();
        if (training.Count > 0)
        {
            md.AppendLine("## A whole training step: zero_grad, forward, backward, step (momentum 0.9)");
            md.AppendLine();
            md.AppendLine("Deep MLPs of Linear(width, width) layers with ReLU between, an MSE loss on a fixed batch; the optimizer's " +
                "share of the step, and where the rest goes, is measured phase by phase by the interleaved `train-steps` " +
                "(bench/results/train-steps-cpu.md).");
            md.AppendLine();
            md.AppendLine("| params | tensors | optimizer | mean ms | median ms | vs torch | alloc/step |");
            md.AppendLine("|---:|---:|---|---:|---:|---:|---:|");
            foreach (var r in training)
            {
                md.AppendLine(Inv, $"| {r.Parameters / 1e6:0.00}M | {r.Tensors} | {r.Kind.Label} | {r.MeanNs / 1e6:0.000} ± {r.StdErrNs / 1e6:0.000} | " +
                    $"{r.MedianNs / 1e6:0.000} | {Times(results.SpeedUp(r))} | {Bytes(r.AllocatedBytes)} |");
            }
            md.AppendLine();
        }

        var schedulers = results.Rows.Where(r => r.Kind.Category == Catalog.Scheduler).OrderBy(r => r.Groups).ToList();
        if (schedulers.Count > 0)
        {
            md.AppendLine("## Scheduler step with a metric: GreedyLR");
            md.AppendLine();
            md.AppendLine("The optimizer is a FusedSGD with one 16-element parameter per param group; the metric cycles through a fixed " +
                "noisy, slowly improving sequence (patience 2, factor 0.95), so rates move both ways.");
            md.AppendLine();
            md.AppendLine("| param groups | scheduler | mean µs | median µs | vs ReduceLROnPlateau | alloc/step |");
            md.AppendLine("|---:|---|---:|---:|---:|---:|");
            foreach (var r in schedulers)
            {
                md.AppendLine(Inv, $"| {r.Groups} | {r.Kind.Label} | {r.MeanNs / 1e3:0.000} ± {r.StdErrNs / 1e3:0.000} | {r.MedianNs / 1e3:0.000} | " +
                    $"{Times(results.SpeedUp(r))} | {Bytes(r.AllocatedBytes)} |");
            }
            md.AppendLine();
        }
        return md.ToString();
    }

    // The step goals of issue 13 for FusedAdamW (against TorchSharp's AdamW and the in-run reference).
    private static void WriteAdamGoals(StringBuilder md, Results results)
    {
        md.AppendLine("## Goals of issue 13 (AdamW)");
        md.AppendLine();
        md.AppendLine("| goal | case | measured | verdict | why |");
        md.AppendLine("|---|---|---:|---|---|");
        foreach (var (parameters, tensors, target) in new[] { (100_000_000L, 4, 3.0), (10_000_000L, 1000, 8.0) })
        {
            string goal = $"FusedAdamW ≥ {target:0.0#}x faster than torch.optim.AdamW";
            string where = Case(parameters, tensors);
            var fused = results.Find(nameof(StepBenchmarks.FusedAdamW), parameters, tensors);
            var torch = results.Find(nameof(StepBenchmarks.TorchAdamW), parameters, tensors);
            if (fused is null || torch is null)
            {
                md.AppendLine(Inv, $"| {goal} | {where} | – | not measured in this run | |");
                continue;
            }
            double speedUp = torch.MedianNs / fused.MedianNs;
            var reference = results.ReferenceOf(fused);
            string why = reference is null
                ? "the bandwidth reference did not run"
                : $"FusedAdamW at {Pct(fused.GBps / reference.GBps)} of the reference's GB/s, torch.optim.AdamW at {Pct(torch.GBps / reference.GBps)} " +
                  $"(at its {torch.Kind.BytesPerElement} B vs our {fused.Kind.BytesPerElement} B per element); bandwidth alone allows " +
                  $"{(double)torch.Kind.BytesPerElement / fused.Kind.BytesPerElement:0.00}x at equal GB/s";
            md.AppendLine(Inv, $"| {goal} | {where} | {speedUp:0.00}x | {Verdict(speedUp >= target)} | {why} |");
        }
        foreach (long parameters in new[] { 10_000_000L, 100_000_000L })
        {
            var row = results.Find(nameof(StepBenchmarks.FusedAdamW), parameters, 4);
            const string goal = "FusedAdamW ≥ 90% of the in-run bandwidth reference";
            if (row is null || results.FractionOfReference(row) is not double fraction)
            {
                md.AppendLine(Inv, $"| {goal} | {Case(parameters, 4)} | – | not measured in this run | |");
                continue;
            }
            var reference = results.ReferenceOf(row)!;
            string why = $"{row.GBps:0.0} vs {reference.GBps:0.0} GB/s; {(row.MedianNs - reference.MedianNs) / 1e3:0} µs above the reference";
            md.AppendLine(Inv, $"| {goal} | {Case(parameters, 4)} | {Pct(fraction)} | {Verdict(fraction >= 0.9)} | {why} |");
        }
        md.AppendLine();
    }

    private static void WriteGoals(StringBuilder md, Results results)
    {
        md.AppendLine("## Goals of issue 5");
        md.AppendLine();
        md.AppendLine("| goal | case | measured | verdict | why |");
        md.AppendLine("|---|---|---:|---|---|");

        // 1 and 2: fused momentum SGD against TorchSharp's.
        foreach (var (parameters, tensors, target) in new[] { (100_000_000L, 4, 1.5), (10_000_000L, 1000, 4.0) })
        {
            string goal = $"FusedSGD momentum ≥ {target:0.0#}x faster than torch.optim.SGD momentum";
            string where = Case(parameters, tensors);
            var fused = results.Find(nameof(StepBenchmarks.FusedSgdMomentum), parameters, tensors);
            var torch = results.Find(nameof(StepBenchmarks.TorchSgdMomentum), parameters, tensors);
            if (fused is null || torch is null)
            {
                md.AppendLine(Inv, $"| {goal} | {where} | – | not measured in this run | |");
                continue;
            }
            double speedUp = torch.MedianNs / fused.MedianNs;
            var reference = results.ReferenceOf(fused);
            string why;
            if (reference is null)
            {
                why = "the bandwidth reference did not run";
            }
            else
            {
                double fusedFraction = fused.GBps / reference.GBps;
                double torchFraction = torch.GBps / reference.GBps;
                why = $"FusedSGD at {Pct(fusedFraction)} of the reference's GB/s, torch.optim.SGD at {Pct(torchFraction)} (at its " +
                    $"{torch.Kind.BytesPerElement} B vs our {fused.Kind.BytesPerElement} B per element); bandwidth alone allows " +
                    $"{(double)torch.Kind.BytesPerElement / fused.Kind.BytesPerElement:0.00}x at equal GB/s";
                if (tensors >= 100)
                {
                    double fusedOver = (fused.MedianNs - reference.MedianNs) / tensors / 1e3;
                    double torchOver = (torch.MedianNs - reference.MedianNs * torch.Kind.BytesPerElement / reference.Kind.BytesPerElement) / tensors / 1e3;
                    why += $"; time above what its bytes take at the reference's GB/s, per tensor: FusedSGD {fusedOver:0.00} µs, " +
                        $"torch.optim.SGD {torchOver:0.00} µs";
                }
            }
            md.AppendLine(Inv, $"| {goal} | {where} | {speedUp:0.00}x | {Verdict(speedUp >= target)} | {why} |");
        }

        // 3: fused steps near the in-run reference for large tensors.
        foreach (long parameters in new[] { 10_000_000L, 100_000_000L })
        {
            foreach (var method in new[] { nameof(StepBenchmarks.FusedSgdPlain), nameof(StepBenchmarks.FusedSgdMomentum), nameof(StepBenchmarks.FusedSgdNesterovWd) })
            {
                var row = results.Find(method, parameters, 4);
                string goal = $"{Catalog.Of(method).Label} ({Catalog.Of(method).Category}) ≥ 90% of the in-run bandwidth reference";
                if (row is null || results.FractionOfReference(row) is not double fraction)
                {
                    md.AppendLine(Inv, $"| {goal} | {Case(parameters, 4)} | – | not measured in this run | |");
                    continue;
                }
                var reference = results.ReferenceOf(row)!;
                string why = $"{row.GBps:0.0} vs {reference.GBps:0.0} GB/s; {(row.MedianNs - reference.MedianNs) / 1e3:0} µs above the reference";
                md.AppendLine(Inv, $"| {goal} | {Case(parameters, 4)} | {Pct(fraction)} | {Verdict(fraction >= 0.9)} | {why} |");
            }
        }
        // How far two identical references of one run disagree: the noise floor of the fractions above.
        var noise = results.Rows.Where(r => r.Kind.Method == nameof(StepBenchmarks.ReferenceMomentum))
            .Select(r => (r, other: results.Find(nameof(StepBenchmarks.ReferenceNesterovWd), r.Parameters, r.Tensors)))
            .Where(x => x.other is not null)
            .Select(x => (x.r, diff: Math.Abs(x.r.MedianNs - x.other!.MedianNs) / Math.Min(x.r.MedianNs, x.other.MedianNs)))
            .ToList();

        // 4: per-parameter HD against fused momentum SGD, in every case that ran.
        const string hdGoal = "HypergradientSGD per parameter ≤ 1.5x the time of FusedSGD momentum";
        var hdRows = results.Rows.Where(r => r.Kind.Method is nameof(StepBenchmarks.HdPerParameter) or nameof(StepBenchmarks.HdPerParameterUnchecked))
            .OrderBy(r => r.Kind.Method == nameof(StepBenchmarks.HdPerParameterUnchecked)).ThenBy(r => r.Parameters).ThenBy(r => r.Tensors).ToList();
        if (hdRows.Count == 0)
        {
            md.AppendLine(Inv, $"| {hdGoal} | any | – | not measured in this run | |");
        }
        foreach (var hd in hdRows)
        {
            string goal = hd.Kind.Method == nameof(StepBenchmarks.HdPerParameter)
                ? hdGoal
                : "the same, with skip_nonfinite: false (no finiteness pass)";
            var fused = results.Find(nameof(StepBenchmarks.FusedSgdMomentum), hd.Parameters, hd.Tensors);
            if (fused is null)
            {
                md.AppendLine(Inv, $"| {goal} | {Case(hd.Parameters, hd.Tensors)} | – | not measured in this run | |");
                continue;
            }
            double ratio = hd.MedianNs / fused.MedianNs;
            var hdRef = results.ReferenceOf(hd);
            var fusedRef = results.ReferenceOf(fused);
            string why = $"bytes {hd.Kind.BytesPerElement} vs {fused.Kind.BytesPerElement} per element";
            if (hdRef is not null && fusedRef is not null)
            {
                why += $"; the references of the two (same passes, no managed work) take {hdRef.MedianNs / fusedRef.MedianNs:0.00}x: " +
                    $"the floor of this ratio on this machine; HD at {Pct(hd.GBps / hdRef.GBps)} of its reference";
            }
            md.AppendLine(Inv, $"| {goal} | {Case(hd.Parameters, hd.Tensors)} | {ratio:0.00}x | {Verdict(ratio <= 1.5)} | {why} |");
        }
        md.AppendLine();
        if (noise.Count > 0)
        {
            md.AppendLine("Noise floor: the momentum and Nesterov categories each run the same reference (1 read + 2 updates); " +
                "their medians differ by " + string.Join(", ", noise.Select(x => string.Create(Inv, $"{100 * x.diff:0.0}% at {Case(x.r.Parameters, x.r.Tensors)}"))) +
                ". A fraction of the reference within that distance of a threshold is a tie.");
            md.AppendLine();
        }
    }

    private static string Case(long parameters, int tensors) => $"{SuiteSettings.Short(parameters)} params in {tensors} tensors";

    private static string Verdict(bool met) => met ? "**met**" : "**missed**";

    private static string Percent(double? f) => f is double v ? Pct(v) : "–";

    private static string Pct(double v) => (100 * v).ToString("0", Inv) + "%";

    private static string Times(double? x) => x is double v ? v.ToString("0.00", Inv) + "x" : "–";

    private static string Bytes(long? b) => b switch
    {
        null => "–",
        < 1024 => b.Value.ToString(Inv) + " B",
        _ => (b.Value / 1024.0).ToString("0.0", Inv) + " KiB",
    };
}
