using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace Optim.Benchmarks;

/// <summary>
/// The bandwidth columns of the console and BenchmarkDotNet's own reports: bytes a step moves, the GB/s
/// that means at the median, and that as a fraction of the in-run reference with the same passes.
/// </summary>
internal sealed class BandwidthColumn : IColumn
{
    private readonly Func<Results, Row, string> _value;

    private BandwidthColumn(string name, int priority, string legend, Func<Results, Row, string> value)
    {
        ColumnName = name;
        PriorityInCategory = priority;
        Legend = legend;
        _value = value;
    }

    public static readonly IColumn[] All =
    {
        new BandwidthColumn("MB/step", 0, "Megabytes the step must move (bytes per float32 element x parameters)",
            (_, r) => r.BytesPerStep > 0 ? (r.BytesPerStep / 1e6).ToString("0", Format.Invariant) : "-"),
        new BandwidthColumn("GB/s", 1, "MB/step / median time",
            (_, r) => r.BytesPerStep > 0 ? r.GBps.ToString("0.0", Format.Invariant) : "-"),
        new BandwidthColumn("of ref BW", 2, "GB/s / GB/s of the in-run bandwidth reference with the same passes (same case)",
            (res, r) => res.FractionOfReference(r) is double f ? (100 * f).ToString("0", Format.Invariant) + "%" : "-"),
    };

    public string Id => nameof(BandwidthColumn) + "." + ColumnName;
    public string ColumnName { get; }
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory { get; }
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend { get; }

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase)
    {
        var results = Results.Of(summary);
        return results.Find(benchmarkCase) is { } row ? _value(results, row) : "?";
    }

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public bool IsAvailable(Summary summary) => summary.BenchmarksCases.Any(c => c.Descriptor.Type == typeof(StepBenchmarks));
}

internal static class Format
{
    public static readonly IFormatProvider Invariant = System.Globalization.CultureInfo.InvariantCulture;
}
