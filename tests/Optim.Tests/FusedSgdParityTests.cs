using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// FusedSGD against TorchSharp's own torch.optim.SGD and against a naive PyTorch-semantics reference,
/// 50 steps on real models, comparing every parameter and every momentum buffer after every step.
/// </summary>
[TestFixture]
public class FusedSgdParityTests
{
    public sealed record SgdCase(double Momentum, double Dampening, double WeightDecay, bool Nesterov, bool Maximize)
    {
        public override string ToString() =>
            $"momentum={Momentum} dampening={Dampening} weight_decay={WeightDecay} nesterov={Nesterov} maximize={Maximize}";
    }

    public static IEnumerable<SgdCase> AllCases()
    {
        foreach (var m in new[] { 0.0, 0.9 })
        {
            foreach (var d in new[] { 0.0, 0.3 })
            {
                foreach (var wd in new[] { 0.0, 1e-2 })
                {
                    foreach (var nesterov in new[] { false, true })
                    {
                        foreach (var maximize in new[] { false, true })
                        {
                            if ((nesterov && (m == 0 || d != 0)) || (m == 0 && d != 0))
                            {
                                continue;
                            }
                            yield return new SgdCase(m, d, wd, nesterov, maximize);
                        }
                    }
                }
            }
        }
    }

    // TorchSharp's SGD agrees with PyTorch except for maximize with weight decay (see FusedSGD's remarks).
    public static IEnumerable<SgdCase> TorchSharpComparableCases() => AllCases().Where(c => !(c.Maximize && c.WeightDecay != 0));

    private const int Steps = 50;

    // Maximize runs ascend the negated loss, so they converge like the minimize runs (ascending a loss
    // that grows without bound would amplify rounding differences exponentially).
    private static Func<Tensor, Tensor, Tensor>? Loss(SgdCase c) => c.Maximize ? Harness.NegatedMse : null;
    private const double Lr = 0.05;

    [TestCaseSource(nameof(TorchSharpComparableCases))]
    public void MatchesTorchSharpSgd(SgdCase c)
    {
        using var ours = Harness.Mlp(1);
        using var theirs = Harness.Mlp(1);
        var (x, y) = Harness.Data(2);
        using var fused = new FusedSGD(ours.parameters(), Lr, c.Momentum, c.Dampening, c.WeightDecay, c.Nesterov, c.Maximize);
        using var sgd = torch.optim.SGD(theirs.parameters(), Lr, c.Momentum, c.Dampening, c.WeightDecay, c.Nesterov, c.Maximize);
        var op = ours.parameters().ToList();
        var tp = theirs.parameters().ToList();
        for (int step = 1; step <= Steps; step++)
        {
            Harness.Backward(ours, x, y, Loss(c));
            Harness.Backward(theirs, x, y, Loss(c));
            fused.step();
            Harness.StepTorchSharp(sgd);
            for (int i = 0; i < op.Count; i++)
            {
                Harness.AssertClose(op[i], tp[i], $"step {step}, parameter {i}", 1e-5, 1e-6);
                if (c.Momentum != 0)
                {
                    var ourBuf = Harness.FusedBuffer(fused, i);
                    var theirBuf = ((SGD.State)sgd.state_dict().State[i]).momentum_buffer;
                    // TorchSharp accumulates +g and adds lr * buf when maximizing; PyTorch (and we)
                    // accumulate -g and subtract: the buffers differ by sign only.
                    using var expected = c.Maximize ? theirBuf.neg() : theirBuf.clone();
                    Harness.AssertClose(ourBuf, expected, $"step {step}, momentum buffer {i}", 1e-5, 1e-6);
                }
            }
        }
    }

    [TestCaseSource(nameof(AllCases))]
    public void MatchesPyTorchReference(SgdCase c)
    {
        using var ours = Harness.Mlp(3);
        using var refModel = Harness.Mlp(3);
        var (x, y) = Harness.Data(4);
        using var fused = new FusedSGD(ours.parameters(), Lr, c.Momentum, c.Dampening, c.WeightDecay, c.Nesterov, c.Maximize);
        using var reference = new ReferenceSgd();
        reference.AddGroup(refModel.parameters(), Lr, c.Momentum, c.Dampening, c.WeightDecay, c.Nesterov, c.Maximize);
        var op = ours.parameters().ToList();
        var rp = refModel.parameters().ToList();
        for (int step = 1; step <= Steps; step++)
        {
            Harness.Backward(ours, x, y, Loss(c));
            Harness.Backward(refModel, x, y, Loss(c));
            fused.step();
            reference.Step();
            for (int i = 0; i < op.Count; i++)
            {
                Harness.AssertClose(op[i], rp[i], $"step {step}, parameter {i}", 1e-5, 1e-6);
                if (c.Momentum != 0)
                {
                    Harness.AssertClose(Harness.FusedBuffer(fused, i), reference.Buffer(rp[i])!, $"step {step}, momentum buffer {i}", 1e-5, 1e-6);
                }
            }
        }
    }

    [Test]
    public void TorchSharpSgdDiffersFromPyTorchOnlyForMaximizeWithWeightDecay()
    {
        // Pins why the maximize + weight_decay cases are compared with the PyTorch reference only:
        // TorchSharp 0.107 adds weight_decay * p to the gradient and then ascends, which grows weights.
        using var ours = Harness.Mlp(5);
        using var theirs = Harness.Mlp(5);
        var (x, y) = Harness.Data(6);
        using var fused = new FusedSGD(ours.parameters(), 0.1, weight_decay: 0.5, maximize: true);
        using var sgd = torch.optim.SGD(theirs.parameters(), 0.1, weight_decay: 0.5, maximize: true);
        for (int step = 0; step < 5; step++)
        {
            Harness.Backward(ours, x, y);
            Harness.Backward(theirs, x, y);
            fused.step();
            Harness.StepTorchSharp(sgd);
        }
        var a = ours.parameters().First();
        var b = theirs.parameters().First();
        Assert.That(a.allclose(b, rtol: 1e-3, atol: 1e-4), Is.False, "TorchSharp's maximize + weight_decay now matches PyTorch: widen MatchesTorchSharpSgd");
    }

    [Test]
    public void TwoParamGroupsWithDifferentOptionsMatchTorchSharp()
    {
        using var ours = Harness.Mlp(7);
        using var theirs = Harness.Mlp(7);
        var (x, y) = Harness.Data(8);
        var o = ours.named_parameters().ToList();
        var t = theirs.named_parameters().ToList();
        using var fused = new FusedSGD(new[]
        {
            new FusedSGD.ParamGroup(o.Where(n => n.name.StartsWith("fc1")).Select(n => n.parameter), lr: 0.05, momentum: 0.9, dampening: 0, nesterov: true),
            new FusedSGD.ParamGroup(o.Where(n => n.name.StartsWith("fc2")).Select(n => n.parameter), weight_decay: 0.01),
        }, lr: 0.02, momentum: 0.5, dampening: 0.1);
        using var sgd = torch.optim.SGD(new[]
        {
            new SGD.ParamGroup(t.Where(n => n.name.StartsWith("fc1")).Select(n => n.parameter), lr: 0.05, momentum: 0.9, dampening: 0, nesterov: true),
            new SGD.ParamGroup(t.Where(n => n.name.StartsWith("fc2")).Select(n => n.parameter), lr: 0.02, momentum: 0.5, dampening: 0.1, weight_decay: 0.01),
        }, 0.02);
        // Unset group options took the optimizer's defaults.
        var groups = fused.ParamGroups.Cast<FusedSGD.ParamGroup>().ToList();
        Assert.That(groups[1].LearningRate, Is.EqualTo(0.02));
        Assert.That(groups[1].Options.momentum, Is.EqualTo(0.5));
        Assert.That(groups[1].Options.dampening, Is.EqualTo(0.1));
        Assert.That(groups[0].Options.dampening, Is.EqualTo(0.0));
        var op = ours.parameters().ToList();
        var tp = theirs.parameters().ToList();
        for (int step = 1; step <= Steps; step++)
        {
            Harness.Backward(ours, x, y);
            Harness.Backward(theirs, x, y);
            fused.step();
            Harness.StepTorchSharp(sgd);
            for (int i = 0; i < op.Count; i++)
            {
                Harness.AssertClose(op[i], tp[i], $"step {step}, parameter {i}", 1e-5, 1e-6);
                var theirBuf = ((SGD.State)sgd.state_dict().State[i]).momentum_buffer;
                Harness.AssertClose(Harness.FusedBuffer(fused, i), theirBuf, $"step {step}, momentum buffer {i}", 1e-5, 1e-6);
            }
        }
    }

    [Test]
    public void ManySmallTensorsMatchTorchSharp()
    {
        using var ours = new ManyHeads(1, 200);
        using var theirs = new ManyHeads(1, 200);
        var (x, y) = Harness.Data(9);
        Assert.That(ours.parameters().Count(), Is.EqualTo(400));
        using var fused = new FusedSGD(ours.parameters(), 0.1, momentum: 0.9, weight_decay: 1e-3);
        using var sgd = torch.optim.SGD(theirs.parameters(), 0.1, momentum: 0.9, weight_decay: 1e-3);
        var op = ours.parameters().ToList();
        var tp = theirs.parameters().ToList();
        for (int step = 1; step <= Steps; step++)
        {
            Harness.Backward(ours, x, y);
            Harness.Backward(theirs, x, y);
            fused.step();
            Harness.StepTorchSharp(sgd);
        }
        for (int i = 0; i < op.Count; i++)
        {
            Harness.AssertClose(op[i], tp[i], $"parameter {i}", 1e-5, 1e-6);
            Harness.AssertClose(Harness.FusedBuffer(fused, i), ((SGD.State)sgd.state_dict().State[i]).momentum_buffer, $"momentum buffer {i}", 1e-5, 1e-6);
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void Float64MatchesTorchSharp(bool nesterov)
    {
        using var ours = Harness.Mlp(11, ScalarType.Float64);
        using var theirs = Harness.Mlp(11, ScalarType.Float64);
        var (x, y) = Harness.Data(12, dtype: ScalarType.Float64);
        using var fused = new FusedSGD(ours.parameters(), 0.05, momentum: 0.9, weight_decay: 1e-2, nesterov: nesterov);
        using var sgd = torch.optim.SGD(theirs.parameters(), 0.05, momentum: 0.9, weight_decay: 1e-2, nesterov: nesterov);
        var op = ours.parameters().ToList();
        var tp = theirs.parameters().ToList();
        for (int step = 1; step <= Steps; step++)
        {
            Harness.Backward(ours, x, y);
            Harness.Backward(theirs, x, y);
            fused.step();
            Harness.StepTorchSharp(sgd);
            for (int i = 0; i < op.Count; i++)
            {
                Assert.That(op[i].dtype, Is.EqualTo(ScalarType.Float64));
                Harness.AssertClose(op[i], tp[i], $"step {step}, parameter {i}", 1e-12, 1e-13);
                Harness.AssertClose(Harness.FusedBuffer(fused, i), ((SGD.State)sgd.state_dict().State[i]).momentum_buffer, $"step {step}, momentum buffer {i}", 1e-12, 1e-13);
            }
        }
    }

    [Test]
    public void LearningRateSchedulerDrivesFusedSgdLikeTorchSharpSgd()
    {
        using var ours = Harness.Mlp(13);
        using var theirs = Harness.Mlp(13);
        var (x, y) = Harness.Data(14);
        using var fused = new FusedSGD(ours.parameters(), 0.1, momentum: 0.9);
        using var sgd = torch.optim.SGD(theirs.parameters(), 0.1, momentum: 0.9);
        var s1 = torch.optim.lr_scheduler.StepLR(fused, 10, 0.5);
        var s2 = torch.optim.lr_scheduler.StepLR(sgd, 10, 0.5);
        for (int step = 1; step <= Steps; step++)
        {
            Harness.Backward(ours, x, y);
            Harness.Backward(theirs, x, y);
            fused.step();
            Harness.StepTorchSharp(sgd);
            s1.step();
            s2.step();
        }
        Assert.That(fused.ParamGroups.First().LearningRate, Is.EqualTo(0.1 * Math.Pow(0.5, 5)).Within(1e-15));
        var op = ours.parameters().ToList();
        var tp = theirs.parameters().ToList();
        for (int i = 0; i < op.Count; i++)
        {
            Harness.AssertClose(op[i], tp[i], $"parameter {i}", 1e-5, 1e-6);
        }
    }

    [Test]
    public void ParametersWithoutGradientsAreSkippedAndStartMomentumWhenTheyGetOne()
    {
        using var ours = Harness.Mlp(15);
        using var refModel = Harness.Mlp(15);
        var (x, y) = Harness.Data(16);
        using var fused = new FusedSGD(ours.parameters(), 0.05, momentum: 0.9, dampening: 0.2);
        using var reference = new ReferenceSgd();
        reference.AddGroup(refModel.parameters(), 0.05, momentum: 0.9, dampening: 0.2);
        var op = ours.parameters().ToList();
        var rp = refModel.parameters().ToList();
        for (int step = 1; step <= 20; step++)
        {
            // fc1 is frozen for the first 8 steps (no gradient), then trains.
            foreach (var (p, q) in op.Zip(rp).Take(2))
            {
                p.requires_grad = step > 8;
                q.requires_grad = step > 8;
            }
            Harness.Backward(ours, x, y);
            Harness.Backward(refModel, x, y);
            fused.step();
            reference.Step();
            if (step <= 8)
            {
                Assert.That(Harness.FusedState(fused, 0).momentum_buffer, Is.Null, "a parameter without a gradient got a buffer");
            }
            for (int i = 0; i < op.Count; i++)
            {
                Harness.AssertClose(op[i], rp[i], $"step {step}, parameter {i}", 1e-5, 1e-6);
            }
        }
    }

    [Test]
    public void ZeroGradClearsTheGradientsOfEveryGroupAndNothingElse()
    {
        using var model = Harness.Mlp(17);
        var (x, y) = Harness.Data(18);
        var named = model.named_parameters().ToList();
        using var fused = new FusedSGD(new[]
        {
            new FusedSGD.ParamGroup(named.Where(n => n.name.StartsWith("fc1")).Select(n => n.parameter)),
            new FusedSGD.ParamGroup(named.Where(n => n.name.StartsWith("fc2")).Select(n => n.parameter), lr: 0.05),
        }, 0.1);
        var ps = model.parameters().ToList();
        Harness.Backward(model, x, y);
        // The precondition: every parameter has a nonzero gradient, or zero_grad could not be seen to work.
        foreach (var p in ps)
        {
            using var g = p.grad;
            Assert.That(g is not null && g.count_nonzero().item<long>() > 0, Is.True, "backward left a parameter without a nonzero gradient");
        }
        var before = Harness.Snapshot(ps);
        fused.zero_grad();
        foreach (var p in ps)
        {
            using var g = p.grad;
            Assert.That(g is null || g.count_nonzero().item<long>() == 0, Is.True, "zero_grad left a nonzero gradient");
        }
        Harness.AssertUnchanged(before, ps, "parameter (zero_grad)");
        // A step on the cleared gradients moves nothing.
        fused.step();
        Harness.AssertUnchanged(before, ps, "parameter (step after zero_grad)");
    }

}

/// <summary>A model of many small tensors: the mean of <c>heads</c> Linear(8, 4) layers, each with a real gradient.</summary>
internal sealed class ManyHeads : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<Linear> _heads;

    public ManyHeads(long seed, int heads) : base(nameof(ManyHeads))
    {
        torch.manual_seed(seed);
        _heads = nn.ModuleList(Enumerable.Range(0, heads).Select(_ => nn.Linear(8, 4)).ToArray());
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        Tensor? sum = null;
        foreach (var h in _heads)
        {
            var y = torch.tanh(h.call(x));
            sum = sum is null ? y : sum + y;
        }
        return sum! / _heads.Count;
    }
}
