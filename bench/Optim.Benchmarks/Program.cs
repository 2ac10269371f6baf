using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Order;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Optim.Benchmarks;
using Optim.Interop;
using Perfolizer.Horology;
using TorchSharp;

// The BenchmarkDotNet step suite. Our own options are taken out; everything else goes to
// BenchmarkDotNet's command line (--filter, --anyCategories, --list flat, ...).
const string Usage = """
    Optim.Benchmarks — BenchmarkDotNet step benchmarks: FusedSGD, HypergradientSGD and FusedAdamW against
    torch.optim.SGD (AdamW) next to the in-run bandwidth reference, and GreedyLR's step; writes a Markdown results file.

    Usage: dotnet run -c Release --project bench/Optim.Benchmarks -- [options] [BenchmarkDotNet options]

    Options:
      --params LIST    total parameters of the step cases (default 1M,10M,100M; K and M suffixes)
      --tensors LIST   tensors the parameters are split into (default 4,1000)
      --quick          a smoke-test job (1 warmup, 3 iterations of ~50 ms) instead of the measuring job
      --out FILE       the results file (default bench/results/benchmarks-cpu.md for a complete run,
                       artifacts/benchmarks/benchmarks-cpu-partial.md otherwise)
      --help           this text
    BenchmarkDotNet options pass through, e.g. --filter '*Momentum*' or --anyCategories plain greedylr
    (without --filter every benchmark runs). Benchmarks: StepBenchmarks (categories plain, momentum,
    nesterov-wd, adamw), TrainingStepBenchmarks (category training-step: a whole training step of two
    deep MLPs) and GreedyLRBenchmarks (category greedylr).
    """;

var passthrough = new List<string>();
bool quick = false;
string? outPath = null;
try
{
    for (int i = 0; i < args.Length; i++)
    {
        string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
        switch (args[i])
        {
            case "--help" or "-h":
                Console.WriteLine(Usage);
                return 0;
            case "--quick":
                quick = true;
                break;
            case "--params":
                SuiteSettings.ParameterCounts = SuiteSettings.ParseCounts(Value());
                break;
            case "--tensors":
                SuiteSettings.TensorCounts = SuiteSettings.ParseCounts(Value()).Select(v => checked((int)v)).ToArray();
                break;
            case "--out":
                outPath = Value();
                break;
            default:
                passthrough.Add(args[i]);
                break;
        }
    }
}
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine(Usage);
    return 2;
}
if (!passthrough.Any(a => a is "--filter" or "-f" or "--list" or "--info" or "--version"))
{
    passthrough.AddRange(new[] { "--filter", "*" });
}

string repo = FindRepoRoot();
string artifacts = Path.Combine(repo, "artifacts", "benchmarks", "bdn");
// Load LibTorch (and its OpenMP runtime) before the first native step, so that the library shares
// LibTorch's team as it would in training, and the threading line below says so.
using (torch.ones(1))
{
}

var job = (quick
        ? Job.Default.WithWarmupCount(1).WithIterationCount(3).WithIterationTime(TimeInterval.FromMilliseconds(50))
        : Job.Default.WithWarmupCount(3).WithIterationCount(10).WithIterationTime(TimeInterval.FromMilliseconds(250)))
    .WithLaunchCount(1)
    // The fastest case takes a microsecond, the slowest most of a second: no unrolling, and one step per
    // iteration is enough where a step outlasts the iteration time (BenchmarkDotNet's default minimum is 4).
    .WithUnrollFactor(1)
    .WithMinInvokeCount(1)
    .WithToolchain(new InProcessEmitToolchain(TimeSpan.FromMinutes(10), logOutput: true))
    .WithId(quick ? "quick" : "measure");
var config = DefaultConfig.Instance
    .AddJob(job)
    .AddDiagnoser(MemoryDiagnoser.Default)
    .AddColumn(BandwidthColumn.All)
    .WithOrderer(new DefaultOrderer(SummaryOrderPolicy.Declared, MethodOrderPolicy.Declared))
    .WithArtifactsPath(artifacts);

string loadBefore = LoadAverage();
var started = DateTime.UtcNow;
var watch = Stopwatch.StartNew();
var summaries = BenchmarkSwitcher.FromTypes(new[] { typeof(StepBenchmarks), typeof(TrainingStepBenchmarks), typeof(GreedyLRBenchmarks) })
    .Run(passthrough.ToArray(), config)
    .ToList();
var results = Results.Of(summaries);
if (results.Rows.Count == 0)
{
    Console.WriteLine("No benchmark produced a result; no results file written.");
    return summaries.Count == 0 ? 0 : 1;
}

// Complete: the measuring job, issue 5's sizes, and a result for every case (steps x sizes, training steps x models, schedulers x 2 group counts).
int expected = Catalog.Kinds.Count(k => k.Category is not (Catalog.Scheduler or Catalog.TrainingStep)) * SuiteSettings.ParameterCounts.Length * SuiteSettings.TensorCounts.Length +
    Catalog.Kinds.Count(k => k.Category == Catalog.TrainingStep) * TrainingStepBenchmarks.Models.Count() +
    Catalog.Kinds.Count(k => k.Category == Catalog.Scheduler) * 2;
bool partial = quick || !SuiteSettings.DefaultSizes || results.Rows.Count < expected;
string file = Path.GetFullPath(outPath ?? (partial
    ? Path.Combine(repo, "artifacts", "benchmarks", "benchmarks-cpu-partial.md")
    : Path.Combine(repo, "bench", "results", "benchmarks-cpu.md")));
var run = new RunInfo(
    "dotnet run -c Release --project bench/Optim.Benchmarks -- " + string.Join(' ', args.Select(Quote)),
    started, watch.Elapsed, GitCommit(repo), Machine(), JobText(summaries.SelectMany(s => s.BenchmarksCases).First().Job),
    Path.GetRelativePath(repo, artifacts), partial, loadBefore, LoadAverage());
Directory.CreateDirectory(Path.GetDirectoryName(file)!);
File.WriteAllText(file, Report.Markdown(results, run));
Console.WriteLine($"Results: {file}");
return summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success)) ? 1 : 0;

static string Quote(string a) => a.Length > 0 && a.All(c => char.IsLetterOrDigit(c) || "-_.,=/:".Contains(c)) ? a : "'" + a.Replace("'", "'\\''") + "'";

static string FindRepoRoot()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
    {
        if (File.Exists(Path.Combine(dir.FullName, "Optim.sln")))
        {
            return dir.FullName;
        }
    }
    return Directory.GetCurrentDirectory();
}

static string GitCommit(string repo)
{
    try
    {
        string Git(string arguments)
        {
            var psi = new ProcessStartInfo("git", $"-C \"{repo}\" {arguments}") { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            string output = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit(5000);
            return p.ExitCode == 0 ? output : throw new InvalidOperationException(output);
        }
        string commit = Git("rev-parse --short HEAD");
        bool dirty = Git("status --porcelain --untracked-files=no").Length > 0;
        return dirty ? commit + " (with uncommitted changes)" : commit;
    }
    catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
    {
        return "unknown (git unavailable)";
    }
}

// What the job really was (BenchmarkDotNet's command line may have changed the counts).
static string JobText(Job job)
{
    var run = job.Run;
    string Count(int? n) => n?.ToString(CultureInfo.InvariantCulture) ?? "auto";
    return $"{job.Id}: {job.Infrastructure.Toolchain?.Name ?? "default toolchain"}, {run.LaunchCount} launch, {Count(run.WarmupCount)} warmup + " +
        $"{Count(run.IterationCount)} measured iterations of ≥ {run.IterationTime.ToMilliseconds():0} ms (at least {job.Accuracy.MinInvokeCount} step) each, " +
        $"unroll factor {run.UnrollFactor}; " +
        "the tables use medians";
}

static string LoadAverage() => File.Exists("/proc/loadavg")
    ? string.Join(", ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3))
    : "unknown";

static string Kernel() => File.Exists("/proc/sys/kernel/osrelease") ? File.ReadAllText("/proc/sys/kernel/osrelease").Trim() : Environment.OSVersion.VersionString;

static List<string> Machine()
{
    string cpu = "unknown CPU";
    string memory = $"{GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / (1024.0 * 1024 * 1024):0.0} GiB available to .NET";
    if (File.Exists("/proc/cpuinfo"))
    {
        cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
    }
    var env = new[] { "OPTIM_NUM_THREADS", "OPTIM_THREADING", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "DOTNET_GCgen0size" }
        .Where(v => Environment.GetEnvironmentVariable(v) is not null)
        .Select(v => $"{v}={Environment.GetEnvironmentVariable(v)}")
        .ToList();
    return new List<string>
    {
        $"Machine: {cpu}, {Environment.ProcessorCount} logical CPUs, {memory}; {RuntimeInformation.OSDescription} ({RuntimeInformation.OSArchitecture}, kernel {Kernel()})",
        $".NET {Environment.Version}, BenchmarkDotNet {typeof(BenchmarkSwitcher).Assembly.GetName().Version?.ToString(3)}, TorchSharp {typeof(torch).Assembly.GetName().Version?.ToString(3)} (LibTorch intra-op threads: {torch.get_num_threads()})",
        $"Native: {OptimNative.BuildInfo}; {OptimNative.NumThreads} threads: {OptimNative.ThreadingInfo}",
        "Environment: " + (env.Count == 0 ? "no threading or GC variables set" : string.Join(", ", env)),
    };
}
