namespace Optim.Benchmarks;

/// <summary>What one benchmark method measures: its category, the bytes per float32 element its step must
/// move (counted from the passes it makes), and the in-run bandwidth reference it is compared with.</summary>
/// <param name="Method">The benchmark method's name.</param>
/// <param name="Label">How tables name it.</param>
/// <param name="Category">Its BenchmarkDotNet category (one baseline each).</param>
/// <param name="BytesPerElement">Bytes moved per parameter; 0 where bandwidth means nothing (schedulers).</param>
/// <param name="Reference">The reference method that moves the same bytes (itself for a reference); null for none.</param>
/// <param name="Traffic">Which arrays each pass reads and writes.</param>
internal sealed record Kind(string Method, string Label, string Category, int BytesPerElement, string? Reference, string Traffic)
{
    public bool IsReference => Reference == Method;
}

internal static class Catalog
{
    public const string Plain = "plain";
    public const string Momentum = "momentum";
    public const string NesterovWd = "nesterov-wd";
    public const string AdamW = "adamw";
    public const string Scheduler = "greedylr";
    public const string TrainingStep = "training-step";

    public static readonly Kind[] Kinds =
    {
        new(nameof(StepBenchmarks.TorchSgdPlain), "torch.optim.SGD", Plain, 12, nameof(StepBenchmarks.ReferencePlain),
            "p: add_ (r p, g; w p)"),
        new(nameof(StepBenchmarks.FusedSgdPlain), "FusedSGD", Plain, 12, nameof(StepBenchmarks.ReferencePlain),
            "one pass: r p, g; w p"),
        new(nameof(StepBenchmarks.ReferencePlain), "bandwidth reference", Plain, 12, nameof(StepBenchmarks.ReferencePlain),
            "one pass: 1 read + 1 update"),

        new(nameof(StepBenchmarks.TorchSgdMomentum), "torch.optim.SGD", Momentum, 32, nameof(StepBenchmarks.ReferenceMomentum),
            "buf.mul_ (r+w buf); buf.add_(g) (r buf, g; w buf); p.add_(buf) (r p, buf; w p)"),
        new(nameof(StepBenchmarks.FusedSgdMomentum), "FusedSGD", Momentum, 20, nameof(StepBenchmarks.ReferenceMomentum),
            "one pass: r p, g, buf; w p, buf"),
        new(nameof(StepBenchmarks.ReferenceMomentum), "bandwidth reference", Momentum, 20, nameof(StepBenchmarks.ReferenceMomentum),
            "one pass: 1 read + 2 updates"),
        new(nameof(StepBenchmarks.HdGlobal), "HypergradientSGD global", Momentum, 28, nameof(StepBenchmarks.ReferenceHdScalar),
            "r g, buf; then r p, g, buf; w p, buf"),
        new(nameof(StepBenchmarks.HdPerGroup), "HypergradientSGD per group", Momentum, 28, nameof(StepBenchmarks.ReferenceHdScalar),
            "r g, buf; then r p, g, buf; w p, buf"),
        new(nameof(StepBenchmarks.HdPerTensor), "HypergradientSGD per tensor", Momentum, 28, nameof(StepBenchmarks.ReferenceHdScalar),
            "r g, buf; then r p, g, buf; w p, buf"),
        new(nameof(StepBenchmarks.ReferenceHdScalar), "bandwidth reference (HD scalar)", Momentum, 28, nameof(StepBenchmarks.ReferenceHdScalar),
            "2 reads; then 1 read + 2 updates"),
        new(nameof(StepBenchmarks.HdPerParameter), "HypergradientSGD per parameter", Momentum, 32, nameof(StepBenchmarks.ReferenceHdPerParameter),
            "r g; then r p, g, buf, rate; w p, buf, rate"),
        new(nameof(StepBenchmarks.ReferenceHdPerParameter), "bandwidth reference (HD per parameter)", Momentum, 32,
            nameof(StepBenchmarks.ReferenceHdPerParameter), "1 read; then 1 read + 3 updates"),
        new(nameof(StepBenchmarks.HdPerParameterUnchecked), "HypergradientSGD per parameter, skip_nonfinite: false", Momentum, 28,
            nameof(StepBenchmarks.ReferenceHdPerParameterUnchecked), "one pass: r p, g, buf, rate; w p, buf, rate"),
        new(nameof(StepBenchmarks.ReferenceHdPerParameterUnchecked), "bandwidth reference (HD per parameter, one pass)", Momentum, 28,
            nameof(StepBenchmarks.ReferenceHdPerParameterUnchecked), "one pass: 1 read + 3 updates"),

        new(nameof(StepBenchmarks.TorchSgdNesterovWd), "torch.optim.SGD", NesterovWd, 56, nameof(StepBenchmarks.ReferenceNesterovWd),
            "g1 = g.add(p) (r g, p; w g1, new); buf.mul_ (r+w buf); buf.add_(g1) (r buf, g1; w buf); " +
            "g2 = g1.add(buf) (r g1, buf; w g2, new); p.add_(g2) (r p, g2; w p)"),
        new(nameof(StepBenchmarks.FusedSgdNesterovWd), "FusedSGD", NesterovWd, 20, nameof(StepBenchmarks.ReferenceNesterovWd),
            "one pass: r p, g, buf; w p, buf"),
        new(nameof(StepBenchmarks.ReferenceNesterovWd), "bandwidth reference", NesterovWd, 20, nameof(StepBenchmarks.ReferenceNesterovWd),
            "one pass: 1 read + 2 updates"),

        new(nameof(StepBenchmarks.TorchAdamW), "torch.optim.AdamW", AdamW, 88, nameof(StepBenchmarks.ReferenceAdamW),
            "p.mul_ (r+w p); m.mul_ (r+w m); m.add_(g) (r m, g; w m); v.mul_ (r+w v); v.addcmul_(g, g) (r v, g; w v); " +
            "v.sqrt() (r v; w new); / c (r; w new); .add_(eps) (r+w); p.addcdiv_(m, denom) (r p, m, denom; w p)"),
        new(nameof(StepBenchmarks.FusedAdamW), "FusedAdamW", AdamW, 28, nameof(StepBenchmarks.ReferenceAdamW),
            "one pass: r p, g, m, v; w p, m, v"),
        new(nameof(StepBenchmarks.ReferenceAdamW), "bandwidth reference", AdamW, 28, nameof(StepBenchmarks.ReferenceAdamW),
            "one pass: 1 read + 3 updates"),

        new(nameof(TrainingStepBenchmarks.TorchSgdTrainingStep), "torch.optim.SGD", TrainingStep, 0, null,
            "zero_grad, forward + MSE loss, backward, step"),
        new(nameof(TrainingStepBenchmarks.FusedSgdTrainingStep), "FusedSGD", TrainingStep, 0, null,
            "zero_grad, forward + MSE loss, backward, step"),

        new(nameof(GreedyLRBenchmarks.ReduceLROnPlateauStep), "torch ReduceLROnPlateau.step(metric)", Scheduler, 0, null, ""),
        new(nameof(GreedyLRBenchmarks.GreedyLRStep), "Optim.GreedyLR.step(metric)", Scheduler, 0, null, ""),
    };

    private static readonly Dictionary<string, Kind> s_byMethod = Kinds.ToDictionary(k => k.Method);

    public static Kind Of(string method) => s_byMethod.TryGetValue(method, out var k)
        ? k
        : throw new KeyNotFoundException($"Benchmark method '{method}' is not in the catalog.");
}
