using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// <c>optim_torch_gradients</c>, the gather's one native call for every parameter's gradient: each borrowed
/// handle must be the gradient TorchSharp's own <c>grad</c> returns now (the same <c>TensorImpl</c>, data
/// and size), 0 where there is none, and follow a gradient replaced or set to none between look-ups.
/// </summary>
[TestFixture]
public class BorrowedGradientsTests
{
    private static nint[] Borrow(params nint[] handles)
    {
        var grads = Enumerable.Repeat((nint)(-1), handles.Length).ToArray();
        Assert.That(OptimNative.TryBorrowGradients(handles, grads), Is.True, "LibTorch is loaded, so its exports must be found");
        return grads;
    }

    private static void AssertIsGradientOf(nint borrowed, TorchSharp.Modules.Parameter p, string what)
    {
        using var grad = p.grad!;
        Assert.That(borrowed, Is.Not.EqualTo(nint.Zero), what);
        Assert.That(TensorRecords.ImplOf(borrowed), Is.EqualTo(TensorRecords.ImplOf(grad.Handle)), $"{what}: the same TensorImpl");
        var info = TorchSharpNative.Describe(borrowed);
        Assert.That(info.Data, Is.EqualTo(TorchSharpNative.DataPointer(grad.Handle)), $"{what}: the same data");
        Assert.That(info.Numel, Is.EqualTo(grad.numel()), $"{what}: the same size");
    }

    [Test]
    public void EachBorrowedHandleIsTheGradientOfItsParameterOrZero()
    {
        using var withGrad = new TorchSharp.Modules.Parameter(torch.randn(7));
        using var withoutGrad = new TorchSharp.Modules.Parameter(torch.randn(5));
        using var plain = torch.randn(3); // no autograd record at all
        withGrad.grad = torch.randn(7);
        var grads = Borrow(withGrad.Handle, withoutGrad.Handle, plain.Handle, 0);
        AssertIsGradientOf(grads[0], withGrad, "a parameter with a gradient");
        Assert.That(grads[1], Is.EqualTo(nint.Zero), "a parameter without a gradient");
        Assert.That(grads[2], Is.EqualTo(nint.Zero), "a tensor that does not require gradients");
        Assert.That(grads[3], Is.EqualTo(nint.Zero), "a 0 entry");
    }

    [Test]
    public void ALookUpFollowsAGradientReplacedOrSetToNone()
    {
        using var p = new TorchSharp.Modules.Parameter(torch.randn(70_000));
        p.grad = torch.randn(70_000);
        var first = Borrow(p.Handle)[0];
        AssertIsGradientOf(first, p, "the first gradient");
        nint firstData = TorchSharpNative.Describe(first).Data;
        p.grad = torch.randn(70_000);
        var second = Borrow(p.Handle)[0];
        AssertIsGradientOf(second, p, "the replaced gradient");
        Assert.That(TorchSharpNative.Describe(second).Data, Is.Not.EqualTo(firstData), "a new tensor's data");
        p.grad = null;
        Assert.That(Borrow(p.Handle)[0], Is.EqualTo(nint.Zero), "set to none");
        p.grad = torch.zeros(70_000);
        AssertIsGradientOf(Borrow(p.Handle)[0], p, "back again");
    }

    [Test]
    public void BadArgumentsAreRefused()
    {
        using var p = new TorchSharp.Modules.Parameter(torch.randn(4));
        Assert.That(() => OptimNative.TryBorrowGradients(new[] { p.Handle, p.Handle }, new nint[1]),
            Throws.ArgumentException.With.Message.Contains("One gradient entry per tensor"));
    }
}
