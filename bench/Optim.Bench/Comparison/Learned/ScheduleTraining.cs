using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using TorchSharp;

namespace Optim.Bench.Comparison.Learned;

/// <summary>Everything the <c>train-schedule</c> command can be told.</summary>
internal sealed record ScheduleTrainingSettings(string DataDir, string OutPath, string[] Tasks, int Iterations, int EpisodesPerTask, int Seed, string CommandLine);

/// <summary>
/// Trains the learned schedule's policy with PPO: each iteration runs <c>EpisodesPerTask</c> episodes of
/// every training task (an episode is one whole compare-budget run of the task from a fresh training seed,
/// the rate set by the sampled policy at every evaluation), then makes one PPO update from them. The
/// training seeds start at <see cref="FirstTrainingSeed"/>, apart from compare's seeds (0, 1, 2) and its
/// sweep seed; nmf-digits and mnist-logreg are tasks it never trains on. The policy file is rewritten after
/// every iteration, so a stopped training leaves the last complete policy (its metadata says how far it got).
/// </summary>
internal static class ScheduleTraining
{
    /// <summary>The training tasks: one NMF and one network, the cheapest of each; nmf-digits and mnist-logreg stay unseen.</summary>
    public static readonly string[] DefaultTasks = { "nmf-synthetic", "mnist-mlp" };

    public const int FirstTrainingSeed = 1000;

    /// <summary>
    /// FusedSGD's base rate of each training task as compare's sweep chose it (bench/results/compare/sweep.csv;
    /// a test keeps the two equal): training starts every episode there, as compare starts sgd-learned,
    /// without re-running the sweep (four whole runs' worth of steps per task).
    /// </summary>
    public static readonly IReadOnlyDictionary<string, double> SweptBaseRates = new Dictionary<string, double>
    {
        ["mnist-mlp"] = 0.1,
        ["mnist-logreg"] = 0.1,
        ["nmf-digits"] = 0.1,
        ["nmf-synthetic"] = 0.3,
    };

    /// <summary>Hidden units of each of the actor-critic's two layers.</summary>
    public const int HiddenUnits = 32;

    public static int Run(ScheduleTrainingSettings s, TextWriter output)
    {
        var clock = Stopwatch.StartNew();
        // One intra-op thread: the models are small, and on a shared machine two spinning threads per
        // process made a run about 60 times slower; one also keeps the result independent of the core count.
        torch.set_num_threads(1);
        var digits = new Lazy<Digits>(() => Digits.Load(s.DataDir));
        var tasks = s.Tasks.Select(name => TrainingTask.Create(name, digits)).ToList();
        try
        {
            // The runner, budgets and base-rate sweep are compare's defaults: the policy learns on the runs compare makes.
            var compare = new CompareSettings(s.DataDir, "", s.Tasks, new[] { "sgd-learned" }, Seeds: 1, Epochs: null, BatchSize: 100, EvalEvery: null,
                SgdLr: null, AdamLr: null, HypergradLr: 0.02, Stepping: MetricStepping.Eval, SweepFraction: 0.5, Tolerance: 0.01, Plots: false, CommandLine: s.CommandLine);
            var runner = new Runner(compare, new LiveProgress(TextWriter.Null, 1));
            var learned = Method.Find("sgd-learned");
            var constant = Method.Find("sgd-constant");
            var plans = new List<(TrainingTask Task, int Steps, int EvalEvery, double BaseLr, double ConstantReturn)>();
            foreach (var task in tasks)
            {
                var (steps, evalEvery) = runner.Budget(task);
                double baseLr = SweptBaseRates[task.Name];
                // What a constant rate would earn on the first training seed (from the first decision, at the
                // first evaluation, to the end): the yardstick of the progress lines.
                var reference = runner.Train(task, constant, FirstTrainingSeed, baseLr, steps, evalEvery, "constant");
                double constantReturn = Math.Log(reference.Curve[1].EvalLoss / reference.FinalLoss);
                plans.Add((task, steps, evalEvery, baseLr, constantReturn));
                output.WriteLine($"{task.Name}: base rate {baseLr:g3} (compare's recorded sweep), {steps} steps, {steps / evalEvery - 1} decisions per episode; " +
                    $"a constant rate earns {constantReturn:0.000} ({clock.Elapsed.TotalSeconds:0} s)");
            }
            var policy = new PolicyNetwork(ScheduleFeatures.Count, LearnedSchedule.Multipliers.Length, HiddenUnits, s.Seed);
            var ppo = new PpoSettings();
            using var trainer = new PpoTrainer(policy, ppo, s.Seed);
            int seed = FirstTrainingSeed;
            var history = new JsonArray();
            for (int iteration = 1; iteration <= s.Iterations; iteration++)
            {
                var episodes = new List<IReadOnlyList<Transition>>();
                var line = new List<string>();
                int diverged = 0;
                foreach (var plan in plans)
                {
                    double sum = 0;
                    for (int e = 0; e < s.EpisodesPerTask; e++, seed++)
                    {
                        var agent = new LearnedSchedule(policy, new Random(s.Seed * 1_000_003 + seed));
                        var run = runner.Train(plan.Task, learned, seed, plan.BaseLr, plan.Steps, plan.EvalEvery, plan.Task.Name, agent);
                        var transitions = agent.Transitions(run);
                        episodes.Add(transitions);
                        sum += transitions.Sum(t => t.Reward);
                        diverged += run.Diverged ? 1 : 0;
                    }
                    line.Add($"{plan.Task.Name} {sum / s.EpisodesPerTask - plan.ConstantReturn:+0.000;-0.000}");
                }
                var stats = trainer.Update(episodes);
                history.Add(new JsonObject
                {
                    ["iteration"] = iteration,
                    ["mean_return"] = Math.Round(episodes.Average(e => e.Sum(t => t.Reward)), 4),
                    ["diverged"] = diverged,
                    ["entropy"] = Math.Round(stats.Entropy, 4),
                });
                policy.Training = new JsonObject
                {
                    ["command"] = s.CommandLine,
                    ["tasks"] = new JsonArray(plans.Select(p => (JsonNode)p.Task.Name).ToArray()),
                    ["base_rates"] = new JsonObject(plans.Select(p => KeyValuePair.Create(p.Task.Name, (JsonNode?)JsonValue.Create(p.BaseLr)))),
                    ["iterations"] = iteration,
                    ["episodes"] = iteration * s.EpisodesPerTask * plans.Count,
                    ["training_seeds"] = $"{FirstTrainingSeed}..{seed - 1}",
                    ["seconds"] = Math.Round(clock.Elapsed.TotalSeconds),
                    ["features"] = new JsonArray(ScheduleFeatures.Names.Select(n => (JsonNode)n).ToArray()),
                    ["multipliers"] = new JsonArray(LearnedSchedule.Multipliers.Select(m => (JsonNode)m).ToArray()),
                    ["ppo"] = $"gamma {ppo.Gamma.ToString(CultureInfo.InvariantCulture)}, lambda {ppo.Lambda.ToString(CultureInfo.InvariantCulture)}, clip {ppo.Clip.ToString(CultureInfo.InvariantCulture)}, " +
                        $"epochs {ppo.Epochs}, minibatch {ppo.Minibatch}, Adam lr {ppo.LearningRate.ToString(CultureInfo.InvariantCulture)}, " +
                        $"value {ppo.ValueCoefficient.ToString(CultureInfo.InvariantCulture)}, entropy {ppo.EntropyCoefficient.ToString(CultureInfo.InvariantCulture)}",
                    ["history"] = history.DeepClone(),
                };
                policy.Save(s.OutPath);
                double elapsed = clock.Elapsed.TotalSeconds;
                double left = elapsed / iteration * (s.Iterations - iteration);
                output.WriteLine($"[{iteration,3}/{s.Iterations}] return vs constant: {string.Join(", ", line)}; diverged {diverged}/{episodes.Count}; " +
                    $"entropy {stats.Entropy:0.000}, value loss {stats.ValueLoss:0.0000} ({elapsed:0} s, about {TimeSpan.FromSeconds(left):m\\:ss} left)");
            }
            output.WriteLine($"Policy written to {s.OutPath} ({new FileInfo(s.OutPath).Length / 1024.0:0.0} KB) after {clock.Elapsed.TotalSeconds:0} s.");
            return 0;
        }
        finally
        {
            foreach (var t in tasks)
            {
                t.Dispose();
            }
            if (digits.IsValueCreated)
            {
                digits.Value.Dispose();
            }
        }
    }
}
