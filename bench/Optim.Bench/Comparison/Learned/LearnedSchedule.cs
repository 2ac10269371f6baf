using TorchSharp;

namespace Optim.Bench.Comparison.Learned;

/// <summary>
/// The learned schedule in a run (method <c>sgd-learned</c>): at every evaluation but the last, the
/// policy sees <see cref="ScheduleFeatures"/> and multiplies the rate by one of <see cref="Multipliers"/>;
/// the rate stays within [base × <see cref="MinFactor"/>, base × <see cref="MaxFactor"/>]. On NMF the
/// runner also clips every step's rate to the stability bound, as for the <c>-bounded</c> methods.
/// In training the actions are sampled and every decision is recorded for PPO; in compare the shipped
/// policy takes its most probable action.
/// </summary>
internal sealed class LearnedSchedule
{
    /// <summary>The actions: rate multipliers.</summary>
    public static readonly double[] Multipliers = { 0.5, 1.0, 2.0 };

    /// <summary>The lowest and highest rate as multiples of the base rate.</summary>
    public const double MinFactor = 1e-3, MaxFactor = 10;

    /// <summary>The reward of the decision after which the run diverged (on the scale of log-improvements, docs/learned-schedules.md).</summary>
    public const double DivergencePenalty = -3;

    /// <summary>Where the shipped policy lies beside the program (copied from Comparison/Learned/learned-schedule.json).</summary>
    public static string ShippedPath => Path.Combine(AppContext.BaseDirectory, "policies", "learned-schedule.json");

    private static readonly Lazy<PolicyNetwork> Shipped = new(() => PolicyNetwork.Load(ShippedPath));

    private readonly PolicyNetwork _policy;
    private readonly Random? _explore;
    private readonly ScheduleFeatures _features = new();
    private readonly List<(float[] Observation, int Action, double LogProb, double Value, int CurveIndex)> _decisions = new();

    /// <param name="policy">The actor-critic.</param>
    /// <param name="explore">Samples the actions when given (training); else the most probable action is taken.</param>
    public LearnedSchedule(PolicyNetwork policy, Random? explore = null)
    {
        if (policy.Inputs != ScheduleFeatures.Count || policy.Actions != Multipliers.Length)
        {
            throw new ArgumentException($"the learned schedule needs a policy of {ScheduleFeatures.Count} inputs and {Multipliers.Length} actions, not {policy.Inputs} and {policy.Actions}.");
        }
        (_policy, _explore) = (policy, explore);
    }

    /// <summary>The tasks the shipped policy trained on (from its file; empty when it does not say).</summary>
    public static IReadOnlyList<string> ShippedTrainingTasks() =>
        Shipped.Value.Training["tasks"]?.AsArray().Select(t => (string?)t ?? "").Where(t => t.Length > 0).ToList() ?? new List<string>();

    /// <summary>The shipped policy, greedy (what compare runs).</summary>
    public static LearnedSchedule FromShippedPolicy() => new(Shipped.Value);

    /// <summary>Records a training step: the gradient norm and whether the stability bound clipped the rate.</summary>
    public void ObserveStep(double gradNorm, bool clipped) => _features.ObserveStep(gradNorm, clipped);

    /// <summary>Chooses the next interval's rate at the last point of <paramref name="curve"/> and sets it on every group.</summary>
    public void Decide(torch.optim.Optimizer opt, IReadOnlyList<Point> curve, int totalSteps, double baseRate)
    {
        double rate = opt.ParamGroups.First().LearningRate;
        var observation = _features.Take(curve, totalSteps, rate, baseRate);
        var (action, logProb, value) = _policy.Act(observation, _explore);
        _decisions.Add((observation, action, logProb, value, curve.Count - 1));
        double next = Math.Clamp(rate * Multipliers[action], baseRate * MinFactor, baseRate * MaxFactor);
        foreach (var g in opt.ParamGroups)
        {
            g.LearningRate = next;
        }
    }

    /// <summary>
    /// The decisions of a finished run with their rewards: a decision at point i earns
    /// log(eval_i / eval_{i+1}), the log-improvement of the validation loss over the interval it chose the
    /// rate for, or <see cref="DivergencePenalty"/> when the run diverged in that interval.
    /// </summary>
    public List<Transition> Transitions(RunResult run)
    {
        var result = new List<Transition>();
        foreach (var d in _decisions)
        {
            var next = run.Curve[d.CurveIndex + 1];
            double reward = double.IsFinite(next.EvalLoss) ? Math.Log(run.Curve[d.CurveIndex].EvalLoss / next.EvalLoss) : DivergencePenalty;
            result.Add(new Transition(d.Observation, d.Action, d.LogProb, d.Value, reward));
        }
        return result;
    }
}
