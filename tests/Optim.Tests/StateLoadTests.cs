using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// Loading is all or nothing: a truncated or corrupt state raises <see cref="InvalidDataException"/> and
/// leaves the optimizer or scheduler exactly as it was (its own saved bytes unchanged), at every
/// truncation point of a small state file and for corrupted bytes at every position.
/// </summary>
[TestFixture]
public class StateLoadTests
{
    // A tiny model (its state file is a few hundred bytes) whose last bias never gets a gradient, so
    // one momentum buffer stays absent.
    private static Sequential Model(long seed)
    {
        torch.manual_seed(seed);
        return nn.Sequential(("fc1", nn.Linear(3, 2)), ("act", nn.Tanh()), ("fc2", nn.Linear(2, 2)));
    }

    private static void Train(Sequential model, torch.optim.Optimizer optimizer, int steps, long seed)
    {
        var (x, y) = Harness.Data(seed, inputs: 3, outputs: 2, rows: 4);
        var frozen = model.parameters().Last();
        for (int i = 0; i < steps; i++)
        {
            Harness.Backward(model, x, y);
            using (var g = frozen.grad)
            {
                frozen.grad = null;
            }
            optimizer.step();
        }
    }

    public static IEnumerable<TestCaseData> Optimizers()
    {
        yield return Case("FusedSGD momentum", p => new FusedSGD(p, 0.1, momentum: 0.9, dampening: 0.1, weight_decay: 1e-3));
        yield return Case("FusedSGD Nesterov", p => new FusedSGD(p, 0.1, momentum: 0.9, nesterov: true));
        foreach (var scope in Enum.GetValues<HypergradientScope>())
        {
            yield return Case($"HypergradientSGD {scope} heavy ball", p => new HypergradientSGD(p, 0.05, 1e-3, scope, momentum: 0.9));
            yield return Case($"HypergradientSGD {scope} Nesterov", p => new HypergradientSGD(p, 0.05, 1e-3, scope, momentum: 0.9, nesterov: true,
                rule: HypergradientRule.Normalized));
        }
        yield return Case("FusedAdam amsgrad", p => new FusedAdam(p, 0.01, weight_decay: 1e-3, amsgrad: true));
        yield return Case("FusedAdamW", p => new FusedAdamW(p, 0.01, beta1: 0.8, weight_decay: 1e-2, maximize: true));
    }

    private static TestCaseData Case(string name, Func<IEnumerable<Parameter>, OptimizerHelper> make) => new TestCaseData(make).SetName(name);

    private static byte[] Save(OptimizerHelper optimizer)
    {
        var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            optimizer.save_state_dict(writer);
        }
        return stream.ToArray();
    }

    private static void Load(OptimizerHelper optimizer, byte[] data)
    {
        using var reader = new BinaryReader(new MemoryStream(data));
        switch (optimizer)
        {
            case FusedSGD f:
                f.load_state_dict(reader);
                break;
            case HypergradientSGD h:
                h.load_state_dict(reader);
                break;
            case FusedAdam a:
                a.load_state_dict(reader);
                break;
            default:
                throw new ArgumentException(optimizer.GetType().Name);
        }
    }

    [TestCaseSource(nameof(Optimizers))]
    public void EveryTruncationAndCorruptionLeavesTheOptimizerUnchanged(Func<IEnumerable<Parameter>, OptimizerHelper> make)
    {
        using var source = Model(1);
        using var sourceOpt = make(source.parameters());
        Train(source, sourceOpt, 6, 2);
        var saved = Save(sourceOpt);

        using var target = Model(3);
        using var targetOpt = make(target.parameters());
        Train(target, targetOpt, 2, 4);
        var before = Save(targetOpt);
        Assert.That(before, Is.Not.EqualTo(saved), "the two states must differ for the test to mean anything");

        for (int length = 0; length < saved.Length; length++)
        {
            var e = Assert.Throws<InvalidDataException>(() => Load(targetOpt, saved[..length]), $"truncated at {length} of {saved.Length}");
            Assert.That(e!.Message, Does.Contain(targetOpt.GetType().Name));
            Assert.That(Save(targetOpt), Is.EqualTo(before), $"the optimizer changed after a load truncated at {length}");
        }

        // Every byte set to 0xFF in turn: the load either succeeds (a still-valid state, e.g. a changed
        // weight) or fails with InvalidDataException and changes nothing.
        int rejected = 0;
        for (int i = 0; i < saved.Length; i++)
        {
            var corrupt = (byte[])saved.Clone();
            corrupt[i] = 0xFF;
            try
            {
                Load(targetOpt, corrupt);
                Load(targetOpt, before); // restore for the next position
            }
            catch (InvalidDataException)
            {
                rejected++;
                Assert.That(Save(targetOpt), Is.EqualTo(before), $"the optimizer changed after a rejected load (byte {i} corrupted)");
            }
        }
        Assert.That(rejected, Is.GreaterThan(saved.Length / 10), "corrupting the headers, flags, shapes and options must be detected");

        // The intact state loads, and is then exactly the source's.
        Load(targetOpt, saved);
        Assert.That(Save(targetOpt), Is.EqualTo(saved));
    }

    [TestCaseSource(nameof(Optimizers))]
    public void NamedCorruptionsAreRejectedWithAClearMessage(Func<IEnumerable<Parameter>, OptimizerHelper> make)
    {
        using var model = Model(1);
        using var optimizer = make(model.parameters());
        Train(model, optimizer, 3, 2);
        var saved = Save(optimizer);
        var before = (byte[])saved.Clone();

        // The optimizer's name, then the counts, then the first group's initial rate and rate.
        int nameEnd = 1 + saved[0];
        var wrongGroups = (byte[])saved.Clone();
        wrongGroups[nameEnd] = 2;
        AssertRejected(optimizer, wrongGroups, "param groups", before);

        var nanRate = (byte[])saved.Clone();
        BitConverter.GetBytes(double.NaN).CopyTo(nanRate, nameEnd + 2 + 8);
        AssertRejected(optimizer, nanRate, "learning rate", before);

        var negativeRate = (byte[])saved.Clone();
        BitConverter.GetBytes(-0.5).CopyTo(negativeRate, nameEnd + 2 + 8);
        AssertRejected(optimizer, negativeRate, "learning rate", before);

        var otherType = (byte[])saved.Clone();
        otherType[1] ^= 0x20; // the first letter's case
        AssertRejected(optimizer, otherType, "the state of a", before);
    }

    private static void AssertRejected(OptimizerHelper optimizer, byte[] data, string fragment, byte[] before)
    {
        var e = Assert.Throws<InvalidDataException>(() => Load(optimizer, data));
        Assert.That(e!.Message, Does.Contain(fragment));
        Assert.That(Save(optimizer), Is.EqualTo(before));
    }

    [Test]
    public void AStateOfOtherShapesIsRejected()
    {
        using var small = Model(1);
        using var smallOpt = new FusedSGD(small.parameters(), 0.1, momentum: 0.9);
        Train(small, smallOpt, 2, 2);
        var saved = Save(smallOpt);

        torch.manual_seed(5);
        using var wide = nn.Sequential(("fc1", nn.Linear(3, 3)), ("act", nn.Tanh()), ("fc2", nn.Linear(3, 2)));
        using var wideOpt = new FusedSGD(wide.parameters(), 0.1, momentum: 0.9);
        Train(wide, wideOpt, 2, 2);
        var before = Save(wideOpt);
        var e = Assert.Throws<InvalidDataException>(() => Load(wideOpt, saved));
        Assert.That(e!.Message, Does.Contain("shape"));
        Assert.That(Save(wideOpt), Is.EqualTo(before));
    }

    [Test]
    public void APerParameterStateDoesNotLoadIntoAnotherScope()
    {
        using var a = Model(1);
        using var perParameter = new HypergradientSGD(a.parameters(), 0.05, 1e-3, HypergradientScope.PerParameter);
        Train(a, perParameter, 2, 2);
        var saved = Save(perParameter);
        using var b = Model(1);
        using var global = new HypergradientSGD(b.parameters(), 0.05, 1e-3, HypergradientScope.Global);
        var before = Save(global);
        var e = Assert.Throws<InvalidDataException>(() => Load(global, saved));
        Assert.That(e!.Message, Does.Contain("per-parameter rates"));
        Assert.That(Save(global), Is.EqualTo(before));
    }

    [Test]
    public void NegativePerParameterRatesAreRejected()
    {
        using var a = Model(1);
        using var opt = new HypergradientSGD(a.parameters(), 0.05, 1e-3, HypergradientScope.PerParameter);
        Train(a, opt, 2, 2);
        var before = Save(opt);
        using (torch.no_grad())
        {
            var state = (HypergradientSGD.State)opt.state_dict().State[0];
            state.parameter_rates![0, 0] = -1.0;
        }
        var corrupt = Save(opt);
        Load(opt, before);
        var e = Assert.Throws<InvalidDataException>(() => Load(opt, corrupt));
        Assert.That(e!.Message, Does.Contain("negative"));
        Assert.That(Save(opt), Is.EqualTo(before));
    }

    [Test]
    public void CopyingAnotherOptimizersStateIsAllOrNothing()
    {
        using var a = Model(1);
        using var source = new FusedSGD(a.parameters(), 0.1, momentum: 0.9);
        Train(a, source, 3, 2);
        using var b = Model(2);
        using var target = new FusedSGD(b.parameters(), 0.1, momentum: 0.9);
        Train(b, target, 1, 3);
        var before = Save(target);

        // A state dictionary whose last state has a buffer of the wrong shape: nothing is copied.
        var dict = source.state_dict();
        var last = (FusedSGD.State)dict.State[^2];
        var good = last.momentum_buffer;
        last.momentum_buffer = torch.zeros(7);
        Assert.Throws<ArgumentException>(() => target.load_state_dict(dict));
        Assert.That(Save(target), Is.EqualTo(before));
        last.momentum_buffer.Dispose();
        last.momentum_buffer = good;

        target.load_state_dict(source.state_dict());
        Assert.That(Save(target), Is.EqualTo(Save(source)));
    }

    // ---- GreedyLR --------------------------------------------------------------------------------

    private static byte[] Save(GreedyLR scheduler)
    {
        var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            scheduler.save_state_dict(writer);
        }
        return stream.ToArray();
    }

    private static void Load(GreedyLR scheduler, byte[] data)
    {
        using var reader = new BinaryReader(new MemoryStream(data));
        scheduler.load_state_dict(reader);
    }

    [Test]
    public void GreedyLREveryTruncationAndCorruptionLeavesTheSchedulerUnchanged()
    {
        using var model = Model(1);
        using var optimizer = new FusedSGD(model.parameters(), 0.1);
        var source = new GreedyLR(optimizer, patience: 1, smooth: true, window_size: 3, cooldown: 1);
        foreach (var metric in new[] { 1.0, 0.9, 0.8, 0.85, 0.9, 0.95, 0.7 })
        {
            source.step(metric);
        }
        var saved = Save(source);

        using var other = Model(2);
        using var otherOptimizer = new FusedSGD(other.parameters(), 0.1);
        var target = new GreedyLR(otherOptimizer, patience: 1, smooth: true, window_size: 3, cooldown: 1);
        target.step(2.0);
        var before = Save(target);
        Assert.That(before, Is.Not.EqualTo(saved));

        for (int length = 0; length < saved.Length; length++)
        {
            Assert.Throws<InvalidDataException>(() => Load(target, saved[..length]), $"truncated at {length}");
            Assert.That(Save(target), Is.EqualTo(before), $"the scheduler changed after a load truncated at {length}");
        }
        for (int i = 0; i < saved.Length; i++)
        {
            var corrupt = (byte[])saved.Clone();
            corrupt[i] = 0xFF;
            try
            {
                Load(target, corrupt);
                Load(target, before);
            }
            catch (InvalidDataException)
            {
                Assert.That(Save(target), Is.EqualTo(before), $"the scheduler changed after a rejected load (byte {i})");
            }
        }
        Load(target, saved);
        Assert.That(Save(target), Is.EqualTo(saved));
    }
}
