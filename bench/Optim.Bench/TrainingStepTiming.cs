using System.Diagnostics;
using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// The number a user feels: one whole training step (zero_grad, forward with the loss, backward, optimizer
/// step) of a deep MLP, with FusedSGD and with TorchSharp's SGD (momentum 0.9), on two copies of one model,
/// in interleaved rounds with a full GC between contenders; each phase timed on its own, next to the
/// bandwidth reference of a fused momentum step over the same parameters (1 read + 2 updates, pointers
/// gathered once). The limit: TorchSharp's step time with its optimizer step replaced by the reference.
/// </summary>
internal static class TrainingStepTiming
{
    /// <summary>A deep MLP: <paramref name="Layers"/> Linear(width, width) layers with ReLU between, fed batches of <paramref name="Batch"/>.</summary>
    public sealed record Mlp(int Layers, int Width, int Batch)
    {
        public override string ToString() => $"{Layers} x Linear({Width}, {Width}), batch {Batch}";
    }

    public static readonly Mlp[] DefaultModels = { new(24, 512, 32), new(8, 2048, 16) };

    private const int Phases = 4;
    private static readonly string[] PhaseNames = { "zero_grad", "forward + loss", "backward", "step" };

    private sealed class Learner : IDisposable
    {
        private readonly Sequential _model;
        private readonly torch.optim.Optimizer _optimizer;
        private readonly Tensor _x, _y;

        public Learner(Mlp m, Func<IEnumerable<Parameter>, torch.optim.Optimizer> optimizer)
        {
            torch.manual_seed(7);
            var layers = new List<(string, nn.Module<Tensor, Tensor>)>();
            for (int i = 0; i < m.Layers; i++)
            {
                layers.Add(($"fc{i}", nn.Linear(m.Width, m.Width)));
                if (i < m.Layers - 1)
                {
                    layers.Add(($"act{i}", nn.ReLU()));
                }
            }
            _model = nn.Sequential(layers);
            _x = torch.randn(m.Batch, m.Width);
            _y = torch.randn(m.Batch, m.Width);
            _optimizer = optimizer(_model.parameters());
        }

        public IEnumerable<Parameter> Parameters => _model.parameters();

        /// <summary>One training step; adds each phase's seconds to <paramref name="seconds"/>.</summary>
        public void Step(double[] seconds)
        {
            long t0 = Stopwatch.GetTimestamp();
            _optimizer.zero_grad();
            long t1 = Stopwatch.GetTimestamp();
            using (var scope = torch.NewDisposeScope())
            {
                var loss = nn.functional.mse_loss(_model.call(_x), _y);
                long t2 = Stopwatch.GetTimestamp();
                loss.backward();
                long t3 = Stopwatch.GetTimestamp();
                _optimizer.step();
                long t4 = Stopwatch.GetTimestamp();
                seconds[0] += Stopwatch.GetElapsedTime(t0, t1).TotalSeconds;
                seconds[1] += Stopwatch.GetElapsedTime(t1, t2).TotalSeconds;
                seconds[2] += Stopwatch.GetElapsedTime(t2, t3).TotalSeconds;
                seconds[3] += Stopwatch.GetElapsedTime(t3, t4).TotalSeconds;
            }
        }

        public void Dispose()
        {
            _optimizer.Dispose();
            _model.Dispose();
            _x.Dispose();
            _y.Dispose();
        }
    }

    public static void Run(IReadOnlyList<Mlp> models, int rounds, int stepsPerRound, TextWriter output)
    {
        InterleavedTiming.WriteHeader(output, $"# Whole training step of a deep MLP: FusedSGD vs torch.optim.SGD, momentum 0.9 (median of {rounds} interleaved rounds x {stepsPerRound} steps)");
        output.WriteLine("Phases in ms per step (each the median over rounds of its own mean; the total is the median of whole steps). " +
            "*reference*: the bandwidth reference of a fused momentum step over the same parameters (1 read + 2 updates, " +
            "pointers gathered once), timed in the same rounds. *limit*: torch.optim.SGD's whole step ÷ the same with its " +
            "optimizer step replaced by the reference, the speed-up a step at memory bandwidth would give.");
        output.WriteLine();
        output.WriteLine("| model | params | tensors | optimizer | zero_grad | forward + loss | backward | step | whole step | speed-up | limit |");
        output.WriteLine("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var m in models)
        {
            using var fused = new Learner(m, ps => new FusedSGD(ps, 1e-4, momentum: 0.9));
            using var sgd = new Learner(m, ps => torch.optim.SGD(ps, 1e-4, momentum: 0.9));
            var parameters = fused.Parameters.ToList();
            long count = parameters.Sum(p => p.numel());
            var c = new StepTiming.Case("momentum", count, parameters.Count, 0.9, false, 0);
            var reference = ReferenceLike(parameters);
            var learners = new[] { fused, sgd };
            var scratch = new double[Phases];
            for (int i = 0; i < 3; i++)
            {
                fused.Step(scratch);
                sgd.Step(scratch);
                reference.Step();
            }
            // [learner][phase or whole] per round
            var times = learners.Select(_ => Enumerable.Range(0, Phases + 1).Select(_ => new List<double>()).ToArray()).ToArray();
            var refTimes = new List<double>();
            for (int r = 0; r < rounds; r++)
            {
                // Alternate which goes first, so that neither always follows the reference's streaming.
                for (int o = 0; o < learners.Length; o++)
                {
                    int l = (o + r) % learners.Length;
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                    var seconds = new double[Phases];
                    var sw = Stopwatch.StartNew();
                    for (int s = 0; s < stepsPerRound; s++)
                    {
                        learners[l].Step(seconds);
                    }
                    times[l][Phases].Add(sw.Elapsed.TotalMilliseconds / stepsPerRound);
                    for (int ph = 0; ph < Phases; ph++)
                    {
                        times[l][ph].Add(seconds[ph] * 1000 / stepsPerRound);
                    }
                }
                GC.Collect();
                GC.WaitForPendingFinalizers();
                var rw = Stopwatch.StartNew();
                for (int s = 0; s < stepsPerRound; s++)
                {
                    reference.Step();
                }
                refTimes.Add(rw.Elapsed.TotalMilliseconds / stepsPerRound);
            }
            var med = times.Select(t => t.Select(StepTiming.Median).ToArray()).ToArray();
            double refMs = StepTiming.Median(refTimes);
            double torchWhole = med[1][Phases];
            double limit = torchWhole / (torchWhole - med[1][3] + refMs);
            string[] names = { "FusedSGD", "torch.optim.SGD" };
            for (int l = 0; l < learners.Length; l++)
            {
                output.WriteLine($"| {m} | {count / 1e6:0.00}M | {parameters.Count} | {names[l]} | " +
                    string.Join(" | ", Enumerable.Range(0, Phases).Select(ph => $"{med[l][ph]:0.000}")) +
                    $" | {med[l][Phases]:0.000} | {torchWhole / med[l][Phases]:0.00}x | {(l == 0 ? $"{limit:0.00}x" : "")} |");
            }
            output.WriteLine($"| {m} | {count / 1e6:0.00}M | {parameters.Count} | reference | | | | {refMs:0.000} | | | |");
            foreach (var d in reference.Owned)
            {
                d.Dispose();
            }
        }
        output.WriteLine();
        output.WriteLine($"Phases: {string.Join(", ", PhaseNames)}.");
    }

    // The reference over arrays shaped like the model's parameters.
    private static HdTiming.Timed ReferenceLike(List<Parameter> parameters)
    {
        var numels = parameters.Select(p => p.numel()).ToArray();
        torch.manual_seed(2);
        var arrays = Enumerable.Range(0, 3).Select(_ => numels.Select(n => torch.randn(n).mul_(1e-3)).ToArray()).ToArray();
        var read = new nint[numels.Length];
        var update = new nint[numels.Length * 2];
        for (int k = 0; k < numels.Length; k++)
        {
            read[k] = TorchSharpNative.DataPointer(arrays[0][k].Handle);
            update[2 * k] = TorchSharpNative.DataPointer(arrays[1][k].Handle);
            update[2 * k + 1] = TorchSharpNative.DataPointer(arrays[2][k].Handle);
        }
        double sink = 0;
        return new HdTiming.Timed(() => sink += BenchNative.StreamReference(NativeDType.Float32, read, 1, update, 2, numels, -1e-6),
            arrays.SelectMany(a => a).ToList<IDisposable>());
    }
}
