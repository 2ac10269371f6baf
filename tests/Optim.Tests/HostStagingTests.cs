using Optim.Distributed;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// <see cref="HostStaging"/> copies only CUDA tensors (none can be made with TorchSharp-cpu, so
/// the copies themselves are unverified here): CPU tensors must reach the collective as the very tensors given,
/// so no CPU collective pays for a copy.
/// </summary>
[TestFixture]
public class HostStagingTests
{
    [Test]
    public void CpuTensorsPassThroughAsGiven()
    {
        using var a = torch.ones(5);
        using var b = torch.zeros(3, ScalarType.Float64);
        using var staged = new HostStaging(new[] { a, b }, "tensors");
        Assert.That(staged.Tensors, Has.Count.EqualTo(2));
        Assert.That(staged.Tensors[0], Is.SameAs(a));
        Assert.That(staged.Tensors[1], Is.SameAs(b));
        staged.CopyBack();
        Assert.That(a.data<float>().ToArray(), Is.All.EqualTo(1f));
    }
}
