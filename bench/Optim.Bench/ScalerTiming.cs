using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// What loss scaling costs: FusedSGD (momentum 0.9) and FusedAdamW stepped through
/// <see cref="GradScaler"/>'s fused path, the same optimizer through the scaler's unfused path
/// (<c>unscale_</c> with tensor ops, then the plain fused step), TorchSharp's SGD / AdamW through the
/// unfused path, and each fused optimizer's plain step, in interleaved rounds within one process.
/// Every scaler variant includes <c>update()</c>. The scale is 1 and never grows, so every step does
/// the same work (the multiply by the inverse runs all the same).
/// </summary>
internal static class ScalerTiming
{
    public static void Run(long parameters, int[] tensorCounts, int rounds, int stepsPerRound, TextWriter output)
    {
        InterleavedTiming.WriteHeader(output, $"# Loss-scaling cost: GradScaler fused vs unfused (median of {rounds} interleaved rounds x {stepsPerRound} steps)");
        output.WriteLine("Bytes per fp32 element: the fused step moves 20 (SGD momentum) or 28 (AdamW); the fused scaler adds one read pass (4);");
        output.WriteLine("the unfused unscale_ adds isfinite (read 4, write 1), all (read 1) and mul_ (read 4, write 4): 14.");
        output.WriteLine();
        output.WriteLine("| optimizer | params | tensors | fused step ms | + fused scaler ms | scaler adds | read pass adds (bytes) | + unfused scaler ms | unfused / fused scaler | TorchSharp + unfused scaler ms | TorchSharp / fused scaler |");
        output.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (bool adam in new[] { false, true })
        {
            foreach (int tensors in tensorCounts)
            {
                var t = Measure(adam, parameters, tensors, rounds, stepsPerRound);
                double updateBytes = adam ? 28 : 20;
                output.WriteLine($"| {(adam ? "AdamW" : "SGD momentum")} | {parameters / 1e6:0.#}M | {tensors} | {t.Fused:0.000} | {t.FusedScaler:0.000} | " +
                    $"{(t.FusedScaler / t.Fused - 1) * 100:+0;-0}% | +{4 / updateBytes * 100:0}% | {t.UnfusedScaler:0.000} | {t.UnfusedScaler / t.FusedScaler:0.00}x | " +
                    $"{t.TorchScaler:0.000} | {t.TorchScaler / t.FusedScaler:0.00}x |");
            }
        }
    }

    private static (double Fused, double FusedScaler, double UnfusedScaler, double TorchScaler) Measure(bool adam, long parameters, int tensors, int rounds, int steps)
    {
        using var scope = torch.NewDisposeScope();
        var c = new StepTiming.Case("", parameters, tensors, 0.9, false, 0);
        var (pa, pb, pc, pd) = (StepTiming.MakeParameters(c, 1), StepTiming.MakeParameters(c, 1), StepTiming.MakeParameters(c, 1), StepTiming.MakeParameters(c, 1));
        // Tiny rates: the parameters hardly move over the run, so every round times the same work.
        using OptimizerHelper plain = adam ? new FusedAdamW(pa, 1e-9) : new FusedSGD(pa, 1e-9, 0.9);
        using OptimizerHelper fused = adam ? new FusedAdamW(pb, 1e-9) : new FusedSGD(pb, 1e-9, 0.9);
        using OptimizerHelper unfused = adam ? new FusedAdamW(pc, 1e-9) : new FusedSGD(pc, 1e-9, 0.9);
        using OptimizerHelper torchOpt = adam ? torch.optim.AdamW(pd, 1e-9) : torch.optim.SGD(pd, 1e-9, 0.9);
        GradScaler Scaler(bool fusedSteps)
        {
            var s = new GradScaler(init_scale: 1.0, growth_interval: int.MaxValue) { FusedSteps = fusedSteps };
            using var loss = torch.ones(Array.Empty<long>());
            using var scaled = s.scale(loss); // creates the scale on the CPU
            return s;
        }
        var (sFused, sUnfused, sTorch) = (Scaler(true), Scaler(false), Scaler(true));
        Action[] runs =
        {
            () => plain.step(),
            () => { sFused.step(fused); sFused.update(); },
            () => { sUnfused.step(unfused); sUnfused.update(); },
            () => { sTorch.step(torchOpt); sTorch.update(); },
        };
        var m = InterleavedTiming.MedianMilliseconds(runs, rounds, steps);
        return (m[0], m[1], m[2], m[3]);
    }
}
