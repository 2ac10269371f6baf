using System.Diagnostics;
using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// A quick side-by-side timing of one optimizer step: Optim.FusedSGD against TorchSharp's
/// torch.optim.SGD on the same parameter layout, measured in interleaved rounds within one process so
/// machine noise hits both alike. Reports medians, their ratio, and the bandwidth each implies.
/// </summary>
internal static class StepTiming
{
    public sealed record Case(string Name, long Parameters, int Tensors, double Momentum, bool Nesterov, double WeightDecay);

    public static IReadOnlyList<Case> DefaultCases(long parameters) => new[]
    {
        new Case("plain", parameters, 4, 0, false, 0),
        new Case("momentum", parameters, 4, 0.9, false, 0),
        new Case("plain", parameters, 1000, 0, false, 0),
        new Case("momentum", parameters, 1000, 0.9, false, 0),
    };

    public static void Run(IReadOnlyList<Case> cases, int rounds, int stepsPerRound, TextWriter output)
    {
        // Load LibTorch first, so that the threading line below reports the runtime the steps will use.
        InterleavedTiming.WriteHeader(output, $"# Step timing: Optim.FusedSGD vs torch.optim.SGD (median of {rounds} interleaved rounds x {stepsPerRound} steps)");
        output.WriteLine("| case | params | tensors | bytes/step (ours) | FusedSGD ms | SGD ms | speed-up | FusedSGD GB/s | SGD GB/s (at its ~bytes) |");
        output.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var c in cases)
        {
            var (ours, theirs) = Measure(c, rounds, stepsPerRound);
            // Bytes each update must move per fp32 element: read p, g (+ buf), write p (+ buf).
            double oursBytes = c.Parameters * (c.Momentum != 0 ? 20.0 : 12.0);
            // TorchSharp: add_ (12 B) plain; with momentum mul_ (8) + add_ (12) + add_ (12) = 32 B.
            double theirBytes = c.Parameters * (c.Momentum != 0 ? 32.0 : 12.0);
            output.WriteLine($"| {c.Name} | {c.Parameters / 1e6:0.#}M | {c.Tensors} | {oursBytes / 1e6:0} MB | {ours:0.000} | {theirs:0.000} | " +
                $"{theirs / ours:0.00}x | {oursBytes / (ours * 1e6):0.0} | {theirBytes / (theirs * 1e6):0.0} |");
        }
    }

    private static (double Ours, double Theirs) Measure(Case c, int rounds, int stepsPerRound)
    {
        using var scope = torch.NewDisposeScope();
        var (pa, pb) = (MakeParameters(c, 1), MakeParameters(c, 1));
        using var fused = new FusedSGD(pa, 1e-6, c.Momentum, 0, c.WeightDecay, c.Nesterov);
        using var sgd = torch.optim.SGD(pb, 1e-6, c.Momentum, 0, c.WeightDecay, c.Nesterov);
        // Warm up (allocates momentum buffers, JIT, page faults).
        for (int i = 0; i < 3; i++)
        {
            fused.step();
            sgd.step();
        }
        var ours = new List<double>();
        var theirs = new List<double>();
        for (int r = 0; r < rounds; r++)
        {
            ours.Add(Time(fused, stepsPerRound));
            theirs.Add(Time(sgd, stepsPerRound));
        }
        return (Median(ours), Median(theirs));
    }

    private static double Time(torch.optim.Optimizer opt, int steps)
    {
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++)
        {
            opt.step();
        }
        return sw.Elapsed.TotalMilliseconds / steps;
    }

    internal static double Median(List<double> xs)
    {
        xs.Sort();
        return xs.Count % 2 == 1 ? xs[xs.Count / 2] : 0.5 * (xs[xs.Count / 2 - 1] + xs[xs.Count / 2]);
    }

    /// <summary>Parameters of one case with gradients attached (filled once; steps reuse them).</summary>
    internal static List<Parameter> MakeParameters(Case c, long seed)
    {
        torch.manual_seed(seed);
        long per = c.Parameters / c.Tensors;
        var list = new List<Parameter>();
        for (int i = 0; i < c.Tensors; i++)
        {
            long n = i == c.Tensors - 1 ? c.Parameters - per * (c.Tensors - 1) : per;
            var p = new Parameter(torch.randn(n).DetachFromDisposeScope());
            p.grad = torch.randn(n).mul_(1e-3).DetachFromDisposeScope();
            list.Add(p);
        }
        return list;
    }
}
