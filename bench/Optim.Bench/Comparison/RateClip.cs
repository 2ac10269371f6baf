using TorchSharp;

namespace Optim.Bench.Comparison;

/// <summary>
/// Caps every param group's rate at a bound for one step and restores the scheduled rates afterwards,
/// so the clip composes with any schedule: the scheduler never sees the clipped rate.
/// </summary>
internal readonly struct RateClip : IDisposable
{
    private readonly torch.optim.Optimizer _opt;
    private readonly double[] _scheduled;

    private RateClip(torch.optim.Optimizer opt, double[] scheduled) => (_opt, _scheduled) = (opt, scheduled);

    /// <summary>Whether the last <see cref="Apply"/> lowered any rate.</summary>
    public bool Clipped { get; private init; }

    /// <summary>Lowers each group's rate to <paramref name="bound"/> where it is above it, until disposed.</summary>
    public static RateClip Apply(torch.optim.Optimizer opt, double bound)
    {
        var groups = opt.ParamGroups.ToList();
        var scheduled = groups.Select(g => g.LearningRate).ToArray();
        bool clipped = false;
        foreach (var g in groups)
        {
            if (g.LearningRate > bound)
            {
                g.LearningRate = bound;
                clipped = true;
            }
        }
        return new RateClip(opt, scheduled) { Clipped = clipped };
    }

    public void Dispose()
    {
        int i = 0;
        foreach (var g in _opt.ParamGroups)
        {
            g.LearningRate = _scheduled[i++];
        }
    }
}
