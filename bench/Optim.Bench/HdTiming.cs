using System.Diagnostics;
using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// Side-by-side step times of HypergradientSGD at each scope against FusedSGD and TorchSharp's SGD, all
/// with heavy-ball momentum 0.9 (or, <c>hd-adam-steps</c>, of HypergradientAdam against FusedAdam and
/// TorchSharp's Adam), and of the bandwidth references that make the same passes
/// (<c>optim_stream_reference</c>), in interleaved rounds within one process, so that the machine's
/// drift hits every contender alike; medians, ratios, and the bandwidth each implies at the bytes its
/// update must move. The BenchmarkDotNet suite (bench/Optim.Benchmarks) measures one case after another
/// instead; this is the cross-check that does not depend on the machine staying the same between cases.
/// </summary>
internal static class HdTiming
{
    /// <summary>One thing to time: an optimizer step or a reference; <c>Reference</c> names the reference row it is compared with.</summary>
    private sealed record Contender(string Name, int BytesPerElement, string? Reference, Func<StepTiming.Case, Timed> Make);

    /// <summary>A step to run and what to dispose afterwards.</summary>
    internal sealed record Timed(Action Step, IReadOnlyList<IDisposable> Owned);

    private const string Ref20 = "reference: 1 read + 2 updates";
    private const string Ref28Scalar = "reference: 2 reads; then 1 read + 2 updates";
    private const string Ref32 = "reference: 1 read; then 1 read + 3 updates";
    private const string Ref28 = "reference: 1 read + 3 updates";

    private static readonly Contender[] Contenders =
    {
        // TorchSharp: mul_ (8) + add_ (12) on the buffer, add_ (12) on the parameter.
        new("torch.optim.SGD", 32, null, c => Optimizer(c, ps => torch.optim.SGD(ps, 1e-6, momentum: 0.9))),
        new("FusedSGD", 20, Ref20, c => Optimizer(c, ps => new FusedSGD(ps, 1e-6, momentum: 0.9))),
        // Reduction pass reads g and buf (8); update pass reads θ, g, buf and writes θ, buf (20).
        new("HD global", 28, Ref28Scalar, c => Optimizer(c, ps => Hd(ps, HypergradientScope.Global))),
        new("HD per group", 28, Ref28Scalar, c => Optimizer(c, ps => Hd(ps, HypergradientScope.PerGroup))),
        new("HD per tensor", 28, Ref28Scalar, c => Optimizer(c, ps => Hd(ps, HypergradientScope.PerTensor))),
        // Finiteness pass reads g (4); one pass reads θ, g, buf, α and writes θ, buf, α (28).
        new("HD per parameter", 32, Ref32, c => Optimizer(c, ps => Hd(ps, HypergradientScope.PerParameter))),
        // The caller vouches for the gradients: the update pass alone.
        new("HD per parameter, skip_nonfinite: false", 28, Ref28, c => Optimizer(c, ps => Hd(ps, HypergradientScope.PerParameter, skipNonFinite: false))),
        new(Ref20, 20, Ref20, c => Reference(c, (1, 2))),
        new(Ref28Scalar, 28, Ref28Scalar, c => Reference(c, (2, 0), (1, 2))),
        new(Ref32, 32, Ref32, c => Reference(c, (1, 0), (1, 3))),
        new(Ref28, 28, Ref28, c => Reference(c, (1, 3))),
    };

    private const string RefAdam = "reference: 1 read + 3 updates";
    private const string RefAdamScalar = "reference: 2 reads; then 1 read + 4 updates";
    private const string RefAdamPerParameter = "reference: 1 read; then 1 read + 4 updates; then 1 update";

    // Adam: the first two rows are what the others are compared with (TorchSharp's, then the fused one).
    private static readonly Contender[] AdamContenders =
    {
        // TorchSharp's Adam: counted at the 28 bytes the update must move (its separate operations move several times that).
        new("torch.optim.Adam", 28, null, c => Optimizer(c, ps => torch.optim.Adam(ps, 1e-6))),
        // Reads g; reads and writes θ, m, v.
        new("FusedAdam", 28, RefAdam, c => Optimizer(c, ps => new FusedAdam(ps, 1e-6))),
        // Reduction pass reads g and u_prev (8); update pass reads θ, g, m, v and writes θ, m, v, u_prev (32).
        // Its reference moves 44: it also reads u_prev in the update pass (it has no write-only arrays).
        new("HD-Adam global", 40, RefAdamScalar, c => Optimizer(c, ps => HdAdam(ps, HypergradientScope.Global))),
        new("HD-Adam per tensor", 40, RefAdamScalar, c => Optimizer(c, ps => HdAdam(ps, HypergradientScope.PerTensor))),
        // Finiteness pass reads g (4); one pass reads θ, g, m, v, u_prev, α and writes θ, m, v, u_prev, α (44).
        new("HD-Adam per parameter", 48, RefAdamPerParameter, c => Optimizer(c, ps => HdAdam(ps, HypergradientScope.PerParameter))),
        new(RefAdam, 28, RefAdam, c => Reference(c, (1, 3))),
        new(RefAdamScalar, 44, RefAdamScalar, c => Reference(c, (2, 0), (1, 4))),
        // The reference kernel updates at most 4 arrays a pass: the fifth (α) gets a pass of its own, same bytes.
        new(RefAdamPerParameter, 48, RefAdamPerParameter, c => Reference(c, (1, 0), (1, 4), (0, 1))),
    };

    private static HypergradientAdam HdAdam(List<TorchSharp.Modules.Parameter> ps, HypergradientScope scope) => new(ps, 1e-6, 1e-12, scope);

    private static HypergradientSGD Hd(List<TorchSharp.Modules.Parameter> ps, HypergradientScope scope, bool skipNonFinite = true) =>
        new(ps, 1e-6, 1e-9, scope, momentum: 0.9, skip_nonfinite: skipNonFinite);

    private static Timed Optimizer(StepTiming.Case c, Func<List<TorchSharp.Modules.Parameter>, torch.optim.Optimizer> make)
    {
        var ps = StepTiming.MakeParameters(c, 1);
        var opt = make(ps);
        var owned = new List<IDisposable> { opt };
        owned.AddRange(ps);
        return new Timed(() => opt.step(), owned);
    }

    /// <summary>
    /// The bandwidth reference of a step's passes, each (reads, updates) arrays per tensor, over arrays of
    /// its own shaped like the case's tensors (the first pass's arrays are reused by the next, as a step's are).
    /// </summary>
    internal static Timed Reference(StepTiming.Case c, params (int Reads, int Updates)[] passes)
    {
        long per = c.Parameters / c.Tensors;
        long[] numels = Enumerable.Range(0, c.Tensors).Select(i => i == c.Tensors - 1 ? c.Parameters - per * (c.Tensors - 1) : per).ToArray();
        int arrays = passes.Max(p => p.Reads + p.Updates);
        torch.manual_seed(2);
        var tensors = Enumerable.Range(0, arrays).Select(_ => numels.Select(n => torch.randn(n).mul_(1e-3).DetachFromDisposeScope()).ToArray()).ToArray();
        var plan = passes.Select(p =>
        {
            // Reads are arrays 0..Reads-1, updates the arrays after them; pointers tensor-major.
            var read = new nint[numels.Length * p.Reads];
            var update = new nint[numels.Length * p.Updates];
            for (int k = 0; k < numels.Length; k++)
            {
                for (int j = 0; j < p.Reads; j++)
                {
                    read[k * p.Reads + j] = TorchSharpNative.DataPointer(tensors[j][k].Handle);
                }
                for (int j = 0; j < p.Updates; j++)
                {
                    update[k * p.Updates + j] = TorchSharpNative.DataPointer(tensors[p.Reads + j][k].Handle);
                }
            }
            return (read, p.Reads, update, p.Updates);
        }).ToArray();
        double sink = 0;
        void Step()
        {
            foreach (var (read, reads, update, updates) in plan)
            {
                sink += BenchNative.StreamReference(NativeDType.Float32, read, reads, update, updates, numels, -1e-6);
            }
        }
        return new Timed(Step, tensors.SelectMany(t => t).ToList<IDisposable>());
    }

    /// <param name="adam">HypergradientAdam against FusedAdam and TorchSharp's Adam instead of the SGD family.</param>
    public static void Run(long parameters, int[] tensorCounts, int rounds, int stepsPerRound, TextWriter output, bool adam = false)
    {
        using (torch.ones(1))
        {
        }
        var contenders = adam ? AdamContenders : Contenders;
        var (title, torchName, fusedName) = adam
            ? ("HypergradientAdam by scope vs FusedAdam vs torch.optim.Adam", "torch Adam", "FusedAdam")
            : ("HypergradientSGD by scope vs FusedSGD vs torch.optim.SGD", "torch SGD", "FusedSGD");
        output.WriteLine($"# Step timing: {title}, next to bandwidth references ({(adam ? "default betas" : "momentum 0.9")}; median of {rounds} interleaved rounds x {stepsPerRound} steps)");
        output.WriteLine();
        output.WriteLine($"Machine: {Environment.ProcessorCount} logical CPUs, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}; " +
            $"native: {OptimNative.BuildInfo}, {OptimNative.NumThreads} threads ({OptimNative.ThreadingInfo})");
        output.WriteLine();
        output.WriteLine("*of ref*: the reference's time ÷ this time (the reference makes the same passes over as many arrays with the least arithmetic).");
        output.WriteLine();
        output.WriteLine($"| params | tensors | step | bytes/element | ms/step | vs {torchName} | vs {fusedName} | GB/s | of ref |");
        output.WriteLine("|---:|---:|---|---:|---:|---:|---:|---:|---:|");
        foreach (int tensors in tensorCounts)
        {
            var c = new StepTiming.Case("momentum", parameters, tensors, 0.9, false, 0);
            var timed = contenders.Select(k => k.Make(c)).ToList();
            foreach (var t in timed)
            {
                for (int i = 0; i < 3; i++)
                {
                    t.Step();
                }
            }
            var times = timed.Select(_ => new List<double>()).ToList();
            for (int r = 0; r < rounds; r++)
            {
                for (int i = 0; i < timed.Count; i++)
                {
                    // TorchSharp's steps leave tensors for the finalizer thread to free: on two cores
                    // that work would run during the next contender's parallel step and slow it.
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                    var sw = Stopwatch.StartNew();
                    for (int s = 0; s < stepsPerRound; s++)
                    {
                        timed[i].Step();
                    }
                    times[i].Add(sw.Elapsed.TotalMilliseconds / stepsPerRound);
                }
            }
            var medians = times.Select(StepTiming.Median).ToList();
            int torchRow = 0, fusedRow = 1;
            for (int i = 0; i < timed.Count; i++)
            {
                var k = contenders[i];
                double bytes = (double)parameters * k.BytesPerElement;
                int refRow = k.Reference is null ? -1 : Array.FindIndex(contenders, x => x.Name == k.Reference);
                string ofRef = refRow < 0 ? "–" : $"{100 * medians[refRow] / medians[i]:0}%";
                output.WriteLine($"| {parameters / 1e6:0.#}M | {tensors} | {k.Name} | {k.BytesPerElement} | {medians[i]:0.000} | " +
                    $"{medians[torchRow] / medians[i]:0.00}x faster | {medians[i] / medians[fusedRow]:0.00}x the time | {bytes / (medians[i] * 1e6):0.0} | {ofRef} |");
            }
            foreach (var t in timed)
            {
                foreach (var d in t.Owned)
                {
                    d.Dispose();
                }
            }
        }
    }
}
