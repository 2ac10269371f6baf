using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// Resuming: train N steps, save the model's weights, the optimizer and the scheduler, load them into
/// fresh objects, train M more steps: bitwise the state of N + M uninterrupted steps (parameters, every
/// state tensor, every rate, HD's and Adam's step counters, GreedyLR's whole state), for every optimizer
/// configuration and for GreedyLR driving FusedSGD.
/// </summary>
[TestFixture]
public class ResumeTests
{
    private const int Saved = 12, Total = 30;

    /// <summary>An optimizer (over the MLP's two layers as two param groups) and whether GreedyLR drives it.</summary>
    public sealed record Case(string Name, Func<Sequential, OptimizerHelper> Make, bool GreedyLR = false)
    {
        public override string ToString() => Name;
    }

    private static IEnumerable<Parameter> Layer(Sequential m, string prefix) =>
        m.named_parameters().Where(n => n.name.StartsWith(prefix)).Select(n => n.parameter);

    private static FusedSGD Fused(Sequential m, double momentum = 0, double dampening = 0, bool nesterov = false) => new(new[]
    {
        new FusedSGD.ParamGroup(Layer(m, "fc1")),
        new FusedSGD.ParamGroup(Layer(m, "fc2"), lr: 0.03),
    }, 0.05, momentum, dampening, weight_decay: 1e-3, nesterov: nesterov);

    public static IEnumerable<Case> Cases()
    {
        yield return new Case("FusedSGD plain", m => Fused(m));
        yield return new Case("FusedSGD momentum", m => Fused(m, 0.9, 0.1));
        yield return new Case("FusedSGD Nesterov", m => Fused(m, 0.9, nesterov: true));
        foreach (var scope in Enum.GetValues<HypergradientScope>())
        {
            foreach (var (kind, momentum, nesterov, rule) in new[]
            {
                ("no momentum", 0.0, false, HypergradientRule.Additive),
                ("heavy ball", 0.9, false, HypergradientRule.Normalized),
                ("Nesterov", 0.9, true, HypergradientRule.Normalized),
            })
            {
                double beta = rule == HypergradientRule.Additive ? 1e-3 : 1e-2;
                yield return new Case($"HypergradientSGD {scope} {kind}", m => new HypergradientSGD(new[]
                {
                    new HypergradientSGD.ParamGroup(Layer(m, "fc1")),
                    new HypergradientSGD.ParamGroup(Layer(m, "fc2"), lr: 0.03),
                }, 0.05, beta, scope, momentum, weight_decay: 1e-3, nesterov: nesterov, rule: rule, lr_min: 1e-4, lr_max: 0.5));
            }
        }
        yield return new Case("FusedAdam amsgrad", m => new FusedAdam(new[]
        {
            new FusedAdam.ParamGroup(Layer(m, "fc1")),
            new FusedAdam.ParamGroup(Layer(m, "fc2"), lr: 0.003, beta1: 0.8),
        }, 0.01, weight_decay: 1e-3, amsgrad: true));
        yield return new Case("FusedAdamW", m => new FusedAdamW(new[]
        {
            new FusedAdam.ParamGroup(Layer(m, "fc1")),
            new FusedAdam.ParamGroup(Layer(m, "fc2"), lr: 0.003, weight_decay: 0.1),
        }, 0.01, weight_decay: 1e-2));
        yield return new Case("GreedyLR driving FusedSGD momentum", m => Fused(m, 0.9), GreedyLR: true);
    }

    // A trace that makes GreedyLR raise and lower the rates, with smoothing, warmup and cooldown.
    private static GreedyLR Scheduler(torch.optim.Optimizer o) =>
        new(o, factor: 0.8, patience: 1, cooldown: 1, warmup: 1, smooth: true, window_size: 3, min_lr: new[] { 1e-3 }, max_lr: new[] { 0.2 });

    private static double Metric(int step, double loss) => loss + 0.2 * Math.Sin(step * 0.7);

    private sealed class Run : IDisposable
    {
        public Sequential Model = null!;
        public OptimizerHelper Optimizer = null!;
        public GreedyLR? Scheduler;
        public readonly List<double> Rates = new();

        public List<Parameter> Parameters => Model.parameters().ToList();

        public void Dispose()
        {
            Optimizer.Dispose();
            Model.Dispose();
        }
    }

    private static Run Start(Case c, long seed)
    {
        var run = new Run { Model = Harness.Mlp(seed) };
        run.Optimizer = c.Make(run.Model);
        run.Scheduler = c.GreedyLR ? Scheduler(run.Optimizer) : null;
        return run;
    }

    // Step `step` (0-based) of every run: a rate set by hand at step 5 (so the saved rates matter), and
    // for HD a NaN gradient at steps 7 and 20 (skipped steps, before and after the save).
    private static void Train(Run run, Case c, Tensor x, Tensor y, int from, int to)
    {
        for (int step = from; step < to; step++)
        {
            if (step == 5)
            {
                run.Optimizer.ParamGroups.First().LearningRate *= 0.8;
            }
            double loss = Harness.Backward(run.Model, x, y);
            if (run.Optimizer is HypergradientSGD && step is 7 or 20)
            {
                using var g = run.Parameters[^1].grad!;
                g[0] = torch.tensor(float.NaN);
            }
            run.Optimizer.step();
            run.Scheduler?.step(Metric(step, loss));
            run.Rates.Add(run.Optimizer.ParamGroups.First().LearningRate);
        }
    }

    [Test]
    public void ResumedRunEqualsTheUninterruptedRun([ValueSource(nameof(Cases))] Case c, [Values(false, true)] bool loadInsideDisposeScope)
    {
        var (x, y) = Harness.Data(91);
        using var full = Start(c, 90);
        Train(full, c, x, y, 0, Total);

        using var first = Start(c, 90);
        Train(first, c, x, y, 0, Saved);
        var model = new MemoryStream();
        var optimizer = new MemoryStream();
        var scheduler = new MemoryStream();
        first.Model.save(new BinaryWriter(model));
        first.Optimizer.save_state_dict(new BinaryWriter(optimizer));
        first.Scheduler?.save_state_dict(new BinaryWriter(scheduler));

        // Fresh objects: other initial weights, and a scheduler built with the defaults (the state brings its own).
        using var resumed = new Run { Model = Harness.Mlp(999) };
        resumed.Optimizer = c.Make(resumed.Model);
        resumed.Scheduler = c.GreedyLR ? new GreedyLR(resumed.Optimizer) : null;
        foreach (var s in new[] { model, optimizer, scheduler })
        {
            s.Position = 0;
        }
        using (var scope = loadInsideDisposeScope ? torch.NewDisposeScope() : null)
        {
            resumed.Model.load(new BinaryReader(model));
            resumed.Optimizer.load_state_dict(new BinaryReader(optimizer));
            resumed.Scheduler?.load_state_dict(new BinaryReader(scheduler));
        }
        Train(resumed, c, x, y, Saved, Total);

        Harness.AssertSameState(resumed.Optimizer, resumed.Parameters, full.Optimizer, full.Parameters, "resumed against uninterrupted");
        if (full.Optimizer is HypergradientSGD hd)
        {
            Assert.That((hd.Steps, hd.SkippedSteps), Is.EqualTo(((long)Total - 2, 2L)), "both NaN steps were skipped");
        }
        if (c.GreedyLR)
        {
            Harness.AssertSameState(resumed.Scheduler!.State, full.Scheduler!.State, "resumed against uninterrupted");
            Assert.That(resumed.Scheduler.get_last_lr(), Is.EqualTo(full.Scheduler.get_last_lr()));
            // The trace exercised what it should: rates went up and down, and the window was smoothing.
            var moves = full.Rates.Zip(full.Rates.Skip(1), (a, b) => Math.Sign(b - a)).ToList();
            Assert.That(moves, Does.Contain(1).And.Contain(-1), $"rates: {string.Join(", ", full.Rates)}");
            Assert.That(full.Scheduler.State.Window, Has.Count.EqualTo(3));
        }
        Assert.That(resumed.Rates, Is.EqualTo(full.Rates.Skip(Saved)), "the rates after the resume");
    }
}
