using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using LRScheduler = TorchSharp.torch.optim.lr_scheduler.LRScheduler;

namespace Optim.Bench.Comparison;

/// <summary>Which optimizer a method drives; each family has its own swept base rate.</summary>
internal enum Family
{
    /// <summary>Optim.FusedSGD with heavy-ball momentum 0.9.</summary>
    Sgd,

    /// <summary>TorchSharp's torch.optim.Adam (β = 0.9, 0.999).</summary>
    Adam,

    /// <summary>Optim.HypergradientSGD with momentum 0.9, starting from the swept SGD rate.</summary>
    Hd,

    /// <summary>Optim.Sls (SGD with a stochastic Armijo line search): finds its own step size, so it has no base rate.</summary>
    Sls,
    /// <summary>Optim.FusedAdamW (β = 0.9, 0.999, decoupled weight decay 0.01), starting from the swept Adam rate.</summary>
    AdamW,

    /// <summary>Optim.HypergradientAdam (β = 0.9, 0.999; normalized rule), starting from the swept Adam rate.</summary>
    AdamHd,
}

/// <summary>How a method's metric-driven scheduler is fed.</summary>
internal enum MetricStepping
{
    /// <summary>The evaluation loss, once per evaluation (the reference usage).</summary>
    Eval,

    /// <summary>The training loss of every step; patience counts steps (× the evaluation interval) and GreedyLR smooths over one interval.</summary>
    Step,
}

/// <summary>The settings every method of one run shares.</summary>
internal sealed record MethodContext(int TotalSteps, int EvalEvery, MetricStepping Stepping, double HypergradLr)
{
    /// <summary>Minibatches per epoch of the task (Sls grows its step size by at most γ per epoch).</summary>
    public int BatchesPerEpoch { get; init; } = 500;
}

/// <summary>
/// A learning-rate method: an optimizer family and a schedule (or a hypergradient scope). A bounded
/// method clips its rate at each step to the task's stability bound (NMF only; docs/nmf-bound.md).
/// </summary>
internal sealed record Method(string Name, Family Family, string Schedule, string Description, bool Bounded = false)
{
    /// <summary>Heavy-ball momentum of the FusedSGD and HD methods (the stability bound depends on it).</summary>
    public const double SgdMomentum = 0.9;

    /// <summary>
    /// The bounded methods' ceiling as a fraction of the stability bound: at the bound itself oscillations
    /// stop decaying (a rate tracking it fails on nmf-synthetic), half of it converges on both NMF matrices.
    /// </summary>
    public const double BoundFraction = 0.5;

    public static readonly string[] Schedules = { "constant", "step", "linear", "cosine", "plateau", "greedylr", "greedylr-trend" };

    public static readonly Method[] All = Build().ToArray();

    /// <summary>Decoupled weight decay of the AdamW methods (PyTorch's default for AdamW).</summary>
    public const double AdamWWeightDecay = 0.01;

    /// <summary>The family whose base rate this method starts from: HD from FusedSGD's, AdamW and HD-Adam from Adam's, else its own.</summary>
    public Family RateFamily => Family switch
    {
        Family.Hd => Family.Sgd,
        Family.AdamW or Family.AdamHd => Family.Adam,
        _ => Family,
    };

    /// <summary>True for the learned schedule (a PPO-trained policy sets the rate every evaluation; Learned/).</summary>
    public bool Learned => Schedule == "learned";

    /// <summary>True for schedulers stepped with a metric (ReduceLROnPlateau, GreedyLR).</summary>
    public bool MetricDriven => Schedule is "plateau" or "greedylr" or "greedylr-trend";

    public static Method Find(string name) => All.FirstOrDefault(m => m.Name == name)
        ?? throw new ArgumentException($"unknown method '{name}'; known: {string.Join(", ", All.Select(m => m.Name))}");

    private static IEnumerable<Method> Build()
    {
        foreach (var (family, prefix, what) in new[] { (Family.Sgd, "sgd", "FusedSGD (momentum 0.9)"), (Family.Adam, "adam", "torch.optim.Adam") })
        {
            yield return new($"{prefix}-constant", family, "constant", $"{what}, constant rate");
            yield return new($"{prefix}-step", family, "step", $"{what}, step decay (MultiStepLR: × 0.1 at 50% and 75% of the steps)");
            yield return new($"{prefix}-linear", family, "linear", $"{what}, linear decay to 1% (LinearLR)");
            yield return new($"{prefix}-cosine", family, "cosine", $"{what}, cosine annealing to 0 after a linear warmup over 5% of the steps (LambdaLR)");
            yield return new($"{prefix}-plateau", family, "plateau", $"{what}, ReduceLROnPlateau (factor 0.5, patience 2)");
            yield return new($"{prefix}-greedylr", family, "greedylr", $"{what}, Optim.GreedyLR (factor 0.9, patience 2)");
            yield return new($"{prefix}-greedylr-trend", family, "greedylr-trend", $"{what}, Optim.GreedyLR in trend mode (factor 0.9, patience 2, warmup 2, cooldown 2)");
        }
        foreach (var schedule in Schedules)
        {
            yield return new($"sgd-{schedule}-bounded", Family.Sgd, schedule,
                $"sgd-{schedule} with its rate clipped each step to half the NMF stability bound 2(1 + β) / L of the minibatch (NMF tasks only)", Bounded: true);
        }
        yield return new("adamw-constant", Family.AdamW, "constant", "FusedAdamW (weight decay 0.01), constant rate");
        yield return new("adamw-cosine", Family.AdamW, "cosine", "FusedAdamW (weight decay 0.01), cosine annealing to 0 after a linear warmup over 5% of the steps (LambdaLR)");
        yield return new("adamw-greedylr", Family.AdamW, "greedylr", "FusedAdamW (weight decay 0.01), Optim.GreedyLR (factor 0.9, patience 2)");
        yield return new("adam-hd-tensor", Family.AdamHd, "tensor", "HypergradientAdam, one rate per tensor (normalized rule, rate kept within [base / 100, base × 10])");
        yield return new("adam-hd-param", Family.AdamHd, "parameter", "HypergradientAdam, one rate per scalar weight (normalized rule, same bounds)");
        yield return new("hd-global", Family.Hd, "global", "HypergradientSGD, one rate (normalized rule, rate kept within [base / 100, base × 10])");
        yield return new("hd-group", Family.Hd, "group", "HypergradientSGD, one rate per param group (layer / factor)");
        yield return new("hd-tensor", Family.Hd, "tensor", "HypergradientSGD, one rate per tensor");
        yield return new("hd-parameter", Family.Hd, "parameter", "HypergradientSGD, one rate per scalar weight");
        yield return new("sgd-learned", Family.Sgd, "learned", "FusedSGD (momentum 0.9), the shipped PPO-trained policy multiplies the rate by 0.5, 1 or 2 at every evaluation " +
            "(rate clipped to half the stability bound on NMF; docs/learned-schedules.md)");
        yield return new("sgd-sls", Family.Sls, "sls", "Optim.Sls: SGD whose step size a stochastic Armijo line search finds on every minibatch " +
            "(the reference's defaults: initial step size 1, c 0.1, β_b 0.9, γ 2 per epoch; charged for every forward pass of its searches)");
    }

    /// <summary>The optimizer of this method over <paramref name="groups"/>, starting at <paramref name="lr"/>.</summary>
    public optim.Optimizer CreateOptimizer(IReadOnlyList<ParameterGroup> groups, double lr, MethodContext c)
    {
        switch (Family)
        {
            case Family.Sgd:
                return new FusedSGD(groups.Select(g => new FusedSGD.ParamGroup(g.Parameters)), lr, momentum: SgdMomentum);
            case Family.Adam:
                return torch.optim.Adam(groups.SelectMany(g => g.Parameters), lr);
            case Family.Sls:
                return new Sls(groups.SelectMany(g => g.Parameters), n_batches_per_epoch: c.BatchesPerEpoch, init_step_size: lr);
            case Family.AdamW:
                return new FusedAdamW(groups.Select(g => new FusedAdam.ParamGroup(g.Parameters)), lr, weight_decay: AdamWWeightDecay);
            case Family.AdamHd:
                return new HypergradientAdam(groups.Select(g => new HypergradientAdam.ParamGroup(g.Parameters)), lr, c.HypergradLr, HdScope,
                    rule: HypergradientRule.Normalized, lr_min: lr / 100, lr_max: lr * 10);
            default:
                var scope = HdScope;
                // The rate stays within [lr / 100, lr × 10], the bounds GreedyLR uses by default: without
                // them a constraint that keeps pushing back (the projection of NMF) grows the rate forever.
                return new HypergradientSGD(groups.Select(g => new HypergradientSGD.ParamGroup(g.Parameters)), lr, c.HypergradLr, scope,
                    momentum: SgdMomentum, rule: HypergradientRule.Normalized, lr_min: lr / 100, lr_max: lr * 10);
        }
    }

    /// <summary>The hypergradient scope a HD method names in its schedule.</summary>
    private HypergradientScope HdScope => Schedule switch
    {
        "global" => HypergradientScope.Global,
        "group" => HypergradientScope.PerGroup,
        "tensor" => HypergradientScope.PerTensor,
        _ => HypergradientScope.PerParameter,
    };

    /// <summary>The scheduler of this method, or null (constant rate, hypergradient descent).</summary>
    public LRScheduler? CreateScheduler(optim.Optimizer opt, MethodContext c)
    {
        int t = c.TotalSteps;
        // In per-step mode the metric schedulers see every step: patience and warmup/cooldown count
        // steps, scaled so that they span the same training as in per-evaluation mode.
        int scale = c.Stepping == MetricStepping.Step ? c.EvalEvery : 1;
        bool smooth = c.Stepping == MetricStepping.Step;
        return Schedule switch
        {
            "step" => torch.optim.lr_scheduler.MultiStepLR(opt, new[] { t / 2, t * 3 / 4 }, 0.1),
            "linear" => torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.01, t),
            "cosine" => torch.optim.lr_scheduler.LambdaLR(opt, s => WarmupCosine(s, t)),
            "plateau" => torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor: 0.5, patience: 2 * scale),
            "greedylr" => new GreedyLR(opt, factor: 0.9, patience: 2 * scale, smooth: smooth, window_size: Math.Max(1, scale)),
            "greedylr-trend" => new GreedyLR(opt, factor: 0.9, patience: 2 * scale, cooldown: 2 * scale, warmup: 2 * scale,
                smooth: smooth, window_size: Math.Max(1, scale), trend: true),
            _ => null,
        };
    }

    /// <summary>Linear warmup from 10% over the first 5% of the steps, then cosine annealing to 0.</summary>
    public static double WarmupCosine(int step, int total)
    {
        int warm = Math.Max(1, total / 20);
        if (step < warm)
        {
            return 0.1 + 0.9 * step / warm;
        }
        double progress = Math.Min(1.0, (double)(step - warm) / Math.Max(1, total - warm));
        return 0.5 * (1 + Math.Cos(Math.PI * progress));
    }

    /// <summary>The rate the method uses now: the group rate, or for hypergradient descent the mean rate per scalar weight.</summary>
    public static double CurrentRate(optim.Optimizer opt)
    {
        var rates = opt switch
        {
            HypergradientSGD hd => hd.TensorLearningRates(),
            HypergradientAdam hda => hda.TensorLearningRates(),
            _ => null,
        };
        if (rates is not null)
        {
            double sum = 0, count = 0;
            int k = 0;
            foreach (var p in opt.parameters())
            {
                long n = p.numel();
                sum += rates[k++] * n;
                count += n;
            }
            return sum / count;
        }
        return opt.ParamGroups.First().LearningRate;
    }
}
