using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// What 16-bit parameters cost: FusedAdamW, then FusedSGD with momentum, on float32 parameters, on bfloat16
/// parameters in place, with master weights and with stochastic rounding, next to TorchSharp's AdamW / SGD on
/// the same bfloat16 parameters (its state is bfloat16 too), in interleaved rounds within one process. The
/// goal: bfloat16 with master weights moves the bytes it must and no more, so it costs what float32 does
/// (AdamW: 28 bytes per element either way; SGD momentum: 20).
/// </summary>
internal static class MixedTiming
{
    // One optimizer's table: its name, the bytes each fused variant moves, and how to make each contender.
    private sealed record Family(string Name, string Bytes, Func<List<Parameter>, bool, bool, torch.optim.Optimizer> Fused,
        Func<List<Parameter>, torch.optim.Optimizer> TorchSharp);

    // Tiny rates: the parameters hardly move over the run, so every round times the same work.
    private static readonly Family[] Families =
    {
        new("FusedAdamW", "float32 28, bfloat16 in place 22, bfloat16 + master weights 28 (read g 2, master 4, m 4, v 4; " +
                "write master, m, v 12 and the parameter 2), bfloat16 stochastic 22",
            (ps, master, stochastic) => new FusedAdamW(ps, 1e-9, weight_decay: 0.01, master_weights: master, stochastic_rounding: stochastic),
            ps => torch.optim.AdamW(ps, 1e-9, weight_decay: 0.01)),
        new("FusedSGD (momentum 0.9)", "float32 20, bfloat16 in place 14, bfloat16 + master weights 20 (read g 2, master 4, " +
                "buffer 4; write master, buffer 8 and the parameter 2), bfloat16 stochastic 14",
            (ps, master, stochastic) => new FusedSGD(ps, 1e-9, momentum: 0.9, master_weights: master, stochastic_rounding: stochastic),
            ps => torch.optim.SGD(ps, 1e-9, momentum: 0.9)),
    };

    public static void Run(long parameters, int[] tensorCounts, int rounds, int stepsPerRound, TextWriter output)
    {
        InterleavedTiming.WriteHeader(output, $"# 16-bit parameters: float32 vs bfloat16 (in place, master weights, stochastic rounding) vs TorchSharp on bfloat16 (median of {rounds} interleaved rounds x {stepsPerRound} steps)");
        foreach (var family in Families)
        {
            output.WriteLine($"## {family.Name}");
            output.WriteLine();
            output.WriteLine($"Bytes per element each fused update must move: {family.Bytes}.");
            output.WriteLine();
            output.WriteLine("| params | tensors | fp32 ms | bf16 ms | bf16 + master ms | bf16 stochastic ms | TorchSharp bf16 ms | master / fp32 | master / TorchSharp bf16 |");
            output.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (int tensors in tensorCounts)
            {
                var t = Measure(family, parameters, tensors, rounds, stepsPerRound);
                output.WriteLine($"| {parameters / 1e6:0.#}M | {tensors} | {t[0]:0.000} | {t[1]:0.000} | {t[2]:0.000} | {t[3]:0.000} | {t[4]:0.000} | " +
                    $"{t[2] / t[0]:0.00} | {t[4] / t[2]:0.00}x faster |");
            }
            output.WriteLine();
        }
    }

    // The parameters of a case in bfloat16, with bfloat16 gradients.
    private static List<Parameter> BFloat16(IEnumerable<Parameter> ps) => ps.Select(p =>
    {
        var low = new Parameter(p.detach().to(ScalarType.BFloat16));
        low.grad = p.grad!.to(ScalarType.BFloat16);
        return low;
    }).ToList();

    private static double[] Measure(Family family, long parameters, int tensors, int rounds, int steps)
    {
        using var scope = torch.NewDisposeScope();
        var c = new StepTiming.Case("", parameters, tensors, 0, false, 0);
        var fp32 = StepTiming.MakeParameters(c, 1);
        torch.optim.Optimizer[] runs =
        {
            family.Fused(fp32, false, false),
            family.Fused(BFloat16(fp32), false, false),
            family.Fused(BFloat16(fp32), true, false),
            family.Fused(BFloat16(fp32), false, true),
            family.TorchSharp(BFloat16(fp32)),
        };
        try
        {
            return InterleavedTiming.MedianMilliseconds(runs.Select(o => (Action)(() => o.step())).ToArray(), rounds, steps);
        }
        finally
        {
            foreach (var o in runs)
            {
                o.Dispose();
            }
        }
    }
}
