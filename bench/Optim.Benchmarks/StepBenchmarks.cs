using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Benchmarks;

/// <summary>
/// One optimizer step on <see cref="Parameters"/> float32 parameters split into <see cref="Tensors"/>
/// tensors. Each category has TorchSharp's <c>torch.optim.SGD</c> (or <c>AdamW</c>) with the same settings as
/// its baseline, our optimizers, and the bandwidth reference that moves the bytes of our step pass for pass
/// (<c>optim_stream_reference</c>), all in the same run. Every case gets fresh tensors; gradients stay
/// fixed, so each invocation is one steady-state step.
/// </summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class StepBenchmarks
{
    // A tiny rate keeps the parameters (and HD's rates) where they started over thousands of steps.
    private const double Lr = 1e-6;
    private const double Momentum = 0.9;
    private const double WeightDecay = 1e-4;
    private const double HypergradLr = 1e-9;
    private const double AdamWeightDecay = 1e-2;

    private Workload? _work;
    private torch.optim.Optimizer? _optimizer;
    private StreamPlan? _reference;

    /// <summary>Total float32 parameters.</summary>
    [ParamsSource(nameof(ParameterCounts))]
    public long Parameters { get; set; }

    /// <summary>Tensors they are split into.</summary>
    [ParamsSource(nameof(TensorCounts))]
    public int Tensors { get; set; }

    /// <summary>The parameter counts of this run (<c>--params</c>).</summary>
    public static IEnumerable<long> ParameterCounts => SuiteSettings.ParameterCounts;

    /// <summary>The tensor counts of this run (<c>--tensors</c>).</summary>
    public static IEnumerable<int> TensorCounts => SuiteSettings.TensorCounts;

    // ---- Setups: each case builds only what it measures -------------------------------------------

    private Workload Work() => _work = new Workload(Parameters, Tensors);

    private void UseOptimizer(Func<Workload, torch.optim.Optimizer> make)
    {
        var work = Work();
        _optimizer = work.Own(make(work));
    }

    private void UseReference(string method, Func<Workload, StreamPlan> make)
    {
        _reference = make(Work());
        int expected = Catalog.Of(method).BytesPerElement;
        if (_reference.BytesPerElement != expected)
        {
            throw new InvalidOperationException($"{method}: the reference moves {_reference.BytesPerElement} B per element, the catalog says {expected}.");
        }
    }

    [GlobalSetup(Target = nameof(TorchSgdPlain))]
    public void SetupTorchSgdPlain() => UseOptimizer(w => torch.optim.SGD(w.Parameters(), Lr));

    [GlobalSetup(Target = nameof(FusedSgdPlain))]
    public void SetupFusedSgdPlain() => UseOptimizer(w => new FusedSGD(w.Parameters(), Lr));

    [GlobalSetup(Target = nameof(ReferencePlain))]
    public void SetupReferencePlain() => UseReference(nameof(ReferencePlain), w =>
    {
        Tensor[] p = w.Arrays(), g = w.Arrays();
        return new StreamPlan(w.Numels).Then(read: new[] { g }, update: new[] { p });
    });

    [GlobalSetup(Target = nameof(TorchSgdMomentum))]
    public void SetupTorchSgdMomentum() => UseOptimizer(w => torch.optim.SGD(w.Parameters(), Lr, Momentum));

    [GlobalSetup(Target = nameof(FusedSgdMomentum))]
    public void SetupFusedSgdMomentum() => UseOptimizer(w => new FusedSGD(w.Parameters(), Lr, Momentum));

    [GlobalSetup(Targets = new[] { nameof(ReferenceMomentum), nameof(ReferenceNesterovWd) })]
    public void SetupReferenceMomentum() => UseReference(nameof(ReferenceMomentum), w =>
    {
        Tensor[] p = w.Arrays(), g = w.Arrays(), buf = w.Arrays();
        return new StreamPlan(w.Numels).Then(read: new[] { g }, update: new[] { p, buf });
    });

    [GlobalSetup(Target = nameof(HdGlobal))]
    public void SetupHdGlobal() => UseOptimizer(w => Hd(w, HypergradientScope.Global));

    [GlobalSetup(Target = nameof(HdPerGroup))]
    public void SetupHdPerGroup() => UseOptimizer(w => Hd(w, HypergradientScope.PerGroup));

    [GlobalSetup(Target = nameof(HdPerTensor))]
    public void SetupHdPerTensor() => UseOptimizer(w => Hd(w, HypergradientScope.PerTensor));

    [GlobalSetup(Target = nameof(HdPerParameter))]
    public void SetupHdPerParameter() => UseOptimizer(w => Hd(w, HypergradientScope.PerParameter));

    [GlobalSetup(Target = nameof(HdPerParameterUnchecked))]
    public void SetupHdPerParameterUnchecked() => UseOptimizer(w => Hd(w, HypergradientScope.PerParameter, skipNonFinite: false));

    private static HypergradientSGD Hd(Workload w, HypergradientScope scope, bool skipNonFinite = true) =>
        new(w.Parameters(), Lr, HypergradLr, scope, momentum: Momentum, skip_nonfinite: skipNonFinite);

    // HD at a scalar scope (heavy ball, no weight decay): a reduction pass reading g and the buffer
    // (u_prev), then the update pass of momentum SGD.
    [GlobalSetup(Target = nameof(ReferenceHdScalar))]
    public void SetupReferenceHdScalar() => UseReference(nameof(ReferenceHdScalar), w =>
    {
        Tensor[] p = w.Arrays(), g = w.Arrays(), buf = w.Arrays();
        return new StreamPlan(w.Numels).Then(read: new[] { g, buf }, update: Array.Empty<Tensor[]>())
            .Then(read: new[] { g }, update: new[] { p, buf });
    });

    // HD per parameter: a finiteness pass reading g, then one pass updating p, the buffer and the rates.
    [GlobalSetup(Target = nameof(ReferenceHdPerParameter))]
    public void SetupReferenceHdPerParameter() => UseReference(nameof(ReferenceHdPerParameter), w =>
    {
        Tensor[] p = w.Arrays(), g = w.Arrays(), buf = w.Arrays(), rates = w.Arrays(Lr);
        return new StreamPlan(w.Numels).Then(read: new[] { g }, update: Array.Empty<Tensor[]>())
            .Then(read: new[] { g }, update: new[] { p, buf, rates });
    });

    // HD per parameter when the caller vouches for the gradients: the update pass alone.
    [GlobalSetup(Target = nameof(ReferenceHdPerParameterUnchecked))]
    public void SetupReferenceHdPerParameterUnchecked() => UseReference(nameof(ReferenceHdPerParameterUnchecked), w =>
    {
        Tensor[] p = w.Arrays(), g = w.Arrays(), buf = w.Arrays(), rates = w.Arrays(Lr);
        return new StreamPlan(w.Numels).Then(read: new[] { g }, update: new[] { p, buf, rates });
    });

    [GlobalSetup(Target = nameof(TorchSgdNesterovWd))]
    public void SetupTorchSgdNesterovWd() =>
        UseOptimizer(w => torch.optim.SGD(w.Parameters(), Lr, Momentum, weight_decay: WeightDecay, nesterov: true));

    [GlobalSetup(Target = nameof(FusedSgdNesterovWd))]
    public void SetupFusedSgdNesterovWd() =>
        UseOptimizer(w => new FusedSGD(w.Parameters(), Lr, Momentum, weight_decay: WeightDecay, nesterov: true));

    [GlobalSetup(Target = nameof(TorchAdamW))]
    public void SetupTorchAdamW() => UseOptimizer(w => torch.optim.AdamW(w.Parameters(), Lr, weight_decay: AdamWeightDecay));

    [GlobalSetup(Target = nameof(FusedAdamW))]
    public void SetupFusedAdamW() => UseOptimizer(w => new FusedAdamW(w.Parameters(), Lr, weight_decay: AdamWeightDecay));

    // AdamW: one pass reading g and updating p, exp_avg and exp_avg_sq.
    [GlobalSetup(Target = nameof(ReferenceAdamW))]
    public void SetupReferenceAdamW() => UseReference(nameof(ReferenceAdamW), w =>
    {
        Tensor[] p = w.Arrays(), g = w.Arrays(), m = w.Arrays(), v = w.Arrays();
        return new StreamPlan(w.Numels).Then(read: new[] { g }, update: new[] { p, m, v });
    });

    [GlobalCleanup]
    public void Cleanup()
    {
        _work?.Dispose();
        _work = null;
        _optimizer = null;
        _reference = null;
    }

    // ---- Plain SGD ----------------------------------------------------------------------------------

    [Benchmark(Baseline = true), BenchmarkCategory(Catalog.Plain)]
    public void TorchSgdPlain() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.Plain)]
    public void FusedSgdPlain() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.Plain)]
    public double ReferencePlain() => _reference!.Run();

    // ---- Momentum 0.9: SGD and hypergradient descent at each scope -------------------------------------

    [Benchmark(Baseline = true), BenchmarkCategory(Catalog.Momentum)]
    public void TorchSgdMomentum() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.Momentum)]
    public void FusedSgdMomentum() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.Momentum)]
    public double ReferenceMomentum() => _reference!.Run();

    [Benchmark, BenchmarkCategory(Catalog.Momentum)]
    public void HdGlobal() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.Momentum)]
    public void HdPerGroup() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.Momentum)]
    public void HdPerTensor() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.Momentum)]
    public double ReferenceHdScalar() => _reference!.Run();

    [Benchmark, BenchmarkCategory(Catalog.Momentum)]
    public void HdPerParameter() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.Momentum)]
    public double ReferenceHdPerParameter() => _reference!.Run();

    [Benchmark, BenchmarkCategory(Catalog.Momentum)]
    public void HdPerParameterUnchecked() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.Momentum)]
    public double ReferenceHdPerParameterUnchecked() => _reference!.Run();

    // ---- Nesterov momentum 0.9 with weight decay ------------------------------------------------------

    [Benchmark(Baseline = true), BenchmarkCategory(Catalog.NesterovWd)]
    public void TorchSgdNesterovWd() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.NesterovWd)]
    public void FusedSgdNesterovWd() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.NesterovWd)]
    public double ReferenceNesterovWd() => _reference!.Run();

    // ---- AdamW (weight decay 0.01) ---------------------------------------------------------------------

    [Benchmark(Baseline = true), BenchmarkCategory(Catalog.AdamW)]
    public void TorchAdamW() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.AdamW)]
    public void FusedAdamW() => _optimizer!.step();

    [Benchmark, BenchmarkCategory(Catalog.AdamW)]
    public double ReferenceAdamW() => _reference!.Run();
}
