using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// One trial point of Sls's line search, p = θ − η·g over every tensor: the fused native pass
/// (<c>optim_sls_trial</c>, 12 B per fp32 element) against the same with TorchSharp tensor operations, in
/// the reference's order (<c>g * η</c>, <c>θ − that</c>, copied into p: 28 B and two temporaries) and the
/// cheapest TorchSharp spelling (<c>p.copy_(θ).add_(g, alpha: −η)</c>: 20 B), in interleaved rounds
/// within one process so machine noise hits all alike. Reports medians, ratios and the bandwidth each
/// implies at the bytes it moves.
/// </summary>
internal static class SlsTiming
{
    public static void Run(long parameters, int rounds, int trialsPerRound, TextWriter output)
    {
        InterleavedTiming.WriteHeader(output, $"# Sls trial step: fused vs TorchSharp ops (median of {rounds} interleaved rounds x {trialsPerRound} trials, fp32)");
        output.WriteLine("| params | tensors | fused ms (12 B/elem) | reference order ms (28 B) | copy_+add_ ms (20 B) | vs reference order | vs copy_+add_ | fused GB/s | reference GB/s | copy_+add_ GB/s |");
        output.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (int tensors in new[] { 4, 1000 })
        {
            var c = new StepTiming.Case("trial", parameters, tensors, 0, false, 0);
            using var scope = torch.NewDisposeScope();
            var ps = StepTiming.MakeParameters(c, 1);
            var origins = ps.Select(p => p.detach().clone()).ToList();
            var grads = ps.Select(p => p.grad!).ToList();
            var dp = ps.Select(p => TorchSharpNative.DataPointer(p.Handle)).ToArray();
            var dO = origins.Select(o => TorchSharpNative.DataPointer(o.Handle)).ToArray();
            var dg = grads.Select(g => TorchSharpNative.DataPointer(g.Handle)).ToArray();
            var numels = ps.Select(p => p.numel()).ToArray();
            const double eta = 0.5;
            void Fused() => OptimNative.SlsStep(OptimNative.SlsPass.Trial, NativeDevice.Cpu, 0, NativeDType.Float32, dp, dO, dg, numels, eta);
            void ReferenceOrder()
            {
                using var noGrad = torch.no_grad();
                for (int k = 0; k < ps.Count; k++)
                {
                    using var step = grads[k] * eta;
                    using var next = origins[k] - step;
                    ps[k].copy_(next);
                }
            }
            void CopyAdd()
            {
                using var noGrad = torch.no_grad();
                for (int k = 0; k < ps.Count; k++)
                {
                    ps[k].copy_(origins[k]).add_(grads[k], alpha: -eta);
                }
            }
            var runs = new Action[] { Fused, ReferenceOrder, CopyAdd };
            var m = InterleavedTiming.MedianMilliseconds(runs, rounds, trialsPerRound, warmUp: 1);
            var (f, refOrder, copyAdd) = (m[0], m[1], m[2]);
            double n = parameters;
            output.WriteLine($"| {parameters / 1e6:0.#}M | {tensors} | {f:0.000} | {refOrder:0.000} | {copyAdd:0.000} | {refOrder / f:0.00}x | {copyAdd / f:0.00}x | " +
                $"{12 * n / (f * 1e6):0.0} | {28 * n / (refOrder * 1e6):0.0} | {20 * n / (copyAdd * 1e6):0.0} |");
        }
    }
}
