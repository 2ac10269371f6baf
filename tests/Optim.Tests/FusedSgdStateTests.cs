using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>save_state_dict, load into a fresh optimizer, continue: identical to an uninterrupted run.</summary>
[TestFixture]
public class FusedSgdStateTests
{
    private static FusedSGD Make(IEnumerable<TorchSharp.Modules.Parameter> p) =>
        new(p, 0.05, momentum: 0.9, dampening: 0.1, weight_decay: 1e-3);

    [TestCase(false)]
    [TestCase(true)]
    public void SaveLoadContinueEqualsUninterruptedRun(bool loadInsideDisposeScope)
    {
        var (x, y) = Harness.Data(21);

        // Uninterrupted: 50 steps; the rate changes at step 10, so the saved rate matters too.
        using var a = Harness.Mlp(20);
        using var optA = Make(a.parameters());
        for (int i = 0; i < 50; i++)
        {
            if (i == 10)
            {
                optA.ParamGroups.First().LearningRate = 0.02;
            }
            Harness.Backward(a, x, y);
            optA.step();
        }

        // Interrupted after 20 steps: save the model's weights and the optimizer's state.
        using var b = Harness.Mlp(20);
        using var optB = Make(b.parameters());
        for (int i = 0; i < 20; i++)
        {
            if (i == 10)
            {
                optB.ParamGroups.First().LearningRate = 0.02;
            }
            Harness.Backward(b, x, y);
            optB.step();
        }
        var stream = new MemoryStream();
        optB.save_state_dict(new BinaryWriter(stream));
        var weights = b.parameters().Select(p => p.detach().clone()).ToList();

        // Resume in a fresh model and optimizer.
        using var c = Harness.Mlp(999);
        using (torch.no_grad())
        {
            foreach (var (p, w) in c.parameters().Zip(weights))
            {
                p.copy_(w);
            }
        }
        using var optC = Make(c.parameters());
        stream.Position = 0;
        if (loadInsideDisposeScope)
        {
            using var scope = torch.NewDisposeScope();
            optC.load_state_dict(new BinaryReader(stream));
        }
        else
        {
            optC.load_state_dict(new BinaryReader(stream));
        }
        Assert.That(optC.ParamGroups.First().LearningRate, Is.EqualTo(0.02));
        for (int i = 20; i < 50; i++)
        {
            Harness.Backward(c, x, y);
            optC.step();
        }

        var pa = a.parameters().ToList();
        var pc = c.parameters().ToList();
        for (int i = 0; i < pa.Count; i++)
        {
            Assert.That(Harness.Same(pc[i], pa[i]), Is.True, $"parameter {i} differs from the uninterrupted run");
            var ba = Harness.FusedBuffer(optA, i);
            var bc = Harness.FusedBuffer(optC, i);
            Assert.That(Harness.Same(bc, ba), Is.True, $"momentum buffer {i} differs from the uninterrupted run");
        }
    }

    [Test]
    public void StateDictObjectRoundTripCopiesBuffers()
    {
        var (x, y) = Harness.Data(23);
        using var a = Harness.Mlp(22);
        using var optA = Make(a.parameters());
        for (int i = 0; i < 5; i++)
        {
            Harness.Backward(a, x, y);
            optA.step();
        }
        using var b = Harness.Mlp(22);
        using var optB = Make(b.parameters());
        optB.load_state_dict(optA.state_dict());
        for (int i = 0; i < a.parameters().Count(); i++)
        {
            var ba = Harness.FusedBuffer(optA, i);
            var bb = Harness.FusedBuffer(optB, i);
            Assert.That(Harness.Same(bb, ba), Is.True);
            Assert.That(bb.Handle, Is.Not.EqualTo(ba.Handle), "the loaded buffer must be a copy");
        }
    }

    [Test]
    public void LoadingStateOfAnotherOptimizerTypeIsRejected()
    {
        using var a = Harness.Mlp(24);
        using var sgd = torch.optim.SGD(a.parameters(), 0.1);
        var stream = new MemoryStream();
        sgd.save_state_dict(new BinaryWriter(stream));
        stream.Position = 0;
        using var fused = new FusedSGD(a.parameters(), 0.1);
        Assert.That(() => fused.load_state_dict(new BinaryReader(stream)), Throws.InstanceOf<InvalidDataException>());
    }
}
