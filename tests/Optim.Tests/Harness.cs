using System.Runtime.InteropServices;
using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>Models, data, gradients and comparisons shared by the tests, built identically for each optimizer under comparison.</summary>
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
        if (AllClose(actual, expected, rtol, atol))
        {
            return;
        }
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

    // The common case of AssertClose in one managed pass over the data (no LibTorch op, whose threads
    // are slow to meet on a busy machine): the same criterion, a NaN matching a NaN.
    private static bool AllClose(Tensor actual, Tensor expected, double rtol, double atol)
    {
        if (actual.dtype != expected.dtype || actual.device_type != DeviceType.CPU || expected.device_type != DeviceType.CPU)
        {
            return false;
        }
        using var a = actual.detach().contiguous();
        using var e = expected.detach().contiguous();
        static bool Close(double x, double y, double rtol, double atol) =>
            x == y || (double.IsNaN(x) && double.IsNaN(y)) || Math.Abs(x - y) <= atol + rtol * Math.Abs(y);
        if (actual.dtype == ScalarType.Float32)
        {
            var x = MemoryMarshal.Cast<byte, float>(a.bytes);
            var y = MemoryMarshal.Cast<byte, float>(e.bytes);
            for (int i = 0; i < x.Length; i++)
            {
                if (!Close(x[i], y[i], rtol, atol))
                {
                    return false;
                }
            }
            return true;
        }
        if (actual.dtype == ScalarType.Float64)
        {
            var x = MemoryMarshal.Cast<byte, double>(a.bytes);
            var y = MemoryMarshal.Cast<byte, double>(e.bytes);
            for (int i = 0; i < x.Length; i++)
            {
                if (!Close(x[i], y[i], rtol, atol))
                {
                    return false;
                }
            }
            return true;
        }
        return false;
    }

    /// <summary>
    /// True when both tensors have the same dtype, the same shape and the same bytes (bitwise: -0 and +0
    /// differ, a NaN equals the same NaN).
    /// </summary>
    public static bool Same(Tensor a, Tensor b)
    {
        if (a.dtype != b.dtype || !a.shape.SequenceEqual(b.shape))
        {
            return false;
        }
        using var scope = torch.NewDisposeScope();
        var ca = a.detach().cpu().contiguous();
        var cb = b.detach().cpu().contiguous();
        return ca.bytes.SequenceEqual(cb.bytes);
    }

    /// <summary>Asserts that two tensors (either may be null) are both absent or bitwise equal.</summary>
    public static void AssertSame(Tensor? actual, Tensor? expected, string what)
    {
        Assert.That(actual is null, Is.EqualTo(expected is null), $"{what}: present in one run only");
        if (actual is not null && expected is not null)
        {
            Assert.That(Same(actual, expected), Is.True, $"{what} differs");
        }
    }

    /// <summary>Runs <paramref name="body"/> with the native CPU path on <paramref name="threads"/> threads, then restores the default (0).</summary>
    public static void WithNativeThreads(int threads, Action body)
    {
        OptimNative.NumThreads = threads;
        try
        {
            body();
        }
        finally
        {
            OptimNative.NumThreads = 0;
        }
    }

    /// <summary>The state of parameter <paramref name="index"/> (in parameter order across groups) of a FusedSGD.</summary>
    public static FusedSGD.State FusedState(FusedSGD opt, int index) => (FusedSGD.State)opt.state_dict().State[index];

    /// <summary>The momentum buffer of parameter <paramref name="index"/>; fails the test if there is none.</summary>
    public static Tensor FusedBuffer(FusedSGD opt, int index) =>
        FusedState(opt, index).momentum_buffer ?? throw new AssertionException($"FusedSGD has no momentum buffer for parameter {index}");

    /// <summary>The state of parameter <paramref name="index"/> (in parameter order across groups) of a FusedAdam or FusedAdamW.</summary>
    public static FusedAdam.State AdamState(FusedAdam opt, int index) => (FusedAdam.State)opt.state_dict().State[index];

    /// <summary>The state of parameter <paramref name="index"/> of a HypergradientSGD.</summary>
    public static HypergradientSGD.State HdState(HypergradientSGD opt, int index) => (HypergradientSGD.State)opt.state_dict().State[index];

    /// <summary>
    /// Parameter shapes for the many-chunk references (1,156,707 elements; the native CPU path cuts the
    /// concatenation of a call's tensors into chunks of 65,536 elements): tensors smaller than a chunk,
    /// one just over a chunk, two spanning several, an empty one, and one (<see cref="LargeNoGradient"/>)
    /// that never gets a gradient.
    /// </summary>
    public static readonly long[][] LargeShapes =
    {
        new long[] { 1000 }, new long[] { 65_536 + 7 }, new long[] { 0 }, new long[] { 12_345 },
        new long[] { 3, 100_003 }, new long[] { 777, 1001 }, new long[] { 33 },
    };

    /// <summary>The index in <see cref="LargeShapes"/> of the parameter without a gradient.</summary>
    public const int LargeNoGradient = 3;

    /// <summary>
    /// Asserts that two optimizers of one kind, each over its own parameters, are bitwise in the same
    /// state: parameters, every param group's rate, every state tensor, the per-tensor rates and (HD) the
    /// step counters.
    /// </summary>
    public static void AssertSameState(torch.optim.Optimizer actual, IReadOnlyList<Parameter> actualParams,
        torch.optim.Optimizer expected, IReadOnlyList<Parameter> expectedParams, string what)
    {
        Assert.That(actualParams, Has.Count.EqualTo(expectedParams.Count), $"{what}: parameter count");
        for (int i = 0; i < actualParams.Count; i++)
        {
            AssertSame(actualParams[i], expectedParams[i], $"{what}: parameter {i}");
        }
        Assert.That(actual.ParamGroups.Select(g => g.LearningRate), Is.EqualTo(expected.ParamGroups.Select(g => g.LearningRate)), $"{what}: param group rates");
        switch (actual, expected)
        {
            case (FusedSGD a, FusedSGD e):
                for (int i = 0; i < actualParams.Count; i++)
                {
                    AssertSame(FusedState(a, i).momentum_buffer, FusedState(e, i).momentum_buffer, $"{what}: momentum buffer {i}");
                    AssertSame(FusedState(a, i).master_param, FusedState(e, i).master_param, $"{what}: master_param {i}");
                }
                break;
            case (HypergradientSGD a, HypergradientSGD e):
                Assert.That((a.Steps, a.SkippedSteps), Is.EqualTo((e.Steps, e.SkippedSteps)), $"{what}: Steps and SkippedSteps");
                for (int i = 0; i < actualParams.Count; i++)
                {
                    HypergradientSGD.State sa = HdState(a, i), se = HdState(e, i);
                    AssertSame(sa.momentum_buffer, se.momentum_buffer, $"{what}: momentum buffer {i}");
                    AssertSame(sa.prev_update, se.prev_update, $"{what}: previous update {i}");
                    AssertSame(sa.parameter_rates, se.parameter_rates, $"{what}: rates of parameter {i}");
                    Assert.That(sa.tensor_rate, Is.EqualTo(se.tensor_rate), $"{what}: rate of tensor {i}");
                    AssertSame(sa.master_param, se.master_param, $"{what}: master_param {i}");
                }
                Assert.That(a.TensorLearningRates(), Is.EqualTo(e.TensorLearningRates()), $"{what}: TensorLearningRates");
                break;
            case (HypergradientAdam a, HypergradientAdam e):
                Assert.That((a.Steps, a.SkippedSteps), Is.EqualTo((e.Steps, e.SkippedSteps)), $"{what}: Steps and SkippedSteps");
                for (int i = 0; i < actualParams.Count; i++)
                {
                    var sa = (HypergradientAdam.State)a.state_dict().State[i];
                    var se = (HypergradientAdam.State)e.state_dict().State[i];
                    Assert.That(sa.step, Is.EqualTo(se.step), $"{what}: step of parameter {i}");
                    AssertSame(sa.exp_avg, se.exp_avg, $"{what}: exp_avg {i}");
                    AssertSame(sa.exp_avg_sq, se.exp_avg_sq, $"{what}: exp_avg_sq {i}");
                    AssertSame(sa.max_exp_avg_sq, se.max_exp_avg_sq, $"{what}: max_exp_avg_sq {i}");
                    AssertSame(sa.prev_update, se.prev_update, $"{what}: previous update {i}");
                    AssertSame(sa.parameter_rates, se.parameter_rates, $"{what}: rates of parameter {i}");
                    Assert.That(sa.tensor_rate, Is.EqualTo(se.tensor_rate), $"{what}: rate of tensor {i}");
                    AssertSame(sa.master_param, se.master_param, $"{what}: master_param {i}");
                }
                Assert.That(a.TensorLearningRates(), Is.EqualTo(e.TensorLearningRates()), $"{what}: TensorLearningRates");
                break;
            case (FusedAdam a, FusedAdam e):
                for (int i = 0; i < actualParams.Count; i++)
                {
                    FusedAdam.State sa = AdamState(a, i), se = AdamState(e, i);
                    Assert.That(sa.step, Is.EqualTo(se.step), $"{what}: step of parameter {i}");
                    AssertSame(sa.exp_avg, se.exp_avg, $"{what}: exp_avg {i}");
                    AssertSame(sa.exp_avg_sq, se.exp_avg_sq, $"{what}: exp_avg_sq {i}");
                    AssertSame(sa.max_exp_avg_sq, se.max_exp_avg_sq, $"{what}: max_exp_avg_sq {i}");
                    AssertSame(sa.master_param, se.master_param, $"{what}: master_param {i}");
                }
                break;
            default:
                Assert.Fail($"{what}: no state comparison for {actual.GetType().Name} and {expected.GetType().Name}");
                break;
        }
    }

    /// <summary>Asserts that two GreedyLR states are equal field by field (exactly).</summary>
    public static void AssertSameState(GreedyLRState actual, GreedyLRState expected, string what)
    {
        Assert.That((actual.Best, actual.NumGood, actual.NumBad, actual.CooldownCounter, actual.WarmupCounter, actual.ResetBudget, actual.Steps, actual.Resets),
            Is.EqualTo((expected.Best, expected.NumGood, expected.NumBad, expected.CooldownCounter, expected.WarmupCounter, expected.ResetBudget, expected.Steps, expected.Resets)),
            $"{what}: GreedyLR counters");
        Assert.That(actual.Window, Is.EqualTo(expected.Window), $"{what}: GreedyLR window");
        Assert.That(actual.LearningRates, Is.EqualTo(expected.LearningRates), $"{what}: GreedyLR rates");
        Assert.That(actual.InitialLearningRates, Is.EqualTo(expected.InitialLearningRates), $"{what}: GreedyLR initial rates");
        Assert.That((actual.MinLr, actual.MaxLr), Is.EqualTo((expected.MinLr, expected.MaxLr)), $"{what}: GreedyLR bounds");
    }

    /// <summary>Gives the parameters of each model in <paramref name="to"/> copies of the gradients of <paramref name="from"/> (same order).</summary>
    public static void CopyGradients(IReadOnlyList<Parameter> from, params IReadOnlyList<Parameter>[] to)
    {
        using var scope = torch.NewDisposeScope();
        SetGradients(from.Select(p => p.grad).ToList(), to);
    }

    /// <summary>Copies the values of parameters onto others of the same shapes.</summary>
    public static void CopyParameters(IReadOnlyList<Parameter> from, IReadOnlyList<Parameter> to)
    {
        using var noGrad = torch.no_grad();
        for (int i = 0; i < from.Count; i++)
        {
            to[i].copy_(from[i]);
        }
    }

    /// <summary>Saves an optimizer's state with <c>save_state_dict</c> and loads it into another through its own <c>load_state_dict</c>.</summary>
    public static void SaveAndLoad<TOptions, TState>(FusedOptimizer<TOptions, TState> from, FusedOptimizer<TOptions, TState> to)
        where TOptions : TorchSharp.Modules.OptimizerOptions, new()
        where TState : TorchSharp.Modules.OptimizerState, IDisposable
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            from.save_state_dict(writer);
        }
        stream.Position = 0;
        using var reader = new BinaryReader(stream);
        to.load_state_dict(reader);
    }

    /// <summary>Parameters shaped like <see cref="LargeShapes"/>, values drawn from <paramref name="seed"/> (equal seeds give equal copies).</summary>
    public static List<Parameter> LargeParameters(long seed, ScalarType dtype)
    {
        var gen = new torch.Generator((ulong)seed);
        return LargeShapes.Select(shape =>
        {
            using var values = torch.randn(shape, dtype: dtype, generator: gen);
            return new Parameter(values);
        }).ToList();
    }

    /// <summary>
    /// Synthetic gradients, written straight into the gradient tensors of every model under comparison
    /// (no LibTorch op, so cheap at any size and on any thread): per element a fixed direction in [-1, 1]
    /// plus 0.3 times a noise pattern shifted at every step (so successive gradients agree on average and
    /// hypergradient rates move steadily), times <c>scale</c>; none for the parameter at index
    /// <see cref="LargeNoGradient"/>.
    /// </summary>
    public sealed class DriftingGradients
    {
        private readonly double[][] _base, _noise;
        private readonly double _scale;
        private int _step;

        public DriftingGradients(IReadOnlyList<Tensor> like, int seed, double scale = 1)
        {
            var random = new Random(seed);
            double[] Draw(long n) => Enumerable.Range(0, (int)n).Select(_ => 2 * random.NextDouble() - 1).ToArray();
            _base = like.Select(p => Draw(p.numel())).ToArray();
            _noise = like.Select(p => Draw(p.numel())).ToArray();
            _scale = scale;
        }

        /// <summary>Gives every parameter of each model (all shaped like the constructor's) the next step's gradient.</summary>
        public void Next(params IReadOnlyList<Parameter>[] models)
        {
            _step++;
            foreach (var ps in models)
            {
                for (int i = 0; i < ps.Count; i++)
                {
                    if (i == LargeNoGradient)
                    {
                        ps[i].grad = null;
                        continue;
                    }
                    var grad = ps[i].grad;
                    if (grad is null)
                    {
                        using var zeros = torch.zeros_like(ps[i]);
                        ps[i].grad = zeros;
                        grad = ps[i].grad!;
                    }
                    using (grad)
                    {
                        Fill(grad, _base[i], _noise[i], 7919 * _step);
                    }
                }
            }
        }

        private void Fill(Tensor grad, double[] b, double[] noise, int shift)
        {
            int n = b.Length;
            if (grad.dtype == ScalarType.Float32)
            {
                var g = MemoryMarshal.Cast<byte, float>(grad.bytes);
                for (int j = 0; j < n; j++)
                {
                    g[j] = (float)(_scale * (b[j] + 0.3 * noise[(j + shift) % n]));
                }
            }
            else
            {
                var g = MemoryMarshal.Cast<byte, double>(grad.bytes);
                for (int j = 0; j < n; j++)
                {
                    g[j] = _scale * (b[j] + 0.3 * noise[(j + shift) % n]);
                }
            }
        }
    }

    /// <summary>
    /// Gives every parameter of each list a copy of <paramref name="grads"/> (null: no gradient). The
    /// same gradients reach every implementation under comparison, so each step compares one transition
    /// on the same input.
    /// </summary>
    public static void SetGradients(IReadOnlyList<Tensor?> grads, params IReadOnlyList<Parameter>[] models)
    {
        foreach (var ps in models)
        {
            for (int i = 0; i < ps.Count; i++)
            {
                using var g = ps[i].grad;
                if (grads[i] is null)
                {
                    ps[i].grad = null;
                }
                else if (g is null)
                {
                    using var copy = grads[i]!.clone();
                    ps[i].grad = copy;
                }
                else
                {
                    g.copy_(grads[i]!);
                }
            }
        }
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
