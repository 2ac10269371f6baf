using System.Globalization;

namespace Optim.Benchmarks;

/// <summary>
/// The sizes the step benchmarks run at, set from the command line before BenchmarkDotNet starts (the
/// benchmarks run in this process, so <see cref="StepBenchmarks"/>' parameter sources read them here).
/// </summary>
internal static class SuiteSettings
{
    /// <summary>The sizes of issue 5: 1M, 10M and 100M parameters.</summary>
    public static readonly long[] DefaultParameterCounts = { 1_000_000, 10_000_000, 100_000_000 };

    /// <summary>The layouts of issue 5: 4 and 1000 tensors.</summary>
    public static readonly int[] DefaultTensorCounts = { 4, 1000 };

    /// <summary>Total float32 parameters of each layout.</summary>
    public static long[] ParameterCounts { get; set; } = DefaultParameterCounts;

    /// <summary>How many tensors the parameters are split into.</summary>
    public static int[] TensorCounts { get; set; } = DefaultTensorCounts;

    /// <summary>Whether the sizes are issue 5's.</summary>
    public static bool DefaultSizes => ParameterCounts.SequenceEqual(DefaultParameterCounts) && TensorCounts.SequenceEqual(DefaultTensorCounts);

    /// <summary>Parses "1M,10M,100000000" (suffixes K and M).</summary>
    public static long[] ParseCounts(string text) => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(ParseCount).ToArray();

    private static long ParseCount(string s)
    {
        long factor = 1;
        if (s.EndsWith('M') || s.EndsWith('m'))
        {
            factor = 1_000_000;
            s = s[..^1];
        }
        else if (s.EndsWith('K') || s.EndsWith('k'))
        {
            factor = 1_000;
            s = s[..^1];
        }
        if (!long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) || v <= 0)
        {
            throw new ArgumentException($"'{s}' is not a positive count (examples: 1000000, 1M, 4).");
        }
        return checked(v * factor);
    }

    /// <summary>"100M", "10K", "4": the short form used in tables.</summary>
    public static string Short(long n) =>
        n % 1_000_000 == 0 ? $"{n / 1_000_000}M" : n % 1_000 == 0 ? $"{n / 1_000}K" : n.ToString(CultureInfo.InvariantCulture);
}
