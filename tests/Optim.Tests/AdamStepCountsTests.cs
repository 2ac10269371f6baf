using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// Adam's step counts kept in tensor memory (<c>step_counts</c>, through the bindings' <c>stepCounts</c>): the
/// step reads each count, uses count + 1 as t and writes it back, except on a step the scaler skips. Over 30
/// scaled steps with an infinity in a gradient every seventh, the state must be bitwise that of the same
/// steps given their step numbers on the host, and every count the number of steps taken.
/// </summary>
[TestFixture]
public class AdamStepCountsTests
{
    private sealed class Run : IDisposable
    {
        public readonly Tensor[] P, G, M, V;
        public readonly Tensor Counts = torch.zeros(3, ScalarType.Int64);
        public readonly Tensor InvScale = torch.tensor(new[] { 1f / 1024 });
        public readonly Tensor FoundInf = torch.zeros(1);

        public Run()
        {
            long[] sizes = { 5, 70_001, 0 };
            var gen = new Generator(3);
            P = sizes.Select(n => torch.randn(n, generator: gen)).ToArray();
            G = sizes.Select(n => torch.zeros(n)).ToArray();
            M = sizes.Select(n => torch.zeros(n)).ToArray();
            V = sizes.Select(n => torch.zeros(n)).ToArray();
        }

        private static nint[] Pointers(Tensor[] ts) => ts.Select(t => TorchSharpNative.DataPointer(t.Handle)).ToArray();

        public void Step(long[] steps, bool countsInMemory)
        {
            nint counts = TorchSharpNative.DataPointer(Counts.Handle);
            var group = new AdamGroupParams { Lr = 1e-2, Beta1 = 0.9, Beta2 = 0.99, Eps = 1e-8, WeightDecay = 0.1, Decoupled = 1 };
            FoundInf.zero_();
            OptimNative.AdamStep(NativeDevice.Cpu, 0, NativeDType.Float32, Pointers(P), Pointers(G), Pointers(M), Pointers(V), default,
                P.Select(t => t.numel()).ToArray(), countsInMemory ? default : steps, default, new[] { group },
                invScale: TorchSharpNative.DataPointer(InvScale.Handle), foundInf: TorchSharpNative.DataPointer(FoundInf.Handle),
                stepCounts: countsInMemory ? new[] { counts, counts + 8, counts + 16 } : default);
        }

        public void Dispose()
        {
            foreach (var t in P.Concat(G).Concat(M).Concat(V).Append(Counts).Append(InvScale).Append(FoundInf))
            {
                t.Dispose();
            }
        }
    }

    [Test]
    public void CountsInMemoryGiveTheStateOfStepNumbersAndSkipWithTheStep()
    {
        using var inMemory = new Run();
        using var given = new Run();
        var gen = new Generator(4);
        long taken = 0;
        for (int step = 1; step <= 30; step++)
        {
            bool bad = step % 7 == 0;
            for (int k = 0; k < 3; k++)
            {
                using var g = torch.randn(inMemory.G[k].shape, generator: gen) * 1024;
                inMemory.G[k].copy_(g);
                given.G[k].copy_(g);
            }
            if (bad)
            {
                inMemory.G[1][17] = float.PositiveInfinity;
                given.G[1][17] = float.PositiveInfinity;
            }
            given.Step(Enumerable.Repeat(taken + 1, 3).ToArray(), countsInMemory: false);
            inMemory.Step(Array.Empty<long>(), countsInMemory: true);
            Assert.That(inMemory.FoundInf.item<float>(), Is.EqualTo(bad ? 1f : 0f), $"step {step}");
            if (!bad)
            {
                taken++;
            }
            // The third tensor is empty: it takes no step, so its count stays 0.
            Assert.That(inMemory.Counts.data<long>().ToArray(), Is.EqualTo(new[] { taken, taken, 0L }), $"step {step}: the counts");
            for (int k = 0; k < 3; k++)
            {
                Assert.That(inMemory.P[k].data<float>().ToArray(), Is.EqualTo(given.P[k].data<float>().ToArray()), $"step {step}: param {k}");
                Assert.That(inMemory.M[k].data<float>().ToArray(), Is.EqualTo(given.M[k].data<float>().ToArray()), $"step {step}: exp_avg {k}");
                Assert.That(inMemory.V[k].data<float>().ToArray(), Is.EqualTo(given.V[k].data<float>().ToArray()), $"step {step}: exp_avg_sq {k}");
            }
        }
        Assert.That(taken, Is.EqualTo(26));
    }

    [Test]
    public void StepsAndCountsTogetherAreRefusedByTheBindings()
    {
        using var run = new Run();
        nint counts = TorchSharpNative.DataPointer(run.Counts.Handle);
        var group = new AdamGroupParams { Lr = 1e-3, Beta1 = 0.9, Beta2 = 0.999, Eps = 1e-8 };
        var e = Assert.Throws<ArgumentException>(() => OptimNative.AdamStep(NativeDevice.Cpu, 0, NativeDType.Float32,
            new nint[3], new nint[3], new nint[3], new nint[3], default, new long[3], new long[] { 1, 1, 1 }, default, new[] { group },
            stepCounts: new[] { counts, counts + 8, counts + 16 }));
        Assert.That(e!.Message, Does.Contain("one of steps and stepCounts is empty"));
        Assert.That(run.Counts.data<long>().ToArray(), Is.All.EqualTo(0L));
    }
}
