using Optim.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// ShardedOptimizer in one process (a job of one: no MPI): the assignment of tensors to ranks, equality with
/// the optimizer it wraps, and the optimizers it refuses. The sharded runs on 2 ranks are in
/// tests/Optim.MpiTests.
/// </summary>
[TestFixture]
public class ShardedOptimizerTests
{
    [Test]
    public void AssignmentIsLargestFirstToTheLeastLoadedRank()
    {
        // The MNIST MLP: its first weight alone outweighs the rest, so rank 0 holds it and rank 1 the others.
        Assert.That(ShardedOptimizer.Assign(new long[] { 100352, 128, 1280, 10 }, 2), Is.EqualTo(new[] { 0, 1, 1, 1 }));
        // Equal sizes: in list order, one rank after another.
        Assert.That(ShardedOptimizer.Assign(new long[] { 5, 5, 5, 5, 5 }, 3), Is.EqualTo(new[] { 0, 1, 2, 0, 1 }));
        Assert.That(ShardedOptimizer.Assign(new long[] { 3, 7 }, 4), Is.EqualTo(new[] { 1, 0 }));
        Assert.That(ShardedOptimizer.Assign(Array.Empty<long>(), 2), Is.Empty);
    }

    [Test]
    public void AssignmentKeepsEveryRankWithinTheLargestTensorOfTheMean()
    {
        var random = new Random(7);
        for (int trial = 0; trial < 200; trial++)
        {
            var numels = Enumerable.Range(0, random.Next(1, 60)).Select(_ => (long)random.Next(0, 100_000)).ToArray();
            int ranks = random.Next(1, 9);
            var owners = ShardedOptimizer.Assign(numels, ranks);
            var load = new long[ranks];
            for (int k = 0; k < numels.Length; k++)
            {
                Assert.That(owners[k], Is.InRange(0, ranks - 1));
                load[owners[k]] += numels[k];
            }
            // Greedy list scheduling's bound: no rank exceeds the mean by more than the largest tensor.
            Assert.That(load.Max(), Is.LessThanOrEqualTo(numels.Sum() / (double)ranks + numels.Max()));
        }
    }

    // The optimizers a job of one wraps, by name: each made over param groups (one per layer).
    private static readonly Dictionary<string, Func<Parameter[][], OptimizerHelper>> s_wrapped = new()
    {
        ["FusedAdamW"] = l => new FusedAdamW(l.Select(p => new FusedAdamW.ParamGroup(p)), 1e-2, weight_decay: 0.1),
        ["HypergradientSGD Global clipped"] = l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, 1e-3,
            HypergradientScope.Global, momentum: 0.9, max_grad_norm: 0.5),
        ["HypergradientSGD PerGroup"] = l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, 1e-2,
            HypergradientScope.PerGroup, rule: HypergradientRule.Normalized),
        ["FusedSGD clipped"] = l => new FusedSGD(l.Select(p => new FusedSGD.ParamGroup(p)), 0.05, momentum: 0.9, max_grad_norm: 0.5),
    };

    private static IEnumerable<string> WrappedNames => s_wrapped.Keys;

    [TestCaseSource(nameof(WrappedNames))]
    public void InAJobOfOneItIsTheWrappedOptimizer(string name)
    {
        var group = ProcessGroup.Initialize();
        Assert.That(group.UsesMpi, Is.False);
        torch.manual_seed(3);
        var a = nn.Sequential(("fc1", nn.Linear(6, 5)), ("act", nn.Tanh()), ("fc2", nn.Linear(5, 2)));
        var b = nn.Sequential(("fc1", nn.Linear(6, 5)), ("act", nn.Tanh()), ("fc2", nn.Linear(5, 2)));
        using (torch.no_grad())
        {
            foreach (var (p, q) in a.parameters().Zip(b.parameters()))
            {
                q.copy_(p);
            }
        }
        static Parameter[][] Layers(Sequential m) => m.children().Select(c => c.parameters().ToArray()).Where(p => p.Length > 0).ToArray();
        var sharded = new ShardedOptimizer(Layers(a), group, s_wrapped[name], bucketBytes: 64);
        var plain = s_wrapped[name](Layers(b));
        Assert.That(sharded.OwnedElements, Is.EqualTo(a.parameters().Sum(p => p.numel())));
        for (int step = 0; step < 5; step++)
        {
            var x = torch.randn(4, 6);
            sharded.zero_grad();
            a.call(x).square().sum().backward();
            sharded.step();
            plain.zero_grad();
            b.call(x).square().sum().backward();
            plain.step();
        }
        foreach (var (p, q) in a.parameters().Zip(b.parameters()))
        {
            Assert.That(p.equal(q).all().item<bool>(), Is.True);
        }
        Assert.That(sharded.Inner.ParamGroups.Select(g => g.LearningRate), Is.EqualTo(plain.ParamGroups.Select(g => g.LearningRate)));
    }

    [Test]
    public void CheckpointRefusesAnotherModelOrOptimizerAndChangesNothing()
    {
        var group = ProcessGroup.Initialize();
        string dir = Path.Combine(Path.GetTempPath(), $"optim-sharded-{Guid.NewGuid():N}");
        try
        {
            var model = nn.Linear(3, 2);
            var sharded = new ShardedOptimizer(new[] { model.parameters() }, group, l => new FusedSGD(l.SelectMany(p => p), 0.1, momentum: 0.9));
            model.call(torch.ones(1, 3)).sum().backward();
            sharded.step();
            sharded.SaveCheckpoint(dir);
            Assert.That(File.Exists(Path.Combine(dir, "manifest.json")) && File.Exists(Path.Combine(dir, "shard-0-of-1.bin")), Is.True);

            var other = nn.Linear(4, 2);
            var wrongShape = new ShardedOptimizer(new[] { other.parameters() }, group, l => new FusedSGD(l.SelectMany(p => p), 0.1, momentum: 0.9));
            var e = Assert.Throws<InvalidDataException>(() => wrongShape.LoadCheckpoint(dir));
            Assert.That(e!.Message, Does.Contain("parameter 0"));
            Assert.That(wrongShape.Inner.state_dict().State.OfType<FusedSGD.State>().All(s => s.momentum_buffer is null), Is.True);

            var adam = new ShardedOptimizer(new[] { model.parameters() }, group, l => new FusedAdam(l.SelectMany(p => p), 0.1));
            e = Assert.Throws<InvalidDataException>(() => adam.LoadCheckpoint(dir));
            Assert.That(e!.Message, Does.Contain("is of a FusedSGD"));

            var again = new ShardedOptimizer(new[] { model.parameters() }, group, l => new FusedSGD(l.SelectMany(p => p), 0.1, momentum: 0.9));
            again.LoadCheckpoint(dir);
            var loaded = again.Inner.state_dict().State.OfType<FusedSGD.State>().Select(s => s.momentum_buffer!).ToArray();
            var saved = sharded.Inner.state_dict().State.OfType<FusedSGD.State>().Select(s => s.momentum_buffer!).ToArray();
            Assert.That(loaded.Zip(saved).All(t => t.First.equal(t.Second).all().item<bool>()), Is.True);
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    [Test]
    public void RefusesWhatItCannotShard()
    {
        var group = ProcessGroup.Initialize();
        var model = nn.Linear(3, 2);
        var torchSgd = Assert.Throws<NotSupportedException>(() => _ = new ShardedOptimizer(new[] { model.parameters() }, group,
            l => torch.optim.SGD(l.SelectMany(p => p), 0.1)));
        Assert.That(torchSgd!.Message, Does.Contain("not supported"));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new ShardedOptimizer(new[] { model.parameters() }, group,
            l => new FusedSGD(l.SelectMany(p => p), 0.1), bucketBytes: 4));
    }
}
