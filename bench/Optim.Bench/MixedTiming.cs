using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// What 16-bit parameters cost: FusedAdamW on float32 parameters, on bfloat16 parameters in place, with
/// master weights and with stochastic rounding, next to TorchSharp's AdamW on the same bfloat16 parameters
/// (its state is bfloat16 too), in interleaved rounds within one process. The goal: bfloat16 with master
/// weights moves the bytes it must (28 per element: read g 2, master 4, m 4, v 4; write master, m, v 12 and
/// the parameter 2) and no more, so it costs what float32 does (also 28).
/// </summary>
internal static class MixedTiming
{
    public static void Run(long parameters, int[] tensorCounts, int rounds, int stepsPerRound, TextWriter output)
    {
        InterleavedTiming.WriteHeader(output, $"# 16-bit parameters: FusedAdamW float32 vs bfloat16 (in place, master weights, stochastic rounding) vs TorchSharp's AdamW on bfloat16 (median of {rounds} interleaved rounds x {stepsPerRound} steps)");
        output.WriteLine("Bytes per element each fused update must move: float32 28, bfloat16 in place 22, bfloat16 + master weights 28, bfloat16 stochastic 22.");
        output.WriteLine();
        output.WriteLine("| params | tensors | fp32 ms | bf16 ms | bf16 + master ms | bf16 stochastic ms | TorchSharp AdamW bf16 ms | master / fp32 | master / TorchSharp bf16 |");
        output.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (int tensors in tensorCounts)
        {
            var t = Measure(parameters, tensors, rounds, stepsPerRound);
            output.WriteLine($"| {parameters / 1e6:0.#}M | {tensors} | {t[0]:0.000} | {t[1]:0.000} | {t[2]:0.000} | {t[3]:0.000} | {t[4]:0.000} | " +
                $"{t[2] / t[0]:0.00} | {t[4] / t[2]:0.00}x faster |");
        }
    }

    // The parameters of a case in bfloat16, with bfloat16 gradients.
    private static List<Parameter> BFloat16(IEnumerable<Parameter> ps) => ps.Select(p =>
    {
        var low = new Parameter(p.detach().to(ScalarType.BFloat16));
        low.grad = p.grad!.to(ScalarType.BFloat16);
        return low;
    }).ToList();

    private static double[] Measure(long parameters, int tensors, int rounds, int steps)
    {
        using var scope = torch.NewDisposeScope();
        var c = new StepTiming.Case("", parameters, tensors, 0, false, 0);
        var fp32 = StepTiming.MakeParameters(c, 1);
        // Tiny rates: the parameters hardly move over the run, so every round times the same work.
        using var fused = new FusedAdamW(fp32, 1e-9, weight_decay: 0.01);
        using var inPlace = new FusedAdamW(BFloat16(fp32), 1e-9, weight_decay: 0.01);
        using var master = new FusedAdamW(BFloat16(fp32), 1e-9, weight_decay: 0.01, master_weights: true);
        using var stochastic = new FusedAdamW(BFloat16(fp32), 1e-9, weight_decay: 0.01, stochastic_rounding: true);
        using var torchAdamW = torch.optim.AdamW(BFloat16(fp32), 1e-9, weight_decay: 0.01);
        torch.optim.Optimizer[] runs = { fused, inPlace, master, stochastic, torchAdamW };
        return InterleavedTiming.MedianMilliseconds(runs.Select(o => (Action)(() => o.step())).ToArray(), rounds, steps);
    }
}
