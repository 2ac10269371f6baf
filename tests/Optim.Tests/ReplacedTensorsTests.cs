using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// Tensors changed between steps: every step must read the parameters and gradients as they are now,
/// never as an earlier step saw them (a stale data pointer would write freed or foreign memory). Each
/// case changes the tensors of FusedSGD and of TorchSharp's SGD alike between steps and compares
/// parameters and momentum buffers after every step; a change the step cannot take must fail with
/// a message and leave everything as it was.
/// </summary>
[TestFixture]
public class ReplacedTensorsTests
{
    // Sizes from a few elements to more than one 64 Ki-element chunk.
    private static readonly long[] Sizes = { 3, 100, 70_000, 17 };

    private sealed class Pair : IDisposable
    {
        public readonly List<Parameter> Ours, Theirs;
        public readonly FusedSGD Fused;
        public readonly torch.optim.Optimizer Sgd;

        public Pair()
        {
            torch.manual_seed(11);
            Ours = Sizes.Select(n => new Parameter(torch.randn(n))).ToList();
            Theirs = Ours.Select(p => new Parameter(p.detach().clone())).ToList();
            Fused = new FusedSGD(Ours, 0.1, momentum: 0.9);
            Sgd = torch.optim.SGD(Theirs, 0.1, momentum: 0.9);
        }

        /// <summary>Gives parameter k of both the same fresh gradient (a new tensor), seeded by <paramref name="seed"/>.</summary>
        public void FreshGradient(int k, long seed)
        {
            var g = torch.randn(new[] { Ours[k].numel() }, generator: new torch.Generator((ulong)seed));
            Ours[k].grad = g;
            Theirs[k].grad = g.clone();
        }

        public void FreshGradients(long seed)
        {
            for (int k = 0; k < Ours.Count; k++)
            {
                FreshGradient(k, seed * 100 + k);
            }
        }

        public void StepAndCompare(string when)
        {
            Fused.step();
            Sgd.step();
            Compare(when);
        }

        public void Compare(string when)
        {
            for (int k = 0; k < Ours.Count; k++)
            {
                Harness.AssertClose(Ours[k], Theirs[k], $"{when}: parameter {k}", 1e-5, 1e-6);
            }
        }

        public void Dispose()
        {
            Fused.Dispose();
            Sgd.Dispose();
        }
    }

    [Test]
    public void GradientReplacedByAFreshTensor()
    {
        using var pair = new Pair();
        for (int step = 0; step < 4; step++)
        {
            // Each step a new gradient tensor: its memory is not the last one's.
            pair.FreshGradients(step);
            pair.StepAndCompare($"step {step}");
        }
    }

    [Test]
    public void GradientSetToNoneThenBack()
    {
        using var pair = new Pair();
        pair.FreshGradients(1);
        pair.StepAndCompare("step 0");
        // zero_grad(set_to_none): the parameter is skipped, as TorchSharp's SGD skips it.
        pair.Ours[2].grad = null;
        pair.Theirs[2].grad = null;
        pair.StepAndCompare("step 1, no gradient on parameter 2");
        pair.FreshGradient(2, 99);
        pair.StepAndCompare("step 2, a new gradient on parameter 2");
    }

    [Test]
    public void ParameterSetToNewStorage()
    {
        using var pair = new Pair();
        pair.FreshGradients(1);
        pair.StepAndCompare("step 0");
        // set_ moves the parameter onto other memory (the Parameter object and its handle stay).
        using (torch.no_grad())
        {
            var fresh = torch.randn(Sizes[1]);
            pair.Ours[1].set_(fresh);
            pair.Theirs[1].set_(fresh.clone());
        }
        pair.StepAndCompare("step 1, parameter 1 on new storage");
        pair.FreshGradients(2);
        pair.StepAndCompare("step 2");
    }

    [Test]
    public void ParameterSetToAnotherShapeFailsAndChangesNothing()
    {
        using var pair = new Pair();
        pair.FreshGradients(1);
        pair.StepAndCompare("step 0");
        using (torch.no_grad())
        {
            pair.Ours[1].set_(torch.randn(Sizes[1] + 5));
        }
        var before = Harness.Snapshot(pair.Ours);
        var e = Assert.Throws<ArgumentException>(() => pair.Fused.step())!;
        Assert.That(e.Message, Does.Contain("parameter 1 of param group 0").And.Contain("elements"));
        for (int k = 0; k < before.Count; k++)
        {
            Harness.AssertClose(pair.Ours[k], before[k], $"parameter {k} after the failed step", 0, 0);
        }
    }

    [Test]
    public void GradientOfAnotherDtypeOrSizeFailsAndChangesNothing()
    {
        using var pair = new Pair();
        pair.FreshGradients(1);
        pair.StepAndCompare("step 0");
        var before = Harness.Snapshot(pair.Ours);
        pair.Ours[3].grad = torch.randn(Sizes[3], ScalarType.Float64);
        var dtype = Assert.Throws<ArgumentException>(() => pair.Fused.step())!;
        Assert.That(dtype.Message, Does.Contain("parameter 3 of param group 0").And.Contain("Float64"));
        pair.Ours[3].grad = torch.randn(Sizes[3] - 1);
        var size = Assert.Throws<ArgumentException>(() => pair.Fused.step())!;
        Assert.That(size.Message, Does.Contain("parameter 3 of param group 0").And.Contain("elements"));
        for (int k = 0; k < before.Count; k++)
        {
            Harness.AssertClose(pair.Ours[k], before[k], $"parameter {k} after the failed steps", 0, 0);
        }
        // A good gradient again: the step goes on from where it was.
        pair.FreshGradient(3, 7);
        pair.Theirs[3].grad = pair.Ours[3].grad!.clone();
        pair.StepAndCompare("step 1, after the failed steps");
    }

    [Test]
    public void ParameterReplacedInTheGroup()
    {
        using var pair = new Pair();
        pair.FreshGradients(1);
        pair.StepAndCompare("step 0");
        // A group's list edited in place: the parameter at index 0 becomes another (already optimized) one.
        var group = (FusedSGD.ParamGroup)pair.Fused.ParamGroups.First();
        var list = (List<Parameter>)group.Parameters;
        (list[0], list[1]) = (list[1], list[0]);
        pair.FreshGradients(2);
        pair.StepAndCompare("step 1, parameters 0 and 1 swapped in the group");
    }
}
