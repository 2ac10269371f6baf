using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>Bad input gets an ArgumentException naming the problem, and changes nothing.</summary>
[TestFixture]
public class FusedSgdValidationTests
{
    [TestCase(-0.1, 0.0, 0.0, 0.0, false, "Invalid learning rate: -0.1", "lr")]
    [TestCase(double.NaN, 0.0, 0.0, 0.0, false, "Invalid learning rate: NaN", "lr")]
    [TestCase(0.1, -0.5, 0.0, 0.0, false, "Invalid momentum value: -0.5", "momentum")]
    [TestCase(0.1, 0.0, 0.0, -1e-3, false, "Invalid weight_decay value: -0.001", "weight_decay")]
    [TestCase(0.1, 0.0, 0.0, 0.0, true, "Nesterov momentum requires a momentum and zero dampening", "nesterov")]
    [TestCase(0.1, 0.9, 0.1, 0.0, true, "Nesterov momentum requires a momentum and zero dampening", "nesterov")]
    [TestCase(0.1, 0.9, double.PositiveInfinity, 0.0, false, "Invalid dampening value: Infinity", "dampening")]
    public void InvalidHyperparametersAreRejectedByTheConstructor(double lr, double momentum, double dampening, double wd, bool nesterov, string message, string param)
    {
        using var model = Harness.Mlp(30);
        var ex = Assert.Throws<ArgumentException>(() => new FusedSGD(model.parameters(), lr, momentum, dampening, wd, nesterov));
        Assert.That(ex!.Message, Does.StartWith(message));
        Assert.That(ex.ParamName, Is.EqualTo(param));
    }

    [Test]
    public void MomentumSetterValidatesEveryGroupAndChangesNothingOnFailure()
    {
        using var model = Harness.Mlp(36);
        using var fused = new FusedSGD(model.parameters(), 0.1, momentum: 0.9, nesterov: true);
        Assert.That(() => fused.Momentum = -1, Throws.ArgumentException.With.Message.Contains("Invalid momentum value: -1"));
        Assert.That(() => fused.Momentum = 0, Throws.ArgumentException.With.Message.Contains("Nesterov momentum requires"));
        Assert.That(fused.Momentum, Is.EqualTo(0.9));
        Assert.That(((FusedSGD.ParamGroup)fused.ParamGroups.First()).Momentum, Is.EqualTo(0.9));
        fused.Momentum = 0.5;
        Assert.That(((FusedSGD.ParamGroup)fused.ParamGroups.First()).Momentum, Is.EqualTo(0.5));
    }

    [Test]
    public void IntegerParameterIsRejected()
    {
        var p = new Parameter(torch.ones(3, ScalarType.Int32), requires_grad: false);
        var ex = Assert.Throws<ArgumentException>(() => new FusedSGD(new[] { p }, 0.1));
        Assert.That(ex!.Message, Does.Contain("parameter 0 of param group 0 has dtype Int32"));
    }

    [Test]
    public void MixedDtypesAreRejected()
    {
        var a = new Parameter(torch.ones(3, ScalarType.Float32));
        var b = new Parameter(torch.ones(3, ScalarType.Float64));
        var ex = Assert.Throws<ArgumentException>(() => new FusedSGD(new[] { a, b }, 0.1));
        Assert.That(ex!.Message, Does.Contain("parameter 1 of param group 0 has dtype Float64 but the optimizer's other parameters have Float32"));
    }

    [Test]
    public void SparseParameterIsRejected()
    {
        var p = new Parameter(torch.eye(3).to_sparse());
        var ex = Assert.Throws<ArgumentException>(() => new FusedSGD(new[] { p }, 0.1));
        Assert.That(ex!.Message, Does.Contain("is sparse"));
    }

    [Test]
    public void NonContiguousParameterIsRejected()
    {
        var p = new Parameter(torch.randn(3, 4).t());
        Assert.That(p.is_contiguous(), Is.False);
        var ex = Assert.Throws<ArgumentException>(() => new FusedSGD(new[] { p }, 0.1));
        Assert.That(ex!.Message, Does.Contain("parameter 0 of param group 0 is not contiguous"));
    }

    [Test]
    public void UnsupportedDeviceIsRejected()
    {
        var p = new Parameter(torch.empty(3, device: torch.META));
        var ex = Assert.Throws<ArgumentException>(() => new FusedSGD(new[] { p }, 0.1));
        Assert.That(ex!.Message, Does.Contain("is on device meta"));
    }

    [Test]
    public void AnUnsupportedDeviceAfterACpuParameterIsNamed()
    {
        var a = new Parameter(torch.ones(3));
        var b = new Parameter(torch.empty(3, device: torch.META));
        var ex = Assert.Throws<ArgumentException>(() => new FusedSGD(new[] { a, b }, 0.1));
        Assert.That(ex!.Message, Does.Contain("parameter 1 of param group 0 is on device meta:-1; only CPU and CUDA tensors are supported"));
    }

    [Test]
    public void TorchSharpCpuCannotMakeASecondSupportedDevice()
    {
        // Why the mixed-device checks below are driven with metadata: LibTorch has one CPU device (any
        // index asked for gives index -1), other device types that TorchSharp-cpu can make (meta) are
        // refused before devices are compared, and CUDA tensors need CUDA.
        foreach (var index in new[] { 0, 1 })
        {
            using var t = torch.ones(3, device: new Device(DeviceType.CPU, index));
            Assert.That((t.device_type, t.device_index), Is.EqualTo((DeviceType.CPU, -1)), $"cpu:{index}");
        }
        if (!torch.cuda.is_available())
        {
            Assert.That(() => torch.ones(3, device: new Device(DeviceType.CUDA, 0)), Throws.Exception);
        }
    }

    private static TensorInfo Info(int deviceType, int deviceIndex, int numel = 3, ScalarType dtype = ScalarType.Float32) =>
        new(Data: 64, Numel: numel, ScalarType: (int)dtype, DeviceType: deviceType, DeviceIndex: deviceIndex, Contiguous: true, Sparse: false);

    private const int Cpu = TorchSharpNative.CpuDeviceType, Cuda = TorchSharpNative.CudaDeviceType;

    // The mixed-device branch of TensorChecks, driven with the metadata a CUDA build of LibTorch reports
    // (c10 device codes; see TorchSharpCpuCannotMakeASecondSupportedDevice for why not real tensors).
    [TestCase(Cpu, -1, Cuda, 0, "parameter 2 of param group 1 is on cuda:0 but the optimizer's other parameters are on cpu")]
    [TestCase(Cuda, 0, Cpu, -1, "parameter 2 of param group 1 is on cpu but the optimizer's other parameters are on cuda:0")]
    [TestCase(Cuda, 0, Cuda, 1, "parameter 2 of param group 1 is on cuda:1 but the optimizer's other parameters are on cuda:0")]
    public void ParametersOnDifferentDevicesAreRejected(int firstType, int firstIndex, int secondType, int secondIndex, string message)
    {
        var checks = new TensorChecks(nameof(FusedSGD));
        checks.CheckParameter(Info(firstType, firstIndex), 0, 0);
        checks.CheckParameter(Info(firstType, firstIndex), 1, 1);
        var ex = Assert.Throws<ArgumentException>(() => checks.CheckParameter(Info(secondType, secondIndex), 1, 2));
        Assert.That(ex!.Message, Does.StartWith("FusedSGD: " + message).And.Contain("must be on one device"));
        // The first parameter's device stays the optimizer's.
        Assert.That(checks.Device, Is.EqualTo(firstType == Cuda ? NativeDevice.Cuda : NativeDevice.Cpu));
    }

    [TestCase(Cpu, -1, Cuda, 0, "cuda:0", "cpu")]
    [TestCase(Cuda, 1, Cuda, 0, "cuda:0", "cuda:1")]
    public void AGradientOrStateOnAnotherDeviceIsRejected(int paramType, int paramIndex, int otherType, int otherIndex, string other, string param)
    {
        var checks = new TensorChecks(nameof(FusedSGD));
        var p = Info(paramType, paramIndex);
        checks.CheckParameter(p, 0, 0);
        var ex = Assert.Throws<ArgumentException>(() => checks.CheckGradient(Info(otherType, otherIndex), p, 0, 0));
        Assert.That(ex!.Message, Does.Contain($"parameter 0 of param group 0 has its gradient on {other} but is on {param}."));
        ex = Assert.Throws<ArgumentException>(() => checks.CheckState(Info(otherType, otherIndex), p, 0, 0, "momentum buffer"));
        Assert.That(ex!.Message, Does.Contain($"has a momentum buffer (Float32, {other}, 3 elements) that does not match it (Float32, {param}, 3 elements)"));
        // The same metadata on the parameter's own device passes.
        Assert.That(() => checks.CheckGradient(p, p, 0, 0), Throws.Nothing);
        Assert.That(() => checks.CheckState(p, p, 0, 0, "momentum buffer"), Throws.Nothing);
    }

    [Test]
    public void DuplicateParameterAcrossGroupsIsRejected()
    {
        using var model = Harness.Mlp(31);
        var ps = model.parameters().ToList();
        var ex = Assert.Throws<ArgumentException>(() => new FusedSGD(new[]
        {
            new FusedSGD.ParamGroup(ps),
            new FusedSGD.ParamGroup(ps.Take(1)),
        }, 0.1));
        Assert.That(ex!.Message, Does.Contain("appears in more than one param group"));
    }

    /// <summary>
    /// Sets up a model and optimizer that have stepped a few times (so momentum buffers exist), then
    /// breaks something, steps, and checks the error and that parameters and buffers are unchanged.
    /// </summary>
    private static void AssertStepFailsAndChangesNothing(Action<Sequential, FusedSGD> breakIt, string messageFragment, Type? exceptionType = null)
    {
        using var model = Harness.Mlp(32);
        var (x, y) = Harness.Data(33);
        var ps = model.named_parameters().ToList();
        using var opt = new FusedSGD(new[]
        {
            new FusedSGD.ParamGroup(ps.Where(n => n.name.StartsWith("fc1")).Select(n => n.parameter)),
            new FusedSGD.ParamGroup(ps.Where(n => n.name.StartsWith("fc2")).Select(n => n.parameter)),
        }, 0.1, momentum: 0.9);
        for (int i = 0; i < 3; i++)
        {
            Harness.Backward(model, x, y);
            opt.step();
        }
        Harness.Backward(model, x, y);
        breakIt(model, opt);
        var paramsBefore = Harness.Snapshot(model.parameters());
        var buffersBefore = Enumerable.Range(0, ps.Count).Select(i => Harness.FusedBuffer(opt, i).clone()).ToList();
        var ex = Assert.Throws(exceptionType ?? typeof(ArgumentException), () => opt.step());
        Assert.That(ex!.Message, Does.Contain(messageFragment));
        Harness.AssertUnchanged(paramsBefore, model.parameters().ToList(), "parameter");
        Harness.AssertUnchanged(buffersBefore, Enumerable.Range(0, ps.Count).Select(i => Harness.FusedBuffer(opt, i)).ToList(), "momentum buffer");
    }

    [Test]
    public void NonContiguousGradientInSecondGroupChangesNothing()
    {
        AssertStepFailsAndChangesNothing((m, _) =>
        {
            var w = m.parameters().Last(); // fc2.bias, 1-D: use fc2.weight instead
            var weight = m.named_parameters().First(n => n.name == "fc2.weight").parameter;
            weight.grad = torch.randn(weight.shape[1], weight.shape[0]).t();
        }, "parameter 0 of param group 1 has a non-contiguous gradient");
    }

    [Test]
    public void GradientOfWrongDtypeChangesNothing()
    {
        AssertStepFailsAndChangesNothing((m, _) =>
        {
            var bias = m.named_parameters().First(n => n.name == "fc2.bias").parameter;
            bias.grad = torch.zeros(bias.shape, ScalarType.Float64);
        }, "parameter 1 of param group 1 has a gradient of dtype Float64 but is Float32");
    }

    [Test]
    public void NegativeLearningRateSetBySchedulerChangesNothing()
    {
        AssertStepFailsAndChangesNothing((_, opt) => opt.ParamGroups.Last().LearningRate = -1, "Invalid learning rate: -1 (param group 1)");
    }

    [Test]
    public void NesterovTurnedOnWithoutMomentumChangesNothing()
    {
        AssertStepFailsAndChangesNothing((_, opt) =>
        {
            var o = ((FusedSGD.ParamGroup)opt.ParamGroups.First()).Options;
            o.nesterov = true;
            o.dampening = 0.5;
        }, "Nesterov momentum requires a momentum and zero dampening (param group 0)");
    }

    [Test]
    public void NoBuffersAreCreatedWhenAStepFails()
    {
        using var model = Harness.Mlp(34);
        var (x, y) = Harness.Data(35);
        using var opt = new FusedSGD(model.parameters(), 0.1, momentum: 0.9);
        Harness.Backward(model, x, y);
        var bias = model.named_parameters().First(n => n.name == "fc2.bias").parameter;
        bias.grad = torch.zeros(bias.shape, ScalarType.Float64);
        Assert.Throws<ArgumentException>(() => opt.step());
        for (int i = 0; i < 4; i++)
        {
            Assert.That(Harness.FusedState(opt, i).momentum_buffer, Is.Null);
        }
    }
}

/// <summary>The bindings: status-to-exception mapping, ABI check, CUDA availability.</summary>
[TestFixture]
public class BindingsTests
{
    [Test]
    public void LibraryLoadsWithTheExpectedAbi()
    {
        Assert.That(OptimNative.BuildInfo, Does.StartWith("optim "));
        Assert.That(OptimNative.LibraryPath, Does.EndWith(Path.Combine("runtimes", "linux-x64", "native", "libOptim.Native.so")));
    }

    [Test]
    public void NativeInvalidArgumentBecomesArgumentExceptionWithTheNativeMessage()
    {
        var ex = Assert.Throws<ArgumentException>(() => OptimNative.SgdStep(NativeDevice.Cpu, 0, NativeDType.Float32,
            new nint[] { 0 }, new nint[] { 0 }, default, new long[] { 4 }, default, new SgdHyperparameters(0.1)));
        Assert.That(ex!.Message, Does.Contain("optim_sgd_step: tensor 0: parameter pointer is NULL"));
    }

    [Test]
    public void CudaRequestWithoutCudaIsNotSupported()
    {
        if (OptimNative.CudaDeviceCount > 0)
        {
            Assert.Ignore("a CUDA device is present");
        }
        var ex = Assert.Throws<NotSupportedException>(() => OptimNative.SgdStep(NativeDevice.Cuda, 0, NativeDType.Float32,
            new nint[] { 16 }, new nint[] { 32 }, default, new long[] { 1 }, default, new SgdHyperparameters(0.1)));
        Assert.That(ex!.Message, Does.Contain(OptimNative.CudaCompiled ? "no CUDA device is present" : "no CUDA support"));
    }

    [Test]
    public void MismatchedSpanLengthsAreRejectedBeforeTheNativeCall()
    {
        Assert.Throws<ArgumentException>(() => OptimNative.SgdStep(NativeDevice.Cpu, 0, NativeDType.Float32,
            new nint[2], new nint[1], default, new long[2], default, new SgdHyperparameters(0.1)));
    }

    [Test]
    public void ThreadCountRoundTrips()
    {
        try
        {
            OptimNative.NumThreads = 1;
            Assert.That(OptimNative.NumThreads, Is.EqualTo(1));
            Assert.Throws<ArgumentException>(() => OptimNative.NumThreads = -3);
        }
        finally
        {
            OptimNative.NumThreads = 0;
        }
    }
}
