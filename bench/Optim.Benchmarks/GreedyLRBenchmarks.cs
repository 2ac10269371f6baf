using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using TorchSharp;
using TorchSharp.Modules;

namespace Optim.Benchmarks;

/// <summary>
/// The cost of one scheduler step with a metric, on an optimizer with <see cref="Groups"/> param groups:
/// <c>Optim.GreedyLR.step(metric)</c> against TorchSharp's <c>ReduceLROnPlateau.step(metric)</c>. The
/// metric cycles through a fixed noisy, slowly improving sequence, so rates go up and down.
/// </summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class GreedyLRBenchmarks
{
    private const int MetricCount = 256;
    private readonly double[] _metrics = Enumerable.Range(0, MetricCount)
        .Select(i => 1.0 / (1 + 0.01 * i) + 0.05 * Math.Sin(0.7 * i)).ToArray();

    private readonly List<IDisposable> _owned = new();
    private FusedSGD? _optimizer;
    private torch.optim.lr_scheduler.LRScheduler? _plateau;
    private GreedyLR? _greedy;
    private int _next;

    /// <summary>Param groups of the optimizer the scheduler drives.</summary>
    [Params(1, 100)]
    public int Groups { get; set; }

    private FusedSGD Optimizer()
    {
        Workload.SettleGarbage();
        var groups = new List<FusedSGD.ParamGroup>();
        for (int g = 0; g < Groups; g++)
        {
            var p = new Parameter(torch.zeros(16));
            _owned.Add(p);
            groups.Add(new FusedSGD.ParamGroup(new[] { p }, lr: 0.1));
        }
        _optimizer = new FusedSGD(groups, 0.1, momentum: 0.9);
        _owned.Add(_optimizer);
        return _optimizer;
    }

    [GlobalSetup(Target = nameof(ReduceLROnPlateauStep))]
    public void SetupPlateau() => _plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(Optimizer(), patience: 2, factor: 0.95);

    [GlobalSetup(Target = nameof(GreedyLRStep))]
    public void SetupGreedy() => _greedy = new GreedyLR(Optimizer(), factor: 0.95, patience: 2);

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var d in _owned)
        {
            d.Dispose();
        }
        _owned.Clear();
        _optimizer = null;
        _plateau = null;
        _greedy = null;
    }

    private double NextMetric()
    {
        double m = _metrics[_next];
        _next = (_next + 1) % MetricCount;
        return m;
    }

    [Benchmark(Baseline = true), BenchmarkCategory(Catalog.Scheduler)]
    public void ReduceLROnPlateauStep() => _plateau!.step(NextMetric());

    [Benchmark, BenchmarkCategory(Catalog.Scheduler)]
    public void GreedyLRStep() => _greedy!.step(NextMetric());
}
