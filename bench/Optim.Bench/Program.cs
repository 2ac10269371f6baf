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
            Optim.Bench — benchmarks for the Optim optimizers.

            Usage: dotnet run -c Release --project bench/Optim.Bench -- <command> [options]

            Commands:
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

long ArgLong(string name, long fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length && long.TryParse(args[i + 1], out var v) ? v : fallback;
}
