using System.Diagnostics;
using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// Side-by-side step times of HypergradientSGD at each scope against FusedSGD and TorchSharp's SGD, all
/// with heavy-ball momentum 0.9, in interleaved rounds within one process; medians, ratios, and the
/// bandwidth each implies at the bytes its update must move.
/// </summary>
internal static class HdTiming
{
    private sealed record Contender(string Name, double BytesPerElement, Func<List<Parameter>, torch.optim.Optimizer> Make);

    private static readonly Contender[] Contenders =
    {
        // TorchSharp: mul_ (8) + add_ (12) on the buffer, add_ (12) on the parameter.
        new("torch.optim.SGD", 32, ps => torch.optim.SGD(ps, 1e-6, momentum: 0.9)),
        new("FusedSGD", 20, ps => new FusedSGD(ps, 1e-6, momentum: 0.9)),
        // Reduction pass reads g and buf (8); update pass reads θ, g, buf and writes θ, buf (20).
        new("HD global", 28, ps => new HypergradientSGD(ps, 1e-6, 1e-9, HypergradientScope.Global, momentum: 0.9)),
        new("HD per group", 28, ps => new HypergradientSGD(ps, 1e-6, 1e-9, HypergradientScope.PerGroup, momentum: 0.9)),
        new("HD per tensor", 28, ps => new HypergradientSGD(ps, 1e-6, 1e-9, HypergradientScope.PerTensor, momentum: 0.9)),
        // Finiteness pass reads g (4); one pass reads θ, g, buf, α and writes θ, buf, α (28).
        new("HD per parameter", 32, ps => new HypergradientSGD(ps, 1e-6, 1e-9, HypergradientScope.PerParameter, momentum: 0.9)),
    };

    public static void Run(long parameters, int[] tensorCounts, int rounds, int stepsPerRound, TextWriter output)
    {
        using (torch.ones(1))
        {
        }
        output.WriteLine($"# Step timing: HypergradientSGD by scope vs FusedSGD vs torch.optim.SGD (momentum 0.9; median of {rounds} interleaved rounds x {stepsPerRound} steps)");
        output.WriteLine();
        output.WriteLine($"Machine: {Environment.ProcessorCount} logical CPUs, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}; " +
            $"native: {OptimNative.BuildInfo}, {OptimNative.NumThreads} threads ({OptimNative.ThreadingInfo})");
        output.WriteLine();
        output.WriteLine("| params | tensors | optimizer | bytes/element | ms/step | vs torch SGD | vs FusedSGD | GB/s |");
        output.WriteLine("|---:|---:|---|---:|---:|---:|---:|---:|");
        foreach (int tensors in tensorCounts)
        {
            using var scope = torch.NewDisposeScope();
            var c = new StepTiming.Case("momentum", parameters, tensors, 0.9, false, 0);
            var optimizers = Contenders.Select(k => (k, k.Make(StepTiming.MakeParameters(c, 1)))).ToList();
            foreach (var (_, opt) in optimizers)
            {
                for (int i = 0; i < 3; i++)
                {
                    opt.step();
                }
            }
            var times = optimizers.Select(_ => new List<double>()).ToList();
            for (int r = 0; r < rounds; r++)
            {
                for (int i = 0; i < optimizers.Count; i++)
                {
                    var sw = Stopwatch.StartNew();
                    for (int s = 0; s < stepsPerRound; s++)
                    {
                        optimizers[i].Item2.step();
                    }
                    times[i].Add(sw.Elapsed.TotalMilliseconds / stepsPerRound);
                }
            }
            var medians = times.Select(StepTiming.Median).ToList();
            for (int i = 0; i < optimizers.Count; i++)
            {
                var k = optimizers[i].Item1;
                double bytes = parameters * k.BytesPerElement;
                output.WriteLine($"| {parameters / 1e6:0.#}M | {tensors} | {k.Name} | {k.BytesPerElement} | {medians[i]:0.000} | " +
                    $"{medians[0] / medians[i]:0.00}x faster | {medians[i] / medians[1]:0.00}x the time | {bytes / (medians[i] * 1e6):0.0} |");
                optimizers[i].Item2.Dispose();
            }
        }
    }
}
