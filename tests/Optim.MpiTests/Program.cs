using System.Diagnostics;
using System.Globalization;
using Optim;
using Optim.Bench.Comparison;
using Optim.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

// The data-parallel checks, one process per rank under mpirun (scripts/test.sh):
//   mpirun -np 2 dotnet Optim.MpiTests.dll checks    every check below; PASS/FAIL lines per rank
//   mpirun -np 2 dotnet Optim.MpiTests.dll fault     rank 1 throws at its third step (the job must end)
//   mpirun -np 2 dotnet Optim.MpiTests.dll kill      rank 1 is killed (SIGKILL) at its third step
//   mpirun -np N dotnet Optim.MpiTests.dll checkpoint save|load DIR
//                                                    sharded checkpoints written by N ranks, loaded by M
//   mpirun -np 2 dotnet Optim.MpiTests.dll collectives  all-reduce vs reduce-scatter + all-gather, interleaved
//   mpirun -np 2 dotnet Optim.MpiTests.dll hang      rank 1 sleeps at its third step; rank 0's 5 s timeout ends the job
//   mpirun -np 2 dotnet Optim.MpiTests.dll mnist     the README's MNIST MLP on N ranks (--sharded: ZeRO-1)
//   mpirun -np N dotnet Optim.MpiTests.dll buckets   step and gradient all-reduce times at 5, 25 and 100 MiB buckets, interleaved
// Each rank prints "rank R: N passed, M failed" last and exits 1 if any check failed.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
torch.set_num_threads(1);
string mode = args.Length > 0 ? args[0] : "checks";
using var group = ProcessGroup.Initialize();
int status = mode switch
{
    "checks" => new Checks(group).RunAll(),
    "fault" => Fault.Run(group, kill: false),
    "kill" => Fault.Run(group, kill: true),
    "hang" => Fault.Hang(group),
    "checkpoint" => new Checks(group).Checkpoint(args[1], args[2]),
    "collectives" => CollectiveTimes.Run(group),
    "mnist" => MnistDemo.Run(group, args.Skip(1).ToArray()),
    "buckets" => BucketTimes.Run(group),
    _ => throw new ArgumentException($"unknown mode '{mode}' (checks, fault, kill, hang, checkpoint, collectives, mnist, buckets)"),
};
return status;

/// <summary>The checks: data-parallel training against one process with the whole batch.</summary>
internal sealed partial class Checks
{
    private const int Steps = 50;
    private const int PerRank = 8;
    private const int Inputs = 20;
    private const int Classes = 5;
    private readonly ProcessGroup _group;
    private int _passed;
    private int _failed;

    public Checks(ProcessGroup group) => _group = group;

    public int RunAll()
    {
        Console.WriteLine($"rank {_group.Rank} of {_group.Size} (MPI: {_group.UsesMpi})");
        foreach (long bucket in new[] { ProcessGroup.DefaultBucketBytes, 256L })
        {
            foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
            {
                Equivalence("FusedSGD", bucket, dtype, l => new FusedSGD(l.Select(p => new FusedSGD.ParamGroup(p)), 0.05, momentum: 0.9, weight_decay: 1e-4));
            }
        }
        // 384-byte buckets: with float32, fc1's weight goes in place, its bias and fc2's weight fill a
        // bucket exactly, and fc2's bias makes it flush (every path of the packing).
        foreach (var scope in Enum.GetValues<HypergradientScope>())
        {
            foreach (var rule in Enum.GetValues<HypergradientRule>())
            {
                double beta = rule == HypergradientRule.Additive ? 1e-3 : 1e-2;
                Equivalence($"HypergradientSGD {scope} {rule}", 384, ScalarType.Float32,
                    l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, beta, scope, momentum: 0.9, rule: rule));
            }
        }
        Equivalence("HypergradientSGD PerTensor Nesterov", 384, ScalarType.Float64,
            l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, 1e-3, HypergradientScope.PerTensor, momentum: 0.9, nesterov: true));
        Accumulation();
        GreedyLRRates();
        NonFiniteSkip();
        ShardedChecks();
        Console.WriteLine($"rank {_group.Rank}: {_passed} passed, {_failed} failed");
        return _failed == 0 ? 0 : 1;
    }

    private void Check(string name, bool ok, string detail)
    {
        if (ok)
        {
            _passed++;
            Console.WriteLine($"PASS [rank {_group.Rank}] {name}");
        }
        else
        {
            _failed++;
            Console.WriteLine($"FAIL [rank {_group.Rank}] {name}: {detail}");
        }
    }

    // Two layers in two param groups (per-group HD), seeded: rank r starts from seed 100 + r, so the
    // broadcast is what makes the replicas equal; the reference starts from rank 0's seed.
    private static Sequential Model(int seed, ScalarType dtype)
    {
        torch.manual_seed(seed);
        var model = nn.Sequential(("fc1", nn.Linear(Inputs, 16)), ("act", nn.Tanh()), ("fc2", nn.Linear(16, Classes)));
        model.to(dtype);
        return model;
    }

    // The parameters of each layer: one param group each.
    private static Parameter[][] Layers(Sequential model) => model.children()
        .Select(c => c.parameters().ToArray()).Where(p => p.Length > 0).ToArray();

    // The whole batch of one step (every rank's share, rank by rank), the same on every rank.
    private (Tensor X, Tensor Y) Batch(int step, int ranks, ScalarType dtype)
    {
        using var generator = new torch.Generator((ulong)(1000 + step));
        var x = torch.randn(new long[] { ranks * PerRank, Inputs }, generator: generator).to(dtype);
        var y = torch.randint(0, Classes, new long[] { ranks * PerRank }, generator: generator);
        return (x, y);
    }

    private static Tensor Loss(Sequential model, Tensor x, Tensor y) => nn.functional.cross_entropy(model.call(x), y);

    // N ranks with batch B each against one process with batch N*B, `Steps` steps: parameters, every
    // state tensor and rate within float tolerance, and the replicas exactly equal.
    private void Equivalence(string name, long bucketBytes, ScalarType dtype, Func<Parameter[][], OptimizerHelper> optimizer)
    {
        string label = $"{name} {dtype} bucket {bucketBytes} B: {_group.Size} ranks x batch {PerRank} = 1 process x batch {_group.Size * PerRank}, {Steps} steps";
        using var scope = torch.NewDisposeScope();
        var model = Model(100 + _group.Rank, dtype);
        var reference = Model(100, dtype);
        var dp = new DataParallel(model, _group, bucketBytes);
        var opt = optimizer(Layers(model));
        var refOpt = optimizer(Layers(reference));
        for (int step = 0; step < Steps; step++)
        {
            using var stepScope = torch.NewDisposeScope();
            var (x, y) = Batch(step, _group.Size, dtype);
            int start = _group.Rank * PerRank;
            opt.zero_grad();
            Loss(model, x[start..(start + PerRank)], y[start..(start + PerRank)]).backward();
            dp.SynchronizeGradients();
            opt.step();
            refOpt.zero_grad();
            Loss(reference, x, y).backward();
            refOpt.step();
        }
        double tol = dtype == ScalarType.Float32 ? 2e-5 : 1e-12;
        var (worst, where) = Compare(model.parameters(), reference.parameters(), tol);
        var (worstState, whereState) = CompareStates(opt, refOpt, tol);
        if (worstState > worst)
        {
            (worst, where) = (worstState, whereState);
        }
        double spread = dp.MaxParameterDifference();
        Check(label, worst <= 1 && spread == 0,
            $"worst error {worst:G3} x tolerance ({where}); largest difference between ranks {spread:G3}");
    }

    // Largest |a - b| / (tol * (1 + |b|)) over the tensors.
    private static (double Worst, string Where) Compare(IEnumerable<Tensor> a, IEnumerable<Tensor> b, double tol, string what = "parameter")
    {
        double worst = 0;
        string where = "";
        int i = 0;
        foreach (var (x, y) in a.Zip(b))
        {
            using var _ = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            double e = x.numel() == 0 ? 0 : ((x - y).abs() / (tol * (1 + y.abs()))).max().to_type(ScalarType.Float64).item<double>();
            if (!(e <= worst))
            {
                (worst, where) = (double.IsNaN(e) ? double.PositiveInfinity : e, $"{what} {i}");
            }
            i++;
        }
        return (worst, where);
    }

    // Every state tensor and rate of the two optimizers (momentum buffers, previous updates, rates).
    private static (double Worst, string Where) CompareStates(OptimizerHelper a, OptimizerHelper b, double tol)
    {
        var (ta, ra) = StateOf(a);
        var (tb, rb) = StateOf(b);
        var (worst, where) = Compare(ta, tb, tol, "state tensor");
        for (int i = 0; i < ra.Count; i++)
        {
            double e = Math.Abs(ra[i] - rb[i]) / (tol * (1 + Math.Abs(rb[i])));
            if (!(e <= worst))
            {
                (worst, where) = (double.IsNaN(e) ? double.PositiveInfinity : e, $"rate {i}");
            }
        }
        return (worst, where);
    }

    private static (List<Tensor> Tensors, List<double> Rates) StateOf(OptimizerHelper optimizer)
    {
        var tensors = new List<Tensor>();
        var rates = optimizer.ParamGroups.Select(g => g.LearningRate).ToList();
        if (optimizer is HypergradientSGD hd)
        {
            rates.AddRange(hd.TensorLearningRates());
        }
        foreach (var state in optimizer.state_dict().State)
        {
            switch (state)
            {
                case FusedSGD.State s:
                    tensors.AddRange(new[] { s.momentum_buffer }.OfType<Tensor>());
                    break;
                case HypergradientSGD.State s:
                    tensors.AddRange(new[] { s.momentum_buffer, s.prev_update, s.parameter_rates }.OfType<Tensor>());
                    break;
                case FusedAdam.State s:
                    tensors.AddRange(new[] { s.exp_avg, s.exp_avg_sq, s.max_exp_avg_sq }.OfType<Tensor>());
                    tensors.Add(torch.tensor((double)s.step));
                    break;
            }
        }
        return (tensors, rates);
    }

    // Gradient accumulation: 3 micro-steps, the first two inside NoSync (no communication: the ranks'
    // gradients still differ), then one synchronisation; equals one process accumulating the
    // corresponding whole batches.
    private void Accumulation()
    {
        const int Micro = 3;
        using var scope = torch.NewDisposeScope();
        var model = Model(100 + _group.Rank, ScalarType.Float64);
        var reference = Model(100, ScalarType.Float64);
        var dp = new DataParallel(model, _group, 512);
        var opt = new FusedSGD(model.parameters(), 0.05, momentum: 0.9);
        var refOpt = new FusedSGD(reference.parameters(), 0.05, momentum: 0.9);
        bool localWhileNoSync = true;
        for (int step = 0; step < 10; step++)
        {
            using var stepScope = torch.NewDisposeScope();
            opt.zero_grad();
            refOpt.zero_grad();
            for (int m = 0; m < Micro; m++)
            {
                var (x, y) = Batch(step * Micro + m, _group.Size, ScalarType.Float64);
                int start = _group.Rank * PerRank;
                if (m < Micro - 1)
                {
                    using (dp.NoSync())
                    {
                        Loss(model, x[start..(start + PerRank)], y[start..(start + PerRank)]).backward();
                        dp.SynchronizeGradients();
                    }
                    double norm = model.parameters().First().grad!.norm().item<double>();
                    localWhileNoSync &= _group.Size == 1 || _group.AllReduce(norm, ReduceOp.Max) != _group.AllReduce(norm, ReduceOp.Min);
                }
                else
                {
                    Loss(model, x[start..(start + PerRank)], y[start..(start + PerRank)]).backward();
                    dp.SynchronizeGradients();
                }
                Loss(reference, x, y).backward();
            }
            opt.step();
            refOpt.step();
        }
        var (worst, where) = Compare(model.parameters(), reference.parameters(), 1e-12);
        Check($"gradient accumulation: {Micro} micro-steps, NoSync on the first {Micro - 1}, 10 steps", worst <= 1 && localWhileNoSync,
            $"worst error {worst:G3} x tolerance ({where}); gradients stayed local inside NoSync: {localWhileNoSync}");
    }

    // GreedyLR stepped on the mean metric over ranks: the same rates on every rank, and the rates of
    // one scheduler stepped with that mean computed locally.
    private void GreedyLRRates()
    {
        using var scope = torch.NewDisposeScope();
        var model = Model(100, ScalarType.Float32);
        var reference = Model(100, ScalarType.Float32);
        var dp = new DataParallel(model, _group);
        var scheduler = new GreedyLR(new FusedSGD(model.parameters(), 0.1), factor: 0.8, patience: 2);
        var refScheduler = new GreedyLR(new FusedSGD(reference.parameters(), 0.1), factor: 0.8, patience: 2);
        static double Metric(int step, int rank) => 1.0 / (1 + step) + 0.05 * Math.Sin(step * 1.7 + rank * 2.3) + 0.01 * rank;
        bool equal = true, sameAsReference = true;
        var changes = 0;
        double last = 0.1;
        for (int step = 0; step < 200; step++)
        {
            scheduler.step(dp.MeanMetric(Metric(step, _group.Rank)));
            double sum = 0;
            for (int r = 0; r < _group.Size; r++)
            {
                sum += Metric(step, r);
            }
            refScheduler.step(sum / _group.Size);
            double rate = scheduler.LearningRates[0];
            equal &= _group.AllReduce(rate, ReduceOp.Max) == _group.AllReduce(rate, ReduceOp.Min);
            sameAsReference &= rate == refScheduler.LearningRates[0];
            changes += rate != last ? 1 : 0;
            last = rate;
        }
        Check($"GreedyLR on the mean metric: rates identical on every rank over 200 evaluations ({changes} changes)",
            equal && sameAsReference && changes > 2,
            $"identical across ranks: {equal}; equal to the local reference: {sameAsReference}; rate changes: {changes}");
    }

    // A NaN gradient on the last rank only: after the all-reduce every rank sees it, so
    // HypergradientSGD skips the step on every rank and the replicas stay equal.
    private void NonFiniteSkip()
    {
        using var scope = torch.NewDisposeScope();
        var model = Model(100 + _group.Rank, ScalarType.Float32);
        var dp = new DataParallel(model, _group);
        var opt = new HypergradientSGD(model.parameters(), 0.05, 1e-3, HypergradientScope.PerTensor, momentum: 0.9);
        bool unchanged = true;
        for (int step = 0; step < 10; step++)
        {
            using var stepScope = torch.NewDisposeScope();
            var (x, y) = Batch(step, _group.Size, ScalarType.Float32);
            int start = _group.Rank * PerRank;
            opt.zero_grad();
            Loss(model, x[start..(start + PerRank)], y[start..(start + PerRank)]).backward();
            bool poison = step == 5 && _group.Rank == _group.Size - 1;
            if (poison)
            {
                using var _ = torch.no_grad();
                model.parameters().First().grad![0, 0] = float.NaN;
            }
            var before = step == 5 ? model.parameters().Select(p => p.detach().clone()).ToArray() : null;
            dp.SynchronizeGradients();
            bool anyNonFinite = dp.AnyRank(poison);
            opt.step();
            if (before is not null)
            {
                unchanged &= anyNonFinite && Compare(model.parameters(), before, 1e-30).Worst == 0;
            }
        }
        long skipped = opt.SkippedSteps;
        bool agreed = _group.AllReduce(skipped, ReduceOp.Max) == 1 && _group.AllReduce(skipped, ReduceOp.Min) == 1;
        double spread = dp.MaxParameterDifference();
        Check("non-finite gradient on one rank: HypergradientSGD skips that step on every rank",
            agreed && unchanged && spread == 0,
            $"skipped {skipped} here, agreed on all ranks: {agreed}; parameters unchanged by the skipped step: {unchanged}; largest difference between ranks {spread:G3}");
    }
}

/// <summary>ZeRO stage 1: <see cref="ShardedOptimizer"/> against replicated state (<see cref="DataParallel"/>).</summary>
internal sealed partial class Checks
{
    private void ShardedChecks()
    {
        foreach (long bucket in new[] { ProcessGroup.DefaultBucketBytes, 384L })
        {
            foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
            {
                Sharded("FusedSGD", bucket, dtype, l => new FusedSGD(l.Select(p => new FusedSGD.ParamGroup(p)), 0.05, momentum: 0.9, weight_decay: 1e-4));
            }
        }
        Sharded("FusedSGD Nesterov", 256, ScalarType.Float32, l => new FusedSGD(l.Select(p => new FusedSGD.ParamGroup(p)), 0.05, momentum: 0.9, nesterov: true));
        Sharded("FusedAdam", 384, ScalarType.Float32, l => new FusedAdam(l.Select(p => new FusedAdam.ParamGroup(p)), 1e-2));
        Sharded("FusedAdam amsgrad", ProcessGroup.DefaultBucketBytes, ScalarType.Float64, l => new FusedAdam(l.Select(p => new FusedAdam.ParamGroup(p)), 1e-2, amsgrad: true));
        Sharded("FusedAdamW", 384, ScalarType.Float32, l => new FusedAdamW(l.Select(p => new FusedAdamW.ParamGroup(p)), 1e-2, weight_decay: 0.05));
        foreach (var scope in new[] { HypergradientScope.PerTensor, HypergradientScope.PerParameter })
        {
            foreach (var rule in Enum.GetValues<HypergradientRule>())
            {
                double beta = rule == HypergradientRule.Additive ? 1e-3 : 1e-2;
                Sharded($"HypergradientSGD {scope} {rule}", 384, ScalarType.Float32,
                    l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, beta, scope, momentum: 0.9, rule: rule));
            }
        }
        Sharded("HypergradientSGD PerTensor no momentum", 256, ScalarType.Float64,
            l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, 1e-3, HypergradientScope.PerTensor));
        // The scopes whose rates sum over tensors of several ranks, and clipping by the whole model's norm
        // (max_grad_norm small enough to clip on every step).
        foreach (var scope in new[] { HypergradientScope.Global, HypergradientScope.PerGroup })
        {
            foreach (var rule in Enum.GetValues<HypergradientRule>())
            {
                double beta = rule == HypergradientRule.Additive ? 1e-3 : 1e-2;
                Sharded($"HypergradientSGD {scope} {rule}", 384, ScalarType.Float32,
                    l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, beta, scope, momentum: 0.9, rule: rule));
            }
            Sharded($"HypergradientSGD {scope} clipped", 384, ScalarType.Float64,
                l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, 1e-3, scope, momentum: 0.9, max_grad_norm: 0.05));
        }
        Sharded("HypergradientSGD PerTensor clipped", 384, ScalarType.Float32,
            l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, 1e-3, HypergradientScope.PerTensor, max_grad_norm: 0.05));
        Sharded("FusedSGD clipped", 384, ScalarType.Float32,
            l => new FusedSGD(l.Select(p => new FusedSGD.ParamGroup(p)), 0.05, momentum: 0.9, max_grad_norm: 0.05));
        Sharded("FusedAdamW clipped", ProcessGroup.DefaultBucketBytes, ScalarType.Float64,
            l => new FusedAdamW(l.Select(p => new FusedAdamW.ParamGroup(p)), 1e-2, weight_decay: 0.05, max_grad_norm: 0.05));
        // One tensor over every rank: the ranks without a tensor still take part in the step's sums.
        Sharded("HypergradientSGD Global clipped, one tensor (ranks without a tensor)", 384, ScalarType.Float64,
            l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, 1e-3, HypergradientScope.Global, momentum: 0.9, max_grad_norm: 0.05),
            model => new[] { new[] { model.parameters().First() } });
        ShardedNonFiniteSkip();
    }

    // The same training with sharded and with replicated state, `Steps` steps: the parameters, and each
    // state tensor and rate this rank owns against the replicated optimizer's for the same parameter.
    private void Sharded(string name, long bucketBytes, ScalarType dtype, Func<Parameter[][], OptimizerHelper> optimizer,
        Func<Sequential, Parameter[][]>? select = null)
    {
        select ??= Layers;
        string label = $"sharded {name} {dtype} bucket {bucketBytes} B: equals replicated state on {_group.Size} ranks, {Steps} steps";
        using var scope = torch.NewDisposeScope();
        var model = Model(100 + _group.Rank, dtype);
        var replica = Model(100 + _group.Rank, dtype);
        var dp = new DataParallel(model, _group, bucketBytes);
        var dpReplica = new DataParallel(replica, _group, bucketBytes);
        var sharded = new ShardedOptimizer(select(model), _group, optimizer, bucketBytes);
        var replicated = optimizer(select(replica));
        for (int step = 0; step < Steps; step++)
        {
            using var stepScope = torch.NewDisposeScope();
            var (x, y) = Batch(step, _group.Size, dtype);
            int start = _group.Rank * PerRank;
            sharded.zero_grad();
            Loss(model, x[start..(start + PerRank)], y[start..(start + PerRank)]).backward();
            sharded.step();
            replicated.zero_grad();
            Loss(replica, x[start..(start + PerRank)], y[start..(start + PerRank)]).backward();
            dpReplica.SynchronizeGradients();
            replicated.step();
        }
        double tol = dtype == ScalarType.Float32 ? 2e-5 : 1e-12;
        var (worst, where) = Compare(model.parameters(), replica.parameters(), tol);
        var (tensors, rates) = StateOf(sharded.Inner);
        var (allTensors, allRates) = StateOf(replicated);
        var owners = sharded.Owners;
        int perParameter = allTensors.Count / Math.Max(1, owners.Count);
        var mine = allTensors.Where((_, i) => owners[i / Math.Max(1, perParameter)] == _group.Rank).ToList();
        int groups = replicated.ParamGroups.Count();
        var myRates = allRates.Take(groups).Concat(allRates.Skip(groups).Where((_, i) => owners[i] == _group.Rank)).ToList();
        bool shapes = tensors.Count == mine.Count && rates.Count == myRates.Count && allTensors.Count == perParameter * owners.Count;
        var (worstState, whereState) = shapes ? CompareStates(tensors, rates, mine, myRates, tol) : (double.PositiveInfinity, "state counts differ");
        if (worstState > worst)
        {
            (worst, where) = (worstState, whereState);
        }
        long owned = sharded.OwnedElements;
        long total = select(model).SelectMany(g => g).Sum(p => p.numel());
        // Every rank holds part of the model and none holds all of it (with one tensor: rank 0 holds it).
        bool whole = _group.AllReduce(owned, ReduceOp.Sum) == total;
        bool split = _group.Size == 1 || (whole && (owned < total || select(model).SelectMany(g => g).Count() == 1));
        double spread = dp.MaxParameterDifference();
        // Every rank's rates (global and per-group scopes: all of them) and clipping norm are the same bits.
        // (A fixed number of collectives on every rank: a missing norm counts as -1, and no short-circuit.)
        var groupRates = sharded.Inner.ParamGroups.Select(g => g.LearningRate).ToList();
        using var norm = sharded.Inner switch
        {
            FusedSGD f => f.GradNorm,
            FusedAdam a => a.GradNorm,
            HypergradientSGD h => h.GradNorm,
            _ => null,
        };
        groupRates.Add(norm?.item<double>() ?? -1);
        var highest = groupRates.ToArray();
        var lowest = groupRates.ToArray();
        _group.AllReduce(highest, ReduceOp.Max);
        _group.AllReduce(lowest, ReduceOp.Min);
        bool sameRates = groupRates.Select((r, i) => highest[i] == r && lowest[i] == r).All(same => same);
        Check(label, worst <= 1 && spread == 0 && split && sameRates,
            $"worst error {worst:G3} x tolerance ({where}); largest difference between ranks {spread:G3}; owns {owned} of {total} elements; " +
            $"group rates and norm identical on every rank: {sameRates} ({string.Join(", ", groupRates.Select(r => r.ToString("R")))})");
    }

    // A NaN in one rank's gradient of a tensor another rank owns: every rank skips the step.
    private void ShardedNonFiniteSkip()
    {
        using var scope = torch.NewDisposeScope();
        var model = Model(100 + _group.Rank, ScalarType.Float32);
        var dp = new DataParallel(model, _group);
        var sharded = new ShardedOptimizer(Layers(model), _group,
            l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, 1e-3, HypergradientScope.PerTensor, momentum: 0.9));
        int poisoned = sharded.Owners.ToList().IndexOf(0); // a tensor rank 0 owns, poisoned on the last rank
        bool unchanged = true;
        for (int step = 0; step < 10; step++)
        {
            using var stepScope = torch.NewDisposeScope();
            var (x, y) = Batch(step, _group.Size, ScalarType.Float32);
            int start = _group.Rank * PerRank;
            sharded.zero_grad();
            Loss(model, x[start..(start + PerRank)], y[start..(start + PerRank)]).backward();
            if (step == 5 && _group.Rank == _group.Size - 1)
            {
                using var _ = torch.no_grad();
                model.parameters().ElementAt(poisoned).grad!.view(-1)[0] = float.NaN;
            }
            var before = step == 5 ? model.parameters().Select(p => p.detach().clone()).ToArray() : null;
            sharded.step();
            if (before is not null)
            {
                unchanged &= Compare(model.parameters(), before, 1e-30).Worst == 0;
            }
        }
        long skipped = sharded.SkippedSteps;
        bool agreed = _group.AllReduce(skipped, ReduceOp.Max) == 1 && _group.AllReduce(skipped, ReduceOp.Min) == 1;
        double spread = dp.MaxParameterDifference();
        Check("sharded: a non-finite gradient on one rank skips the step on every rank",
            agreed && unchanged && spread == 0,
            $"skipped {skipped} here, agreed: {agreed}; unchanged by the skipped step: {unchanged}; largest difference between ranks {spread:G3}");
    }

    // The optimizers whose sharded checkpoints are checked, by directory name.
    private static readonly (string Name, Func<Parameter[][], OptimizerHelper> Create)[] s_checkpointed =
    {
        ("FusedAdamW", l => new FusedAdamW(l.Select(p => new FusedAdamW.ParamGroup(p)), 1e-2, weight_decay: 0.05)),
        ("HypergradientSGD-PerTensor", l => new HypergradientSGD(l.Select(p => new HypergradientSGD.ParamGroup(p)), 0.05, 1e-2, HypergradientScope.PerTensor, momentum: 0.9, rule: HypergradientRule.Normalized)),
        ("FusedSGD", l => new FusedSGD(l.Select(p => new FusedSGD.ParamGroup(p)), 0.05, momentum: 0.9)),
    };

    private const int CheckpointAt = 20;

    /// <summary>
    /// Checkpoints across job sizes, in two runs (scripts/test.sh): "save" trains sharded for 20 steps, saves
    /// the model and the sharded state, trains 20 more and keeps the final parameters (the uninterrupted
    /// run); "load", with any number of ranks, loads both, trains the same 20 steps and compares. Each step's
    /// global batch is the same 16 rows whatever the number of ranks (each rank takes 16 / ranks of them).
    /// </summary>
    public int Checkpoint(string phase, string directory)
    {
        foreach (var (name, create) in s_checkpointed)
        {
            string dir = Path.Combine(directory, name);
            using var scope = torch.NewDisposeScope();
            var model = Model(100 + _group.Rank, ScalarType.Float64);
            if (phase == "load")
            {
                model.load(Path.Combine(dir, "model.bin"));
            }
            var dp = new DataParallel(model, _group); // a save run's ranks start from rank 0's parameters
            var sharded = new ShardedOptimizer(Layers(model), _group, create, 256);
            if (phase == "save")
            {
                Directory.CreateDirectory(dir);
                Train(model, sharded, 0, CheckpointAt);
                if (_group.Rank == 0)
                {
                    model.save(Path.Combine(dir, "model.bin"));
                }
                sharded.SaveCheckpoint(dir);
                Train(model, sharded, CheckpointAt, 2 * CheckpointAt);
                if (_group.Rank == 0)
                {
                    model.save(Path.Combine(dir, "uninterrupted.bin"));
                }
                _group.AllReduce(0.0, ReduceOp.Max);
                Check($"checkpoint {name}: saved by {_group.Size} ranks after {CheckpointAt} steps", File.Exists(Path.Combine(dir, "manifest.json")), "no manifest");
                continue;
            }
            sharded.LoadCheckpoint(dir);
            Train(model, sharded, CheckpointAt, 2 * CheckpointAt);
            var reference = Model(100, ScalarType.Float64);
            reference.load(Path.Combine(dir, "uninterrupted.bin"));
            var (worst, where) = Compare(model.parameters(), reference.parameters(), 1e-10);
            double spread = dp.MaxParameterDifference();
            Check($"checkpoint {name}: loaded by {_group.Size} ranks, {CheckpointAt} more steps equal the uninterrupted run",
                worst <= 1 && spread == 0, $"worst error {worst:G3} x tolerance ({where}); largest difference between ranks {spread:G3}");
        }
        Console.WriteLine($"rank {_group.Rank}: {_passed} passed, {_failed} failed");
        return _failed == 0 ? 0 : 1;
    }

    private void Train(Sequential model, ShardedOptimizer sharded, int from, int to)
    {
        int share = 2 * PerRank / _group.Size;
        for (int step = from; step < to; step++)
        {
            using var stepScope = torch.NewDisposeScope();
            var (x, y) = Batch(step, 2, ScalarType.Float64);
            int start = _group.Rank * share;
            sharded.zero_grad();
            Loss(model, x[start..(start + share)], y[start..(start + share)]).backward();
            sharded.step();
        }
    }

    private static (double Worst, string Where) CompareStates(List<Tensor> ta, List<double> ra, List<Tensor> tb, List<double> rb, double tol)
    {
        var (worst, where) = Compare(ta, tb, tol, "state tensor");
        for (int i = 0; i < ra.Count; i++)
        {
            double e = Math.Abs(ra[i] - rb[i]) / (tol * (1 + Math.Abs(rb[i])));
            if (!(e <= worst))
            {
                (worst, where) = (double.IsNaN(e) ? double.PositiveInfinity : e, $"rate {i}");
            }
        }
        return (worst, where);
    }
}

/// <summary>A rank that fails at its third step (throws, or is killed) while the others wait in the all-reduce.</summary>
internal static partial class Fault
{
    public static int Run(ProcessGroup group, bool kill)
    {
        using var scope = torch.NewDisposeScope();
        var model = nn.Sequential(("fc", nn.Linear(10, 10)));
        var dp = new DataParallel(model, group);
        var opt = new FusedSGD(model.parameters(), 0.1);
        for (int step = 0; step < 1000; step++)
        {
            if (step == 3 && group.Rank == 1 && kill)
            {
                Process.GetCurrentProcess().Kill();
            }
            if (step == 3 && group.Rank == 1)
            {
                throw new InvalidOperationException("rank 1 fails on purpose at step 3");
            }
            opt.zero_grad();
            model.call(torch.randn(4, 10)).sum().backward();
            dp.SynchronizeGradients();
            opt.step();
        }
        Console.WriteLine($"rank {group.Rank}: finished, which it should not have");
        return 0;
    }
}

/// <summary>A rank that hangs while alive: rank 1 sleeps 10 minutes at its third step, so rank 0 waits in the
/// all-reduce; with a 5 s timeout rank 0 must end the job with a message naming the collective.</summary>
internal static partial class Fault
{
    public static int Hang(ProcessGroup group)
    {
        group.Timeout = TimeSpan.FromSeconds(5);
        Console.WriteLine($"rank {group.Rank}: timeout {group.Timeout.TotalSeconds} s");
        using var scope = torch.NewDisposeScope();
        var model = nn.Sequential(("fc", nn.Linear(10, 10)));
        var dp = new DataParallel(model, group);
        var opt = new FusedSGD(model.parameters(), 0.1);
        for (int step = 0; step < 1000; step++)
        {
            if (step == 3 && group.Rank == 1)
            {
                Thread.Sleep(TimeSpan.FromMinutes(10));
            }
            opt.zero_grad();
            model.call(torch.randn(4, 10)).sum().backward();
            dp.SynchronizeGradients();
            opt.step();
        }
        Console.WriteLine($"rank {group.Rank}: finished, which it should not have");
        return 0;
    }
}

/// <summary>
/// The replicated mode's collective (an all-reduce of the gradients) against the sharded mode's (a
/// reduce-scatter of the gradients and an all-gather of the parameters), interleaved in one run, rank 0's
/// median over 21 repetitions of each, and the ratio.
/// </summary>
internal static class CollectiveTimes
{
    public static int Run(ProcessGroup group)
    {
        foreach (var (elements, tensors) in new[] { (1_000_000L, 4), (1_000_000L, 1000), (10_000_000L, 4), (10_000_000L, 1000) })
        {
            using var scope = torch.NewDisposeScope();
            var list = Enumerable.Range(0, tensors).Select(_ => torch.randn(elements / tensors)).ToArray();
            var owners = ShardedOptimizer.Assign(list.Select(t => t.numel()).ToArray(), group.Size);
            var allReduce = new List<double>();
            var sharded = new List<double>();
            var watch = new Stopwatch();
            for (int rep = 0; rep < 22; rep++)
            {
                group.AllReduce(0.0, ReduceOp.Max); // start together
                watch.Restart();
                group.AllReduce(list, ReduceOp.Mean);
                watch.Stop();
                allReduce.Add(watch.Elapsed.TotalMilliseconds);
                group.AllReduce(0.0, ReduceOp.Max);
                watch.Restart();
                group.ReduceScatter(list, owners, ReduceOp.Mean);
                group.AllGather(list, owners);
                watch.Stop();
                sharded.Add(watch.Elapsed.TotalMilliseconds);
            }
            double a = Median(allReduce.Skip(1)), b = Median(sharded.Skip(1));
            long bytes = elements * 4;
            if (group.Rank == 0)
            {
                Console.WriteLine($"{elements:N0} fp32 elements in {tensors} tensors, {group.Size} ranks: all-reduce {a:F2} ms, " +
                    $"reduce-scatter + all-gather {b:F2} ms, ratio {b / a:F2}; each sends about {2 * (group.Size - 1) * bytes / group.Size:N0} bytes per rank (ring)");
            }
        }
        return 0;
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted[sorted.Length / 2];
    }
}

/// <summary>The README's example: the MNIST MLP of the compare job trained data-parallel.</summary>
internal static class MnistDemo
{
    public static int Run(ProcessGroup group, string[] args)
    {
        string data = Option(args, "--data", "artifacts/data/mnist");
        int epochs = int.Parse(Option(args, "--epochs", "2"), CultureInfo.InvariantCulture);
        int perRank = int.Parse(Option(args, "--batch", "64"), CultureInfo.InvariantCulture);
        using var digits = Digits.Load(data);
        torch.manual_seed(1 + group.Rank); // different on each rank: DataParallel makes them rank 0's
        var model = nn.Sequential(("fc1", nn.Linear(784, 128)), ("relu", nn.ReLU()), ("fc2", nn.Linear(128, 10)));
        var dp = new DataParallel(model, group);
        // --sharded: ZeRO stage 1 (each rank keeps the momentum of its own tensors); else replicated state.
        bool shardedMode = args.Contains("--sharded");
        var sharded = shardedMode
            ? new ShardedOptimizer(new[] { model.parameters() }, group, l => new FusedSGD(l.SelectMany(p => p), 0.1, momentum: 0.9))
            : null;
        var optimizer = sharded?.Inner ?? new FusedSGD(model.parameters(), 0.1, momentum: 0.9);
        long n = digits.TrainX.shape[0];
        long global = (long)perRank * group.Size;
        long stepsPerEpoch = n / global;
        double lastLoss = 0;
        var watch = new Stopwatch();
        var syncWatch = new Stopwatch();
        long steps = 0;
        for (int epoch = 0; epoch < epochs; epoch++)
        {
            using var generator = new torch.Generator((ulong)(42 + epoch));
            using var order = torch.randperm(n, generator: generator); // the same order on every rank
            double sum = 0;
            for (long s = 0; s < stepsPerEpoch; s++)
            {
                using var scope = torch.NewDisposeScope();
                long start = s * global + (long)group.Rank * perRank;
                var idx = order.narrow(0, start, perRank);
                watch.Start();
                model.zero_grad();
                var loss = nn.functional.cross_entropy(model.call(digits.TrainX.index_select(0, idx)), digits.TrainY.index_select(0, idx));
                loss.backward();
                syncWatch.Start();
                if (sharded is not null)
                {
                    sharded.step(); // reduce-scatter, this rank's step, all-gather
                }
                else
                {
                    dp.SynchronizeGradients();
                }
                syncWatch.Stop();
                if (sharded is null)
                {
                    optimizer.step();
                }
                watch.Stop();
                sum += loss.item<float>();
                steps++;
            }
            lastLoss = sum / stepsPerEpoch;
        }
        using var valScope = torch.NewDisposeScope();
        double valLoss;
        using (torch.no_grad())
        {
            valLoss = nn.functional.cross_entropy(model.call(digits.ValX), digits.ValY).item<float>();
        }
        double spread = dp.MaxParameterDifference();
        double stepMs = watch.Elapsed.TotalMilliseconds / steps;
        double syncMs = syncWatch.Elapsed.TotalMilliseconds / steps;
        // What each rank sends per step: a ring all-reduce sends 2 (N - 1) / N times the gradient; a
        // reduce-scatter and an all-gather send (N - 1) / N each, the same in all.
        long sent = 2 * (group.Size - 1) * dp.GradientBytes / group.Size;
        long stateBytes = (sharded?.OwnedElements ?? model.parameters().Sum(p => p.numel())) * 4;
        Console.WriteLine($"rank {group.Rank} of {group.Size}: final training loss {lastLoss:F4} (its own shard, last epoch), " +
            $"validation loss {valLoss:F4}, {steps} steps of batch {perRank} ({global} across ranks), {stepMs:F2} ms per step " +
            $"({syncMs:F2} in {(shardedMode ? "the sharded step: collectives and update" : "the gradient all-reduce")}), {stepMs * stepsPerEpoch / 1000:F2} s per epoch, gradients {dp.GradientBytes} bytes, " +
            $"sent per step {sent} bytes ({(shardedMode ? "ring reduce-scatter + all-gather" : "ring all-reduce")}), " +
            $"momentum on this rank {stateBytes} bytes ({(shardedMode ? "sharded" : "replicated")}), " +
            $"largest parameter difference between ranks {spread:G3}");
        return 0;
    }

    private static string Option(string[] args, string name, string fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }
}

/// <summary>
/// The bucket-size trade-off of the gradient all-reduce (docs/distributed.md): for each model, one
/// <see cref="DataParallel"/> per bucket size over the same replica, used in turn within every
/// repetition (interleaved); rank 0 prints the median time of forward + backward, of the wait for
/// the slower rank (a scalar all-reduce, timed apart) and of
/// <see cref="DataParallel.SynchronizeGradients"/> per bucket size. On one rank the all-reduce is
/// skipped, which gives the compute-only step time: the all-reduce's share of a step is the most an
/// all-reduce overlapped with the backward pass could hide.
/// </summary>
internal static class BucketTimes
{
    private const int Repetitions = 9; // a multiple of the bucket sizes' count, for the rotation
    private const long MiB = 1L << 20;

    public static int Run(ProcessGroup group)
    {
        long[] buckets = { 5 * MiB, 25 * MiB, 100 * MiB };
        var models = new (string Name, Func<nn.Module<Tensor, Tensor>> Make, int Inputs, int Batch)[]
        {
            ("MNIST MLP 784-128-10", () => nn.Sequential(("fc1", nn.Linear(784, 128)), ("relu", nn.ReLU()), ("fc2", nn.Linear(128, 10))), 784, 64),
            ("deep MLP 48 x 512-512", () => DeepMlp(48, 512), 512, 64),
        };
        foreach (var (name, make, inputs, batch) in models)
        {
            using var scope = torch.NewDisposeScope();
            torch.manual_seed(7);
            var model = make();
            var dps = buckets.Select(b => new DataParallel(model, group, b)).ToArray();
            var compute = buckets.Select(_ => new List<double>()).ToArray();
            var wait = buckets.Select(_ => new List<double>()).ToArray();
            var sync = buckets.Select(_ => new List<double>()).ToArray();
            var watch = new Stopwatch();
            for (int rep = 0; rep < Repetitions + 1; rep++) // the first repetition warms up and is dropped
            {
                for (int turn = 0; turn < buckets.Length; turn++)
                {
                    int b = (turn + rep) % buckets.Length; // each size takes each position in turn
                    using var stepScope = torch.NewDisposeScope();
                    using var generator = new torch.Generator((ulong)(rep * 10 + group.Rank));
                    var x = torch.randn(batch, inputs, generator: generator);
                    group.AllReduce(0.0, ReduceOp.Max); // start together
                    watch.Restart();
                    model.zero_grad();
                    model.call(x).square().mean().backward();
                    watch.Stop();
                    double forwardBackward = watch.Elapsed.TotalMilliseconds;
                    watch.Restart();
                    group.AllReduce(0.0, ReduceOp.Max); // the wait for the slower rank's backward, apart
                    watch.Stop();
                    double skew = watch.Elapsed.TotalMilliseconds;
                    watch.Restart();
                    dps[b].SynchronizeGradients();
                    watch.Stop();
                    if (rep > 0)
                    {
                        compute[b].Add(forwardBackward);
                        wait[b].Add(skew);
                        sync[b].Add(watch.Elapsed.TotalMilliseconds);
                    }
                }
            }
            var parameters = model.parameters().ToArray();
            if (group.Rank == 0)
            {
                long bytes = dps[0].GradientBytes;
                Console.WriteLine($"{name}: {parameters.Length} tensors, gradients {bytes:N0} bytes, {group.Size} rank(s), batch {batch} per rank, median of {Repetitions}");
                for (int b = 0; b < buckets.Length; b++)
                {
                    double c = Median(compute[b]), w = Median(wait[b]), s = Median(sync[b]);
                    Console.WriteLine($"  bucket {buckets[b] / MiB,3} MiB ({Collectives(parameters, buckets[b])} all-reduces): forward+backward {c:F2} ms, " +
                        $"wait for the other rank {w:F2} ms, gradient all-reduce {s:F2} ms ({s / (c + w + s):P1} of the step's {c + w + s:F2} ms)");
                }
            }
        }
        return 0;
    }

    private static nn.Module<Tensor, Tensor> DeepMlp(int layers, int width)
    {
        var modules = new List<(string, nn.Module<Tensor, Tensor>)>();
        for (int i = 0; i < layers; i++)
        {
            modules.Add(($"fc{i}", nn.Linear(width, width)));
            modules.Add(($"act{i}", nn.Tanh()));
        }
        return nn.Sequential(modules);
    }

    // The MPI_Allreduce calls of one synchronisation, counted as the native packing does: tensors below a
    // bucket fill it in order (a full bucket is one call), larger ones go in place (one call each).
    private static int Collectives(Parameter[] parameters, long bucketBytes)
    {
        long capacity = bucketBytes / 4, fill = 0;
        int calls = 0;
        foreach (var p in parameters)
        {
            long n = p.numel();
            if (n == 0)
            {
                continue;
            }
            if (n >= capacity)
            {
                calls++;
                continue;
            }
            if (fill + n > capacity)
            {
                calls++;
                fill = 0;
            }
            fill += n;
        }
        return calls + (fill > 0 ? 1 : 0);
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted[sorted.Length / 2];
    }
}
