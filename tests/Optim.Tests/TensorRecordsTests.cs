using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// The LibTorch layout the gather's prefetches assume (bindings/TensorRecords.cs). A wrong layout is not
/// unsafe (the values are only prefetched), but it would make the prefetches useless: these tests say so.
/// </summary>
[TestFixture]
public unsafe class TensorRecordsTests
{
    private static nint Word(nint impl, int offset) => *(nint*)((byte*)impl + offset);

    [Test]
    public void AViewSharesStorageAndVersionRecordsButNotAutogradMeta()
    {
        using var t = torch.randn(10);
        using var view = t.detach();
        nint a = TensorRecords.ImplOf(t.Handle), b = TensorRecords.ImplOf(view.Handle);
        Assert.That(a, Is.Not.EqualTo(b), "detach() makes a new TensorImpl");
        Assert.That(Word(a, TensorRecords.StorageField), Is.Not.EqualTo(nint.Zero).And.EqualTo(Word(b, TensorRecords.StorageField)), "storage record");
        Assert.That(TensorRecords.StorageOf(a), Is.EqualTo(Word(a, TensorRecords.StorageField)));
        Assert.That(Word(a, TensorRecords.VersionCounterField), Is.Not.EqualTo(nint.Zero).And.EqualTo(Word(b, TensorRecords.VersionCounterField)), "version record");
        using var other = torch.randn(10);
        Assert.That(Word(TensorRecords.ImplOf(other.Handle), TensorRecords.StorageField), Is.Not.EqualTo(Word(a, TensorRecords.StorageField)));
    }

    [Test]
    public void AutogradMetaExistsOnlyForTensorsThatRequireGradients()
    {
        using var plain = torch.randn(10);
        using var leaf = torch.randn(10).requires_grad_();
        Assert.That(Word(TensorRecords.ImplOf(plain.Handle), TensorRecords.AutogradMetaField), Is.EqualTo(nint.Zero));
        Assert.That(Word(TensorRecords.ImplOf(leaf.Handle), TensorRecords.AutogradMetaField), Is.Not.EqualTo(nint.Zero));
    }

    [Test]
    public void TwoHandlesOfOneGradientShareItsTensorImpl()
    {
        using var p = new TorchSharp.Modules.Parameter(torch.randn(10));
        p.grad = torch.randn(10);
        nint g1 = TorchSharpNative.GradientHandle(p.Handle), g2 = TorchSharpNative.GradientHandle(p.Handle);
        try
        {
            Assert.That(g1, Is.Not.EqualTo(g2));
            Assert.That(TensorRecords.ImplOf(g1), Is.Not.EqualTo(nint.Zero).And.EqualTo(TensorRecords.ImplOf(g2)));
        }
        finally
        {
            TorchSharpNative.ReleaseHandle(g1);
            TorchSharpNative.ReleaseHandle(g2);
        }
    }
}
