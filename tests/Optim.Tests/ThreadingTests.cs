using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// Threads: in a TorchSharp process the CPU path runs on LibTorch's OpenMP team, and separate optimizers
/// stepped on separate threads at once give bit for bit what they give alone. (Independence of the
/// native thread count, at every configuration: LargeReferenceTests.)
/// </summary>
[TestFixture]
[NonParallelizable]
public class ThreadingTests
{
    [TearDown]
    public void RestoreDefault() => OptimNative.NumThreads = 0;

    private static List<Tensor> Train(int threads)
    {
        OptimNative.NumThreads = threads;
        // About 600K parameters: above the size at which the native step goes parallel.
        torch.manual_seed(40);
        using var model = nn.Sequential(("a", nn.Linear(64, 1024)), ("t", nn.Tanh()), ("b", nn.Linear(1024, 512)));
        var (x, y) = Harness.Data(41, inputs: 64, outputs: 512, rows: 16);
        using var opt = new FusedSGD(model.parameters(), 0.05, momentum: 0.9, weight_decay: 1e-3, nesterov: true);
        for (int i = 0; i < 5; i++)
        {
            Harness.Backward(model, x, y);
            opt.step();
        }
        Assert.That(OptimNative.NumThreads, Is.EqualTo(threads));
        return model.parameters().Select(p => p.detach().clone()).ToList();
    }

    /// <summary>One optimizer on its own parameters, with GreedyLR driving it or not.</summary>
    public sealed record Worker(string Name, Func<List<Parameter>, OptimizerHelper> Make, bool GreedyLR = false)
    {
        public override string ToString() => Name;
    }

    private static readonly Worker[] Workers =
    {
        new("FusedSGD Nesterov", ps => new FusedSGD(ps, 0.01, momentum: 0.9, weight_decay: 1e-3, nesterov: true)),
        new("FusedSGD momentum under GreedyLR", ps => new FusedSGD(ps, 0.01, momentum: 0.9, dampening: 0.1), GreedyLR: true),
        new("HD global, normalized, heavy ball", ps => new HypergradientSGD(ps, 0.01, 0.02, HypergradientScope.Global, momentum: 0.9, rule: HypergradientRule.Normalized)),
        new("HD per group, additive", ps => new HypergradientSGD(ps, 0.01, 1e-9, HypergradientScope.PerGroup)),
        new("HD per tensor, normalized, Nesterov", ps => new HypergradientSGD(ps, 0.01, 0.02, HypergradientScope.PerTensor, momentum: 0.9, nesterov: true, rule: HypergradientRule.Normalized)),
        new("HD per parameter, normalized, heavy ball", ps => new HypergradientSGD(ps, 0.01, 0.02, HypergradientScope.PerParameter, momentum: 0.9, rule: HypergradientRule.Normalized)),
    };

    // 221,003 elements per optimizer: above the 131,072 at which a native step goes parallel.
    private static readonly long[][] Shapes = { new long[] { 150_001 }, new long[] { 70_003 }, new long[] { 999 } };
    private const int Steps = 50;

    private sealed class Trained : IDisposable
    {
        public List<Parameter> Parameters = null!;
        public OptimizerHelper Optimizer = null!;
        public GreedyLR? Scheduler;
        public Exception? Error;
        public DateTime First, Last;

        public void Dispose()
        {
            Optimizer?.Dispose();
            Parameters?.ForEach(p => p.Dispose());
        }
    }

    // Builds worker k's parameters and optimizer, waits at `start`, then steps it with its own gradients.
    private static void Train(Worker w, int k, Trained into, Barrier? start)
    {
        try
        {
            using (var gen = new torch.Generator((ulong)(100 + k)))
            {
                into.Parameters = Shapes.Select(s =>
                {
                    using var values = torch.randn(s, generator: gen);
                    return new Parameter(values);
                }).ToList();
            }
            into.Optimizer = w.Make(into.Parameters);
            into.Scheduler = w.GreedyLR ? new GreedyLR(into.Optimizer, factor: 0.8, patience: 1, smooth: true, window_size: 3) : null;
            var gradients = new Harness.DriftingGradients(into.Parameters, 200 + k);
            start?.SignalAndWait();
            into.First = DateTime.UtcNow;
            for (int step = 0; step < Steps; step++)
            {
                gradients.Next(into.Parameters);
                into.Optimizer.step();
                into.Scheduler?.step(Math.Sin(step * 0.7) + 1.0 / (1 + step));
            }
            into.Last = DateTime.UtcNow;
        }
        catch (Exception e)
        {
            into.Error = e;
            start?.RemoveParticipant();
        }
    }

    [Test]
    public void SeparateOptimizersSteppedAtOnceGiveWhatTheyGiveAlone()
    {
        var alone = Workers.Select(_ => new Trained()).ToList();
        var together = Workers.Select(_ => new Trained()).ToList();
        try
        {
            // Alone: each on a thread of its own, one after another.
            for (int k = 0; k < Workers.Length; k++)
            {
                int w = k;
                var t = new Thread(() => Train(Workers[w], w, alone[w], null));
                t.Start();
                t.Join();
            }
            // Together: all at once, released by one barrier.
            using var start = new Barrier(Workers.Length);
            var threads = Workers.Select((worker, k) => new Thread(() => Train(worker, k, together[k], start))).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            foreach (var r in alone.Concat(together).Where(r => r.Error is not null))
            {
                throw new AssertionException($"a worker failed: {r.Error}");
            }
            for (int k = 0; k < Workers.Length; k++)
            {
                Harness.AssertSameState(together[k].Optimizer, together[k].Parameters, alone[k].Optimizer, alone[k].Parameters, Workers[k].Name);
                if (Workers[k].GreedyLR)
                {
                    Harness.AssertSameState(together[k].Scheduler!.State, alone[k].Scheduler!.State, Workers[k].Name);
                }
            }
            // How much the runs overlapped (informative: a busy machine may serialise them).
            var overlap = together.Min(r => r.Last) - together.Max(r => r.First);
            TestContext.Out.WriteLine($"all {Workers.Length} optimizers were stepping at once for {Math.Max(0, overlap.TotalMilliseconds):F0} ms");
        }
        finally
        {
            alone.Concat(together).ToList().ForEach(r => r.Dispose());
        }
    }

    [Test]
    public void TorchSharpProcessesShareLibTorchsOpenMpTeam()
    {
        // Any TorchSharp op has loaded LibTorch (and its libgomp) by now; a parallel-sized step then
        // runs on that runtime's team rather than on a second pool of threads.
        _ = Train(2);
        Assert.That(OptimNative.ThreadingInfo, Does.StartWith("openmp team of ").And.Contain("libgomp"));
    }
}
