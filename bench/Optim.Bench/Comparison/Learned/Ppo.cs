using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Bench.Comparison.Learned;

/// <summary>One decision of an episode: what the agent saw, chose (with its log-probability and value then) and earned.</summary>
internal sealed record Transition(float[] Observation, int Action, double LogProb, double Value, double Reward);

/// <summary>PPO's settings (docs/learned-schedules.md says why these).</summary>
internal sealed record PpoSettings
{
    /// <summary>Discount: 1, so an episode's return is its whole log-improvement of the validation loss.</summary>
    public double Gamma { get; init; } = 1.0;

    /// <summary>GAE's λ.</summary>
    public double Lambda { get; init; } = 0.95;

    /// <summary>The surrogate's clip ε: the probability ratio counts only within [1 − ε, 1 + ε].</summary>
    public double Clip { get; init; } = 0.2;

    /// <summary>Passes over each batch of episodes.</summary>
    public int Epochs { get; init; } = 4;

    public int Minibatch { get; init; } = 64;

    /// <summary>Adam's rate for the actor-critic.</summary>
    public double LearningRate { get; init; } = 3e-3;

    public double ValueCoefficient { get; init; } = 0.5;

    public double EntropyCoefficient { get; init; } = 0.01;

    /// <summary>The gradient of each minibatch is clipped to this norm.</summary>
    public double MaxGradNorm { get; init; } = 0.5;
}

/// <summary>What one PPO update did (means over its minibatches).</summary>
internal sealed record PpoStats(double PolicyLoss, double ValueLoss, double Entropy, double ApproxKl);

/// <summary>
/// Proximal policy optimisation (Schulman et al. 2017) of a <see cref="PolicyNetwork"/>: generalised
/// advantage estimates (GAE) over whole episodes, then several epochs of the clipped surrogate plus a
/// value loss and an entropy bonus, minibatched, with Adam.
/// </summary>
internal sealed class PpoTrainer : IDisposable
{
    private readonly PolicyNetwork _policy;
    private readonly PpoSettings _s;
    private readonly optim.Optimizer _opt;
    private readonly Random _shuffle;

    public PpoTrainer(PolicyNetwork policy, PpoSettings settings, int seed)
    {
        (_policy, _s) = (policy, settings);
        _opt = torch.optim.Adam(policy.parameters(), settings.LearningRate);
        _shuffle = new Random(seed);
    }

    /// <summary>
    /// GAE of one episode that ended (no value after its last decision): δ_t = r_t + γ v_{t+1} − v_t,
    /// A_t = δ_t + γλ A_{t+1}; the value targets are A_t + v_t.
    /// </summary>
    public static (double[] Advantages, double[] Returns) Gae(IReadOnlyList<double> rewards, IReadOnlyList<double> values, double gamma, double lambda)
    {
        int n = rewards.Count;
        var advantages = new double[n];
        var returns = new double[n];
        double next = 0;
        for (int t = n - 1; t >= 0; t--)
        {
            double nextValue = t + 1 < n ? values[t + 1] : 0;
            double delta = rewards[t] + gamma * nextValue - values[t];
            next = delta + gamma * lambda * next;
            advantages[t] = next;
            returns[t] = next + values[t];
        }
        return (advantages, returns);
    }

    /// <summary>The clipped surrogate loss −mean(min(ρA, clip(ρ, 1 − ε, 1 + ε)A)) with ρ = exp(log π − log π_old).</summary>
    public static Tensor ClippedSurrogateLoss(Tensor logProb, Tensor oldLogProb, Tensor advantages, double clip)
    {
        using var scope = torch.NewDisposeScope();
        var ratio = (logProb - oldLogProb).exp();
        var unclipped = ratio * advantages;
        var clipped = ratio.clamp(1 - clip, 1 + clip) * advantages;
        return torch.minimum(unclipped, clipped).mean().neg().MoveToOuterDisposeScope();
    }

    /// <summary>One PPO update from <paramref name="episodes"/> (each collected by the current policy).</summary>
    public PpoStats Update(IReadOnlyList<IReadOnlyList<Transition>> episodes)
    {
        var samples = episodes.SelectMany(e =>
        {
            var (adv, ret) = Gae(e.Select(x => x.Reward).ToList(), e.Select(x => x.Value).ToList(), _s.Gamma, _s.Lambda);
            return e.Select((x, i) => (x, Advantage: adv[i], Return: ret[i]));
        }).ToList();
        if (samples.Count == 0)
        {
            throw new ArgumentException("PPO needs at least one transition.");
        }
        // Advantages normalised over the batch: the tasks' returns differ in scale.
        double mean = samples.Average(s => s.Advantage);
        double std = Math.Sqrt(samples.Average(s => (s.Advantage - mean) * (s.Advantage - mean)));
        double scale = std > 1e-8 ? 1 / std : 1;
        double policySum = 0, valueSum = 0, entropySum = 0, klSum = 0;
        int batches = 0;
        var order = Enumerable.Range(0, samples.Count).ToArray();
        for (int epoch = 0; epoch < _s.Epochs; epoch++)
        {
            _shuffle.Shuffle(order);
            for (int start = 0; start < order.Length; start += _s.Minibatch)
            {
                using var scope = torch.NewDisposeScope();
                var idx = order.Skip(start).Take(_s.Minibatch).Select(i => samples[i]).ToList();
                var obs = torch.tensor(idx.SelectMany(s => s.x.Observation).ToArray()).reshape(idx.Count, _policy.Inputs);
                var actions = torch.tensor(idx.Select(s => (long)s.x.Action).ToArray());
                var oldLogProb = torch.tensor(idx.Select(s => (float)s.x.LogProb).ToArray());
                var advantages = torch.tensor(idx.Select(s => (float)((s.Advantage - mean) * scale)).ToArray());
                var returns = torch.tensor(idx.Select(s => (float)s.Return).ToArray());
                var (logProb, entropy, value) = _policy.Evaluate(obs, actions);
                var policyLoss = ClippedSurrogateLoss(logProb, oldLogProb, advantages, _s.Clip);
                var valueLoss = (value - returns).square().mean();
                var meanEntropy = entropy.mean();
                var loss = policyLoss + _s.ValueCoefficient * valueLoss - _s.EntropyCoefficient * meanEntropy;
                _opt.zero_grad();
                loss.backward();
                torch.nn.utils.clip_grad_norm_(_policy.parameters(), _s.MaxGradNorm);
                _opt.step();
                policySum += policyLoss.ToDouble();
                valueSum += valueLoss.ToDouble();
                entropySum += meanEntropy.ToDouble();
                klSum += (oldLogProb - logProb).mean().ToDouble();
                batches++;
            }
        }
        return new PpoStats(policySum / batches, valueSum / batches, entropySum / batches, klSum / batches);
    }

    public void Dispose() => _opt.Dispose();
}
