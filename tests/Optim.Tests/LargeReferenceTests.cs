using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim.Tests;

/// <summary>
/// The independent references at a size that spans many native chunks (<see cref="Harness.LargeShapes"/>:
/// 1.16M elements in tensors from empty to twelve chunks, one without a gradient, in two param groups
/// whose boundary falls inside a chunk), with our step run on 1, 2 and 3 native threads: FusedSGD in
/// every configuration and both dtypes against torch.optim.SGD (or, where TorchSharp 0.107's maximize
/// differs, the PyTorch-semantics ReferenceSgd), and HypergradientSGD at every scope and rule, without
/// momentum, with heavy-ball and with Nesterov momentum, against ReferenceHd. After every step every
/// state piece of the one-thread run is compared with the reference, and the two- and three-thread runs
/// must equal it bit for bit.
/// </summary>
[TestFixture]
[NonParallelizable]
public class LargeReferenceTests
{
    private static readonly int[] Threads = { 1, 2, 3 };
    private const int Steps = 5;
    // Groups: tensors 0-3 at Lr, 4-6 at Lr2 (tensor 4 starts inside the second chunk).
    private const int FirstGroup = 4;
    private const double Lr = 0.01, Lr2 = 0.02;

    private int _torchThreads;

    // The references' LibTorch ops run on one thread: on a busy machine (tests of several worktrees at
    // once) a team of spinning OpenMP threads costs more than it saves at this size.
    [SetUp]
    public void OneTorchThread()
    {
        _torchThreads = torch.get_num_threads();
        torch.set_num_threads(1);
    }

    [TearDown]
    public void RestoreThreads()
    {
        OptimNative.NumThreads = 0;
        torch.set_num_threads(_torchThreads);
    }

    public static IEnumerable<TestCaseData> SgdCases() =>
        from dtype in new[] { ScalarType.Float32, ScalarType.Float64 }
        from c in FusedSgdParityTests.AllCases()
        select new TestCaseData(c, dtype).SetName($"FusedSgdAtManyChunks({dtype}, {c})");

    [TestCaseSource(nameof(SgdCases))]
    public void FusedSgdMatchesItsReferenceOnEveryThreadCount(FusedSgdParityTests.SgdCase c, ScalarType dtype)
    {
        bool torchSharp = FusedSgdParityTests.TorchSharpComparableCases().Contains(c);
        var (rtol, atol) = dtype == ScalarType.Float64 ? (1e-12, 1e-13) : (1e-5, 1e-6);
        var ours = Threads.Select(_ => Harness.LargeParameters(1, dtype)).ToList();
        var theirs = Harness.LargeParameters(1, dtype);
        var fused = ours.Select(ps => new FusedSGD(new[]
        {
            new FusedSGD.ParamGroup(ps.Take(FirstGroup)),
            new FusedSGD.ParamGroup(ps.Skip(FirstGroup), lr: Lr2),
        }, Lr, c.Momentum, c.Dampening, c.WeightDecay, c.Nesterov, c.Maximize)).ToList();
        SGD? sgd = null;
        ReferenceSgd? reference = null;
        if (torchSharp)
        {
            sgd = torch.optim.SGD(new[]
            {
                new SGD.ParamGroup(theirs.Take(FirstGroup), Lr, c.Momentum, c.Dampening, c.WeightDecay, c.Nesterov, c.Maximize),
                new SGD.ParamGroup(theirs.Skip(FirstGroup), Lr2, c.Momentum, c.Dampening, c.WeightDecay, c.Nesterov, c.Maximize),
            }, Lr);
        }
        else
        {
            reference = new ReferenceSgd();
            reference.AddGroup(theirs.Take(FirstGroup), Lr, c.Momentum, c.Dampening, c.WeightDecay, c.Nesterov, c.Maximize);
            reference.AddGroup(theirs.Skip(FirstGroup), Lr2, c.Momentum, c.Dampening, c.WeightDecay, c.Nesterov, c.Maximize);
        }
        var gradients = new Harness.DriftingGradients(theirs, 2);
        try
        {
            for (int step = 1; step <= Steps; step++)
            {
                gradients.Next(ours.Append(theirs).ToArray());
                for (int t = 0; t < Threads.Length; t++)
                {
                    Harness.WithNativeThreads(Threads[t], () => fused[t].step());
                }
                if (sgd is not null)
                {
                    Harness.StepTorchSharp(sgd);
                }
                else
                {
                    reference!.Step();
                }
                for (int i = 0; i < theirs.Count; i++)
                {
                    Harness.AssertClose(ours[0][i], theirs[i], $"step {step}, parameter {i}", rtol, atol);
                    var buf = Harness.FusedState(fused[0], i).momentum_buffer;
                    Tensor? expected = sgd is not null ? ((SGD.State)sgd.state_dict().State[i]).momentum_buffer : reference!.Buffer(theirs[i]);
                    Assert.That(buf is null, Is.EqualTo(expected is null), $"step {step}, momentum buffer {i}: present in one only");
                    if (buf is not null)
                    {
                        // TorchSharp accumulates +g when maximizing, PyTorch (and we) -g.
                        using var negated = sgd is not null && c.Maximize ? expected!.neg() : null;
                        Harness.AssertClose(buf, negated ?? expected!, $"step {step}, momentum buffer {i}", rtol, atol);
                    }
                }
                for (int t = 1; t < Threads.Length; t++)
                {
                    Harness.AssertSameState(fused[t], ours[t], fused[0], ours[0], $"step {step}, {Threads[t]} threads against 1");
                }
            }
        }
        finally
        {
            fused.ForEach(f => f.Dispose());
            sgd?.Dispose();
            reference?.Dispose();
        }
    }

    public static IEnumerable<TestCaseData> HdCases()
    {
        var kinds = new (string Name, double Momentum, double Dampening, double WeightDecay, bool Nesterov, bool Maximize)[]
        {
            ("no momentum", 0, 0, 1e-2, false, true),
            ("heavy ball", 0.9, 0.1, 1e-2, false, false),
            ("Nesterov", 0.9, 0, 0, true, false),
        };
        foreach (var scope in Enum.GetValues<HypergradientScope>())
        {
            foreach (var rule in Enum.GetValues<HypergradientRule>())
            {
                foreach (var k in kinds)
                {
                    yield return new TestCaseData(scope, rule, k.Momentum, k.Dampening, k.WeightDecay, k.Nesterov, k.Maximize)
                        .SetName($"HdAtManyChunks({scope}, {rule}, {k.Name}: m={k.Momentum} d={k.Dampening} wd={k.WeightDecay} maximize={k.Maximize})");
                }
            }
        }
    }

    [TestCaseSource(nameof(HdCases))]
    public void HypergradientSgdMatchesTheReferenceOnEveryThreadCount(HypergradientScope scope, HypergradientRule rule,
        double momentum, double dampening, double wd, bool nesterov, bool maximize)
    {
        // Gradients of order 1 that agree from step to step: h is about the number of elements a rate
        // covers (one for a weight), so the additive β is scaled to move each rate by about 1% a step.
        double beta = rule == HypergradientRule.Normalized ? 0.02 : 0.01 * Lr / scope switch
        {
            HypergradientScope.Global => 1e6,
            HypergradientScope.PerGroup => 5e5,
            HypergradientScope.PerTensor => 1e5,
            _ => 1,
        };
        var ours = Threads.Select(_ => Harness.LargeParameters(3, ScalarType.Float32)).ToList();
        var theirs = Harness.LargeParameters(3, ScalarType.Float32);
        var hd = ours.Select(ps => new HypergradientSGD(new[]
        {
            new HypergradientSGD.ParamGroup(ps.Take(FirstGroup)),
            new HypergradientSGD.ParamGroup(ps.Skip(FirstGroup), lr: Lr2),
        }, Lr, beta, scope, momentum, dampening, wd, nesterov, maximize, rule, lr_min: Lr / 100, lr_max: Lr * 100)).ToList();
        using var reference = new ReferenceHd(scope, rule, beta, Lr / 100, Lr * 100, rtol: 2e-5, atol: 2e-6);
        reference.AddGroup(theirs.Take(FirstGroup), Lr, momentum, dampening, wd, nesterov, maximize);
        reference.AddGroup(theirs.Skip(FirstGroup), scope == HypergradientScope.Global ? Lr : Lr2, momentum, dampening, wd, nesterov, maximize);
        var gradients = new Harness.DriftingGradients(theirs, 4);
        long adopted = 0, elements = theirs.Sum(p => p.numel());
        try
        {
            for (int step = 1; step <= Steps; step++)
            {
                gradients.Next(ours.Append(theirs).ToArray());
                for (int t = 0; t < Threads.Length; t++)
                {
                    Harness.WithNativeThreads(Threads[t], () => hd[t].step());
                }
                reference.Step();
                adopted += reference.AssertMatches(hd[0], ours[0], theirs, $"step {step}");
                for (int t = 1; t < Threads.Length; t++)
                {
                    Harness.AssertSameState(hd[t], ours[t], hd[0], ours[0], $"step {step}, {Threads[t]} threads against 1");
                }
            }
            Assert.That(adopted, Is.LessThanOrEqualTo(elements * Steps / 1000), $"{adopted} elements adopted from our state");
            // The rates moved, or the comparison would not see a wrong hypergradient (tensor 5: the largest).
            bool moved = scope switch
            {
                HypergradientScope.PerTensor => Harness.HdState(hd[0], 5).tensor_rate != Lr2,
                HypergradientScope.PerParameter => Harness.HdState(hd[0], 5).parameter_rates!.ne(torch.tensor(Lr2, ScalarType.Float32)).sum().item<long>() > 777 * 1001 / 2,
                _ => hd[0].ParamGroups.First().LearningRate != Lr,
            };
            Assert.That(moved, Is.True, "the rates never moved");
        }
        finally
        {
            hd.ForEach(h => h.Dispose());
        }
    }
}
