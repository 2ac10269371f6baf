using System.Diagnostics;
using Optim.Interop;
using TorchSharp;

namespace Optim.Bench;

/// <summary>
/// What the side-by-side timings share: a report's heading with the machine it ran on, and the median
/// time of each contender over interleaved rounds (every contender in turn, round after round, in one
/// process, so that a change in the machine's load reaches them all alike).
/// </summary>
internal static class InterleavedTiming
{
    /// <summary>Starts TorchSharp, then writes <paramref name="title"/> and the machine line, each followed by a blank line.</summary>
    public static void WriteHeader(TextWriter output, string title)
    {
        using (torch.ones(1))
        {
        }
        output.WriteLine(title);
        output.WriteLine();
        output.WriteLine($"Machine: {Environment.ProcessorCount} logical CPUs, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}; " +
            $"native: {OptimNative.BuildInfo}, {OptimNative.NumThreads} threads ({OptimNative.ThreadingInfo}); TorchSharp threads: {torch.get_num_threads()}");
        output.WriteLine();
    }

    /// <summary>
    /// Each run's median milliseconds per call: <paramref name="warmUp"/> calls of each first, then
    /// <paramref name="rounds"/> rounds in which each run in turn is called <paramref name="calls"/> times.
    /// </summary>
    public static double[] MedianMilliseconds(IReadOnlyList<Action> runs, int rounds, int calls, int warmUp = 3)
    {
        foreach (var run in runs)
        {
            for (int i = 0; i < warmUp; i++)
            {
                run();
            }
        }
        var times = runs.Select(_ => new List<double>()).ToArray();
        for (int r = 0; r < rounds; r++)
        {
            for (int k = 0; k < runs.Count; k++)
            {
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < calls; i++)
                {
                    runs[k]();
                }
                times[k].Add(sw.Elapsed.TotalMilliseconds / calls);
            }
        }
        return times.Select(StepTiming.Median).ToArray();
    }
}
