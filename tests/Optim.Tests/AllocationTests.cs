using TorchSharp;
using TorchSharp.Modules;

namespace Optim.Tests;

/// <summary>Once warm, a CPU step of our optimizers and a GreedyLR step allocate no managed memory.</summary>
[TestFixture]
public class AllocationTests
{
    private static long AllocatedPerStep(Action step)
    {
        for (int i = 0; i < 200; i++)
        {
            step(); // warm: momentum buffers, pooled arrays, tiered code
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++)
        {
            step();
        }
        return (GC.GetAllocatedBytesForCurrentThread() - before) / 100;
    }

    private static List<Parameter> Parameters(int count)
    {
        torch.manual_seed(3);
        var list = new List<Parameter>();
        for (int i = 0; i < count; i++)
        {
            var p = new Parameter(torch.randn(64));
            p.grad = torch.randn(64);
            list.Add(p);
        }
        return list;
    }

    [Test]
    public void FusedSgdStep()
    {
        using var opt = new FusedSGD(Parameters(5), 1e-3, momentum: 0.9, weight_decay: 1e-4, nesterov: true);
        Assert.That(AllocatedPerStep(() => opt.step()), Is.Zero);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void FusedAdamStep(bool decoupled)
    {
        using var opt = decoupled ? new FusedAdamW(Parameters(5), weight_decay: 1e-2, amsgrad: true) : new FusedAdam(Parameters(5), weight_decay: 1e-4);
        Assert.That(AllocatedPerStep(() => opt.step()), Is.Zero);
    }

    [TestCase(HypergradientScope.Global)]
    [TestCase(HypergradientScope.PerGroup)]
    [TestCase(HypergradientScope.PerTensor)]
    [TestCase(HypergradientScope.PerParameter)]
    public void HypergradientSgdStep(HypergradientScope scope)
    {
        using var opt = new HypergradientSGD(Parameters(5), 1e-3, 1e-6, scope, momentum: 0.9);
        Assert.That(AllocatedPerStep(() => opt.step()), Is.Zero);
    }

    [Test]
    public void ClippedStepsOfEveryFusedOptimizer()
    {
        using var sgd = new FusedSGD(Parameters(5), 1e-3, momentum: 0.9, max_grad_norm: 0.5);
        Assert.That(AllocatedPerStep(() => sgd.step()), Is.Zero, "FusedSGD");
        using var adamw = new FusedAdamW(Parameters(5), weight_decay: 1e-2, max_grad_norm: 0.5);
        Assert.That(AllocatedPerStep(() => adamw.step()), Is.Zero, "FusedAdamW");
        using var hd = new HypergradientSGD(Parameters(5), 1e-3, 1e-6, HypergradientScope.PerGroup, momentum: 0.9, max_grad_norm: 0.5);
        Assert.That(AllocatedPerStep(() => hd.step()), Is.Zero, "HypergradientSGD");
    }

    [TestCase(1)]
    [TestCase(10)]
    public void GreedyLRStep(int groups)
    {
        var ps = Parameters(groups);
        using var opt = new FusedSGD(ps.Select(p => new FusedSGD.ParamGroup(new[] { p })), 0.1);
        var scheduler = new GreedyLR(opt, patience: 1);
        int i = 0;
        Assert.That(AllocatedPerStep(() => scheduler.step(Math.Sin(i++))), Is.Zero);
    }
}
