using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// A native step bumps the autograd version of what it writes, as LibTorch's in-place operations do:
/// a graph that saved a parameter before the step must refuse to run backward afterwards, exactly as
/// with torch.optim.SGD, instead of silently using the stepped values.
/// </summary>
[TestFixture]
public class AutogradVersionTests
{
    private static IEnumerable<TestCaseData> Optimizers()
    {
        yield return new TestCaseData((Func<IEnumerable<Parameter>, torch.optim.Optimizer>)(p => new FusedSGD(p, 0.1)))
            .SetName("FusedSGD plain");
        yield return new TestCaseData((Func<IEnumerable<Parameter>, torch.optim.Optimizer>)(p => new FusedSGD(p, 0.1, momentum: 0.9, nesterov: true)))
            .SetName("FusedSGD Nesterov");
        foreach (var scope in Enum.GetValues<HypergradientScope>())
        {
            yield return new TestCaseData((Func<IEnumerable<Parameter>, torch.optim.Optimizer>)(p =>
                new HypergradientSGD(p, 0.1, 1e-3, scope, momentum: 0.9))).SetName($"HypergradientSGD {scope} heavy ball");
            yield return new TestCaseData((Func<IEnumerable<Parameter>, torch.optim.Optimizer>)(p =>
                new HypergradientSGD(p, 0.1, 1e-3, scope))).SetName($"HypergradientSGD {scope} plain");
        }
        yield return new TestCaseData((Func<IEnumerable<Parameter>, torch.optim.Optimizer>)(p => new FusedAdam(p, 0.01, amsgrad: true)))
            .SetName("FusedAdam amsgrad");
        yield return new TestCaseData((Func<IEnumerable<Parameter>, torch.optim.Optimizer>)(p => new FusedAdamW(p, 0.01, weight_decay: 0.1)))
            .SetName("FusedAdamW");
    }

    // saved = (w*w).sum(); (w*2).sum().backward(); step; saved.backward() — the reproduction.
    private static void StepBetweenForwardAndBackward(Func<IEnumerable<Parameter>, torch.optim.Optimizer> make, bool torchSharp, int warmSteps)
    {
        using var w = new Parameter(torch.randn(3, 5));
        using var opt = make(new[] { w });
        for (int i = 0; i < warmSteps; i++)
        {
            (w * 2).sum().backward();
            opt.step();
        }
        using var saved = (w * w).sum();
        (w * 2).sum().backward();
        if (torchSharp)
        {
            Harness.StepTorchSharp(opt);
        }
        else
        {
            opt.step();
        }
        var e = Assert.Catch(() => saved.backward());
        Assert.That(e!.Message, Does.Contain("modified by an inplace operation"));
    }

    [Test]
    public void TorchSharpsSgdRefusesTheStaleBackward() =>
        StepBetweenForwardAndBackward(p => torch.optim.SGD(p, 0.1), torchSharp: true, warmSteps: 0);

    [TestCaseSource(nameof(Optimizers))]
    public void OurStepRefusesTheStaleBackward(Func<IEnumerable<Parameter>, torch.optim.Optimizer> make)
    {
        StepBetweenForwardAndBackward(make, torchSharp: false, warmSteps: 0);
        // Later steps too, when the state tensors already exist.
        StepBetweenForwardAndBackward(make, torchSharp: false, warmSteps: 2);
    }

    [TestCaseSource(nameof(Optimizers))]
    public void TheStepBumpsTheVersionOnce(Func<IEnumerable<Parameter>, torch.optim.Optimizer> make)
    {
        using var w = new Parameter(torch.randn(4));
        using var opt = make(new[] { w });
        (w * 3).sum().backward();
        long before = Version(w);
        opt.step();
        Assert.That(Version(w), Is.EqualTo(before + 1));
    }

    [Test]
    public void AFailedCheckBumpsNothing()
    {
        using var w = new Parameter(torch.randn(4));
        using var opt = new FusedSGD(new[] { w }, 0.1);
        (w * 3).sum().backward();
        opt.ParamGroups.First().LearningRate = -1;
        long before = Version(w);
        Assert.Throws<ArgumentException>(() => opt.step());
        Assert.That(Version(w), Is.EqualTo(before));
    }

    // at::TensorBase::_version(), exported by LibTorch (TorchSharp has no binding for it); `this` is
    // the at::Tensor a TorchSharp handle points to.
    private static unsafe long Version(Tensor t)
    {
        var lib = System.Runtime.InteropServices.NativeLibrary.Load("libtorch_cpu.so");
        var fn = (delegate* unmanaged<nint, long>)System.Runtime.InteropServices.NativeLibrary.GetExport(lib, "_ZNK2at10TensorBase8_versionEv");
        return fn(t.Handle);
    }
}
