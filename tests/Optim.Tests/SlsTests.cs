using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// Sls against the naive reference (<see cref="ReferenceSls"/>) on an MLP over minibatches for every reset
/// option and at a size spanning many native chunks on 1, 2 and 3 threads (parameters, step sizes and
/// forward passes after every step); on a quadratic whose accepted step size is known in closed form; the
/// 100-trial fallback, the small-gradient case, state save/load and bad input.
/// </summary>
[TestFixture]
[NonParallelizable]
public class SlsTests
{
    private int _torchThreads;

    [SetUp]
    public void OneTorchThread()
    {
        _torchThreads = torch.get_num_threads();
        torch.set_num_threads(1);
    }

    [TearDown]
    public void RestoreThreads()
    {
        OptimNative.NumThreads = 0;
        torch.set_num_threads(_torchThreads);
    }

    // 4 minibatches of 16 rows, cycled; MSE of the MLP.
    private static Func<Tensor> MinibatchLoss(Sequential model, Tensor x, Tensor y, int step)
    {
        long b = step % 4;
        var xb = x.narrow(0, 16 * b, 16);
        var yb = y.narrow(0, 16 * b, 16);
        return () => nn.functional.mse_loss(model.call(xb), yb);
    }

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(2)]
    public void MatchesTheReferenceOnAnMlpForEveryResetOption(int reset)
    {
        using var ours = Harness.Mlp(3);
        using var theirs = Harness.Mlp(3);
        var (x, y) = Harness.Data(4, rows: 64);
        var op = ours.parameters().ToList();
        var tp = theirs.parameters().ToList();
        // A large first step size, so that steps backtrack; 4 batches per epoch, so option 1 grows it visibly.
        using var sls = new Sls(op, n_batches_per_epoch: 4, init_step_size: 4, reset_option: reset);
        var reference = new ReferenceSls(tp, n_batches_per_epoch: 4, init_step_size: 4, reset_option: reset);
        int backtracked = 0, firstTry = 0;
        for (int step = 0; step < 60; step++)
        {
            sls.zero_grad();
            double ourLoss = sls.step(MinibatchLoss(ours, x, y, step)).ToDouble();
            double theirLoss = reference.Step(MinibatchLoss(theirs, x, y, step));
            string what = $"reset_option {reset}, step {step + 1}";
            Assert.That(ourLoss, Is.EqualTo(theirLoss), $"{what}: loss at θ");
            Assert.That(sls.step_size, Is.EqualTo(reference.StepSize), $"{what}: step size");
            Assert.That(sls.last_forward_passes, Is.EqualTo(reference.LastForwardPasses), $"{what}: forward passes");
            Assert.That(sls.forward_passes, Is.EqualTo(reference.ForwardPasses), $"{what}: total forward passes");
            Assert.That(sls.steps, Is.EqualTo(step + 1));
            for (int i = 0; i < op.Count; i++)
            {
                Harness.AssertClose(op[i], tp[i], $"{what}, parameter {i}", 1e-6, 1e-7);
            }
            if (sls.last_forward_passes > 2)
            {
                backtracked++;
            }
            else
            {
                firstTry++;
            }
        }
        Assert.That(backtracked, Is.GreaterThan(0), "some step backtracked");
        if (reset != 2)
        {
            Assert.That(firstTry, Is.GreaterThan(0), "some step took its first trial");
        }
    }

    [Test]
    public void MatchesTheReferenceAtManyChunksOnEveryThreadCount()
    {
        int[] threads = { 1, 2, 3 };
        var ours = threads.Select(_ => Harness.LargeParameters(1, ScalarType.Float32)).ToList();
        var theirs = Harness.LargeParameters(1, ScalarType.Float32);
        var targets = Harness.LargeParameters(2, ScalarType.Float32).Select(t => t.detach().clone()).ToList();
        // A separable loss with a different curvature per tensor: sum_k (k + 1) * mean((p_k - t_k)^2)
        // over the tensors with elements (the empty one has no gradient).
        Func<Tensor> Loss(IReadOnlyList<Parameter> ps) => () =>
        {
            Tensor total = torch.zeros(1).squeeze();
            for (int k = 0; k < ps.Count; k++)
            {
                if (ps[k].numel() > 0)
                {
                    total = total + (k + 1) * (ps[k] - targets[k]).square().mean();
                }
            }
            return total;
        };
        // Every search starts at 8 (reset_option 2) and backtracks to what the most curved tensor allows.
        var opts = ours.Select(ps => new Sls(ps, init_step_size: 8, reset_option: 2)).ToList();
        var reference = new ReferenceSls(theirs, init_step_size: 8, reset_option: 2);
        try
        {
            for (int step = 1; step <= 50; step++)
            {
                for (int t = 0; t < threads.Length; t++)
                {
                    using var scope = torch.NewDisposeScope();
                    opts[t].zero_grad();
                    Harness.WithNativeThreads(threads[t], () => opts[t].step(Loss(ours[t])));
                }
                using (torch.NewDisposeScope())
                {
                    reference.Step(Loss(theirs));
                }
                Assert.That(opts[0].step_size, Is.EqualTo(reference.StepSize), $"step {step}: step size");
                Assert.That(opts[0].forward_passes, Is.EqualTo(reference.ForwardPasses), $"step {step}: forward passes");
                for (int i = 0; i < theirs.Count; i++)
                {
                    Harness.AssertClose(ours[0][i], theirs[i], $"step {step}, parameter {i}", 1e-6, 1e-7);
                    for (int t = 1; t < threads.Length; t++)
                    {
                        Assert.That(Harness.Same(ours[t][i], ours[0][i]), Is.True, $"step {step}, parameter {i}: {threads[t]} threads against 1");
                    }
                }
                for (int t = 1; t < threads.Length; t++)
                {
                    Assert.That(opts[t].step_size, Is.EqualTo(opts[0].step_size));
                }
            }
            Assert.That(opts[0].forward_passes, Is.GreaterThan(100), "the searches backtracked");
        }
        finally
        {
            opts.ForEach(o => o.Dispose());
        }
    }

    /// <summary>
    /// f(θ) = a/2·‖θ‖²: g = aθ and f(θ − ηg) = a/2·(1 − ηa)²‖θ‖², so the Armijo condition holds exactly when
    /// η ≤ 2(1 − c)/a. Starting from η0 each step (reset_option 2), the accepted step size is the first
    /// η0·β^k under that bound, after k + 1 trials, and θ becomes (1 − ηa)θ.
    /// </summary>
    [TestCase(10.0, 0.1, 0.9)]
    [TestCase(3.0, 0.5, 0.7)]
    [TestCase(0.5, 0.1, 0.9)]
    public void AcceptsTheStepSizeKnownInClosedFormOnAQuadratic(double a, double c, double beta)
    {
        var theta = new Parameter(torch.tensor(new[] { 1.0, -2.0, 0.5, 3.0 }, dtype: ScalarType.Float64));
        using var sls = new Sls(new[] { theta }, init_step_size: 1, c: c, beta_b: beta, reset_option: 2);
        double bound = 2 * (1 - c) / a;
        int k = 0;
        double expected = 1;
        while (expected > bound)
        {
            expected *= beta;
            k++;
        }
        for (int step = 0; step < 5; step++)
        {
            var before = theta.detach().clone();
            sls.zero_grad();
            sls.step(() => 0.5 * a * theta.square().sum());
            Assert.That(sls.step_size, Is.EqualTo(expected).Within(1e-15), $"step {step + 1}: accepted step size");
            Assert.That(sls.last_forward_passes, Is.EqualTo(k + 2), $"step {step + 1}: forward passes (θ and {k + 1} trials)");
            Harness.AssertClose(theta, before * (1 - expected * a), $"step {step + 1}: θ", 1e-12, 1e-15);
        }
    }

    [Test]
    public void AfterAHundredFailedTrialsItStepsBy1e6()
    {
        var theta = new Parameter(torch.tensor(new[] { 1.0f, -2.0f, 0.5f }));
        using var sls = new Sls(new[] { theta }, init_step_size: 1, reset_option: 0);
        int calls = 0;
        // The loss at θ is |θ|²; every trial reports a loss 100 higher than the true one, so none passes.
        Func<Tensor> closure = () => theta.square().sum() + (calls++ > 0 ? 100.0 : 0.0);
        var before = theta.detach().clone();
        sls.zero_grad();
        sls.step(closure);
        Assert.That(sls.last_forward_passes, Is.EqualTo(Sls.MaxTrials + 1));
        Assert.That(calls, Is.EqualTo(Sls.MaxTrials + 1));
        Assert.That(sls.step_size, Is.EqualTo(Math.Pow(0.9, 100)).Within(1e-18), "η shrank 100 times and is kept");
        using var g = 2 * before;
        Harness.AssertClose(theta, before - (float)Sls.FallbackStepSize * g, "θ − 1e-6·g", 0, 0);
    }

    [Test]
    public void ATinyGradientLeavesTheParametersAndCountsOnePass()
    {
        var theta = new Parameter(torch.tensor(new[] { 1e-10, -2e-10 }, dtype: ScalarType.Float64));
        using var sls = new Sls(new[] { theta }, n_batches_per_epoch: 2, init_step_size: 1);
        var before = theta.detach().clone();
        sls.zero_grad();
        sls.step(() => 0.5 * theta.square().sum()); // ‖g‖ ≈ 2.2e-10 < 1e-8
        Assert.That(Harness.Same(theta, before), Is.True);
        Assert.That(sls.last_forward_passes, Is.EqualTo(1));
        Assert.That(sls.step_size, Is.EqualTo(Math.Pow(2.0, 0.5)), "the reset still applies (γ^(1/2))");
    }

    [Test]
    public void MaxGradNormIsRefusedAndChangesNothing()
    {
        var theta = new Parameter(torch.tensor(new[] { 1.0, -2.0 }, dtype: ScalarType.Float64));
        using var sls = new Sls(new[] { theta });
        var e = Assert.Throws<NotSupportedException>(() => sls.MaxGradNorm = 1.0);
        Assert.That(e!.Message, Does.Contain("Sls does not clip gradients"));
        Assert.That(sls.MaxGradNorm, Is.Null);
        Assert.DoesNotThrow(() => sls.MaxGradNorm = null);
    }

    [Test]
    public void SaveAndLoadResumesTheSameRun()
    {
        using var first = Harness.Mlp(8);
        using var second = Harness.Mlp(8);
        var (x, y) = Harness.Data(9, rows: 64);
        using var a = new Sls(first.parameters(), n_batches_per_epoch: 4, init_step_size: 3);
        for (int step = 0; step < 7; step++)
        {
            a.zero_grad();
            a.step(MinibatchLoss(first, x, y, step));
        }
        var saved = new MemoryStream();
        a.save_state_dict(new BinaryWriter(saved));
        using (torch.no_grad())
        {
            foreach (var (p, q) in first.parameters().Zip(second.parameters()))
            {
                q.copy_(p);
            }
        }
        using var b = new Sls(second.parameters(), n_batches_per_epoch: 4, init_step_size: 3);
        saved.Position = 0;
        b.load_state_dict(new BinaryReader(saved));
        Assert.That((b.step_size, b.steps, b.forward_passes, b.last_forward_passes),
            Is.EqualTo((a.step_size, a.steps, a.forward_passes, a.last_forward_passes)));
        for (int step = 7; step < 14; step++)
        {
            a.zero_grad();
            a.step(MinibatchLoss(first, x, y, step));
            b.zero_grad();
            b.step(MinibatchLoss(second, x, y, step));
            Assert.That(b.step_size, Is.EqualTo(a.step_size), $"step {step + 1}");
            foreach (var (p, q) in first.parameters().Zip(second.parameters()))
            {
                Assert.That(Harness.Same(q, p), Is.True, $"step {step + 1}");
            }
        }
        Assert.That(b.forward_passes, Is.EqualTo(a.forward_passes));
    }

    [Test]
    public void ALoadOfTruncatedDataChangesNothing()
    {
        using var model = Harness.Mlp(8);
        var (x, y) = Harness.Data(9, rows: 64);
        using var sls = new Sls(model.parameters(), init_step_size: 3);
        sls.zero_grad();
        sls.step(MinibatchLoss(model, x, y, 0));
        var saved = new MemoryStream();
        sls.save_state_dict(new BinaryWriter(saved));
        var bytes = saved.ToArray();
        double eta = sls.step_size;
        sls.zero_grad();
        sls.step(MinibatchLoss(model, x, y, 1));
        var (eta2, passes) = (sls.step_size, sls.forward_passes);
        var truncated = new MemoryStream(bytes, 0, bytes.Length - 4);
        Assert.Throws<InvalidDataException>(() => sls.load_state_dict(new BinaryReader(truncated)));
        Assert.That((sls.step_size, sls.forward_passes), Is.EqualTo((eta2, passes)));
        sls.load_state_dict(new BinaryReader(new MemoryStream(bytes)));
        Assert.That(sls.step_size, Is.EqualTo(eta));
        Assert.That(sls.steps, Is.EqualTo(1));
    }

    [Test]
    public void BadHyperparametersAreNamed()
    {
        var p = new Parameter(torch.ones(3));
        void Bad(string name, Action make) =>
            Assert.That(Assert.Throws<ArgumentException>(() => make())!.Message, Does.Contain(name));
        Bad("n_batches_per_epoch", () => new Sls(new[] { p }, n_batches_per_epoch: 0));
        Bad("init_step_size", () => new Sls(new[] { p }, init_step_size: 0));
        Bad("init_step_size", () => new Sls(new[] { p }, init_step_size: double.NaN));
        Bad("c", () => new Sls(new[] { p }, c: -0.1));
        Bad("beta_b", () => new Sls(new[] { p }, beta_b: 1));
        Bad("beta_b", () => new Sls(new[] { p }, beta_b: 0));
        Bad("gamma", () => new Sls(new[] { p }, gamma: double.PositiveInfinity));
        Bad("reset_option", () => new Sls(new[] { p }, reset_option: 3));
    }

    [Test]
    public void BadClosuresChangeNothing()
    {
        var theta = new Parameter(torch.tensor(new[] { 1.0f, -2.0f }));
        using var sls = new Sls(new[] { theta }, init_step_size: 1);
        var before = theta.detach().clone();
        Assert.Throws<ArgumentNullException>(() => sls.step(null));
        Assert.That(Assert.Throws<ArgumentException>(() => sls.step(() => theta * 2))!.Message, Does.Contain("one-element tensor"));
        Assert.That(Harness.Same(theta, before), Is.True);

        // A closure that fails during the search: θ is put back, the step size and counters are kept.
        int calls = 0;
        sls.zero_grad();
        Assert.Throws<InvalidOperationException>(() => sls.step(() =>
            calls++ < 3 ? theta.square().sum() + (calls > 1 ? 10.0 : 0.0) : throw new InvalidOperationException("data loader failed")));
        Assert.That(Harness.Same(theta, before), Is.True, "θ restored");
        Assert.That((sls.step_size, sls.steps, sls.forward_passes), Is.EqualTo((1.0, 0L, 0L)));

        // A trial returning a non-scalar: the same.
        calls = 0;
        sls.zero_grad();
        Assert.Throws<ArgumentException>(() => sls.step(() => calls++ == 0 ? theta.square().sum() : theta.square()));
        Assert.That(Harness.Same(theta, before), Is.True, "θ restored");
        Assert.That(sls.steps, Is.EqualTo(0));

        // And then a good step works.
        sls.zero_grad();
        sls.step(() => theta.square().sum());
        Assert.That(sls.steps, Is.EqualTo(1));
        Assert.That(Harness.Same(theta, before), Is.False);
    }

    [Test]
    public void MixedDtypesAreRejected()
    {
        var a = new Parameter(torch.ones(3));
        var b = new Parameter(torch.ones(3, dtype: ScalarType.Float64));
        Assert.That(Assert.Throws<ArgumentException>(() => new Sls(new[] { a, b }))!.Message, Does.Contain("dtype"));
    }
}
