using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// What fused clipping costs: FusedSGD (momentum 0.9) and FusedAdamW with and without
/// <c>max_grad_norm</c>, next to TorchSharp's <c>clip_grad_norm_</c> followed by its own SGD / AdamW
/// step, and TorchSharp's step alone, in interleaved rounds within one process. The goal: clipping
/// adds no more than its one read pass over the gradients (4 B per fp32 element).
/// </summary>
internal static class ClipTiming
{
    private const double MaxNorm = 1.0; // the gradients below have a norm far above it: the clip is active

    public static void Run(long parameters, int[] tensorCounts, int rounds, int stepsPerRound, TextWriter output)
    {
        InterleavedTiming.WriteHeader(output, $"# Clipping cost: fused max_grad_norm vs clip_grad_norm_ + step (median of {rounds} interleaved rounds x {stepsPerRound} steps)");
        output.WriteLine("| optimizer | params | tensors | fused ms | fused + clip ms | clip adds | one read pass adds (bytes) | TorchSharp step ms | clip_grad_norm_ + step ms | fused + clip speed-up |");
        output.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (bool adam in new[] { false, true })
        {
            foreach (int tensors in tensorCounts)
            {
                var t = Measure(adam, parameters, tensors, rounds, stepsPerRound);
                // Bytes of the fused update per fp32 element: SGD momentum 20, AdamW 28; the norm pass reads 4 more.
                double updateBytes = adam ? 28 : 20;
                output.WriteLine($"| {(adam ? "AdamW" : "SGD momentum")} | {parameters / 1e6:0.#}M | {tensors} | {t.Fused:0.000} | {t.Clipped:0.000} | " +
                    $"{(t.Clipped / t.Fused - 1) * 100:+0;-0}% | +{4 / updateBytes * 100:0}% | {t.Torch:0.000} | {t.TorchClipped:0.000} | {t.TorchClipped / t.Clipped:0.00}x |");
            }
        }
    }

    private static (double Fused, double Clipped, double Torch, double TorchClipped) Measure(bool adam, long parameters, int tensors, int rounds, int steps)
    {
        using var scope = torch.NewDisposeScope();
        var c = new StepTiming.Case("", parameters, tensors, 0.9, false, 0);
        var (pa, pb, pc, pd) = (StepTiming.MakeParameters(c, 1), StepTiming.MakeParameters(c, 1), StepTiming.MakeParameters(c, 1), StepTiming.MakeParameters(c, 1));
        // Tiny rates: the parameters hardly move over the run, so every round times the same work.
        using OptimizerHelper fused = adam ? new FusedAdamW(pa, 1e-9) : new FusedSGD(pa, 1e-9, 0.9);
        using OptimizerHelper clipped = adam ? new FusedAdamW(pb, 1e-9, max_grad_norm: MaxNorm) : new FusedSGD(pb, 1e-9, 0.9, max_grad_norm: MaxNorm);
        using OptimizerHelper torchStep = adam ? torch.optim.AdamW(pc, 1e-9) : torch.optim.SGD(pc, 1e-9, 0.9);
        using OptimizerHelper torchClipped = adam ? torch.optim.AdamW(pd, 1e-9) : torch.optim.SGD(pd, 1e-9, 0.9);
        // clip_grad_norm_ scales the gradients in place: each step restores them first (a copy, timed
        // apart and subtracted), so that every step clips gradients of the same norm.
        var original = pd.Select(p => p.grad!.clone()).ToList();
        void Restore()
        {
            for (int i = 0; i < pd.Count; i++)
            {
                pd[i].grad!.copy_(original[i]);
            }
        }
        Action[] runs =
        {
            () => fused.step(),
            () => clipped.step(),
            () => torchStep.step(),
            () =>
            {
                Restore();
                torch.nn.utils.clip_grad_norm_(pd, MaxNorm);
                torchClipped.step();
            },
            Restore,
        };
        var m = InterleavedTiming.MedianMilliseconds(runs, rounds, steps);
        return (m[0], m[1], m[2], m[3] - m[4]);
    }
}
