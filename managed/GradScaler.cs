using System.Globalization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

/// <summary>
/// Dynamic loss scaling for mixed-precision training, with the semantics and names of PyTorch's
/// <c>torch.amp.GradScaler</c>: multiply the loss by a scale before the backward pass so that small
/// float16 gradients do not flush to zero, undo the scale before the optimizer step, skip steps whose
/// gradients overflowed, and adapt the scale (back off after an overflow, grow after
/// <c>growth_interval</c> clean steps).
/// </summary>
/// <remarks>
/// <para>The loop: <c>scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update();</c>, with
/// <c>scaler.unscale_(optimizer)</c> between backward and step when the gradients must be read unscaled
/// (clipping with <c>clip_grad_norm_</c>, logging).</para>
/// <para>The scale is kept as a float32 scalar tensor (as PyTorch keeps it) on the device of the first
/// loss given to <see cref="scale(Tensor)"/>; its inverse is computed in float64 and rounded to float32,
/// and the growth tracker is an int32 scalar beside it. <see cref="update()"/> runs on the device with
/// tensor operations, so on CUDA it never waits for the host.</para>
/// <para>Any TorchSharp optimizer (<c>torch.optim.SGD</c>, <c>Adam</c>, <c>AdamW</c>, ...) takes the
/// unfused path: <see cref="unscale_"/> multiplies every gradient by the inverse scale in place and
/// records whether any element is infinite or NaN; <see cref="step"/> then calls the optimizer's
/// <c>step()</c> only when none was (reading that flag waits for the device). Optim's fused optimizers
/// (<see cref="FusedSGD"/>, <see cref="FusedAdam"/>, <see cref="FusedAdamW"/>,
/// <see cref="HypergradientSGD"/>) take the fused path: <see cref="step"/> hands them the inverse scale
/// and a found-inf flag, and their native step checks the gradients in one read pass, multiplies each
/// gradient element by the inverse scale as it reads it, and changes nothing at all (parameters,
/// momentum, Adam moments, step counters, hypergradient rates) when a gradient is not finite. The
/// fused path does not write <c>.grad</c> (PyTorch's <c>unscale_</c> does); <see cref="unscale_"/> on a
/// fused optimizer still unscales <c>.grad</c> in place as PyTorch does, and the step that follows then
/// uses an inverse scale of 1 and the flag <see cref="unscale_"/> recorded.</para>
/// <para>A disabled scaler (<c>enabled: false</c>) is a pass-through: <see cref="scale(Tensor)"/>
/// returns the loss, <see cref="step"/> calls <c>optimizer.step()</c>, the rest do nothing.</para>
/// </remarks>
public sealed class GradScaler
{
    private const string FormatTag = "Optim.GradScaler";
    private const int FormatVersion = 1;

    private enum Stage { Ready, Unscaled, Stepped }

    // Per optimizer, since the last update(): its stage and the found-inf flag of its gradients.
    private sealed class OptimizerRecord
    {
        public Stage Stage = Stage.Ready;
        public Tensor? FoundInf;
    }

    private readonly bool _enabled;
    private double _initScale;
    private double _growthFactor;
    private double _backoffFactor;
    private int _growthInterval;
    private int _initGrowthTracker;
    private Tensor? _scale;
    private Tensor? _growthTracker;
    private readonly Dictionary<OptimizerHelper, OptimizerRecord> _records = new(ReferenceEqualityComparer.Instance);

    /// <summary>Creates a scaler (PyTorch's arguments and defaults).</summary>
    /// <param name="init_scale">The first scale (finite, &gt; 0).</param>
    /// <param name="growth_factor">What the scale is multiplied by after <paramref name="growth_interval"/> steps without an overflow (finite, &gt; 1).</param>
    /// <param name="backoff_factor">What the scale is multiplied by after a step with an overflow (in (0, 1)).</param>
    /// <param name="growth_interval">Consecutive steps without an overflow before the scale grows (&gt; 0).</param>
    /// <param name="enabled">False: a pass-through that scales nothing and never skips a step.</param>
    /// <exception cref="ArgumentException">A value out of its range.</exception>
    public GradScaler(double init_scale = 65536.0, double growth_factor = 2.0, double backoff_factor = 0.5, int growth_interval = 2000, bool enabled = true)
    {
        CheckSettings(init_scale, growth_factor, backoff_factor, growth_interval);
        _enabled = enabled;
        _initScale = init_scale;
        _growthFactor = growth_factor;
        _backoffFactor = backoff_factor;
        _growthInterval = growth_interval;
    }

    private static string Num(double v) => v.ToString("R", CultureInfo.InvariantCulture);

    private static void CheckSettings(double initScale, double growthFactor, double backoffFactor, int growthInterval)
    {
        if (!(initScale > 0 && double.IsFinite(initScale)))
        {
            throw new ArgumentException($"GradScaler: init_scale must be finite and > 0, got {Num(initScale)}.", "init_scale");
        }
        if (!(growthFactor > 1.0 && double.IsFinite(growthFactor)))
        {
            throw new ArgumentException($"GradScaler: the growth factor must be finite and > 1.0, got {Num(growthFactor)}.", "growth_factor");
        }
        if (!(backoffFactor > 0 && backoffFactor < 1.0))
        {
            throw new ArgumentException($"GradScaler: the backoff factor must be in (0, 1), got {Num(backoffFactor)}.", "backoff_factor");
        }
        if (growthInterval <= 0)
        {
            throw new ArgumentException($"GradScaler: growth_interval must be > 0, got {growthInterval}.", "growth_interval");
        }
    }

    /// <summary>Whether fused optimizers take the fused path (tests and benchmarks set false to run the
    /// unfused path on them).</summary>
    internal bool FusedSteps { get; set; } = true;

    /// <summary>Whether the scaler scales (false: a pass-through).</summary>
    public bool is_enabled() => _enabled;

    /// <summary>
    /// The loss multiplied by the scale (a new tensor; the loss's dtype is kept). The first call creates
    /// the scale, a float32 scalar, on the loss's device. Disabled: the loss itself.
    /// </summary>
    /// <exception cref="ArgumentNullException">No loss.</exception>
    public Tensor scale(Tensor loss)
    {
        ArgumentNullException.ThrowIfNull(loss);
        if (!_enabled)
        {
            return loss;
        }
        if (_scale is null)
        {
            _scale = torch.full(Array.Empty<long>(), _initScale, ScalarType.Float32, loss.device).DetachFromDisposeScope();
            _growthTracker = torch.full(Array.Empty<long>(), _initGrowthTracker, ScalarType.Int32, loss.device).DetachFromDisposeScope();
        }
        if (_scale.device_type == loss.device_type && _scale.device_index == loss.device_index)
        {
            return loss * _scale;
        }
        using var moved = _scale.to(loss.device);
        return loss * moved;
    }

    /// <summary>
    /// Divides this optimizer's gradients by the scale, in place (each multiplied by the float32 inverse
    /// scale), and records whether any of them holds an infinite or NaN element. Optional: call it
    /// between the backward pass and <see cref="step"/> when the gradients must be read unscaled (to
    /// clip them, for example); <see cref="step"/> unscales otherwise. At most once per optimizer between
    /// two <see cref="update()"/> calls. Disabled: does nothing.
    /// </summary>
    /// <exception cref="InvalidOperationException">A second call since the last update, a call after
    /// <see cref="step"/>, no <see cref="scale(Tensor)"/> before it, or float16 gradients (unscaling them in
    /// place would lose precision, as PyTorch says).</exception>
    public void unscale_(OptimizerHelper optimizer)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        if (!_enabled)
        {
            return;
        }
        var scale = RequireScale("unscale_");
        var record = RecordOf(optimizer);
        if (record.Stage == Stage.Unscaled)
        {
            throw new InvalidOperationException("GradScaler: unscale_() has already been called on this optimizer since the last update().");
        }
        if (record.Stage == Stage.Stepped)
        {
            throw new InvalidOperationException("GradScaler: unscale_() is being called after step().");
        }
        var grads = Gradients(optimizer);
        foreach (var g in grads)
        {
            if (g.dtype == ScalarType.Float16)
            {
                throw new InvalidOperationException("GradScaler: attempting to unscale FP16 gradients.");
            }
        }
        var foundInf = torch.zeros(Array.Empty<long>(), ScalarType.Float32, scale.device).DetachFromDisposeScope();
        using (var inv = InverseScale(scale))
        {
            UnscaleAndCheck(grads, inv, foundInf);
        }
        record.FoundInf = foundInf;
        record.Stage = Stage.Unscaled;
    }

    /// <summary>
    /// Steps the optimizer unless its gradients hold an infinite or NaN element (then the step is
    /// skipped, and for a fused optimizer nothing of it changes). Unscales first when
    /// <see cref="unscale_"/> was not called. Once per optimizer between two <see cref="update()"/>
    /// calls. Disabled: <c>optimizer.step()</c>.
    /// </summary>
    /// <exception cref="InvalidOperationException">A second call since the last update, or no <see cref="scale(Tensor)"/> before it.</exception>
    public void step(OptimizerHelper optimizer)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        if (!_enabled)
        {
            optimizer.step();
            return;
        }
        var scale = RequireScale("step");
        var record = RecordOf(optimizer);
        if (record.Stage == Stage.Stepped)
        {
            throw new InvalidOperationException("GradScaler: step() has already been called since the last update().");
        }
        if (FusedSteps && optimizer is IFusedGradScaling { SupportsGradScaling: true } fused)
        {
            // Fused: the step reads the inverse scale and the flag itself. After unscale_, the gradients
            // are unscaled already: an inverse scale of 1 and the flag unscale_ recorded.
            var foundInf = record.FoundInf ?? torch.zeros(Array.Empty<long>(), ScalarType.Float32, scale.device).DetachFromDisposeScope();
            record.FoundInf = foundInf;
            using var inv = record.Stage == Stage.Unscaled
                ? torch.ones(Array.Empty<long>(), ScalarType.Float32, scale.device)
                : InverseScale(scale);
            fused.ScaledStep(inv, foundInf);
        }
        else
        {
            if (record.Stage == Stage.Ready)
            {
                unscale_(optimizer);
            }
            if (record.FoundInf!.item<float>() == 0)
            {
                optimizer.step();
            }
        }
        record.Stage = Stage.Stepped;
    }

    /// <summary>
    /// Updates the scale after every optimizer of this iteration has been stepped: multiplied by
    /// <c>backoff_factor</c> when any of their gradients overflowed (and the growth tracker restarts),
    /// else by <c>growth_factor</c> once <c>growth_interval</c> consecutive clean updates have passed
    /// (when the grown scale is finite). In float32 on the scale's device (PyTorch's
    /// <c>_amp_update_scale_</c>). Disabled: does nothing.
    /// </summary>
    /// <exception cref="InvalidOperationException">No <see cref="unscale_"/> or <see cref="step"/> since the last update.</exception>
    public void update()
    {
        if (!_enabled)
        {
            return;
        }
        var scale = RequireScale("update");
        var tracker = _growthTracker!;
        var flags = _records.Values.Where(r => r.FoundInf is not null).Select(r => r.FoundInf!).ToList();
        if (flags.Count == 0)
        {
            throw new InvalidOperationException("GradScaler: no inf checks were recorded prior to update().");
        }
        using (torch.NewDisposeScope())
        using (torch.no_grad())
        {
            var found = flags[0].to(scale.device).clone();
            for (int i = 1; i < flags.Count; i++)
            {
                found.add_(flags[i].to(scale.device));
            }
            var overflow = found.gt(0);
            var successful = tracker.add(1);
            var grow = overflow.logical_not().logical_and(successful.eq(_growthInterval));
            // PyTorch: the products in double, rounded to the float32 scale.
            var wide = scale.to(ScalarType.Float64);
            var grown = wide.mul(_growthFactor).to(ScalarType.Float32);
            var backedOff = wide.mul(_backoffFactor).to(ScalarType.Float32);
            var kept = torch.where(grow.logical_and(grown.isfinite()), grown, scale);
            scale.copy_(torch.where(overflow, backedOff, kept));
            var restart = overflow.logical_or(grow);
            tracker.copy_(torch.where(restart, torch.zeros_like(successful), successful));
        }
        ResetRecords();
    }

    /// <summary>Sets the scale to <paramref name="new_scale"/> (the growth tracker is kept), as PyTorch's
    /// <c>update(new_scale)</c>, and ends the iteration like <see cref="update()"/>. Disabled: does nothing.</summary>
    /// <exception cref="ArgumentException">A scale that is not finite and &gt; 0.</exception>
    public void update(double new_scale)
    {
        if (!_enabled)
        {
            return;
        }
        if (!(new_scale > 0 && double.IsFinite(new_scale)))
        {
            throw new ArgumentException($"GradScaler: new_scale must be finite and > 0, got {Num(new_scale)}.", nameof(new_scale));
        }
        var scale = RequireScale("update");
        scale.fill_(new_scale);
        ResetRecords();
    }

    /// <summary>The current scale (a device read on CUDA); <c>init_scale</c> before the first
    /// <see cref="scale(Tensor)"/>; 1 when disabled.</summary>
    public double get_scale() => !_enabled ? 1.0 : _scale is null ? _initScale : _scale.item<float>();

    /// <summary>The growth factor.</summary>
    public double get_growth_factor() => _growthFactor;

    /// <summary>The backoff factor.</summary>
    public double get_backoff_factor() => _backoffFactor;

    /// <summary>The growth interval.</summary>
    public int get_growth_interval() => _growthInterval;

    /// <summary>
    /// The state with PyTorch's keys: <c>scale</c> (double), <c>growth_factor</c> (double),
    /// <c>backoff_factor</c> (double), <c>growth_interval</c> (int), <c>_growth_tracker</c> (int). Empty
    /// when disabled.
    /// </summary>
    public Dictionary<string, object> state_dict()
    {
        if (!_enabled)
        {
            return new Dictionary<string, object>();
        }
        return new Dictionary<string, object>
        {
            ["scale"] = get_scale(),
            ["growth_factor"] = _growthFactor,
            ["backoff_factor"] = _backoffFactor,
            ["growth_interval"] = _growthInterval,
            ["_growth_tracker"] = _growthTracker is null ? _initGrowthTracker : _growthTracker.item<int>(),
        };
    }

    /// <summary>Restores a state from <see cref="state_dict"/>, all or nothing. Disabled: does nothing.</summary>
    /// <exception cref="ArgumentException">An empty state (saved by a disabled scaler), a missing key, a
    /// value of the wrong type or out of range; the scaler is unchanged.</exception>
    public void load_state_dict(IReadOnlyDictionary<string, object> state_dict)
    {
        ArgumentNullException.ThrowIfNull(state_dict);
        if (!_enabled)
        {
            return;
        }
        if (state_dict.Count == 0)
        {
            throw new ArgumentException("GradScaler: the source state dict is empty, possibly because it was saved from a disabled instance of GradScaler.", nameof(state_dict));
        }
        double scale = Read<double>(state_dict, "scale");
        double growth = Read<double>(state_dict, "growth_factor");
        double backoff = Read<double>(state_dict, "backoff_factor");
        int interval = Read<int>(state_dict, "growth_interval");
        int tracker = Read<int>(state_dict, "_growth_tracker");
        CheckSettings(scale, growth, backoff, interval);
        if (tracker < 0)
        {
            throw new ArgumentException($"GradScaler: _growth_tracker must be >= 0, got {tracker}.", nameof(state_dict));
        }
        Apply(scale, growth, backoff, interval, tracker);
    }

    private static T Read<T>(IReadOnlyDictionary<string, object> state, string key)
    {
        if (!state.TryGetValue(key, out var value))
        {
            throw new ArgumentException($"GradScaler: the state dict has no '{key}'.", nameof(state));
        }
        if (value is not T typed)
        {
            throw new ArgumentException($"GradScaler: '{key}' must be a {typeof(T).Name}, got {value?.GetType().Name ?? "null"}.", nameof(state));
        }
        return typed;
    }

    private void Apply(double scale, double growth, double backoff, int interval, int tracker)
    {
        _initScale = scale;
        _growthFactor = growth;
        _backoffFactor = backoff;
        _growthInterval = interval;
        _initGrowthTracker = tracker;
        _scale?.fill_(scale);
        _growthTracker?.fill_(tracker);
    }

    /// <summary>Writes <see cref="state_dict"/> (a tagged, versioned binary record).</summary>
    public void save_state_dict(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(FormatTag);
        writer.Write(FormatVersion);
        writer.Write(_enabled);
        if (!_enabled)
        {
            return;
        }
        var state = state_dict();
        writer.Write((double)state["scale"]);
        writer.Write(_growthFactor);
        writer.Write(_backoffFactor);
        writer.Write(_growthInterval);
        writer.Write((int)state["_growth_tracker"]);
    }

    /// <summary>Writes <see cref="state_dict"/> to a file.</summary>
    public void save_state_dict(string location)
    {
        using var stream = File.Create(location);
        using var writer = new BinaryWriter(stream);
        save_state_dict(writer);
    }

    /// <summary>Restores a state written by <see cref="save_state_dict(BinaryWriter)"/>, all or nothing. Disabled: reads nothing.</summary>
    /// <exception cref="InvalidDataException">Not a scaler's state, another version, truncated, saved by a
    /// disabled scaler, or values out of range; the scaler is unchanged.</exception>
    public void load_state_dict(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        if (!_enabled)
        {
            return;
        }
        try
        {
            if (reader.ReadString() != FormatTag)
            {
                throw new InvalidDataException("GradScaler: not a GradScaler state.");
            }
            int version = reader.ReadInt32();
            if (version != FormatVersion)
            {
                throw new InvalidDataException($"GradScaler: state format version {version} is not supported (expected {FormatVersion}).");
            }
            if (!reader.ReadBoolean())
            {
                throw new InvalidDataException("GradScaler: the state was saved from a disabled instance of GradScaler.");
            }
            var state = new Dictionary<string, object>
            {
                ["scale"] = reader.ReadDouble(),
                ["growth_factor"] = reader.ReadDouble(),
                ["backoff_factor"] = reader.ReadDouble(),
                ["growth_interval"] = reader.ReadInt32(),
                ["_growth_tracker"] = reader.ReadInt32(),
            };
            load_state_dict(state);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("GradScaler: the state is truncated.", e);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException(e.Message, e);
        }
    }

    /// <summary>Restores a state from a file written by <see cref="save_state_dict(string)"/>.</summary>
    public void load_state_dict(string location)
    {
        using var stream = File.OpenRead(location);
        using var reader = new BinaryReader(stream);
        load_state_dict(reader);
    }

    private Tensor RequireScale(string what) => _scale ?? throw new InvalidOperationException(
        $"GradScaler: {what}() before any scale(): the scale does not exist yet (scale the loss with scaler.scale(loss) before backward()).");

    private OptimizerRecord RecordOf(OptimizerHelper optimizer)
    {
        if (!_records.TryGetValue(optimizer, out var record))
        {
            record = new OptimizerRecord();
            _records[optimizer] = record;
        }
        return record;
    }

    private void ResetRecords()
    {
        foreach (var r in _records.Values)
        {
            r.FoundInf?.Dispose();
        }
        _records.Clear();
    }

    // PyTorch: the reciprocal in float64, rounded to the float32 scale's type.
    private static Tensor InverseScale(Tensor scale)
    {
        using var wide = scale.to(ScalarType.Float64);
        using var reciprocal = wide.reciprocal();
        return reciprocal.to(ScalarType.Float32);
    }

    private static List<Tensor> Gradients(OptimizerHelper optimizer)
    {
        var grads = new List<Tensor>();
        foreach (var p in optimizer.parameters())
        {
            if (p.grad is { } g)
            {
                grads.Add(g);
            }
        }
        return grads;
    }

    // The unfused unscale: each gradient multiplied by the inverse scale in place (its own dtype; the
    // float32 scalar does not promote it), and found_inf set to 1 when an element was infinite or NaN
    // before the multiply (as PyTorch's _amp_foreach_non_finite_check_and_unscale_ checks).
    private static void UnscaleAndCheck(List<Tensor> grads, Tensor inv, Tensor foundInf)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        foreach (var g in grads)
        {
            var bad = g.isfinite().all().logical_not().to(foundInf.device);
            foundInf.masked_fill_(bad, 1.0f);
            g.mul_(inv.device_type == g.device_type && inv.device_index == g.device_index ? inv : inv.to(g.device));
        }
    }
}

/// <summary>
/// A fused optimizer whose native step applies a <see cref="GradScaler"/> itself: it multiplies each
/// gradient element by the inverse scale as it reads it and skips the whole step, changing nothing, when
/// a gradient element is not finite or <c>foundInf</c> is already nonzero (then it sets
/// <c>foundInf</c> to 1). The gradients are not written.
/// </summary>
internal interface IFusedGradScaling
{
    /// <summary>Whether this optimizer's step can apply a scaler (Sls's line search cannot).</summary>
    bool SupportsGradScaling { get; }

    /// <summary>One scaled step: <paramref name="invScale"/> and <paramref name="foundInf"/> are float32 scalars.</summary>
    void ScaledStep(Tensor invScale, Tensor foundInf);
}
