using System.Diagnostics;
using System.Runtime.InteropServices;
using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// The per-tensor cost of a FusedSGD momentum step over many tensors, as a user meets it: right after
/// TorchSharp's SGD step (which leaves none of the tensors' records in cache) and right after its own
/// step, each next to the bandwidth reference (1 read + 2 updates, pointers gathered once) under the
/// same condition, in interleaved rounds with a full GC between contenders. The time above the
/// reference, divided by the tensors, is what the managed gather costs per tensor.
/// </summary>
internal static class ManyTensorTiming
{
    private sealed record Contender(string Name, Func<int, double> Time);

    public static void Run(long parameters, int[] tensorCounts, int rounds, int stepsPerRound, TextWriter output)
    {
        using (torch.ones(1))
        {
        }
        output.WriteLine($"# Many tensors: FusedSGD momentum after TorchSharp's step and after its own (median of {rounds} interleaved rounds x {stepsPerRound} steps)");
        output.WriteLine();
        output.WriteLine($"Machine: {Environment.ProcessorCount} logical CPUs, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}; " +
            $"native: {OptimNative.BuildInfo}, {OptimNative.NumThreads} threads ({OptimNative.ThreadingInfo}); prefetch: {(TensorRecords.Supported ? "yes" : "no")}");
        output.WriteLine();
        output.WriteLine("*after torch*: each timed step follows an (untimed) step of TorchSharp's SGD over other tensors of the same layout. " +
            "*µs/tensor above ref*: (step − reference under the same condition) ÷ tensors; for the gather alone " +
            "(the step's checks and pointer gather without the native call, run right after the step named under *follows*), its time ÷ tensors, " +
            "in wall time and in the thread's CPU time (which leaves out time the thread waited for a core on a shared machine).");
        output.WriteLine();
        output.WriteLine("| params | tensors | step | follows | ms/step | vs torch SGD | µs/tensor above ref |");
        output.WriteLine("|---:|---:|---|---|---:|---:|---:|");
        foreach (int tensors in tensorCounts)
        {
            var c = new StepTiming.Case("momentum", parameters, tensors, 0.9, false, 0);
            var torchParams = StepTiming.MakeParameters(c, 1);
            var fusedParams = StepTiming.MakeParameters(c, 1);
            using var sgd = torch.optim.SGD(torchParams, 1e-6, momentum: 0.9);
            using var fused = new FusedSGD(fusedParams, 1e-6, momentum: 0.9);
            var reference = HdTiming.Reference(c, (1, 2));
            var contenders = new[]
            {
                new Contender("torch.optim.SGD", n => Consecutive(() => sgd.step(), n)),
                new Contender("FusedSGD|torch", n => AfterOther(() => sgd.step(), () => fused.step(), n)),
                new Contender("FusedSGD|itself", n => Consecutive(() => fused.step(), n)),
                new Contender("reference|torch", n => AfterOther(() => sgd.step(), reference.Step, n)),
                new Contender("reference|itself", n => Consecutive(reference.Step, n)),
                new Contender("gather|torch", n => AfterOther(() => sgd.step(), fused.GatherOnly, n)),
                new Contender("gather|itself", n => AfterOther(() => fused.step(), fused.GatherOnly, n)),
                new Contender("gather cpu|torch", n => AfterOther(() => sgd.step(), fused.GatherOnly, n, ThreadCpuMs)),
                new Contender("gather cpu|itself", n => AfterOther(() => fused.step(), fused.GatherOnly, n, ThreadCpuMs)),
            };
            for (int i = 0; i < 3; i++)
            {
                sgd.step();
                fused.step();
                reference.Step();
            }
            var times = contenders.Select(_ => new List<double>()).ToList();
            for (int r = 0; r < rounds; r++)
            {
                for (int i = 0; i < contenders.Length; i++)
                {
                    // TorchSharp's garbage would otherwise be finalized during the next contender's step.
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                    times[i].Add(contenders[i].Time(stepsPerRound));
                }
            }
            var m = times.Select(StepTiming.Median).ToArray();
            void Row(string step, string follows, double ms, double? refMs) =>
                output.WriteLine($"| {parameters / 1e6:0.###}M | {tensors} | {step} | {follows} | {ms:0.000} | {m[0] / ms:0.00}x | " +
                    (refMs is double rm ? $"{(ms - rm) * 1000 / tensors:0.00}" : "–") + " |");
            Row("torch.optim.SGD", "itself", m[0], null);
            Row("FusedSGD", "torch.optim.SGD", m[1], m[3]);
            Row("FusedSGD", "itself", m[2], m[4]);
            Row("reference (1 read + 2 updates)", "torch.optim.SGD", m[3], null);
            Row("reference (1 read + 2 updates)", "itself", m[4], null);
            Row("FusedSGD's checks and gather alone", "torch.optim.SGD", m[5], 0);
            Row("FusedSGD's checks and gather alone", "FusedSGD", m[6], 0);
            Row("the same, thread CPU time", "torch.optim.SGD", m[7], 0);
            Row("the same, thread CPU time", "FusedSGD", m[8], 0);
            foreach (var d in reference.Owned)
            {
                d.Dispose();
            }
            foreach (var p in torchParams.Concat(fusedParams))
            {
                p.grad?.Dispose();
                p.Dispose();
            }
        }
    }

    private static double Consecutive(Action step, int n)
    {
        step();
        var sw = Stopwatch.StartNew();
        for (int s = 0; s < n; s++)
        {
            step();
        }
        return sw.Elapsed.TotalMilliseconds / n;
    }

    private static double AfterOther(Action other, Action step, int n) => AfterOther(other, step, n, WallMs);

    private static double AfterOther(Action other, Action step, int n, Func<double> clockMs)
    {
        double total = 0;
        for (int s = 0; s < n; s++)
        {
            other();
            double t0 = clockMs();
            step();
            total += clockMs() - t0;
        }
        return total / n;
    }

    private static double WallMs() => Stopwatch.GetTimestamp() * 1000.0 / Stopwatch.Frequency;

    // CPU time of the calling thread: on a shared machine, time the thread was not running is left out
    // (the gather runs on the calling thread only).
    private static double ThreadCpuMs()
    {
        return clock_gettime(ClockThreadCpuTime, out var ts) == 0 ? ts.Seconds * 1e3 + ts.Nanoseconds * 1e-6 : double.NaN;
    }

    private const int ClockThreadCpuTime = 3;

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [DllImport("libc", SetLastError = false)]
    private static extern int clock_gettime(int clock, out Timespec ts);
}
