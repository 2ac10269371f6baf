using System.Runtime.InteropServices;

namespace Optim.Interop;

/// <summary>GreedyLR's hyperparameters, the mirror of <c>optim_greedylr_config</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct GreedyLRConfig
{
    /// <summary>In (0, 1): decrease multiplies by it, increase divides by it.</summary>
    public double Factor;
    /// <summary>Margin an evaluation must beat the best by (≥ 0).</summary>
    public double Threshold;
    /// <summary>A new rate is written only if it moves by more than this (≥ 0).</summary>
    public double Eps;
    /// <summary>0: lower is better; 1: higher is better.</summary>
    public int Mode;
    /// <summary>0: absolute threshold; 1: relative.</summary>
    public int ThresholdMode;
    /// <summary>A change fires on the (patience+1)-th consecutive good or bad evaluation.</summary>
    public int Patience;
    /// <summary>Evaluations ignored after a decrease.</summary>
    public int Cooldown;
    /// <summary>Evaluations ignored after an increase.</summary>
    public int Warmup;
    /// <summary>Rolling-mean window (≥ 1) when <see cref="Smooth"/> is 1.</summary>
    public int WindowSize;
    /// <summary>Decreases at the floor before a full reset (0: never).</summary>
    public int ResetStart;
    /// <summary>1: compare the rolling mean of the metric.</summary>
    public int Smooth;
    /// <summary>1: warmup and cooldown evaluations keep increasing and decreasing.</summary>
    public int Trend;
    /// <summary>Number of rates (param groups).</summary>
    public int Groups;
}

/// <summary>GreedyLR's counters, the mirror of <c>optim_greedylr_state</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct GreedyLRCounters
{
    /// <summary>Best (possibly smoothed) metric so far; ±∞ before the first.</summary>
    public double Best;
    /// <summary>Consecutive improving evaluations.</summary>
    public long NumGood;
    /// <summary>Consecutive non-improving evaluations.</summary>
    public long NumBad;
    /// <summary>Evaluations of cooldown left.</summary>
    public long CooldownCounter;
    /// <summary>Evaluations of warmup left.</summary>
    public long WarmupCounter;
    /// <summary>Decreases at the floor left before a full reset.</summary>
    public long ResetBudget;
    /// <summary>Values in the smoothing window.</summary>
    public long WindowCount;
    /// <summary>Ring-buffer slot the next value goes to.</summary>
    public long WindowNext;
    /// <summary>Evaluations seen.</summary>
    public long Steps;
    /// <summary>Full resets done.</summary>
    public long Resets;
}

/// <summary>The native GreedyLR update (see <c>optim_greedylr_step</c>).</summary>
internal static unsafe class GreedyLRNative
{
    /// <summary>Checks <paramref name="config"/> and returns the initial counters.</summary>
    public static GreedyLRCounters Init(in GreedyLRConfig config)
    {
        OptimNative.EnsureLoaded();
        GreedyLRCounters state;
        fixed (GreedyLRConfig* c = &config)
        {
            OptimNative.ThrowIfFailed(NativeMethods.optim_greedylr_init(c, &state));
        }
        return state;
    }

    /// <summary>One evaluation on the CPU; <paramref name="rates"/> is updated in place.</summary>
    public static void Step(in GreedyLRConfig config, ref GreedyLRCounters state, Span<double> rates, ReadOnlySpan<double> initialRates,
        ReadOnlySpan<double> minLr, ReadOnlySpan<double> maxLr, Span<double> window, double metric)
    {
        OptimNative.EnsureLoaded();
        int g = config.Groups;
        if (rates.Length != g || initialRates.Length != g || minLr.Length != g || maxLr.Length != g)
        {
            throw new ArgumentException($"GreedyLR: {g} groups, but {rates.Length} rates, {initialRates.Length} initial rates, {minLr.Length} min_lr and {maxLr.Length} max_lr.");
        }
        if (window.Length != config.WindowSize)
        {
            throw new ArgumentException($"GreedyLR: the window has {window.Length} slots but window_size is {config.WindowSize}.", nameof(window));
        }
        fixed (GreedyLRConfig* c = &config)
        fixed (GreedyLRCounters* s = &state)
        fixed (double* r = rates)
        fixed (double* i = initialRates)
        fixed (double* lo = minLr)
        fixed (double* hi = maxLr)
        fixed (double* w = window)
        {
            var buffers = new GreedyLRBuffers { Rates = r, InitialRates = i, MinLr = lo, MaxLr = hi, Window = w };
            OptimNative.ThrowIfFailed(NativeMethods.optim_greedylr_step((int)NativeDevice.Cpu, 0, c, s, &buffers, &metric, (int)NativeDType.Float64));
        }
    }

    /// <summary>
    /// One evaluation on a CUDA device: every pointer is device memory of <paramref name="deviceIndex"/>
    /// (the state a <see cref="GreedyLRCounters"/>, the arrays doubles, the metric one element). Launches
    /// a one-thread kernel on the calling thread's stream (<see cref="OptimNative.SetCudaStream"/>) and returns
    /// without waiting.
    /// </summary>
    public static void StepOnDevice(int deviceIndex, in GreedyLRConfig config, nint state, nint rates, nint initialRates,
        nint minLr, nint maxLr, nint window, nint metric, NativeDType metricDtype)
    {
        OptimNative.EnsureLoaded();
        fixed (GreedyLRConfig* c = &config)
        {
            var buffers = new GreedyLRBuffers
            {
                Rates = (double*)rates,
                InitialRates = (double*)initialRates,
                MinLr = (double*)minLr,
                MaxLr = (double*)maxLr,
                Window = (double*)window,
            };
            OptimNative.ThrowIfFailed(NativeMethods.optim_greedylr_step((int)NativeDevice.Cuda, deviceIndex, c, (GreedyLRCounters*)state,
                &buffers, (void*)metric, (int)metricDtype));
        }
    }
}
