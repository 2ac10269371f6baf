namespace Optim.Bench.Comparison.Learned;

/// <summary>
/// The state the learned schedule sees at an evaluation (docs/learned-schedules.md): the validation and
/// training losses and their trends, the current rate against the base rate, the budget left, gradient-norm
/// statistics of the interval just trained and how often the stability bound clipped it. Every feature is
/// scale-free (logs of ratios) so one policy serves tasks whose losses differ by orders of magnitude.
/// </summary>
internal sealed class ScheduleFeatures
{
    public static readonly string[] Names =
    {
        "log(eval / eval at step 0)",
        "10 × log(eval / previous eval)",
        "10 × log(eval / eval 4 intervals back) / 4",
        "10 × log(train / previous train)",
        "log(train / eval)",
        "log(rate / base rate)",
        "fraction of the budget left",
        "log(mean gradient norm / that of the first interval)",
        "gradient norm std / mean over the interval",
        "fraction of the interval's steps the stability bound clipped",
    };

    public static int Count => Names.Length;

    /// <summary>Every feature is clipped to ± this (a diverging loss must not saturate the network).</summary>
    public const double Limit = 5;

    private double _sum;
    private double _sumSquares;
    private int _steps;
    private int _clipped;
    private double _firstMean = double.NaN;

    /// <summary>Records one training step of the current interval: its gradient norm and whether the bound clipped its rate.</summary>
    public void ObserveStep(double gradNorm, bool clipped)
    {
        _sum += gradNorm;
        _sumSquares += gradNorm * gradNorm;
        _steps++;
        _clipped += clipped ? 1 : 0;
    }

    /// <summary>The features at the last point of <paramref name="curve"/>; starts the next interval.</summary>
    public float[] Take(IReadOnlyList<Point> curve, int totalSteps, double rate, double baseRate)
    {
        double mean = _steps > 0 ? _sum / _steps : 0;
        double variance = _steps > 0 ? Math.Max(0, _sumSquares / _steps - mean * mean) : 0;
        if (double.IsNaN(_firstMean) && _steps > 0)
        {
            _firstMean = mean;
        }
        var features = Compute(curve, totalSteps, rate, baseRate, mean, Math.Sqrt(variance), _firstMean, _steps > 0 ? (double)_clipped / _steps : 0);
        (_sum, _sumSquares, _steps, _clipped) = (0, 0, 0, 0);
        return features;
    }

    /// <summary>
    /// The features from the curve so far (points 0..t; point 0 is the start, which has no training loss)
    /// and the interval's gradient statistics. Missing history (the first intervals) reads as no change.
    /// </summary>
    public static float[] Compute(IReadOnlyList<Point> curve, int totalSteps, double rate, double baseRate,
        double gradMean, double gradStd, double firstGradMean, double clippedFraction)
    {
        int t = curve.Count - 1;
        var now = curve[t];
        double LogRatio(double a, double b) => a > 0 && b > 0 && double.IsFinite(a) && double.IsFinite(b) ? Math.Log(a / b) : 0;
        int back = Math.Min(4, t);
        var values = new[]
        {
            LogRatio(now.EvalLoss, curve[0].EvalLoss),
            t >= 1 ? 10 * LogRatio(now.EvalLoss, curve[t - 1].EvalLoss) : 0,
            back >= 1 ? 10 * LogRatio(now.EvalLoss, curve[t - back].EvalLoss) / back : 0,
            t >= 2 ? 10 * LogRatio(now.TrainLoss, curve[t - 1].TrainLoss) : 0,
            LogRatio(now.TrainLoss, now.EvalLoss),
            LogRatio(rate, baseRate),
            1 - (double)now.Step / totalSteps,
            LogRatio(gradMean, firstGradMean),
            gradMean > 0 ? gradStd / gradMean : 0,
            clippedFraction,
        };
        return values.Select(v => (float)Math.Clamp(v, -Limit, Limit)).ToArray();
    }
}
