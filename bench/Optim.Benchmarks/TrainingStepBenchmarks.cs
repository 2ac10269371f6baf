using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Benchmarks;

/// <summary>
/// One whole training step (zero_grad, forward with an MSE loss, backward, optimizer step) of a deep MLP,
/// with TorchSharp's SGD and with FusedSGD (momentum 0.9): what a user's loop gains. Both models start
/// from the same weights and see the same fixed batch.
/// </summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class TrainingStepBenchmarks
{
    private Sequential? _model;
    private torch.optim.Optimizer? _optimizer;
    private Tensor? _x, _y;

    /// <summary>The models: "layers x width, batch b".</summary>
    [ParamsSource(nameof(Models))]
    public string Model { get; set; } = "";

    /// <summary>24 layers of 512 at batch 32 and 8 layers of 2048 at batch 16.</summary>
    public static IEnumerable<string> Models => new[] { "24x512 b32", "8x2048 b16" };

    /// <summary>Layers, width and batch of a model name.</summary>
    public static (int Layers, int Width, int Batch) Shape(string model)
    {
        var parts = model.Split(' ');
        var lw = parts[0].Split('x');
        return (int.Parse(lw[0], System.Globalization.CultureInfo.InvariantCulture), int.Parse(lw[1], System.Globalization.CultureInfo.InvariantCulture),
            int.Parse(parts[1][1..], System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>Parameters and tensors of a model (each Linear layer: a weight and a bias).</summary>
    public static (long Parameters, int Tensors) Size(string model)
    {
        var (layers, width, _) = Shape(model);
        return (layers * ((long)width * width + width), 2 * layers);
    }

    private void Setup(Func<IEnumerable<Parameter>, torch.optim.Optimizer> optimizer)
    {
        Workload.SettleGarbage();
        var (layers, width, batch) = Shape(Model);
        torch.manual_seed(7);
        var modules = new List<(string, nn.Module<Tensor, Tensor>)>();
        for (int i = 0; i < layers; i++)
        {
            modules.Add(($"fc{i}", nn.Linear(width, width)));
            if (i < layers - 1)
            {
                modules.Add(($"act{i}", nn.ReLU()));
            }
        }
        _model = nn.Sequential(modules);
        _x = torch.randn(batch, width);
        _y = torch.randn(batch, width);
        _optimizer = optimizer(_model.parameters());
    }

    [GlobalSetup(Target = nameof(TorchSgdTrainingStep))]
    public void SetupTorch() => Setup(ps => torch.optim.SGD(ps, 1e-4, momentum: 0.9));

    [GlobalSetup(Target = nameof(FusedSgdTrainingStep))]
    public void SetupFused() => Setup(ps => new FusedSGD(ps, 1e-4, momentum: 0.9));

    [GlobalCleanup]
    public void Cleanup()
    {
        _optimizer?.Dispose();
        _model?.Dispose();
        _x?.Dispose();
        _y?.Dispose();
        _optimizer = null;
        _model = null;
    }

    private void TrainingStep()
    {
        _optimizer!.zero_grad();
        using var scope = torch.NewDisposeScope();
        nn.functional.mse_loss(_model!.call(_x!), _y!).backward();
        _optimizer.step();
    }

    [Benchmark(Baseline = true), BenchmarkCategory(Catalog.TrainingStep)]
    public void TorchSgdTrainingStep() => TrainingStep();

    [Benchmark, BenchmarkCategory(Catalog.TrainingStep)]
    public void FusedSgdTrainingStep() => TrainingStep();
}
