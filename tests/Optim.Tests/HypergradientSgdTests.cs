using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim.Tests;

/// <summary>
/// HypergradientSGD: with hypergrad_lr = 0 every scope is TorchSharp's SGD; with hypergrad_lr &gt; 0 every
/// scope and rule equals a naive TorchSharp-ops reference over 50 steps (parameters, buffers, previous
/// updates, rates); the sign test; non-finite skips; bad input. Many chunks and thread counts:
/// LargeReferenceTests; resuming: ResumeTests.
/// </summary>
[TestFixture]
public class HypergradientSgdTests
{
    private const int Steps = 50;

    public static IEnumerable<TestCaseData> ZeroBetaCases() =>
        from scope in Enum.GetValues<HypergradientScope>()
        from c in FusedSgdParityTests.TorchSharpComparableCases()
        select new TestCaseData(scope, c).SetName($"ZeroBetaEqualsTorchSharpSgd({scope}, {c})");

    [TestCaseSource(nameof(ZeroBetaCases))]
    public void ZeroHypergradLrEqualsTorchSharpSgd(HypergradientScope scope, FusedSgdParityTests.SgdCase c)
    {
        using var ours = Harness.Mlp(61);
        using var theirs = Harness.Mlp(61);
        var (x, y) = Harness.Data(62);
        using var hd = new HypergradientSGD(ours.parameters(), 0.05, 0.0, scope, c.Momentum, c.Dampening, c.WeightDecay, c.Nesterov, c.Maximize);
        using var sgd = torch.optim.SGD(theirs.parameters(), 0.05, c.Momentum, c.Dampening, c.WeightDecay, c.Nesterov, c.Maximize);
        Func<Tensor, Tensor, Tensor>? loss = c.Maximize ? Harness.NegatedMse : null;
        var op = ours.parameters().ToList();
        var tp = theirs.parameters().ToList();
        for (int step = 1; step <= Steps; step++)
        {
            Harness.Backward(ours, x, y, loss);
            Harness.Backward(theirs, x, y, loss);
            hd.step();
            Harness.StepTorchSharp(sgd);
            for (int i = 0; i < op.Count; i++)
            {
                Harness.AssertClose(op[i], tp[i], $"step {step}, parameter {i}", 1e-5, 1e-6);
                if (c.Momentum != 0)
                {
                    // TorchSharp accumulates +g when maximizing, PyTorch (and we) -g.
                    var theirBuf = ((SGD.State)sgd.state_dict().State[i]).momentum_buffer;
                    using var expected = c.Maximize ? theirBuf.neg() : theirBuf.clone();
                    Harness.AssertClose(Harness.HdState(hd, i).momentum_buffer!, expected, $"step {step}, momentum buffer {i}", 1e-5, 1e-6);
                }
            }
        }
        Assert.That(hd.TensorLearningRates(), Has.All.EqualTo(0.05).Within(1e-8), "with hypergrad_lr = 0 no rate may move");
    }

    public static IEnumerable<TestCaseData> ReferenceCases()
    {
        var options = new[]
        {
            (Momentum: 0.0, Dampening: 0.0, Wd: 0.0, Nesterov: false, Maximize: false),
            (Momentum: 0.9, Dampening: 0.0, Wd: 1e-2, Nesterov: false, Maximize: false),
            (Momentum: 0.9, Dampening: 0.0, Wd: 0.0, Nesterov: true, Maximize: false),
            (Momentum: 0.9, Dampening: 0.3, Wd: 1e-2, Nesterov: false, Maximize: true),
            (Momentum: 0.0, Dampening: 0.0, Wd: 1e-2, Nesterov: false, Maximize: true),
        };
        foreach (var scope in Enum.GetValues<HypergradientScope>())
        {
            foreach (var rule in Enum.GetValues<HypergradientRule>())
            {
                foreach (var o in options)
                {
                    yield return new TestCaseData(scope, rule, o.Momentum, o.Dampening, o.Wd, o.Nesterov, o.Maximize)
                        .SetName($"MatchesReference({scope}, {rule}, m={o.Momentum} d={o.Dampening} wd={o.Wd} nesterov={o.Nesterov} maximize={o.Maximize})");
                }
            }
        }
    }

    [TestCaseSource(nameof(ReferenceCases))]
    public void MatchesTheNaiveReference(HypergradientScope scope, HypergradientRule rule, double momentum, double dampening, double wd, bool nesterov, bool maximize)
    {
        double beta = rule == HypergradientRule.Additive ? 1e-3 : 1e-2;
        using var ours = Harness.Mlp(63);
        using var refModel = Harness.Mlp(63);
        var (x, y) = Harness.Data(64);
        Func<Tensor, Tensor, Tensor>? loss = maximize ? Harness.NegatedMse : null;
        // Two groups with different options: fc1 as given, fc2 plain with another rate.
        var on = ours.named_parameters().ToList();
        var rn = refModel.named_parameters().ToList();
        IEnumerable<Parameter> Fc(List<(string name, Parameter parameter)> ps, string prefix) => ps.Where(n => n.name.StartsWith(prefix)).Select(n => n.parameter);
        using var hd = new HypergradientSGD(new[]
        {
            new HypergradientSGD.ParamGroup(Fc(on, "fc1"), lr: 0.05),
            new HypergradientSGD.ParamGroup(Fc(on, "fc2"), lr: 0.02, momentum: 0, dampening: 0, weight_decay: 0, nesterov: false),
        }, 0.05, beta, scope, momentum, dampening, wd, nesterov, maximize, rule, lr_min: 1e-4, lr_max: 0.5);
        using var reference = new ReferenceHd(scope, rule, beta, 1e-4, 0.5, rtol: 2e-5, atol: 2e-6);
        reference.AddGroup(Fc(rn, "fc1"), 0.05, momentum, dampening, wd, nesterov, maximize);
        reference.AddGroup(Fc(rn, "fc2"), scope == HypergradientScope.Global ? 0.05 : 0.02, 0, 0, 0, false, maximize);
        var op = ours.parameters().ToList();
        var rp = refModel.parameters().ToList();
        bool moved = false;
        long adopted = 0, elements = op.Sum(p => p.numel());
        for (int step = 1; step <= Steps; step++)
        {
            // Real gradients, computed once and given to both, so that each step is compared on the same input.
            Harness.Backward(ours, x, y, loss);
            Harness.CopyGradients(op, rp);
            hd.step();
            reference.Step();
            // Every state piece, the reference running on its own state throughout (but for the elements
            // of the per-parameter normalized rule whose sign of h was undetermined: see ReferenceHd).
            adopted += reference.AssertMatches(hd, op, rp, $"step {step}");
            moved |= hd.TensorLearningRates().Any(r => r != 0.05 && r != 0.02);
        }
        // An undetermined sign is rare: adopting more than a few elements would hide a wrong rule.
        Assert.That(adopted, Is.LessThanOrEqualTo(elements * Steps / 1000), $"{adopted} elements adopted from our state");
        TestContext.Out.WriteLine($"elements adopted from our state (undetermined sign of h): {adopted} of {elements * Steps} element-steps");
        Assert.That(moved, Is.True, "the rates never moved: the test would not see a wrong hypergradient");
    }

    [TestCase(HypergradientRule.Additive)]
    [TestCase(HypergradientRule.Normalized)]
    public void SignTestOnAQuadratic(HypergradientRule rule)
    {
        // f(θ) = ½‖θ‖², gradient θ, curvature 1: a step of α < 1 undershoots (the rate should grow),
        // α > 2 overshoots (it should shrink).
        double Run(double alpha0, int steps)
        {
            var theta = new Parameter(torch.linspace(-1, 1, 64));
            using var opt = new HypergradientSGD(new[] { theta }, alpha0, rule == HypergradientRule.Additive ? 0.01 : 0.05, rule: rule);
            for (int i = 0; i < steps; i++)
            {
                opt.zero_grad();
                using (var l = (theta * theta).sum() * 0.5)
                {
                    l.backward();
                }
                opt.step();
            }
            return opt.ParamGroups.First().LearningRate;
        }
        Assert.That(Run(1e-3, 5), Is.GreaterThan(1e-3), "a tiny rate must grow");
        Assert.That(Run(2.5, 3), Is.LessThan(2.5), "a rate far too large must shrink");
    }

    [TestCase(HypergradientScope.Global)]
    [TestCase(HypergradientScope.PerGroup)]
    [TestCase(HypergradientScope.PerTensor)]
    [TestCase(HypergradientScope.PerParameter)]
    public void NonFiniteGradientSkipsTheWholeStep(HypergradientScope scope)
    {
        using var model = Harness.Mlp(72);
        var (x, y) = Harness.Data(73);
        using var opt = new HypergradientSGD(model.parameters(), 0.05, 1e-3, scope, momentum: 0.9);
        for (int i = 0; i < 3; i++)
        {
            Harness.Backward(model, x, y);
            opt.step();
        }
        Harness.Backward(model, x, y);
        var last = model.parameters().Last();
        using (var g = last.grad!)
        {
            g[0] = torch.tensor(float.NaN);
        }
        var before = Harness.Snapshot(model.parameters());
        var buffers = Enumerable.Range(0, 4).Select(i => ((HypergradientSGD.State)opt.state_dict().State[i]).momentum_buffer!.clone()).ToList();
        var rates = opt.TensorLearningRates().ToArray();
        opt.step();
        Assert.That(opt.SkippedSteps, Is.EqualTo(1));
        Assert.That(opt.Steps, Is.EqualTo(3));
        Harness.AssertUnchanged(before, model.parameters().ToList(), "parameter");
        Harness.AssertUnchanged(buffers, Enumerable.Range(0, 4).Select(i => ((HypergradientSGD.State)opt.state_dict().State[i]).momentum_buffer!).ToList(), "momentum buffer");
        Assert.That(opt.TensorLearningRates(), Is.EqualTo(rates));
        // The next finite step goes on normally.
        Harness.Backward(model, x, y);
        opt.step();
        Assert.That(opt.Steps, Is.EqualTo(4));
    }

    [TestCase(HypergradientScope.Global)]
    [TestCase(HypergradientScope.PerParameter)]
    public void WithoutSkipNonFiniteANaNGradientIsAppliedAndOtherwiseNothingChanges(HypergradientScope scope)
    {
        // Two optimizers on identical models: the default one and one told the gradients are checked.
        using var checkedModel = Harness.Mlp(74);
        using var trusting = Harness.Mlp(74);
        var (x, y) = Harness.Data(75);
        using var a = new HypergradientSGD(checkedModel.parameters(), 0.05, 1e-3, scope, momentum: 0.9, rule: HypergradientRule.Normalized);
        using var b = new HypergradientSGD(trusting.parameters(), 0.05, 1e-3, scope, momentum: 0.9, rule: HypergradientRule.Normalized, skip_nonfinite: false);
        Assert.That(a.SkipsNonFinite, Is.True);
        Assert.That(b.SkipsNonFinite, Is.False);
        var ap = checkedModel.parameters().ToList();
        var bp = trusting.parameters().ToList();
        for (int i = 0; i < 6; i++)
        {
            Harness.Backward(checkedModel, x, y);
            Harness.Backward(trusting, x, y);
            a.step();
            b.step();
            for (int k = 0; k < ap.Count; k++)
            {
                Assert.That(Harness.Same(bp[k], ap[k]), Is.True, $"step {i}: parameter {k} differs with finite gradients");
            }
            Assert.That(b.TensorLearningRates(), Is.EqualTo(a.TensorLearningRates()), $"step {i}: rates differ");
        }
        // A NaN gradient element: not skipped, and it reaches its own parameter element.
        Harness.Backward(trusting, x, y);
        var last = bp[^1];
        using (var g = last.grad!)
        {
            g[0] = torch.tensor(float.NaN);
        }
        var rates = b.TensorLearningRates().ToArray();
        double rate0 = double.NaN;
        if (scope == HypergradientScope.PerParameter)
        {
            using var r = b.ParameterLearningRates(last);
            rate0 = r[0].ToDouble();
        }
        b.step();
        Assert.That(b.SkippedSteps, Is.EqualTo(0));
        Assert.That(b.Steps, Is.EqualTo(7));
        Assert.That(float.IsNaN(last[0].ToSingle()), Is.True, "the NaN gradient element reaches its parameter");
        Assert.That(float.IsNaN(last[1].ToSingle()), Is.False, "and no other element");
        if (scope == HypergradientScope.PerParameter)
        {
            using var r = b.ParameterLearningRates(last);
            Assert.That(r[0].ToDouble(), Is.EqualTo(rate0), "a NaN hypergradient leaves its rate unchanged");
            Assert.That(r.isnan().any().ToBoolean(), Is.False, "no rate becomes NaN");
        }
        else
        {
            Assert.That(b.TensorLearningRates(), Is.EqualTo(rates), "a NaN hypergradient leaves the rate unchanged");
        }
    }

    [Test]
    public void BadInputIsRejectedAndChangesNothing()
    {
        using var model = Harness.Mlp(74);
        var ps = model.parameters();
        Assert.That(() => new HypergradientSGD(ps, 0.1, -1e-3), Throws.ArgumentException.With.Message.Contains("Invalid hypergrad_lr value: -0.001"));
        Assert.That(() => new HypergradientSGD(ps, 0.1, 1e-3, lr_min: 0.5, lr_max: 0.1), Throws.ArgumentException.With.Message.Contains("lr_min (0.5) must not be greater than lr_max (0.1)"));
        Assert.That(() => new HypergradientSGD(ps, 0.1, 1e-3, nesterov: true), Throws.ArgumentException.With.Message.Contains("Nesterov momentum requires a momentum and zero dampening"));
        Assert.That(() => new HypergradientSGD(ps, -0.1, 1e-3), Throws.ArgumentException.With.Message.Contains("Invalid learning rate: -0.1"));
        var integer = new Parameter(torch.ones(3, ScalarType.Int32), requires_grad: false);
        Assert.That(() => new HypergradientSGD(new[] { integer }, 0.1, 1e-3), Throws.ArgumentException.With.Message.Contains("has dtype Int32"));

        var (x, y) = Harness.Data(75);
        using var opt = new HypergradientSGD(ps, 0.1, 1e-3, HypergradientScope.PerTensor, momentum: 0.9);
        Harness.Backward(model, x, y);
        opt.step();
        Harness.Backward(model, x, y);
        var bias = model.named_parameters().First(n => n.name == "fc2.bias").parameter;
        bias.grad = torch.zeros(bias.shape, ScalarType.Float64);
        var before = Harness.Snapshot(model.parameters());
        var rates = opt.TensorLearningRates().ToArray();
        Assert.That(() => opt.step(), Throws.ArgumentException.With.Message.Contains("has a gradient of dtype Float64 but is Float32"));
        Harness.AssertUnchanged(before, model.parameters().ToList(), "parameter");
        Assert.That(opt.TensorLearningRates(), Is.EqualTo(rates));
        Assert.That(opt.Steps, Is.EqualTo(1));
    }

    [Test]
    public void PerParameterRatesAreReadable()
    {
        using var model = Harness.Mlp(78);
        var (x, y) = Harness.Data(79);
        using var opt = new HypergradientSGD(model.parameters(), 0.05, 1e-3, HypergradientScope.PerParameter);
        for (int i = 0; i < 5; i++)
        {
            Harness.Backward(model, x, y);
            opt.step();
        }
        var p = model.parameters().First();
        using var rates = opt.ParameterLearningRates(p);
        Assert.That(rates.shape, Is.EqualTo(p.shape));
        Assert.That(rates.min().ToDouble(), Is.GreaterThanOrEqualTo(0));
        Assert.That(rates.std().ToDouble(), Is.GreaterThan(0), "per-parameter rates must differ between weights");
        using var global = new HypergradientSGD(Harness.Mlp(80).parameters(), 0.05, 1e-3);
        Assert.That(() => global.ParameterLearningRates(p), Throws.InvalidOperationException);
    }
}
