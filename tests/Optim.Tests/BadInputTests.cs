using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim.Tests;

/// <summary>
/// Every kind of bad argument, against every optimizer (each HD scope) and the scheduler, through every
/// public entry point (constructors, step, add_param_group, setters, load_state_dict): a clear exception
/// that names the problem, or the documented behaviour, and parameters and state exactly as before
/// (compared through the optimizer's own saved bytes, which hold every option, counter and state tensor).
/// </summary>
[TestFixture]
public class BadInputTests
{
    public sealed record Subject(string Name, Func<IEnumerable<Parameter>, OptimizerHelper> Make, Func<IEnumerable<TorchSharp.Modules.ParamGroup>, OptimizerHelper> MakeGroups,
        Func<IEnumerable<Parameter>, TorchSharp.Modules.ParamGroup> Group)
    {
        public override string ToString() => Name;
    }

    public static IEnumerable<Subject> Subjects()
    {
        yield return new Subject("FusedSGD", p => new FusedSGD(p, 0.1, momentum: 0.9),
            g => new FusedSGD(g.Cast<FusedSGD.ParamGroup>(), 0.1, momentum: 0.9), p => new FusedSGD.ParamGroup(p));
        foreach (var scope in Enum.GetValues<HypergradientScope>())
        {
            yield return new Subject($"HypergradientSGD {scope}", p => new HypergradientSGD(p, 0.1, 1e-3, scope, momentum: 0.9),
                g => new HypergradientSGD(g.Cast<HypergradientSGD.ParamGroup>(), 0.1, 1e-3, scope, momentum: 0.9), p => new HypergradientSGD.ParamGroup(p));
        }
        yield return new Subject("FusedAdam", p => new FusedAdam(p, 0.01, weight_decay: 1e-2, amsgrad: true),
            g => new FusedAdam(g.Cast<FusedAdam.ParamGroup>(), 0.01, weight_decay: 1e-2, amsgrad: true), p => new FusedAdam.ParamGroup(p));
        yield return new Subject("FusedAdamW", p => new FusedAdamW(p, 0.01, weight_decay: 1e-2),
            g => new FusedAdamW(g.Cast<FusedAdam.ParamGroup>(), 0.01, weight_decay: 1e-2), p => new FusedAdam.ParamGroup(p));
    }

    private static bool IsAdam(Subject s) => s.Name.StartsWith("FusedAdam");

    /// <summary>A way to break a stepped optimizer: what to do, and the message (or null: the documented behaviour, no exception).</summary>
    public sealed record Breakage(string Name, Action<Sequential, OptimizerHelper> Break, string? Message, Type? Exception = null, Family For = Family.Any)
    {
        public override string ToString() => Name;
    }

    /// <summary>Which optimizers a breakage applies to (an option only one family has).</summary>
    public enum Family
    {
        Any,
        Sgd,
        Adam,
    }

    private static Parameter Named(Sequential m, string name) => m.named_parameters().First(n => n.name == name).parameter;

    public static IEnumerable<Breakage> StepBreakages()
    {
        yield return new("gradient of another dtype", (m, _) => Named(m, "fc2.bias").grad = torch.zeros(4, ScalarType.Float64),
            "parameter 1 of param group 1 has a gradient of dtype Float64 but is Float32");
        yield return new("gradient of another size", (m, _) => Named(m, "fc2.bias").grad = torch.zeros(5),
            "has 4 elements but its gradient has 5");
        yield return new("non-contiguous gradient", (m, _) =>
        {
            var w = Named(m, "fc2.weight");
            w.grad = torch.zeros(w.shape[1], w.shape[0]).t();
        }, "parameter 0 of param group 1 has a non-contiguous gradient");
        yield return new("sparse gradient", (m, _) => Named(m, "fc1.bias").grad = torch.zeros(16).to_sparse(),
            "parameter 1 of param group 0 has a sparse gradient");
        yield return new("negative learning rate", (_, o) => o.ParamGroups.Last().LearningRate = -1, "Invalid learning rate: -1 (param group 1)");
        yield return new("NaN learning rate", (_, o) => o.ParamGroups.First().LearningRate = double.NaN, "Invalid learning rate: NaN (param group 0)");
        yield return new("infinite learning rate", (_, o) => o.ParamGroups.First().LearningRate = double.PositiveInfinity,
            "Invalid learning rate: Infinity (param group 0)");
        yield return new("negative momentum", (_, o) => Options(o, 1).momentum = -0.5, "Invalid momentum value: -0.5 (param group 1)", For: Family.Sgd);
        yield return new("NaN weight decay", (_, o) => Options(o, 0).weight_decay = double.NaN, "Invalid weight_decay value: NaN (param group 0)", For: Family.Sgd);
        yield return new("infinite dampening", (_, o) => Options(o, 0).dampening = double.NegativeInfinity, "Invalid dampening value: -Infinity (param group 0)",
            For: Family.Sgd);
        yield return new("Nesterov with dampening", (_, o) =>
        {
            Options(o, 1).nesterov = true;
            Options(o, 1).dampening = 0.5;
        }, "Nesterov momentum requires a momentum and zero dampening (param group 1)", For: Family.Sgd);
        yield return new("beta1 of 1", (_, o) => AdamOptions(o, 1).beta1 = 1, "Invalid beta parameter at index 0: 1 (param group 1)", For: Family.Adam);
        yield return new("NaN beta2", (_, o) => ((IBetas)o.ParamGroups.First()).Betas = (0.9, double.NaN), "Invalid beta parameter at index 1: NaN (param group 0)",
            For: Family.Adam);
        yield return new("negative eps", (_, o) => AdamOptions(o, 0).eps = -1e-8, "Invalid epsilon value: -1E-08 (param group 0)", For: Family.Adam);
        yield return new("infinite Adam weight decay", (_, o) => AdamOptions(o, 1).weight_decay = double.PositiveInfinity,
            "Invalid weight_decay value: Infinity (param group 1)", For: Family.Adam);
        yield return new("disposed parameter", (m, _) => Named(m, "fc2.bias").Dispose(), "parameter 1 of param group 1 has been disposed",
            typeof(ObjectDisposedException));
    }

    private static FusedAdam.Options AdamOptions(OptimizerHelper o, int group) => (FusedAdam.Options)((TorchSharp.Modules.ParamGroup)o.ParamGroups.ElementAt(group)).Options;

    private static SgdOptionsBase Options(OptimizerHelper o, int group) => (SgdOptionsBase)((TorchSharp.Modules.ParamGroup)o.ParamGroups.ElementAt(group)).Options;

    private static (Sequential Model, OptimizerHelper Optimizer) Stepped(Subject s)
    {
        var model = Harness.Mlp(90);
        var (x, y) = Harness.Data(91);
        var named = model.named_parameters().ToList();
        var optimizer = s.MakeGroups(new[]
        {
            s.Group(named.Where(n => n.name.StartsWith("fc1")).Select(n => n.parameter)),
            s.Group(named.Where(n => n.name.StartsWith("fc2")).Select(n => n.parameter)),
        });
        for (int i = 0; i < 3; i++)
        {
            Harness.Backward(model, x, y);
            optimizer.step();
        }
        Harness.Backward(model, x, y);
        return (model, optimizer);
    }

    private static byte[] Saved(OptimizerHelper optimizer)
    {
        var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream))
        {
            optimizer.save_state_dict(writer);
        }
        return stream.ToArray();
    }

    private static IEnumerable<TestCaseData> StepCases() =>
        from s in Subjects()
        from b in StepBreakages()
        where b.For == Family.Any || (b.For == Family.Adam) == IsAdam(s)
        select new TestCaseData(s, b).SetName($"{s.Name}: step with {b.Name}");

    [TestCaseSource(nameof(StepCases))]
    public void AStepWithBadInputNamesTheProblemAndChangesNothing(Subject subject, Breakage breakage)
    {
        var (model, optimizer) = Stepped(subject);
        using var _ = model;
        using var __ = optimizer;
        var before = Saved(optimizer);
        var live = model.parameters().Where(p => !p.IsInvalid).ToList();
        breakage.Break(model, optimizer);
        var paramsBefore = Harness.Snapshot(live.Where(p => !p.IsInvalid));
        var e = Assert.Throws(breakage.Exception ?? typeof(ArgumentException), () => optimizer.step());
        Assert.That(e!.Message, Does.Contain(breakage.Message));
        Harness.AssertUnchanged(paramsBefore, live.Where(p => !p.IsInvalid).ToList(), "parameter");
        if (live.All(p => !p.IsInvalid))
        {
            // Restore the options the breakage changed and compare everything saved.
            Assert.That(StateTensorsOf(optimizer), Is.EqualTo(StateTensorsOf(before, optimizer)), "state tensors changed");
        }
    }

    // The saved state past the options (which a breakage may have changed on purpose): every state tensor and counter.
    private static byte[] StateTensorsOf(OptimizerHelper optimizer) => StateTensorsOf(Saved(optimizer), optimizer);

    private static byte[] StateTensorsOf(byte[] saved, OptimizerHelper optimizer)
    {
        int options = optimizer switch
        {
            HypergradientSGD => 8 * 5 + 2 + 16,
            FusedAdam => 8 * 6 + 2,
            _ => 8 * 5 + 2,
        };
        int start = 1 + saved[0] + 2 + options * optimizer.ParamGroups.Count();
        return saved[start..];
    }

    [TestCaseSource(nameof(Subjects))]
    public void NonFiniteGradientsFollowTheDocumentedBehaviour(Subject subject)
    {
        var (model, optimizer) = Stepped(subject);
        using var _ = model;
        using var __ = optimizer;
        var w = Named(model, "fc1.weight");
        using (var g = w.grad!)
        {
            g[0, 0] = double.NaN;
        }
        var before = Saved(optimizer);
        var paramsBefore = Harness.Snapshot(model.parameters());
        optimizer.step();
        if (optimizer is HypergradientSGD hd)
        {
            // Documented: skipped whole and counted.
            Assert.That(hd.SkippedSteps, Is.EqualTo(1));
            Harness.AssertUnchanged(paramsBefore, model.parameters().ToList(), "parameter");
            Assert.That(StateTensorsOf(optimizer), Is.EqualTo(StateTensorsOf(before, optimizer)), "state tensors changed");
        }
        else
        {
            // Documented: as torch.optim.SGD and Adam, the NaN reaches its own element and no other.
            Assert.That(w[0, 0].isnan().item<bool>(), Is.True);
            Assert.That(w.isnan().sum().item<long>(), Is.EqualTo(1));
        }
    }

    private static IEnumerable<TestCaseData> ConstructorCases()
    {
        var p = new[] { new Parameter(torch.ones(3)) };
        var integer = new[] { new Parameter(torch.ones(3, ScalarType.Int32), requires_grad: false) };
        var mixed = new[] { new Parameter(torch.ones(3)), new Parameter(torch.ones(3, ScalarType.Float64)) };
        var nonContiguous = new[] { new Parameter(torch.randn(3, 4).t()) };
        var sparse = new[] { new Parameter(torch.eye(3).to_sparse()) };
        var meta = new[] { new Parameter(torch.empty(3, device: torch.META)) };
        var disposed = new Parameter(torch.ones(3));
        disposed.Dispose();
        var duplicate = new[] { p[0], p[0] };
        object[][] table =
        {
            new object[] { "null parameters", (Func<object>)(() => new FusedSGD((IEnumerable<Parameter>)null!, 0.1)), typeof(ArgumentNullException), "parameters" },
            new object[] { "negative lr", (Func<object>)(() => new FusedSGD(p, -0.1)), typeof(ArgumentException), "Invalid learning rate: -0.1" },
            new object[] { "NaN momentum", (Func<object>)(() => new FusedSGD(p, 0.1, momentum: double.NaN)), typeof(ArgumentException), "Invalid momentum value: NaN" },
            new object[] { "integer parameter", (Func<object>)(() => new FusedSGD(integer, 0.1)), typeof(ArgumentException), "has dtype Int32" },
            new object[] { "mixed dtypes", (Func<object>)(() => new FusedSGD(mixed, 0.1)), typeof(ArgumentException), "must share one dtype" },
            new object[] { "non-contiguous parameter", (Func<object>)(() => new FusedSGD(nonContiguous, 0.1)), typeof(ArgumentException), "is not contiguous" },
            new object[] { "sparse parameter", (Func<object>)(() => new FusedSGD(sparse, 0.1)), typeof(ArgumentException), "is sparse" },
            new object[] { "meta parameter", (Func<object>)(() => new FusedSGD(meta, 0.1)), typeof(ArgumentException), "is on device meta" },
            new object[] { "disposed parameter", (Func<object>)(() => new FusedSGD(new[] { disposed }, 0.1)), typeof(ArgumentException), "is null or disposed" },
            new object[] { "duplicate parameter", (Func<object>)(() => new FusedSGD(duplicate, 0.1)), typeof(ArgumentException), "appears in more than one param group" },
            new object[] { "HD negative hypergrad_lr", (Func<object>)(() => new HypergradientSGD(p, 0.1, -1)), typeof(ArgumentException), "Invalid hypergrad_lr value: -1" },
            new object[] { "HD NaN hypergrad_lr", (Func<object>)(() => new HypergradientSGD(p, 0.1, double.NaN)), typeof(ArgumentException), "Invalid hypergrad_lr value: NaN" },
            new object[] { "HD lr_min above lr_max", (Func<object>)(() => new HypergradientSGD(p, 0.1, 0, lr_min: 1, lr_max: 0.5)), typeof(ArgumentException), "must not be greater than lr_max" },
            new object[] { "HD negative lr_min", (Func<object>)(() => new HypergradientSGD(p, 0.1, 0, lr_min: -1)), typeof(ArgumentException), "Invalid lr_min value: -1" },
            new object[] { "HD unknown scope", (Func<object>)(() => new HypergradientSGD(p, 0.1, 0, (HypergradientScope)9)), typeof(ArgumentException), "Unknown scope 9" },
            new object[] { "HD unknown rule", (Func<object>)(() => new HypergradientSGD(p, 0.1, 0, rule: (HypergradientRule)7)), typeof(ArgumentException), "Unknown rule 7" },
            new object[] { "HD integer parameter", (Func<object>)(() => new HypergradientSGD(integer, 0.1, 0)), typeof(ArgumentException), "has dtype Int32" },
            new object[] { "HD disposed parameter", (Func<object>)(() => new HypergradientSGD(new[] { disposed }, 0.1, 0)), typeof(ArgumentException), "is null or disposed" },
            new object[] { "GreedyLR null optimizer", (Func<object>)(() => new GreedyLR(null!)), typeof(ArgumentNullException), "optimizer" },
            new object[] { "Adam null parameters", (Func<object>)(() => new FusedAdam((IEnumerable<Parameter>)null!)), typeof(ArgumentNullException), "parameters" },
            new object[] { "Adam negative lr", (Func<object>)(() => new FusedAdam(p, -0.1)), typeof(ArgumentException), "Invalid learning rate: -0.1" },
            new object[] { "Adam beta1 of 1", (Func<object>)(() => new FusedAdam(p, beta1: 1)), typeof(ArgumentException), "Invalid beta parameter at index 0: 1" },
            new object[] { "Adam negative beta2", (Func<object>)(() => new FusedAdam(p, beta2: -0.5)), typeof(ArgumentException), "Invalid beta parameter at index 1: -0.5" },
            new object[] { "Adam NaN eps", (Func<object>)(() => new FusedAdam(p, eps: double.NaN)), typeof(ArgumentException), "Invalid epsilon value: NaN" },
            new object[] { "AdamW negative weight decay", (Func<object>)(() => new FusedAdamW(p, weight_decay: -1)), typeof(ArgumentException), "Invalid weight_decay value: -1" },
            new object[] { "AdamW integer parameter", (Func<object>)(() => new FusedAdamW(integer)), typeof(ArgumentException), "has dtype Int32" },
            new object[] { "AdamW bad group option", (Func<object>)(() => new FusedAdamW(new[] { new FusedAdam.ParamGroup(p, beta1: 2) })), typeof(ArgumentException),
                "Invalid beta parameter at index 0: 2 (param group 0)" },
            new object[] { "GreedyLR unknown mode", (Func<object>)(() => new GreedyLR(new FusedSGD(p, 0.1), mode: "lowest")), typeof(ArgumentException), "mode 'lowest' is unknown" },
            new object[] { "GreedyLR factor 1", (Func<object>)(() => new GreedyLR(new FusedSGD(p, 0.1), factor: 1)), typeof(ArgumentException), "factor must be in (0, 1)" },
            new object[] { "GreedyLR NaN threshold", (Func<object>)(() => new GreedyLR(new FusedSGD(p, 0.1), threshold: double.NaN)), typeof(ArgumentException), "threshold must be finite" },
            new object[] { "GreedyLR window 0", (Func<object>)(() => new GreedyLR(new FusedSGD(p, 0.1), window_size: 0)), typeof(ArgumentException), "window_size must be >= 1" },
            new object[] { "GreedyLR bounds per group", (Func<object>)(() => new GreedyLR(new FusedSGD(p, 0.1), min_lr: new[] { 0.1, 0.2 })), typeof(ArgumentException), "has 2 values but the optimizer has 1 param groups" },
            new object[] { "GreedyLR min above max", (Func<object>)(() => new GreedyLR(new FusedSGD(p, 0.1), min_lr: new[] { 1.0 }, max_lr: new[] { 0.5 })), typeof(ArgumentException), "is greater than max_lr" },
        };
        return table.Select(row => new TestCaseData(row[1], row[2], row[3]).SetName($"constructor: {row[0]}"));
    }

    [TestCaseSource(nameof(ConstructorCases))]
    public void AConstructorWithBadInputNamesTheProblem(Func<object> make, Type exception, string message)
    {
        var e = Assert.Throws(exception, () => make());
        Assert.That(e!.Message, Does.Contain(message));
    }

    private static IEnumerable<TestCaseData> AddGroupCases() =>
        from s in Subjects()
        from c in new (string Name, Func<Subject, Sequential, TorchSharp.Modules.ParamGroup?> Group, Type Exception, string Message)[]
        {
            ("null group", (_, _) => null, typeof(ArgumentNullException), "param_group"),
            ("group without parameters", (s, _) => { var g = s.Group(Array.Empty<Parameter>()); g.Parameters = null!; return g; }, typeof(ArgumentException), "has no Parameters"),
            ("options of another optimizer", (_, _) => new TorchSharp.Modules.ParamGroup { Parameters = new[] { new Parameter(torch.ones(2)) }, Options = new TorchSharp.Modules.SGD.Options() },
                typeof(ArgumentException), "param group needs"),
            ("a parameter already optimized", (s, m) => s.Group(m.parameters().Take(1)), typeof(ArgumentException), "appears in more than one param group"),
            ("a float64 parameter", (s, _) => s.Group(new[] { new Parameter(torch.ones(2, ScalarType.Float64)) }), typeof(ArgumentException), "must share one dtype"),
            ("a negative rate", (s, _) => { var g = s.Group(new[] { new Parameter(torch.ones(2)) }); g.LearningRate = -2; return g; }, typeof(ArgumentException), "Invalid learning rate: -2"),
        }
        where !(s.Name.EndsWith("Global") && c.Name == "a negative rate") // the global scope uses the optimizer's rate, not a group's
        select new TestCaseData(s, c.Group, c.Exception, c.Message).SetName($"{s.Name}: add_param_group with {c.Name}");

    [TestCaseSource(nameof(AddGroupCases))]
    public void AddingABadParamGroupNamesTheProblemAndChangesNothing(Subject subject, Func<Subject, Sequential, TorchSharp.Modules.ParamGroup?> group, Type exception, string message)
    {
        var (model, optimizer) = Stepped(subject);
        using var _ = model;
        using var __ = optimizer;
        var before = Saved(optimizer);
        int groups = optimizer.ParamGroups.Count();
        var g = group(subject, model);
        var e = Assert.Throws(exception, () => optimizer.add_param_group(g!));
        Assert.That(e!.Message, Does.Contain(message));
        Assert.That(optimizer.ParamGroups.Count(), Is.EqualTo(groups));
        Assert.That(Saved(optimizer), Is.EqualTo(before));
    }

    public static IEnumerable<Subject> SgdSubjects() => Subjects().Where(s => !IsAdam(s));

    public static IEnumerable<Subject> AdamSubjects() => Subjects().Where(IsAdam);

    [TestCaseSource(nameof(AdamSubjects))]
    public void AnInvalidBetasSetterChangesNothing(Subject subject)
    {
        var (model, optimizer) = Stepped(subject);
        using var _ = model;
        using var __ = optimizer;
        var before = Saved(optimizer);
        var betas = (IBetas)optimizer;
        foreach (var bad in new[] { (1.0, 0.9), (0.9, -0.1), (double.NaN, 0.9), (0.9, double.PositiveInfinity) })
        {
            var e = Assert.Throws<ArgumentException>(() => betas.Betas = bad);
            Assert.That(e!.Message, Does.Contain("Invalid beta parameter at index"));
            Assert.That(Saved(optimizer), Is.EqualTo(before));
        }
    }

    [TestCaseSource(nameof(SgdSubjects))]
    public void AnInvalidMomentumSetterChangesNothing(Subject subject)
    {
        var (model, optimizer) = Stepped(subject);
        using var _ = model;
        using var __ = optimizer;
        var before = Saved(optimizer);
        var momentum = (torch.optim.IMomentum)optimizer;
        foreach (var bad in new[] { -1.0, double.NaN, double.PositiveInfinity })
        {
            var e = Assert.Throws<ArgumentException>(() => momentum.Momentum = bad);
            Assert.That(e!.Message, Does.Contain("Invalid momentum value"));
            Assert.That(Saved(optimizer), Is.EqualTo(before));
        }
    }

    [TestCaseSource(nameof(Subjects))]
    public void LoadingBadDataNamesTheProblemAndChangesNothing(Subject subject)
    {
        var (model, optimizer) = Stepped(subject);
        using var _ = model;
        using var __ = optimizer;
        var before = Saved(optimizer);
        void Load(byte[] data)
        {
            using var reader = new BinaryReader(new MemoryStream(data));
            switch (optimizer)
            {
                case FusedSGD f:
                    f.load_state_dict(reader);
                    break;
                case FusedAdam a:
                    a.load_state_dict(reader);
                    break;
                default:
                    ((HypergradientSGD)optimizer).load_state_dict(reader);
                    break;
            }
        }
        Assert.That(() => Load(Array.Empty<byte>()), Throws.TypeOf<InvalidDataException>().With.Message.Contains("ends before"));
        Assert.That(() => Load(new byte[] { 3, (byte)'S', (byte)'G', (byte)'D', 1, 0 }), Throws.TypeOf<InvalidDataException>().With.Message.Contains("not of a"));
        Assert.That(() => Load(before[..(before.Length / 2)]), Throws.TypeOf<InvalidDataException>());
        Assert.That(Saved(optimizer), Is.EqualTo(before));
        if (optimizer is FusedSGD fused)
        {
            Assert.That(() => fused.load_state_dict((BinaryReader)null!), Throws.ArgumentNullException);
        }
    }

    // ---- GreedyLR ------------------------------------------------------------------------------------

    private static byte[] Saved(GreedyLR scheduler)
    {
        var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream))
        {
            scheduler.save_state_dict(writer);
        }
        return stream.ToArray();
    }

    [Test]
    public void GreedyLRBadMetricsAndRatesFollowTheDocumentedBehaviour()
    {
        using var model = Harness.Mlp(92);
        using var optimizer = new FusedSGD(model.parameters(), 0.1);
        var scheduler = new GreedyLR(optimizer, patience: 10);
        scheduler.step(1.0);

        // Documented: NaN and infinite metrics count as "not better" (and never become the best).
        scheduler.step(double.NaN);
        scheduler.step(double.NegativeInfinity);
        Assert.That(scheduler.State.Best, Is.EqualTo(1.0));
        Assert.That(scheduler.State.NumBad, Is.EqualTo(2));

        // A rate set to NaN or a negative value by someone else: a clear error, nothing changes.
        var before = Saved(scheduler);
        foreach (var bad in new[] { double.NaN, -1.0, double.PositiveInfinity })
        {
            optimizer.ParamGroups.First().LearningRate = bad;
            var e = Assert.Throws<ArgumentException>(() => scheduler.step(0.5));
            Assert.That(e!.Message, Does.Contain("rate 0 must be finite and >= 0"));
            Assert.That(Saved(scheduler), Is.EqualTo(before));
        }
        optimizer.ParamGroups.First().LearningRate = 0.1;

        // Metric tensors with more than one element; metric-less steps.
        Assert.That(() => scheduler.step(torch.ones(2)), Throws.ArgumentException.With.Message.Contains("exactly one element"));
        Assert.That(() => scheduler.step(), Throws.InvalidOperationException);
        Assert.That(() => ((torch.optim.lr_scheduler.LRScheduler)scheduler).step((int?)3), Throws.InvalidOperationException);
        Assert.That(Saved(scheduler), Is.EqualTo(before));

        // A group added after the scheduler was created.
        optimizer.add_param_group(new FusedSGD.ParamGroup(new[] { new Parameter(torch.ones(2)) }));
        Assert.That(() => scheduler.step(0.5), Throws.InvalidOperationException.With.Message.Contains("now has 2 param groups"));
        Assert.That(Saved(scheduler), Is.EqualTo(before));
    }

    [Test]
    public void GreedyLRLoadingBadDataNamesTheProblemAndChangesNothing()
    {
        using var model = Harness.Mlp(93);
        using var optimizer = new FusedSGD(model.parameters(), 0.1);
        var scheduler = new GreedyLR(optimizer);
        scheduler.step(1.0);
        var before = Saved(scheduler);
        void Load(byte[] data)
        {
            using var reader = new BinaryReader(new MemoryStream(data));
            scheduler.load_state_dict(reader);
        }
        Assert.That(() => Load(Array.Empty<byte>()), Throws.TypeOf<InvalidDataException>().With.Message.Contains("ends early"));
        Assert.That(() => Load(new byte[] { 2, (byte)'X', (byte)'Y' }), Throws.TypeOf<InvalidDataException>().With.Message.Contains("expected a 'Optim.GreedyLR' state"));
        Assert.That(() => scheduler.load_state_dict((BinaryReader)null!), Throws.ArgumentNullException);
        Assert.That(Saved(scheduler), Is.EqualTo(before));
    }
}
