using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Bench.Comparison;

/// <summary>
/// The largest singular value of a matrix by power iteration on AᵀA, warm-started from the previous
/// call's right singular vector (the columns of the matrices it is used on are fixed across steps, so the
/// vector carries over even when the rows are another minibatch's). Underestimates by construction.
/// </summary>
internal sealed class PowerIteration : IDisposable
{
    /// <summary>Iterations of the first call, from the all-ones vector (the Perron vector of a non-negative matrix is positive).</summary>
    public const int ColdIterations = 20;

    private readonly int _iterations;
    private Tensor? _v;

    public PowerIteration(int iterations) => _iterations = iterations;

    /// <summary>‖A‖₂ estimated with the configured number of iterations (<see cref="ColdIterations"/> the first time).</summary>
    public double SpectralNorm(Tensor a)
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var m = a.detach().to(ScalarType.Float64);
        long n = m.shape[1];
        int iterations = _iterations;
        if (_v is null || _v.shape[0] != n)
        {
            _v?.Dispose();
            _v = torch.ones(n, dtype: ScalarType.Float64).div_(Math.Sqrt(n)).DetachFromDisposeScope();
            iterations = Math.Max(iterations, ColdIterations);
        }
        var v = _v;
        for (int i = 0; i < iterations; i++)
        {
            var next = m.t().mv(m.mv(v));
            double norm = next.norm().ToDouble();
            if (!(norm > 0) || !double.IsFinite(norm))
            {
                return norm > 0 ? double.PositiveInfinity : 0.0;
            }
            v = next.div_(norm);
        }
        _v.Dispose();
        _v = v.DetachFromDisposeScope();
        return m.mv(_v).norm().ToDouble();
    }

    public void Dispose() => _v?.Dispose();
}

/// <summary>
/// The stability bound of a projected-SGD step on the minibatch NMF loss f = (1/b)‖X_B − W_B H‖²_F
/// (docs/nmf-bound.md): the curvature of f at the current factors is at most
/// L = (2/b)(‖W_B‖₂² + ‖H‖₂² + ‖R‖₂) with R = X_B − W_B H, and a heavy-ball step of momentum β is
/// stable on the local quadratic model for rates below 2(1 + β) / L. One instance per run: it keeps the
/// warm-started power iterations of W_B, H and R.
/// </summary>
internal sealed class NmfStability : IDisposable
{
    /// <summary>Power iterations per matrix and step after the first (warm-started).</summary>
    public const int WarmIterations = 3;

    private readonly PowerIteration _w = new(WarmIterations);
    private readonly PowerIteration _h = new(WarmIterations);
    private readonly PowerIteration _r = new(WarmIterations);

    /// <summary>The smoothness bound L of the minibatch loss at (W_B, H) and its parts.</summary>
    public Curvature Measure(Tensor xBatch, Tensor wBatch, Tensor h)
    {
        using var noGrad = torch.no_grad();
        using var residual = xBatch - wBatch.matmul(h);
        double w = _w.SpectralNorm(wBatch);
        double hn = _h.SpectralNorm(h);
        double r = _r.SpectralNorm(residual);
        return new Curvature(w * w, hn * hn, r, xBatch.shape[0]);
    }

    public void Dispose()
    {
        _w.Dispose();
        _h.Dispose();
        _r.Dispose();
    }
}

/// <summary>
/// The parts of the curvature bound of the minibatch NMF loss over <paramref name="Rows"/> rows:
/// ‖W_B‖₂², ‖H‖₂² (the Gauss–Newton part, exact for its top eigenvalue) and ‖R‖₂ (the residual's cross term).
/// </summary>
internal sealed record Curvature(double WNormSquared, double HNormSquared, double ResidualNorm, long Rows)
{
    /// <summary>Upper bound on the top eigenvalue of the Hessian of f = (1/b)‖X_B − W_B H‖²_F.</summary>
    public double Smoothness => 2.0 / Rows * (WNormSquared + HNormSquared + ResidualNorm);

    /// <summary>The largest stable rate of a heavy-ball step of momentum <paramref name="momentum"/> (β = 0: plain SGD, 2 / L).</summary>
    public double StableRate(double momentum) => 2.0 * (1.0 + momentum) / Smoothness;
}
