using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>Small real models and data, built identically for each optimizer under comparison.</summary>
internal static class Harness
{
    /// <summary>A small MLP (8 → 16 → 4, tanh), its weights fixed by <paramref name="seed"/>.</summary>
    public static Sequential Mlp(long seed, ScalarType dtype = ScalarType.Float32, int hidden = 16)
    {
        torch.manual_seed(seed);
        var model = nn.Sequential(
            ("fc1", nn.Linear(8, hidden)),
            ("act", nn.Tanh()),
            ("fc2", nn.Linear(hidden, 4)));
        model.to(dtype);
        return model;
    }

    /// <summary>A model of many small tensors: <paramref name="layers"/> Linear(4, 4) layers with tanh.</summary>
    public static Sequential ManySmallTensors(long seed, int layers)
    {
        torch.manual_seed(seed);
        var modules = new List<(string, nn.Module<Tensor, Tensor>)>();
        for (int i = 0; i < layers; i++)
        {
            modules.Add(($"fc{i}", nn.Linear(4, 4)));
            modules.Add(($"act{i}", nn.Tanh()));
        }
        return nn.Sequential(modules);
    }

    /// <summary>Fixed inputs and targets for a model with <paramref name="inputs"/> inputs and <paramref name="outputs"/> outputs.</summary>
    public static (Tensor X, Tensor Y) Data(long seed, int inputs = 8, int outputs = 4, ScalarType dtype = ScalarType.Float32, int rows = 32)
    {
        var gen = new torch.Generator((ulong)seed);
        var x = torch.randn(new long[] { rows, inputs }, generator: gen).to(dtype);
        var y = torch.randn(new long[] { rows, outputs }, generator: gen).to(dtype);
        return (x, y);
    }

    /// <summary>Forward, MSE loss, backward: fills every parameter's gradient.</summary>
    public static double Backward(nn.Module<Tensor, Tensor> model, Tensor x, Tensor y, Func<Tensor, Tensor, Tensor>? loss = null)
    {
        using var scope = torch.NewDisposeScope();
        foreach (var p in model.parameters())
        {
            using var g = p.grad;
            g?.zero_();
        }
        var output = model.call(x);
        var l = loss is null ? nn.functional.mse_loss(output, y) : loss(output, y);
        l.backward();
        return l.ToDouble();
    }

    /// <summary>Copies of every parameter's data (for "nothing changed" checks).</summary>
    public static List<Tensor> Snapshot(IEnumerable<Tensor> tensors) => tensors.Select(t => t.detach().clone()).ToList();

    /// <summary>Asserts that two tensors agree within absolute plus relative tolerances; names the first mismatches.</summary>
    public static void AssertClose(Tensor actual, Tensor expected, string what, double rtol, double atol)
    {
        Assert.That(actual.shape, Is.EqualTo(expected.shape), $"{what}: shapes differ");
        using var scope = torch.NewDisposeScope();
        var a = actual.detach().to(ScalarType.Float64).flatten();
        var e = expected.detach().to(ScalarType.Float64).flatten();
        var bad = (a - e).abs() > (atol + rtol * e.abs());
        bad = bad.logical_or(a.isnan().logical_xor(e.isnan()));
        long count = bad.sum().item<long>();
        if (count > 0)
        {
            var idx = bad.nonzero().flatten();
            var lines = new List<string>();
            for (int i = 0; i < Math.Min(5, idx.shape[0]); i++)
            {
                long j = idx[i].item<long>();
                lines.Add($"[{j}] got {a[j].item<double>():R}, expected {e[j].item<double>():R}");
            }
            Assert.Fail($"{what}: {count} of {a.shape[0]} elements differ (rtol {rtol}, atol {atol}); first: {string.Join("; ", lines)}");
        }
    }

    /// <summary>True when both tensors have the same shape and the same values.</summary>
    public static bool Same(Tensor a, Tensor b)
    {
        using var scope = torch.NewDisposeScope();
        return a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();
    }

    /// <summary>
    /// Steps one of TorchSharp's own optimizers with the GC held off. TorchSharp 0.107 passes the Handle
    /// of an implicit double-to-Scalar temporary (alpha in add_) to native code without keeping the
    /// temporary alive, so a GC during that call can finalize it and LibTorch reads a freed Scalar
    /// (seen once in CI: "Expected false to be true ... toFloat" from SGD.step). No GC, no finalizer.
    /// </summary>
    public static void StepTorchSharp(torch.optim.Optimizer optimizer)
    {
        bool region = GC.TryStartNoGCRegion(64L * 1024 * 1024);
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

    /// <summary>Negated MSE: the objective for maximize runs, so that ascending it converges.</summary>
    public static Tensor NegatedMse(Tensor output, Tensor target) => -nn.functional.mse_loss(output, target);

    /// <summary>Asserts that tensors are bitwise equal to a snapshot.</summary>
    public static void AssertUnchanged(IReadOnlyList<Tensor> before, IReadOnlyList<Tensor> after, string what)
    {
        Assert.That(after, Has.Count.EqualTo(before.Count));
        for (int i = 0; i < before.Count; i++)
        {
            Assert.That(Same(after[i], before[i]), Is.True, $"{what} {i} changed");
        }
    }
}
