using System.Runtime.CompilerServices;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace Optim.Benchmarks;

/// <summary>One measured benchmark case.</summary>
/// <param name="Kind">What the method measures.</param>
/// <param name="Parameters">Total parameters (0 for the scheduler benchmarks; the model's for the training steps).</param>
/// <param name="Tensors">Tensors they are split into (0 for the scheduler benchmarks; the model's for the training steps).</param>
/// <param name="Groups">Param groups (scheduler benchmarks; 1 for the steps).</param>
/// <param name="IsBaseline">Whether it is its category's baseline.</param>
/// <param name="MedianNs">Median time per step.</param>
/// <param name="MeanNs">Mean time per step (BenchmarkDotNet removes upper outliers first).</param>
/// <param name="StdErrNs">Standard error of the mean.</param>
/// <param name="AllocatedBytes">Managed bytes allocated per step (null when not measured).</param>
internal sealed record Row(Kind Kind, long Parameters, int Tensors, int Groups, bool IsBaseline,
    double MedianNs, double MeanNs, double StdErrNs, long? AllocatedBytes)
{
    /// <summary>Bytes one step moves (0 where bandwidth does not apply).</summary>
    public double BytesPerStep => Kind.BytesPerElement * (double)Parameters;

    /// <summary>Bytes per second at the median, in GB/s (0 where bandwidth does not apply).</summary>
    public double GBps => BytesPerStep / MedianNs;

    public bool SameCase(Row other) => Parameters == other.Parameters && Tensors == other.Tensors && Groups == other.Groups;
}

/// <summary>The rows of one or more summaries, with the in-run comparisons every table and column uses.</summary>
internal sealed class Results
{
    private static readonly ConditionalWeakTable<Summary, Results> s_cache = new();

    public Results(IEnumerable<Row> rows) => Rows = rows.ToList();

    public IReadOnlyList<Row> Rows { get; }

    public static Results Of(Summary summary) => s_cache.GetValue(summary, s => new Results(s.Reports.Select(ToRow).OfType<Row>()));

    public static Results Of(IEnumerable<Summary> summaries) => new(summaries.SelectMany(s => Of(s).Rows));

    /// <summary>The row of a benchmark case, or null when it has no result.</summary>
    public static Row? ToRow(BenchmarkReport report)
    {
        var stats = report.ResultStatistics;
        if (!report.Success || stats is null)
        {
            return null;
        }
        var c = report.BenchmarkCase;
        var (parameters, tensors, groups) = Key(c);
        return new Row(Catalog.Of(c.Descriptor.WorkloadMethod.Name), parameters, tensors, groups, c.Descriptor.Baseline,
            stats.Median, stats.Mean, stats.StandardError, report.GcStats.GetBytesAllocatedPerOperation(c));
    }

    public Row? Find(BenchmarkCase c)
    {
        var (parameters, tensors, groups) = Key(c);
        return Find(c.Descriptor.WorkloadMethod.Name, parameters, tensors, groups);
    }

    // The case's parameters: (Parameters, Tensors) for the steps, Groups for the schedulers.
    private static (long Parameters, int Tensors, int Groups) Key(BenchmarkCase c)
    {
        long Param(string name, long fallback) => c.Parameters.Items.FirstOrDefault(p => p.Name == name)?.Value is { } v
            ? Convert.ToInt64(v, System.Globalization.CultureInfo.InvariantCulture)
            : fallback;
        if (c.Parameters.Items.FirstOrDefault(p => p.Name == nameof(TrainingStepBenchmarks.Model))?.Value is string model)
        {
            var (modelParameters, modelTensors) = TrainingStepBenchmarks.Size(model);
            return (modelParameters, modelTensors, 1);
        }
        return (Param(nameof(StepBenchmarks.Parameters), 0), (int)Param(nameof(StepBenchmarks.Tensors), 0),
            (int)Param(nameof(GreedyLRBenchmarks.Groups), 1));
    }

    public Row? Find(string method, long parameters, int tensors, int groups = 1) =>
        Rows.FirstOrDefault(r => r.Kind.Method == method && r.Parameters == parameters && r.Tensors == tensors && r.Groups == groups);

    /// <summary>The reference that moves the same bytes as <paramref name="row"/>, in the same case.</summary>
    public Row? ReferenceOf(Row row) => row.Kind.Reference is null ? null : Find(row.Kind.Reference, row.Parameters, row.Tensors, row.Groups);

    /// <summary>The baseline of <paramref name="row"/>'s category, in the same case.</summary>
    public Row? BaselineOf(Row row) => Rows.FirstOrDefault(r => r.IsBaseline && r.Kind.Category == row.Kind.Category && r.SameCase(row));

    /// <summary>GB/s as a fraction of the reference's GB/s (for our steps: reference time ÷ step time).</summary>
    public double? FractionOfReference(Row row) =>
        ReferenceOf(row) is { } reference && row.Kind.BytesPerElement > 0 ? row.GBps / reference.GBps : null;

    /// <summary>Baseline median ÷ this median: above 1 is faster than the baseline.</summary>
    public double? SpeedUp(Row row) => BaselineOf(row) is { } b ? b.MedianNs / row.MedianNs : null;
}
