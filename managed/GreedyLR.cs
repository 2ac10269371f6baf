using System.Globalization;
using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

/// <summary>
/// GreedyLR: raises every param group's learning rate while the monitored metric keeps improving and
/// lowers it while it does not, with patience, thresholds, cooldown, warmup, bounds, smoothing and a
/// full reset after a long stay at the floor (Subramanian et al., arXiv:2512.14527, 2025). Stepped like
/// <c>ReduceLROnPlateau</c>: <c>scheduler.step(metric)</c>, usually once per evaluation on the
/// validation loss. Drives any TorchSharp optimizer through its param groups' <c>LearningRate</c>,
/// which holds the new rate right after <see cref="step(double)"/>.
/// </summary>
/// <remarks>
/// <para>With every parameter given explicitly, the schedule equals the authors' reference (Hugging Face
/// transformers' <c>GreedyLR</c>) step for step. Deliberate differences, each to avoid a trap of the
/// reference:</para>
/// <list type="bullet">
/// <item><c>min_lr</c> defaults to each group's initial rate / 100 (the reference: 1e-3 absolute, which
/// is above typical fine-tuning rates, so the rate could never go down); <c>max_lr</c> defaults to each
/// group's initial rate × 10 (the reference: 1.0). For an initial rate of 0.1 both equal the
/// reference's.</item>
/// <item>An infinite metric, like NaN, never counts as an improvement (in the reference −∞ in min mode
/// would become the best forever), and a NaN or infinite metric never enters the smoothing window (it
/// would poison the mean for <c>window_size</c> evaluations).</item>
/// </list>
/// <para><c>eps</c> keeps the reference's 1e-8: rates below about 2e-7 (at factor 0.95) then no longer
/// move; pass a smaller eps for such rates. <c>trend: true</c> is our addition to the reference
/// (docs/greedylr.md, "Trend mode"): each warmup evaluation applies one more increase and each cooldown
/// evaluation one more decrease, within the bounds (these extra moves do not count against the reset budget).</para>
/// <para>The state machine runs in the native library (the same function serves a one-thread CUDA
/// kernel for <see cref="step(Tensor)"/> on a GPU). Save and load the full state with
/// <see cref="save_state_dict(BinaryWriter)"/> and <see cref="load_state_dict(BinaryReader)"/>.</para>
/// <para>Threads: a scheduler is stepped on the thread that uses its optimizer, never during the
/// optimizer's step (it writes the rates the step reads) nor from two threads at once. Separate
/// schedulers of separate optimizers may run on separate threads.</para>
/// </remarks>
public sealed class GreedyLR : lr_scheduler.LRScheduler
{
    private const string FormatTag = "Optim.GreedyLR";
    private const int FormatVersion = 1;

    private readonly Optimizer _optimizer;
    private GreedyLRConfig _config;
    private GreedyLRCounters _counters;
    private double[] _rates;
    private double[] _spareRates = Array.Empty<double>();
    private double[] _initial;
    private double[] _minLr;
    private double[] _maxLr;
    private double[] _window;
    private readonly IList<double>? _baseLastLrs;

    /// <summary>Creates the scheduler. Bounds lists hold one value for every group, or one value per group.</summary>
    /// <param name="optimizer">Any TorchSharp optimizer (TorchSharp's SGD or Adam, or ours).</param>
    /// <param name="mode">"min": lower is better; "max": higher is better.</param>
    /// <param name="factor">In (0, 1): a decrease multiplies the rate by it, an increase divides by it.</param>
    /// <param name="patience">A change fires on the (patience+1)-th consecutive good or bad evaluation (≥ 0).</param>
    /// <param name="threshold">Margin an evaluation must beat the best by (≥ 0).</param>
    /// <param name="threshold_mode">"abs" or "rel", as in ReduceLROnPlateau.</param>
    /// <param name="cooldown">Evaluations ignored after a decrease (≥ 0).</param>
    /// <param name="warmup">Evaluations ignored after an increase (≥ 0; not a ramp-up).</param>
    /// <param name="min_lr">Floor(s); default each group's initial rate / 100.</param>
    /// <param name="max_lr">Ceiling(s); default each group's initial rate × 10.</param>
    /// <param name="eps">A new rate is written only if it moves by more than eps (≥ 0).</param>
    /// <param name="smooth">Compare the rolling mean of the last <paramref name="window_size"/> metrics.</param>
    /// <param name="window_size">Rolling-mean window (≥ 1).</param>
    /// <param name="reset_start">Decreases at the floor before a full reset (≥ 0; 0 never resets).</param>
    /// <param name="trend">Keep increasing (decreasing) through warmup (cooldown) evaluations.</param>
    /// <exception cref="ArgumentException">An invalid hyperparameter, bound list or mode string.</exception>
    public GreedyLR(Optimizer optimizer, string mode = "min", double factor = 0.95, int patience = 10, double threshold = 1e-6,
        string threshold_mode = "abs", int cooldown = 0, int warmup = 0, IList<double>? min_lr = null, IList<double>? max_lr = null,
        double eps = 1e-8, bool smooth = false, int window_size = 50, int reset_start = 500, bool trend = false)
        : base(optimizer ?? throw new ArgumentNullException(nameof(optimizer)), -1, false)
    {
        _optimizer = optimizer;
        var groups = optimizer.ParamGroups.ToList();
        if (groups.Count == 0)
        {
            throw new ArgumentException("GreedyLR: the optimizer has no param groups.", nameof(optimizer));
        }
        int modeCode = mode switch
        {
            "min" => 0,
            "max" => 1,
            _ => throw new ArgumentException($"GreedyLR: mode '{mode}' is unknown; use \"min\" or \"max\".", nameof(mode)),
        };
        int thresholdCode = threshold_mode switch
        {
            "abs" => 0,
            "rel" => 1,
            _ => throw new ArgumentException($"GreedyLR: threshold_mode '{threshold_mode}' is unknown; use \"abs\" or \"rel\".", nameof(threshold_mode)),
        };
        Check(factor > 0 && factor < 1, nameof(factor), $"factor must be in (0, 1), got {Fmt(factor)}");
        Check(patience >= 0, nameof(patience), $"patience must be >= 0, got {patience}");
        Check(double.IsFinite(threshold) && threshold >= 0, nameof(threshold), $"threshold must be finite and >= 0, got {Fmt(threshold)}");
        Check(cooldown >= 0, nameof(cooldown), $"cooldown must be >= 0, got {cooldown}");
        Check(warmup >= 0, nameof(warmup), $"warmup must be >= 0, got {warmup}");
        Check(double.IsFinite(eps) && eps >= 0, nameof(eps), $"eps must be finite and >= 0, got {Fmt(eps)}");
        Check(window_size >= 1, nameof(window_size), $"window_size must be >= 1, got {window_size}");
        Check(reset_start >= 0, nameof(reset_start), $"reset_start must be >= 0, got {reset_start}");

        int n = groups.Count;
        _initial = groups.Select(g => g.LearningRate).ToArray();
        for (int g = 0; g < n; g++)
        {
            Check(double.IsFinite(_initial[g]) && _initial[g] >= 0, nameof(optimizer), $"param group {g} has an invalid learning rate {Fmt(_initial[g])}");
        }
        _minLr = Bounds(min_lr, nameof(min_lr), n, g => _initial[g] / 100);
        _maxLr = Bounds(max_lr, nameof(max_lr), n, g => _initial[g] * 10);
        for (int g = 0; g < n; g++)
        {
            Check(double.IsFinite(_minLr[g]) && _minLr[g] >= 0, nameof(min_lr), $"min_lr[{g}] must be finite and >= 0, got {Fmt(_minLr[g])}");
            Check(!double.IsNaN(_maxLr[g]) && _maxLr[g] >= _minLr[g], nameof(min_lr), $"min_lr[{g}] = {Fmt(_minLr[g])} is greater than max_lr[{g}] = {Fmt(_maxLr[g])}");
        }
        _config = new GreedyLRConfig
        {
            Factor = factor,
            Threshold = threshold,
            Eps = eps,
            Mode = modeCode,
            ThresholdMode = thresholdCode,
            Patience = patience,
            Cooldown = cooldown,
            Warmup = warmup,
            WindowSize = window_size,
            ResetStart = reset_start,
            Smooth = smooth ? 1 : 0,
            Trend = trend ? 1 : 0,
            Groups = n,
        };
        _counters = GreedyLRNative.Init(_config);
        _rates = (double[])_initial.Clone();
        _window = new double[window_size];
        // TorchSharp's get_last_lr() returns its internal list (not virtual); keep that list current.
        _baseLastLrs = get_last_lr() as IList<double>;
    }

    private static string Fmt(double v) => v.ToString("R", CultureInfo.InvariantCulture);

    private static void Check(bool ok, string param, string message)
    {
        if (!ok)
        {
            throw new ArgumentException("GreedyLR: " + message, param);
        }
    }

    private static double[] Bounds(IList<double>? given, string name, int groups, Func<int, double> fallback)
    {
        if (given is null)
        {
            return Enumerable.Range(0, groups).Select(fallback).ToArray();
        }
        if (given.Count == 1)
        {
            return Enumerable.Repeat(given[0], groups).ToArray();
        }
        if (given.Count != groups)
        {
            throw new ArgumentException($"GreedyLR: {name} has {given.Count} values but the optimizer has {groups} param groups; give one value, or one per group.", name);
        }
        return given.ToArray();
    }

    /// <summary>Not used with GreedyLR, which needs a metric: call <see cref="step(double)"/>.</summary>
    /// <exception cref="InvalidOperationException">Always.</exception>
    public override void step() =>
        throw new InvalidOperationException("step() should not be used with the GreedyLR scheduler. Use step(double metric), instead.");

    /// <summary>Not used with GreedyLR, which needs a metric: call <see cref="step(double)"/>.</summary>
    /// <exception cref="InvalidOperationException">Always.</exception>
    public override void step(int? epoch) =>
        throw new InvalidOperationException("step(int?) should not be used with the GreedyLR scheduler. Use step(double metric), instead.");

    /// <summary>
    /// One evaluation of the monitored metric. Reads each group's current rate, updates the state, and
    /// writes the new rates to the param groups. A NaN or infinite metric counts as "not better".
    /// </summary>
    /// <param name="metric">The metric (for example the validation loss).</param>
    /// <exception cref="ArgumentException">A group's rate is invalid (negative or not finite).</exception>
    /// <exception cref="InvalidOperationException">Param groups were added after the scheduler was created.</exception>
    // Declared here (not only as the override below) so that step(0.5) binds to it: C# looks at this
    // class's own methods first, and would otherwise pick step(Tensor) through TorchSharp's implicit
    // double-to-Tensor conversion.
    public void step(double metric) => StepCore(metric);

    /// <summary>
    /// One evaluation of the monitored metric, through TorchSharp's scheduler interface (the same as
    /// <see cref="step(double)"/>).
    /// </summary>
    /// <param name="current">The metric.</param>
    /// <param name="epoch">Ignored (accepted for symmetry with ReduceLROnPlateau).</param>
    public override void step(double current, int? epoch = null) => StepCore(current);

    private void StepCore(double current)
    {
        PullFromDevice();
        // TorchSharp's optimizers keep their groups in a List<ParamGroup>: read through the covariant
        // IReadOnlyList, it is used as is (no copy per step).
        var groups = _optimizer.ParamGroups as IReadOnlyList<ILearningRateController> ?? _optimizer.ParamGroups.ToList();
        CheckGroupCount(groups.Count);
        // The step works on a second array, swapped in once the native step has succeeded.
        if (_spareRates.Length != _rates.Length)
        {
            _spareRates = new double[_rates.Length];
        }
        var rates = _spareRates;
        for (int g = 0; g < rates.Length; g++)
        {
            rates[g] = groups[g].LearningRate;
        }
        var counters = _counters;
        GreedyLRNative.Step(_config, ref counters, rates, _initial, _minLr, _maxLr, _window, current);
        // The native step validated everything before changing anything: commit.
        _counters = counters;
        _spareRates = _rates;
        _rates = rates;
        for (int g = 0; g < rates.Length; g++)
        {
            groups[g].LearningRate = rates[g];
            if (_baseLastLrs is not null && g < _baseLastLrs.Count)
            {
                _baseLastLrs[g] = rates[g];
            }
        }
        _step_count++;
    }

    /// <summary>
    /// One evaluation of a one-element metric tensor (for example a 0-d loss). On the CPU this is
    /// <see cref="step(double)"/> with the tensor's value. For a CUDA metric driving an Optim fused
    /// optimizer whose parameters are on that device, the sync-free path: the state lives in device
    /// memory, a one-thread kernel updates it from the metric in place, and the fused kernels read the new
    /// rates there, so no step waits for the host; the param groups' <c>LearningRate</c> are refreshed
    /// only when <see cref="LearningRates"/> or <see cref="State"/> is read (which copies back). With
    /// any other optimizer a CUDA metric is read back to the host first (one synchronization).
    /// </summary>
    /// <remarks>The CUDA kernel is checked against the CPU state machine on an H200, but
    /// this managed wiring has not yet run on a GPU (TorchSharp-cpu cannot create CUDA tensors).</remarks>
    /// <exception cref="ArgumentException">The tensor does not hold exactly one float32 or float64 element.</exception>
    public void step(Tensor metric)
    {
        ArgumentNullException.ThrowIfNull(metric);
        if (metric.numel() != 1)
        {
            throw new ArgumentException($"GreedyLR: the metric tensor must hold exactly one element, but it has {metric.numel()}.", nameof(metric));
        }
        if (metric.device_type == DeviceType.CUDA && _optimizer is FusedSGD fused)
        {
            StepOnDevice(metric, fused);
            return;
        }
        StepCore(metric.ToDouble());
    }

    // ---- The device-resident state (CUDA) ----------------------------------------------------------

    private GreedyLRDeviceState? _device;

    // Param groups added after the scheduler was created have no state here: refused on both paths.
    private void CheckGroupCount(int groups)
    {
        if (groups != _config.Groups)
        {
            throw new InvalidOperationException($"GreedyLR: the optimizer now has {groups} param groups, but the scheduler was created for {_config.Groups}.");
        }
    }

    private void StepOnDevice(Tensor metric, FusedSGD fused)
    {
        CheckGroupCount(fused.ParamGroups.Count());
        if (metric.dtype != ScalarType.Float32 && metric.dtype != ScalarType.Float64)
        {
            throw new ArgumentException($"GreedyLR: a CUDA metric must be float32 or float64, not {metric.dtype}.", nameof(metric));
        }
        if (_device is null)
        {
            var groups = _optimizer.ParamGroups.ToList();
            for (int i = 0; i < groups.Count; i++)
            {
                _rates[i] = groups[i].LearningRate;
            }
            _device = GreedyLRDeviceState.Push(metric.device, fused, _counters, _rates, _initial, _minLr, _maxLr, _window);
        }
        if (metric.device_index != _device.Device.index)
        {
            throw new ArgumentException($"GreedyLR: the metric is on cuda:{metric.device_index} but the scheduler's state is on cuda:{_device.Device.index}.", nameof(metric));
        }
        _device.Step(_config, metric);
        _step_count++;
    }

    // Copies the device state back (a synchronization), refreshes the param groups, and leaves the
    // device path: the next CUDA step pushes the state again.
    private void PullFromDevice()
    {
        if (_device is null)
        {
            return;
        }
        (_counters, _rates, _window) = _device.Pull();
        _device.Dispose();
        _device = null;
        var groups = _optimizer.ParamGroups.ToList();
        for (int i = 0; i < _rates.Length; i++)
        {
            groups[i].LearningRate = _rates[i];
            if (_baseLastLrs is not null && i < _baseLastLrs.Count)
            {
                _baseLastLrs[i] = _rates[i];
            }
        }
    }

    /// <summary>
    /// The rates of the param groups after the last step (the initial rates before the first). On the
    /// CUDA path this copies the state back from the device and refreshes the param groups.
    /// </summary>
    public IReadOnlyList<double> LearningRates
    {
        get
        {
            PullFromDevice();
            return Array.AsReadOnly((double[])_rates.Clone());
        }
    }

    /// <summary>A snapshot of the whole state (counters, window, rates and bounds).</summary>
    public GreedyLRState State
    {
        get
        {
            PullFromDevice();
            var window = new double[_counters.WindowCount];
            long start = ((_counters.WindowNext - _counters.WindowCount) % _config.WindowSize + _config.WindowSize) % _config.WindowSize;
            for (int i = 0; i < window.Length; i++)
            {
                window[i] = _window[(start + i) % _config.WindowSize];
            }
            return new GreedyLRState(_counters.Best, _counters.NumGood, _counters.NumBad, _counters.CooldownCounter, _counters.WarmupCounter,
                _counters.ResetBudget, _counters.Steps, _counters.Resets, Array.AsReadOnly(window), LearningRates,
                Array.AsReadOnly((double[])_initial.Clone()), Array.AsReadOnly((double[])_minLr.Clone()), Array.AsReadOnly((double[])_maxLr.Clone()));
        }
    }

    /// <summary>The hyperparameters in force (the constructor's, or those restored by <see cref="load_state_dict(BinaryReader)"/>).</summary>
    public GreedyLRSettings Config => new(
        _config.Mode == 0 ? "min" : "max", _config.Factor, _config.Patience, _config.Threshold, _config.ThresholdMode == 0 ? "abs" : "rel",
        _config.Cooldown, _config.Warmup, _config.Eps, _config.Smooth != 0, _config.WindowSize, _config.ResetStart, _config.Trend != 0);

    /// <summary>Writes the full state (hyperparameters, counters, window, rates, bounds) to <paramref name="writer"/>.</summary>
    public void save_state_dict(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        PullFromDevice();
        writer.Write(FormatTag);
        writer.Write(FormatVersion);
        var c = _config;
        writer.Write(c.Factor);
        writer.Write(c.Threshold);
        writer.Write(c.Eps);
        foreach (var v in new[] { c.Mode, c.ThresholdMode, c.Patience, c.Cooldown, c.Warmup, c.WindowSize, c.ResetStart, c.Smooth, c.Trend, c.Groups })
        {
            writer.Write(v);
        }
        var s = _counters;
        writer.Write(s.Best);
        foreach (var v in new[] { s.NumGood, s.NumBad, s.CooldownCounter, s.WarmupCounter, s.ResetBudget, s.WindowCount, s.WindowNext, s.Steps, s.Resets })
        {
            writer.Write(v);
        }
        foreach (var array in new[] { _rates, _initial, _minLr, _maxLr, _window })
        {
            foreach (var v in array)
            {
                writer.Write(v);
            }
        }
    }

    /// <summary>Writes the full state to a file.</summary>
    public void save_state_dict(string location)
    {
        using var stream = File.Create(location);
        using var writer = new BinaryWriter(stream);
        save_state_dict(writer);
    }

    /// <summary>
    /// Restores a state written by <see cref="save_state_dict(BinaryWriter)"/>, hyperparameters included, so
    /// a resumed run evolves exactly as the saved one would have. Nothing changes if the data is invalid.
    /// </summary>
    /// <exception cref="InvalidDataException">Not a GreedyLR state, an unknown version, or invalid contents.</exception>
    public void load_state_dict(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        try
        {
            LoadCore(reader);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("GreedyLR: invalid saved state: the data ends early.", e);
        }
    }

    // Reads and checks everything into locals; the scheduler changes only at the end.
    private void LoadCore(BinaryReader reader)
    {
        var tag = reader.ReadString();
        if (tag != FormatTag)
        {
            throw new InvalidDataException($"GreedyLR: expected a '{FormatTag}' state, found '{tag}'.");
        }
        int version = reader.ReadInt32();
        if (version != FormatVersion)
        {
            throw new InvalidDataException($"GreedyLR: state format version {version} is not supported (expected {FormatVersion}).");
        }
        PullFromDevice();
        var c = new GreedyLRConfig
        {
            Factor = reader.ReadDouble(),
            Threshold = reader.ReadDouble(),
            Eps = reader.ReadDouble(),
            Mode = reader.ReadInt32(),
            ThresholdMode = reader.ReadInt32(),
            Patience = reader.ReadInt32(),
            Cooldown = reader.ReadInt32(),
            Warmup = reader.ReadInt32(),
            WindowSize = reader.ReadInt32(),
            ResetStart = reader.ReadInt32(),
            Smooth = reader.ReadInt32(),
            Trend = reader.ReadInt32(),
            Groups = reader.ReadInt32(),
        };
        if (c.Groups != _config.Groups)
        {
            throw new InvalidDataException($"GreedyLR: the state is for {c.Groups} param groups, but this scheduler has {_config.Groups}.");
        }
        if (c.WindowSize < 1 || c.WindowSize > 1 << 24)
        {
            throw new InvalidDataException($"GreedyLR: invalid window_size {c.WindowSize} in the state.");
        }
        try
        {
            GreedyLRNative.Init(c); // validates the hyperparameters
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException("GreedyLR: invalid hyperparameters in the state: " + e.Message, e);
        }
        var s = new GreedyLRCounters
        {
            Best = reader.ReadDouble(),
            NumGood = reader.ReadInt64(),
            NumBad = reader.ReadInt64(),
            CooldownCounter = reader.ReadInt64(),
            WarmupCounter = reader.ReadInt64(),
            ResetBudget = reader.ReadInt64(),
            WindowCount = reader.ReadInt64(),
            WindowNext = reader.ReadInt64(),
            Steps = reader.ReadInt64(),
            Resets = reader.ReadInt64(),
        };
        if (s.WindowCount < 0 || s.WindowCount > c.WindowSize || s.WindowNext < 0 || s.WindowNext >= c.WindowSize)
        {
            throw new InvalidDataException("GreedyLR: the state's window position is outside its window.");
        }
        // The reset budget counts down past 0 when resets are off (reset_start 0); no other counter goes negative.
        if (s.NumGood < 0 || s.NumBad < 0 || s.CooldownCounter < 0 || s.WarmupCounter < 0 || s.Steps < 0 || s.Resets < 0 ||
            (c.ResetStart > 0 && s.ResetBudget < 0))
        {
            throw new InvalidDataException("GreedyLR: the state has a negative counter.");
        }
        if (double.IsNaN(s.Best))
        {
            throw new InvalidDataException("GreedyLR: the state's best metric is NaN.");
        }
        double[] Read(int count) => Enumerable.Range(0, count).Select(_ => reader.ReadDouble()).ToArray();
        var rates = Read(c.Groups);
        var initial = Read(c.Groups);
        var minLr = Read(c.Groups);
        var maxLr = Read(c.Groups);
        var window = Read(c.WindowSize);
        for (int g = 0; g < c.Groups; g++)
        {
            if (!(double.IsFinite(minLr[g]) && minLr[g] >= 0 && maxLr[g] >= minLr[g] && double.IsFinite(initial[g]) && initial[g] >= 0))
            {
                throw new InvalidDataException($"GreedyLR: invalid bounds or initial rate for param group {g} in the state.");
            }
            if (!(double.IsFinite(rates[g]) && rates[g] >= 0))
            {
                throw new InvalidDataException($"GreedyLR: invalid learning rate {rates[g]} for param group {g} in the state.");
            }
        }
        _config = c;
        _counters = s;
        _rates = rates;
        _initial = initial;
        _minLr = minLr;
        _maxLr = maxLr;
        _window = window;
    }

    /// <summary>Restores the state from a file written by <see cref="save_state_dict(string)"/>.</summary>
    public void load_state_dict(string location)
    {
        using var stream = File.OpenRead(location);
        using var reader = new BinaryReader(stream);
        load_state_dict(reader);
    }
}

/// <summary>A snapshot of <see cref="GreedyLR"/>'s state.</summary>
/// <param name="Best">Best (possibly smoothed) metric so far; ±∞ before the first evaluation.</param>
/// <param name="NumGood">Consecutive improving evaluations.</param>
/// <param name="NumBad">Consecutive non-improving evaluations.</param>
/// <param name="CooldownCounter">Evaluations of cooldown left.</param>
/// <param name="WarmupCounter">Evaluations of warmup left.</param>
/// <param name="ResetBudget">Decreases at the floor left before a full reset.</param>
/// <param name="Steps">Evaluations seen.</param>
/// <param name="Resets">Full resets done.</param>
/// <param name="Window">The smoothing window, oldest first (empty unless smoothing).</param>
/// <param name="LearningRates">Each group's rate after the last step.</param>
/// <param name="InitialLearningRates">Each group's rate when the scheduler was created (restored by a reset).</param>
/// <param name="MinLr">Each group's floor.</param>
/// <param name="MaxLr">Each group's ceiling.</param>
public sealed record GreedyLRState(double Best, long NumGood, long NumBad, long CooldownCounter, long WarmupCounter, long ResetBudget,
    long Steps, long Resets, IReadOnlyList<double> Window, IReadOnlyList<double> LearningRates, IReadOnlyList<double> InitialLearningRates,
    IReadOnlyList<double> MinLr, IReadOnlyList<double> MaxLr);

/// <summary>The hyperparameters of a <see cref="GreedyLR"/>, named as its constructor's arguments.</summary>
/// <param name="Mode">"min": lower is better; "max": higher is better.</param>
/// <param name="Factor">In (0, 1): a decrease multiplies the rate by it, an increase divides by it.</param>
/// <param name="Patience">A change fires on the (patience+1)-th consecutive good or bad evaluation.</param>
/// <param name="Threshold">Margin an evaluation must beat the best by.</param>
/// <param name="ThresholdMode">"abs" or "rel".</param>
/// <param name="Cooldown">Evaluations ignored after a decrease.</param>
/// <param name="Warmup">Evaluations ignored after an increase.</param>
/// <param name="Eps">A new rate is written only if it moves by more than this.</param>
/// <param name="Smooth">Whether the rolling mean of the metric is compared.</param>
/// <param name="WindowSize">Rolling-mean window.</param>
/// <param name="ResetStart">Decreases at the floor before a full reset (0: never).</param>
/// <param name="Trend">Whether warmup and cooldown evaluations keep increasing and decreasing.</param>
public sealed record GreedyLRSettings(string Mode, double Factor, int Patience, double Threshold, string ThresholdMode, int Cooldown,
    int Warmup, double Eps, bool Smooth, int WindowSize, int ResetStart, bool Trend);
