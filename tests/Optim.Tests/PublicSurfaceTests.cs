using Optim.Interop;

namespace Optim.Tests;

/// <summary>
/// What the package promises: its public types (the optimizers, schedulers and their options; no raw
/// interop), and the TorchSharp version check that stands between the bindings and another TorchSharp.
/// </summary>
[TestFixture]
public class PublicSurfaceTests
{
    [Test]
    public void PublicTypesAreTheOptimizersSchedulersAndTheirOptions()
    {
        var exported = typeof(FusedSGD).Assembly.GetExportedTypes().Select(t => t.FullName).Order(StringComparer.Ordinal).ToArray();
        Assert.That(exported, Is.EqualTo(new[]
        {
            "Optim.Distributed.DataParallel",
            "Optim.Distributed.ProcessGroup",
            "Optim.Distributed.ReduceOp",
            "Optim.Distributed.ShardedOptimizer",
            "Optim.FusedAdam",
            "Optim.FusedAdam+Options",
            "Optim.FusedAdam+ParamGroup",
            "Optim.FusedAdam+State",
            "Optim.FusedAdamW",
            "Optim.FusedOptimizer`2",
            "Optim.FusedSGD",
            "Optim.FusedSGD+Options",
            "Optim.FusedSGD+ParamGroup",
            "Optim.FusedSGD+State",
            "Optim.GradScaler",
            "Optim.GreedyLR",
            "Optim.GreedyLRSettings",
            "Optim.GreedyLRState",
            "Optim.HypergradientAdam",
            "Optim.HypergradientAdam+Options",
            "Optim.HypergradientAdam+ParamGroup",
            "Optim.HypergradientAdam+State",
            "Optim.HypergradientRule",
            "Optim.HypergradientSGD",
            "Optim.HypergradientSGD+Options",
            "Optim.HypergradientSGD+ParamGroup",
            "Optim.HypergradientSGD+State",
            "Optim.HypergradientScope",
            // What a failing native call throws for CUDA runtime and internal errors, and its status.
            "Optim.Interop.NativeStatus",
            "Optim.Interop.OptimNativeException",
            "Optim.SgdOptionsBase",
            "Optim.SgdParamGroupBase`1",
            "Optim.Sls",
            "Optim.Sls+Options",
            "Optim.Sls+ParamGroup",
            "Optim.Sls+State",
        }));
    }

    [Test]
    public void TheLoadedTorchSharpIsTheOneTheBindingsWereBuiltFor()
    {
        Assert.That(TorchSharpVersionCheck.Expected, Is.EqualTo("0.107.0"));
        Assert.DoesNotThrow(TorchSharpVersionCheck.CheckLoaded);
        Assert.That(typeof(TorchSharp.torch).Assembly.GetName().Version, Is.EqualTo(new Version(0, 107, 0, 0)));
    }

    [TestCase(0, 107, 0, 0)]
    [TestCase(0, 107, 0, 3)]
    public void MatchingVersionsPass(int major, int minor, int build, int revision) =>
        Assert.DoesNotThrow(() => TorchSharpVersionCheck.Check(new Version(major, minor, build, revision), "0.107.0"));

    [TestCase(0, 108, 0, 0)]
    [TestCase(0, 106, 0, 0)]
    [TestCase(0, 107, 1, 0)]
    [TestCase(1, 107, 0, 0)]
    public void AnyOtherVersionFailsNamingBoth(int major, int minor, int build, int revision)
    {
        var ex = Assert.Throws<InvalidOperationException>(() =>
            TorchSharpVersionCheck.Check(new Version(major, minor, build, revision), "0.107.0", "/x/TorchSharp.dll"));
        Assert.That(ex!.Message, Does.Contain("needs TorchSharp 0.107.0")
            .And.Contain($"TorchSharp {major}.{minor}.{build} is loaded (from /x/TorchSharp.dll)"));
    }

    [Test]
    public void AnUnknownVersionFails() =>
        Assert.That(() => TorchSharpVersionCheck.Check(null, "0.107.0"),
            Throws.InvalidOperationException.With.Message.Contains("TorchSharp of unknown version is loaded"));
}
