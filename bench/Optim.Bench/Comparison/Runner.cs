using System.Diagnostics;
using Optim.Bench.Comparison.Learned;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Bench.Comparison;

/// <summary>Everything the <c>compare</c> command can be told.</summary>
internal sealed record CompareSettings(
    string DataDir, string OutDir, string[] Tasks, string[] Methods, int Seeds, int? Epochs, int BatchSize, int? EvalEvery,
    double? SgdLr, double? AdamLr, double HypergradLr, MetricStepping Stepping, double SweepFraction, double Tolerance, bool Plots,
    string CommandLine);

/// <summary>One evaluation of a run: the mean training loss since the last one, the evaluation loss and accuracy, the rate.</summary>
internal sealed record Point(int Step, double TrainLoss, double EvalLoss, double EvalAccuracy, double Lr);

/// <summary>One training run of one method on one task with one seed.</summary>
internal sealed record RunResult(string Task, Method Method, int Seed, double BaseLr, IReadOnlyList<Point> Curve, double Seconds, bool Diverged)
{
    /// <summary>What each point of <see cref="Curve"/> cost: forward passes of training and training seconds (evaluations excluded) so far.</summary>
    public IReadOnlyList<Cost> Costs { get; init; } = Array.Empty<Cost>();

    /// <summary>The last evaluation loss; +∞ for a run that diverged.</summary>
    public double FinalLoss => Diverged || Curve.Count == 0 ? double.PositiveInfinity : Curve[^1].EvalLoss;
}

/// <summary>The training cost up to a point of a run: forward passes (one per step; Sls: one per closure evaluation) and seconds.</summary>
internal sealed record Cost(long ForwardPasses, double Seconds);

/// <summary>One point of the base-rate sweep: a constant rate trained for a shortened budget on the sweep seed.</summary>
internal sealed record SweepPoint(string Task, Family Family, double Lr, int Steps, double FinalLoss, bool Chosen);

/// <summary>A task's budget and the base rate each family uses.</summary>
internal sealed record TaskPlan(TrainingTask Task, int Steps, int EvalEvery, Dictionary<Family, double> BaseLr, IReadOnlyList<string> Groups);

/// <summary>Runs the sweep and every (task, method, seed), reporting progress as it goes.</summary>
internal sealed class Runner
{
    /// <summary>Seed of the sweep runs, apart from the seeds the comparison reports.</summary>
    public const int SweepSeed = 100;

    public static readonly double[] SgdGrid = { 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0 };

    public static readonly double[] AdamGrid = { 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1 };

    private readonly CompareSettings _o;
    private readonly LiveProgress _progress;

    public Runner(CompareSettings options, LiveProgress progress) => (_o, _progress) = (options, progress);

    /// <summary>Sls's first step size: the reference's default (Sls searches its own, so nothing is swept).</summary>
    public const double SlsInitialStepSize = 1.0;

    public static double[] Grid(Family f) => f == Family.Adam ? AdamGrid : SgdGrid;

    /// <summary>Steps and evaluation interval of a task under the options (about 40 evaluations per run unless told).</summary>
    public (int Steps, int EvalEvery) Budget(TrainingTask task)
    {
        int perEpoch = (int)(task.TrainExamples / BatchSize(task));
        int steps = _o.Epochs is null && task.DefaultSteps is int fixedSteps ? fixedSteps : perEpoch * (_o.Epochs ?? task.DefaultEpochs);
        return (steps, _o.EvalEvery ?? Math.Max(1, steps / 40));
    }

    /// <summary>The minibatch size of a task: its own where it has one, else --batch.</summary>
    public int BatchSize(TrainingTask task) => task.Batch ?? _o.BatchSize;

    public int SweepSteps(int steps, int evalEvery) => Math.Max(evalEvery, (int)Math.Round(steps * _o.SweepFraction));

    /// <summary>The base rate of <paramref name="family"/> on a task: given, or the best of the sweep.</summary>
    public double BaseRate(TrainingTask task, Family family, int steps, int evalEvery, List<SweepPoint> sweep)
    {
        if (family == Family.Sls)
        {
            return SlsInitialStepSize;
        }
        double? given = family == Family.Adam ? _o.AdamLr : _o.SgdLr;
        if ((given ?? task.UsualRate(family)) is double lr)
        {
            return lr;
        }
        var constant = Method.Find(family == Family.Adam ? "adam-constant" : "sgd-constant");
        int sweepSteps = SweepSteps(steps, evalEvery);
        var points = new List<(double Lr, double Loss)>();
        foreach (double candidate in Grid(family))
        {
            var r = Train(task, constant, SweepSeed, candidate, sweepSteps, sweepSteps, $"sweep {task.Name} {family.ToString().ToLowerInvariant()} lr {candidate:g3}");
            points.Add((candidate, r.FinalLoss));
        }
        var best = points.Where(p => double.IsFinite(p.Loss)).OrderBy(p => p.Loss).Select(p => (double?)p.Lr).FirstOrDefault()
            ?? throw new InvalidOperationException($"{task.Name}: every rate of the {family} sweep diverged; pass a rate explicitly.");
        sweep.AddRange(points.Select(p => new SweepPoint(task.Name, family, p.Lr, sweepSteps, p.Loss, p.Lr == best)));
        return best;
    }

    /// <summary>
    /// Trains one method on one task from one seed for <paramref name="steps"/> steps. The learned method
    /// runs <paramref name="learned"/> where given (training it), else the shipped policy.
    /// </summary>
    public RunResult Train(TrainingTask task, Method method, int seed, double lr, int steps, int evalEvery, string label, LearnedSchedule? learned = null)
    {
        if (method.Learned)
        {
            learned ??= LearnedSchedule.FromShippedPolicy();
        }
        else if (learned is not null)
        {
            throw new ArgumentException($"{method.Name} is not the learned schedule.");
        }
        // The learned schedule's rates are clipped to the stability bound where the task has one.
        bool bounded = method.Bounded || (method.Learned && task.HasStabilityBound);
        var sw = Stopwatch.StartNew();
        var training = new Stopwatch();
        var context = new MethodContext(steps, evalEvery, _o.Stepping, _o.HypergradLr) { BatchesPerEpoch = Math.Max(1, (int)(task.TrainExamples / _o.BatchSize)) };
        using var scope = torch.NewDisposeScope();
        using var learner = task.Create(seed);
        using var opt = method.CreateOptimizer(learner.Groups, lr, context);
        var scheduler = method.CreateScheduler(opt, context);
        // The batch order depends on the seed only: every method of a seed sees the same minibatches.
        using var gen = new torch.Generator((ulong)(1000 + seed));
        long n = task.TrainExamples;
        int batchSize = BatchSize(task);
        int perEpoch = (int)(n / batchSize);
        if (perEpoch < 1)
        {
            throw new ArgumentException($"--batch {batchSize} is larger than the {n} training examples of {task.Name}.");
        }
        var curve = new List<Point>();
        var costs = new List<Cost>();
        long forwardPasses = 0;
        // The cost of every point added to the curve (called after each curve.Add).
        void Charge() => costs.Add(new Cost(forwardPasses, training.Elapsed.TotalSeconds));
        Tensor? order = null;
        double lossSum = 0;
        int lossCount = 0;
        bool diverged = false;
        _progress.BeginRun(label, steps);
        // Step 0: the starting point, the same for every method of a seed.
        var (startLoss, startAccuracy) = learner.Evaluate();
        curve.Add(new Point(0, double.NaN, startLoss, startAccuracy, Method.CurrentRate(opt)));
        Charge();
        for (int step = 1; step <= steps; step++)
        {
            int b = (step - 1) % perEpoch;
            if (b == 0)
            {
                order?.Dispose();
                order = torch.randperm(n, generator: gen).DetachFromDisposeScope();
            }
            double trainLoss;
            training.Start();
            using (var inner = torch.NewDisposeScope())
            {
                using var batch = order!.narrow(0, (long)b * batchSize, batchSize);
                opt.zero_grad();
                if (opt is Sls sls)
                {
                    // The line search evaluates the minibatch loss itself: once with backward, once per trial.
                    using var slsLoss = sls.step(() => learner.Loss(batch));
                    trainLoss = slsLoss.ToDouble();
                    forwardPasses += sls.last_forward_passes;
                }
                else
                {
                    using var loss = learner.Loss(batch);
                    trainLoss = loss.ToDouble();
                    forwardPasses++;
                    if (double.IsFinite(trainLoss))
                    {
                        loss.backward();
                        double gradNorm = learned is null ? 0 : GradientNorm(learner);
                        if (bounded)
                        {
                            var curvature = learner.MeasureCurvature(batch)
                                ?? throw new InvalidOperationException($"{method.Name} needs a task with a stability bound (NMF); {task.Name} has none.");
                            using var clip = RateClip.Apply(opt, Method.BoundFraction * curvature.StableRate(Method.SgdMomentum));
                            opt.step();
                            learned?.ObserveStep(gradNorm, clip.Clipped);
                        }
                        else
                        {
                            opt.step();
                            learned?.ObserveStep(gradNorm, clipped: false);
                        }
                    }
                }
                if (!double.IsFinite(trainLoss))
                {
                    training.Stop();
                    diverged = true;
                    curve.Add(new Point(step, trainLoss, double.PositiveInfinity, double.NaN, Method.CurrentRate(opt)));
                    Charge();
                    break;
                }
                learner.AfterStep();
            }
            training.Stop();
            lossSum += trainLoss;
            lossCount++;
            if (scheduler is not null)
            {
                if (!method.MetricDriven)
                {
                    scheduler.step();
                }
                else if (_o.Stepping == MetricStepping.Step)
                {
                    StepWithMetric(scheduler, trainLoss);
                }
            }
            if (step % evalEvery == 0 || step == steps)
            {
                var (evalLoss, accuracy) = learner.Evaluate();
                if (!double.IsFinite(evalLoss))
                {
                    diverged = true;
                    curve.Add(new Point(step, lossSum / lossCount, double.PositiveInfinity, accuracy, Method.CurrentRate(opt)));
                    Charge();
                    break;
                }
                if (scheduler is not null && method.MetricDriven && _o.Stepping == MetricStepping.Eval)
                {
                    StepWithMetric(scheduler, evalLoss);
                }
                double rate = Method.CurrentRate(opt);
                curve.Add(new Point(step, lossSum / lossCount, evalLoss, accuracy, rate));
                Charge();
                (lossSum, lossCount) = (0, 0);
                if (step < steps)
                {
                    learned?.Decide(opt, curve, steps, lr);
                }
                _progress.Update(step, evalLoss, rate);
            }
        }
        order?.Dispose();
        _progress.EndRun(steps);
        return new RunResult(task.Name, method, seed, lr, curve, sw.Elapsed.TotalSeconds, diverged) { Costs = costs };
    }

    /// <summary>The norm of the whole gradient of the learner's parameters (the learned schedule's state).</summary>
    private static double GradientNorm(Learner learner)
    {
        using var noGrad = torch.no_grad();
        double sum = 0;
        foreach (var p in learner.Groups.SelectMany(g => g.Parameters))
        {
            var g = p.grad;
            if (g is not null)
            {
                using var sq = g.square().sum();
                sum += sq.ToDouble();
            }
        }
        return Math.Sqrt(sum);
    }

    private static void StepWithMetric(torch.optim.lr_scheduler.LRScheduler scheduler, double metric)
    {
        if (scheduler is GreedyLR greedy)
        {
            greedy.step(metric);
        }
        else
        {
            scheduler.step(metric);
        }
    }
}

/// <summary>
/// Progress of the comparison: on a terminal, one live status line (run, step, loss, rate, time left);
/// redirected, one line per finished run.
/// </summary>
internal sealed class LiveProgress
{
    private readonly TextWriter _out;
    private readonly bool _live;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly long _totalSteps;
    private long _doneSteps;
    private long _lastDraw;
    private string _label = "";
    private int _steps;
    private int _runs;

    public LiveProgress(TextWriter output, long totalSteps)
    {
        _out = output;
        _live = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected;
        _totalSteps = Math.Max(1, totalSteps);
    }

    public void BeginRun(string label, int steps) => (_label, _steps) = (label, steps);

    public void Update(int step, double evalLoss, double lr)
    {
        if (!_live || _clock.ElapsedMilliseconds - _lastDraw < 200)
        {
            return;
        }
        _lastDraw = _clock.ElapsedMilliseconds;
        string line = $"{Percent(_doneSteps + step)} {_label}: step {step}/{_steps}, eval loss {evalLoss:0.0000}, lr {lr:g3}{Eta(_doneSteps + step)}";
        int width = Math.Max(40, SafeWidth() - 1);
        _out.Write("\r" + (line.Length > width ? line[..width] : line.PadRight(width)));
    }

    public void EndRun(int steps)
    {
        _doneSteps += steps;
        _runs++;
    }

    /// <summary>A line that stays (a finished run of the comparison proper).</summary>
    public void Report(string line)
    {
        if (_live)
        {
            _out.Write("\r" + new string(' ', Math.Max(40, SafeWidth() - 1)) + "\r");
        }
        _out.WriteLine($"{Percent(_doneSteps)} {line}{Eta(_doneSteps)}");
    }

    private string Percent(long done) => $"[{100.0 * done / _totalSteps,5:0.0}%]";

    private string Eta(long done)
    {
        if (done == 0 || _runs == 0)
        {
            return "";
        }
        double left = _clock.Elapsed.TotalSeconds * (_totalSteps - done) / done;
        return $" (about {TimeSpan.FromSeconds(Math.Max(0, left)):m\\:ss} left)";
    }

    private static int SafeWidth()
    {
        try
        {
            return Console.WindowWidth > 0 ? Console.WindowWidth : 120;
        }
        catch (IOException)
        {
            return 120;
        }
    }
}
