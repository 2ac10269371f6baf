using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// A soak run: many steps of every optimizer and scheduler on a small real model (a two-layer MLP
/// classifying synthetic data, its layers as two param groups), reading at 21 points of each run, after
/// a full collection: the process's resident memory (VmRSS), the native heap in use (glibc's
/// mallinfo2), the managed heap and TorchSharp's count of live tensors. A leak of native memory, managed
/// objects or tensors per step shows as growth from the start of a run to its end.
/// </summary>
internal static class Soak
{
    /// <summary>What "flat" means, per run after its warm-up.</summary>
    public const double LimitMbPer10k = 1.0;
    public const long ManagedLimitBytes = 64 * 1024;

    // Readings per run (the first right after the warm-up), and how many at each end make its start and end figures.
    private const int Intervals = 20, Ends = 5;

    private const int Inputs = 32, Classes = 10, Rows = 2048, Batch = 64;

    private sealed record Case(string Name, Func<Sequential, torch.optim.Optimizer> Make, bool GreedyLR, bool TorchSharpStep);

    private static IEnumerable<Parameter> Layer(Sequential m, string name) => m.named_parameters().Where(n => n.name.StartsWith(name)).Select(n => n.parameter);

    private static IEnumerable<T> Groups<T>(Sequential m, Func<IEnumerable<Parameter>, double?, T> group) =>
        new[] { group(Layer(m, "fc1"), null), group(Layer(m, "fc2"), 0.05) };

    private static torch.optim.Optimizer Hd(Sequential m, HypergradientScope scope) =>
        new HypergradientSGD(Groups(m, (ps, lr) => new HypergradientSGD.ParamGroup(ps, lr: lr)), 0.1, 0.02, scope,
            momentum: 0.9, rule: HypergradientRule.Normalized, lr_min: 1e-3, lr_max: 1.0);

    private static readonly Case[] Cases =
    {
        new("FusedSGD, momentum 0.9", m => new FusedSGD(Groups(m, (ps, lr) => new FusedSGD.ParamGroup(ps, lr: lr)), 0.1, momentum: 0.9), false, false),
        new("HypergradientSGD global", m => Hd(m, HypergradientScope.Global), false, false),
        new("HypergradientSGD per group", m => Hd(m, HypergradientScope.PerGroup), false, false),
        new("HypergradientSGD per tensor", m => Hd(m, HypergradientScope.PerTensor), false, false),
        new("HypergradientSGD per parameter", m => Hd(m, HypergradientScope.PerParameter), false, false),
        new("GreedyLR driving FusedSGD (momentum 0.9)", m => new FusedSGD(Groups(m, (ps, lr) => new FusedSGD.ParamGroup(ps, lr: lr)), 0.1, momentum: 0.9), true, false),
        new("GreedyLR driving torch.optim.Adam", m => torch.optim.Adam(m.parameters(), 1e-3), true, true),
    };

    /// <summary>One reading (after a full collection with finalizers run).</summary>
    private readonly record struct Reading(double RssMb, double NativeMb, long ManagedBytes, long LiveTensors);

    private sealed record Row(string Name, long Steps, IReadOnlyList<Reading> Readings, long AllocatedBytes, double FirstLoss, double LastLoss, double LastLr, TimeSpan Elapsed)
    {
        // Start and end: medians of the first and last readings (one reading can be off by a few MB on a
        // busy machine); their centres are (Intervals - Ends + 1) / Intervals of the run apart.
        private double Start(Func<Reading, double> f) => Median(Readings.Take(Ends).Select(f));

        private double End(Func<Reading, double> f) => Median(Readings.TakeLast(Ends).Select(f));

        private double Per10k(Func<Reading, double> f) => (End(f) - Start(f)) * 10_000 / (Steps * (Intervals - Ends + 1.0) / Intervals);

        public double RssStart => Start(r => r.RssMb);
        public double RssEnd => End(r => r.RssMb);
        public double RssGrowth => Per10k(r => r.RssMb);
        public double NativeStart => Start(r => r.NativeMb);
        public double NativeEnd => End(r => r.NativeMb);
        public double NativeGrowth => Per10k(r => r.NativeMb);
        public double ManagedStart => Start(r => r.ManagedBytes);
        public double ManagedEnd => End(r => r.ManagedBytes);
        public long TensorsMin => Readings.Min(r => r.LiveTensors);
        public long TensorsMax => Readings.Max(r => r.LiveTensors);
        public double AllocatedPerStep => (double)AllocatedBytes / Steps;
        public bool RssFlat => RssGrowth < LimitMbPer10k;
        public bool NativeFlat => NativeGrowth < LimitMbPer10k;
        public bool ManagedFlat => ManagedEnd - ManagedStart < ManagedLimitBytes;
        public bool TensorsFlat => TensorsMin == TensorsMax;
        public bool Flat => RssFlat && NativeFlat && ManagedFlat && TensorsFlat;

        public string Verdict => Flat ? "yes" : "**no**: " + string.Join(", ", new[]
        {
            RssFlat ? null : "RSS", NativeFlat ? null : "native heap", ManagedFlat ? null : "managed heap", TensorsFlat ? null : "tensors",
        }.Where(s => s is not null));
    }

    private static double Median(IEnumerable<double> values)
    {
        var v = values.OrderBy(x => x).ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    public static int Run(int steps, long parameters, string outPath, string commandLine, TextWriter output)
    {
        int hidden = (int)Math.Max(1, (parameters - Classes) / (Inputs + 1 + Classes));
        long total = (long)Inputs * hidden + hidden + (long)hidden * Classes + Classes;
        int warmup = Math.Min(500, Math.Max(1, steps / 10));
        var started = DateTime.UtcNow;
        output.WriteLine($"soak: {steps} steps of each of {Cases.Length} runs after {warmup} warm-up steps (and a process warm-up of up to 1000 steps of each); " +
            $"MLP {Inputs}-{hidden}-{Classes} ({total} parameters), batch {Batch}");
        var (x, y) = Data();
        // The process's own warm-up first (JIT tiers, LibTorch's kernels and threads, the allocators):
        // otherwise the first run's RSS grows by several MB that belong to no optimizer.
        foreach (var c in Cases)
        {
            RunCase(c, hidden, x, y, 0, Math.Min(1000, steps));
        }
        var rows = new List<Row>();
        foreach (var c in Cases)
        {
            var row = RunCase(c, hidden, x, y, warmup, steps);
            rows.Add(row);
            output.WriteLine($"  {row.Name}: RSS {row.RssStart:0.0} -> {row.RssEnd:0.0} MB, native heap {row.NativeStart:0.00} -> {row.NativeEnd:0.00} MB, " +
                $"managed {row.ManagedStart / 1024:0.0} -> {row.ManagedEnd / 1024:0.0} KB, live tensors {row.TensorsMin}..{row.TensorsMax}, " +
                $"loss {row.FirstLoss:0.0000} -> {row.LastLoss:0.0000}, {row.Elapsed.TotalSeconds:0.0} s: {(row.Flat ? "flat" : "NOT FLAT")}");
        }
        x.Dispose();
        y.Dispose();
        string report = Markdown(rows, steps, warmup, hidden, total, commandLine, DateTime.UtcNow - started);
        output.WriteLine();
        output.WriteLine(Table(rows));
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outPath))!);
        File.WriteAllText(outPath, report);
        output.WriteLine($"report: {outPath}");
        return rows.All(r => r.Flat) ? 0 : 3;
    }

    // Synthetic classification: Gaussian inputs labelled by a random linear teacher.
    private static (Tensor X, Tensor Y) Data()
    {
        using var gen = new torch.Generator(7);
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(new long[] { Rows, Inputs }, generator: gen);
        var teacher = torch.randn(new long[] { Inputs, Classes }, generator: gen);
        var y = x.matmul(teacher).argmax(1);
        return (x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope());
    }

    private static Row RunCase(Case c, int hidden, Tensor x, Tensor y, int warmup, int steps)
    {
        torch.manual_seed(1);
        var model = nn.Sequential(("fc1", nn.Linear(Inputs, hidden)), ("act", nn.Tanh()), ("fc2", nn.Linear(hidden, Classes)));
        var optimizer = c.Make(model);
        // Stepped with every step's training loss, smoothed over a window: raises and lowers the rate.
        var scheduler = c.GreedyLR ? new GreedyLR(optimizer, factor: 0.95, patience: 10, smooth: true, window_size: 20) : null;
        long step = 0;
        double loss = double.NaN;
        double Step()
        {
            double value;
            using (var scope = torch.NewDisposeScope())
            {
                optimizer.zero_grad();
                long start = step * Batch % Rows;
                var l = nn.functional.cross_entropy(model.call(x.narrow(0, start, Batch)), y.narrow(0, start, Batch));
                l.backward();
                value = l.ToDouble();
            }
            if (c.TorchSharpStep)
            {
                StepTorchSharp(optimizer);
            }
            else
            {
                optimizer.step();
            }
            scheduler?.step(value);
            step++;
            return value;
        }
        for (int i = 0; i < warmup; i++)
        {
            Step();
        }
        // Readings after the warm-up and after steps/20, 2·steps/20, ..., steps; the steps' own time and allocations apart.
        var readings = new List<Reading> { Read() };
        double first = double.NaN;
        long done = 0, allocated = 0;
        var clock = new System.Diagnostics.Stopwatch();
        for (int k = 1; k <= Intervals; k++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            clock.Start();
            for (long target = (long)steps * k / Intervals; done < target; done++)
            {
                loss = Step();
                first = done == 0 ? loss : first;
            }
            clock.Stop();
            allocated += GC.GetAllocatedBytesForCurrentThread() - before;
            readings.Add(Read());
        }
        double lr = optimizer.ParamGroups.First().LearningRate;
        optimizer.Dispose();
        model.Dispose();
        return new Row(c.Name, steps, readings, allocated, first, loss, lr, clock.Elapsed);
    }

    // TorchSharp 0.107's own optimizers pass implicit Scalars it does not keep alive (docs/design.md): no
    // collection may run during their step.
    private static void StepTorchSharp(torch.optim.Optimizer optimizer)
    {
        bool region = GC.TryStartNoGCRegion(16L * 1024 * 1024);
        try
        {
            optimizer.step();
        }
        finally
        {
            if (region && System.Runtime.GCSettings.LatencyMode == System.Runtime.GCLatencyMode.NoGCRegion)
            {
                GC.EndNoGCRegion();
            }
        }
    }

    private static Reading Read()
    {
        // Undisposed tensors are counted until finalized: collect, finalize, collect. The aggressive
        // collection also returns the garbage's pages to the system, so that RSS shows live memory and not
        // how far gen0 had filled (the launch profile gives it 256 MB); and glibc keeps freed heap memory
        // mapped for reuse until malloc_trim gives it back.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        long managed = GC.GetTotalMemory(forceFullCollection: true);
        MallocTrim(0);
        var heap = MallInfo2();
        return new Reading(RssKb() / 1024.0, (heap.Uordblks + heap.Hblkhd) / 1048576.0, managed, torch.Tensor.TotalCount);
    }

    // glibc's struct mallinfo2 (size_t fields): uordblks is the heap in use, hblkhd the mmapped blocks.
    [StructLayout(LayoutKind.Sequential)]
    private readonly struct MallocInfo
    {
        public readonly nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }

    [DllImport("libc", EntryPoint = "mallinfo2")]
    private static extern MallocInfo MallInfo2();

    [DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);

    private static long RssKb()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
            }
        }
        return -1;
    }

    private static string Table(IReadOnlyList<Row> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| run | steps | RSS start → end (MB) | RSS growth per 10k steps (MB) | native heap in use start → end (MB) | native growth per 10k steps (MB) | " +
            "managed heap start → end (KB) | live tensors (all readings) | managed allocations per step (B) | loss first → last | last rate | s | flat |");
        sb.AppendLine("|---|---:|---|---:|---|---:|---|---|---:|---|---:|---:|---|");
        foreach (var r in rows)
        {
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {r.Name} | {r.Steps} | {r.RssStart:0.0} → {r.RssEnd:0.0} | {r.RssGrowth:+0.00;-0.00;0.00} | {r.NativeStart:0.00} → {r.NativeEnd:0.00} | " +
                $"{r.NativeGrowth:+0.000;-0.000;0.000} | {r.ManagedStart / 1024:0.0} → {r.ManagedEnd / 1024:0.0} | " +
                $"{(r.TensorsFlat ? r.TensorsMin.ToString(CultureInfo.InvariantCulture) : $"{r.TensorsMin}–{r.TensorsMax}")} | {r.AllocatedPerStep:0} | " +
                $"{r.FirstLoss:0.0000} → {r.LastLoss:0.0000} | {r.LastLr:0.####} | {r.Elapsed.TotalSeconds:0.0} | {r.Verdict} |"));
        }
        return sb.ToString();
    }

    private static string Markdown(IReadOnlyList<Row> rows, int steps, int warmup, int hidden, long parameters, string commandLine, TimeSpan elapsed)
    {
        string cpu = File.Exists("/proc/cpuinfo")
            ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU"
            : "unknown CPU";
        var sb = new StringBuilder();
        sb.AppendLine("# Soak: memory and tensors over many steps");
        sb.AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture, $"Command: `{commandLine}`  ");
        sb.AppendLine(CultureInfo.InvariantCulture, $"Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; {elapsed.TotalSeconds:0} s in all  ");
        sb.AppendLine(CultureInfo.InvariantCulture, $"Machine: {cpu}, {Environment.ProcessorCount} logical CPUs, {RuntimeInformation.OSDescription}, .NET {Environment.Version}; " +
            $"TorchSharp {typeof(torch).Assembly.GetName().Version} ({torch.get_num_threads()} threads); native: {OptimNative.BuildInfo}, {OptimNative.NumThreads} threads ({OptimNative.ThreadingInfo})");
        sb.AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture, $"Each run trains a fresh MLP {Inputs}-{hidden}-{Classes} (tanh; {parameters} parameters; its two layers are two param groups, " +
            $"the second at rate 0.05 where the optimizer takes per-group rates) on {Rows} synthetic examples labelled by a random linear teacher, " +
            $"cross-entropy on minibatches of {Batch}, for {warmup} warm-up steps and then {steps} steps; before the measured runs, each run once for " +
            $"{Math.Min(1000, steps)} steps to warm the process up. HypergradientSGD: normalized rule, β 0.02, momentum 0.9, " +
            $"rates within [0.001, 1]. GreedyLR: stepped with every step's training loss, factor 0.95, patience 10, smoothing over 20.");
        sb.AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture, $"Read {Intervals + 1} times a run (after the warm-up, then every {Intervals}th of the run), each time after a full collection " +
            $"with finalizers run, an aggressive collection (which returns the garbage's pages: the launch profile gives gen0 256 MB) and `malloc_trim(0)` " +
            $"(glibc keeps freed memory mapped for reuse): the process's resident memory (`VmRSS` of `/proc/self/status`), the native heap in use " +
            $"(glibc's `mallinfo2`: `uordblks + hblkhd`, which LibTorch's CPU tensors and the native library allocate from), the managed heap " +
            $"(`GC.GetTotalMemory(true)`), and TorchSharp's count of live tensors (`torch.Tensor.TotalCount`: managed `Tensor` objects not yet " +
            $"disposed or finalized). *Start* and *end* are the medians of the first and of the last {Ends} readings (on a busy machine one reading " +
            $"can be a few MB off); growth per 10,000 steps is their difference over the steps between them. *s*: the wall time of the steps. Managed allocations per step: " +
            $"`GC.GetAllocatedBytesForCurrentThread()` over the steps (garbage, mostly TorchSharp's wrappers of the forward and backward pass; the " +
            $"Optim steps themselves allocate nothing, `AllocationTests`). Live tensors differ between runs because each fresh model leaves 4 of " +
            $"TorchSharp's tensors behind after `Dispose` (a model alone does, with no optimizer); within a run they must not change.");
        sb.AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture, $"**Flat** means: RSS and the native heap grow by less than {LimitMbPer10k} MB per 10,000 steps, the managed " +
            $"heap by less than {ManagedLimitBytes / 1024} KB, and the live tensors are the same in every reading.");
        sb.AppendLine();
        sb.Append(Table(rows));
        sb.AppendLine();
        sb.AppendLine(rows.All(r => r.Flat)
            ? "Every run is flat."
            : $"Not flat: {string.Join(", ", rows.Where(r => !r.Flat).Select(r => r.Name))}.");
        return sb.ToString();
    }
}
