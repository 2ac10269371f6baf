using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>FusedSGD's state: object round trip, and loading another optimizer's state (resuming: ResumeTests).</summary>
[TestFixture]
public class FusedSgdStateTests
{
    private static FusedSGD Make(IEnumerable<TorchSharp.Modules.Parameter> p) =>
        new(p, 0.05, momentum: 0.9, dampening: 0.1, weight_decay: 1e-3);

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
