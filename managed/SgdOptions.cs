using TorchSharp.Modules;
using static TorchSharp.torch.optim;

namespace Optim;

/// <summary>
/// The options every SGD-family optimizer of Optim has per param group (PyTorch's names). Null values
/// take the optimizer's defaults when the group is added. Saved in TorchSharp's SGD layout.
/// </summary>
public abstract class SgdOptionsBase : OptimizerOptions, IStagedLoad
{
    /// <summary>Momentum factor.</summary>
    public double? momentum;
    /// <summary>Dampening for momentum.</summary>
    public double? dampening;
    /// <summary>Weight decay (L2 penalty).</summary>
    public double? weight_decay;
    /// <summary>Nesterov momentum.</summary>
    public bool? nesterov;
    /// <summary>Maximize instead of minimize.</summary>
    public bool? maximize;

    /// <summary>Options with every value set (the optimizer's defaults).</summary>
    internal static TOptions Create<TOptions>(double lr, double momentum, double dampening, double weight_decay, bool nesterov, bool maximize)
        where TOptions : SgdOptionsBase, new() => new()
        {
            LearningRate = lr,
            InitialLearningRate = lr,
            momentum = momentum,
            dampening = dampening,
            weight_decay = weight_decay,
            nesterov = nesterov,
            maximize = maximize,
        };

    /// <summary>A group's options: each value it leaves null taken from <paramref name="defaults"/>, the rate <paramref name="lr"/>.</summary>
    internal static TOptions Filled<TOptions>(TOptions given, TOptions defaults, double lr) where TOptions : SgdOptionsBase, new() => new()
    {
        LearningRate = lr,
        momentum = given.momentum ?? defaults.momentum,
        dampening = given.dampening ?? defaults.dampening,
        weight_decay = given.weight_decay ?? defaults.weight_decay,
        nesterov = given.nesterov ?? defaults.nesterov,
        maximize = given.maximize ?? defaults.maximize,
    };

    /// <summary>Checks these options (every value set), naming the param group when there is one.</summary>
    internal void Validate(int? group) =>
        Validate(momentum!.Value, dampening!.Value, weight_decay!.Value, nesterov!.Value, LearningRate!.Value, group);

    // PyTorch's checks and messages, with the param group named when there is one. Runs on every step:
    // the messages are built only when a check fails (nothing is allocated otherwise).
    internal static void Validate(double momentum, double dampening, double wd, bool nesterov, double lr, int? group)
    {
        if (!(lr >= 0) || double.IsInfinity(lr))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid learning rate: {lr}{Where(group)}"), "lr");
        }
        if (!(momentum >= 0) || double.IsInfinity(momentum))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid momentum value: {momentum}{Where(group)}"), "momentum");
        }
        if (!double.IsFinite(dampening))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid dampening value: {dampening}{Where(group)}"), "dampening");
        }
        if (!(wd >= 0) || double.IsInfinity(wd))
        {
            throw new ArgumentException(FormattableString.Invariant($"Invalid weight_decay value: {wd}{Where(group)}"), "weight_decay");
        }
        if (nesterov && (momentum <= 0 || dampening != 0))
        {
            throw new ArgumentException($"Nesterov momentum requires a momentum and zero dampening{Where(group)}", "nesterov");
        }
    }

    private static string Where(int? group) => group is null ? "" : FormattableString.Invariant($" (param group {group})");

    // IMomentum for the optimizers: validates the new momentum against every group's other options
    // (nothing changes on failure), then sets it on the defaults and on every group.
    internal static void SetMomentum(OptimizerOptions defaults, IList<TorchSharp.Modules.ParamGroup> groups, double value)
    {
        foreach (var g in groups)
        {
            var o = (SgdOptionsBase)g.Options;
            Validate(value, o.dampening!.Value, o.weight_decay!.Value, o.nesterov!.Value, o.LearningRate!.Value, null);
        }
        ((SgdOptionsBase)defaults).momentum = value;
        foreach (var g in groups)
        {
            ((SgdOptionsBase)g.Options).momentum = value;
        }
    }

    /// <summary>Reads the options (TorchSharp's SGD format); nothing changes unless every value is valid.</summary>
    /// <exception cref="InvalidDataException">A value is invalid or the data ends early.</exception>
    public override void LoadStateDict(BinaryReader reader)
    {
        using var r = new StateReader(reader, GetType().DeclaringType?.Name ?? GetType().Name) { Part = "param group options" };
        ReadStaged(r)();
    }

    /// <summary>Copies the options of another instance of the same type; nothing changes if they are invalid.</summary>
    /// <exception cref="ArgumentException">Another options type, or an invalid value.</exception>
    public override void LoadStateDict(OptimizerOptions source) => CopyStaged(source)();

    Action IStagedLoad.ReadStaged(StateReader reader) => ReadStaged(reader);

    Action IStagedLoad.CopyStaged(object source, Staging staging) => CopyStaged(source);

    // Reads and checks every value (PyTorch's rules, as on construction) before anything is set.
    private protected virtual Action ReadStaged(StateReader r)
    {
        double initial = r.ReadNonNegative("the initial learning rate");
        double lr = r.ReadNonNegative("the learning rate");
        double m = r.ReadNonNegative("momentum");
        double d = r.ReadFinite("dampening");
        double wd = r.ReadNonNegative("weight_decay");
        bool nest = r.ReadBool("nesterov");
        bool max = r.ReadBool("maximize");
        try
        {
            Validate(m, d, wd, nest, lr, null);
        }
        catch (ArgumentException e)
        {
            throw r.Invalid(e.Message);
        }
        return () => (InitialLearningRate, LearningRate, momentum, dampening, weight_decay, nesterov, maximize) = (initial, lr, m, d, wd, nest, max);
    }

    private protected virtual Action CopyStaged(object source)
    {
        if (source is not SgdOptionsBase o || source.GetType() != GetType())
        {
            throw new ArgumentException($"Expected {GetType().Name} options, got {source?.GetType().Name ?? "null"}.", nameof(source));
        }
        if (o.LearningRate is not double lr || o.momentum is not double m || o.dampening is not double d || o.weight_decay is not double wd ||
            o.nesterov is not bool nest || o.maximize is not bool max)
        {
            throw new ArgumentException("The source options have unset values.", nameof(source));
        }
        Validate(m, d, wd, nest, lr, null);
        double initial = o.InitialLearningRate;
        return () => (InitialLearningRate, LearningRate, momentum, dampening, weight_decay, nesterov, maximize) = (initial, lr, m, d, wd, nest, max);
    }

    /// <summary>Writes the options (TorchSharp's SGD format).</summary>
    public override void SaveStateDict(BinaryWriter writer)
    {
        base.SaveStateDict(writer);
        writer.Write(momentum!.Value);
        writer.Write(dampening!.Value);
        writer.Write(weight_decay!.Value);
        writer.Write(nesterov!.Value);
        writer.Write(maximize!.Value);
    }
}

/// <summary>A param group of an SGD-family optimizer, with optional per-group options.</summary>
/// <typeparam name="TOptions">The optimizer's options type.</typeparam>
public abstract class SgdParamGroupBase<TOptions> : ParamGroup<TOptions>, IMomentum where TOptions : SgdOptionsBase, new()
{
    /// <summary>An empty group (set <c>Parameters</c> and <c>Options</c>).</summary>
    protected SgdParamGroupBase()
    {
    }

    /// <summary>A group with explicit options (null fields take the optimizer's defaults).</summary>
    protected SgdParamGroupBase(IEnumerable<Parameter> parameters, TOptions options) : base(parameters, options)
    {
    }

    /// <summary>A group; each option left null takes the optimizer's default.</summary>
    protected SgdParamGroupBase(IEnumerable<Parameter> parameters, double? lr, double? momentum, double? dampening,
        double? weight_decay, bool? nesterov, bool? maximize)
        : base(parameters, new TOptions
        {
            LearningRate = lr,
            momentum = momentum,
            dampening = dampening,
            weight_decay = weight_decay,
            nesterov = nesterov,
            maximize = maximize,
        })
    {
    }

    /// <summary>The group's momentum.</summary>
    public double Momentum
    {
        get => Options.momentum ?? 0;
        set => Options.momentum = value;
    }
}
