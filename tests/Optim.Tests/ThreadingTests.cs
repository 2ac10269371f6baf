using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>In a TorchSharp process the CPU path runs on LibTorch's OpenMP team. (Independence of the native thread count, at every configuration: LargeReferenceTests.)</summary>
[TestFixture]
[NonParallelizable]
public class ThreadingTests
{
    [TearDown]
    public void RestoreDefault() => OptimNative.NumThreads = 0;

    private static List<Tensor> Train(int threads)
    {
        OptimNative.NumThreads = threads;
        // About 600K parameters: above the size at which the native step goes parallel.
        torch.manual_seed(40);
        using var model = nn.Sequential(("a", nn.Linear(64, 1024)), ("t", nn.Tanh()), ("b", nn.Linear(1024, 512)));
        var (x, y) = Harness.Data(41, inputs: 64, outputs: 512, rows: 16);
        using var opt = new FusedSGD(model.parameters(), 0.05, momentum: 0.9, weight_decay: 1e-3, nesterov: true);
        for (int i = 0; i < 5; i++)
        {
            Harness.Backward(model, x, y);
            opt.step();
        }
        Assert.That(OptimNative.NumThreads, Is.EqualTo(threads));
        return model.parameters().Select(p => p.detach().clone()).ToList();
    }

    [Test]
    public void TorchSharpProcessesShareLibTorchsOpenMpTeam()
    {
        // Any TorchSharp op has loaded LibTorch (and its libgomp) by now; a parallel-sized step then
        // runs on that runtime's team rather than on a second pool of threads.
        _ = Train(2);
        Assert.That(OptimNative.ThreadingInfo, Does.StartWith("openmp team of ").And.Contain("libgomp"));
    }
}
