using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Distributed;

/// <summary>
/// Data-parallel training over a <see cref="ProcessGroup"/> (docs/distributed.md): every rank holds a
/// replica of the model and trains on its own share of each batch; wrapping an existing loop takes
/// three calls. The constructor makes the parameters (and buffers) equal on every rank by copying rank
/// 0's; <see cref="SynchronizeGradients"/>, called after <c>backward()</c> and before the optimizer's
/// <c>step()</c>, replaces every gradient by its mean over the ranks, so every rank's optimizer makes
/// the same step; <see cref="MeanMetric"/> gives schedulers such as <see cref="GreedyLR"/> the same
/// metric everywhere.
/// </summary>
/// <example>
/// <code>
/// using var group = ProcessGroup.Initialize();
/// var dp = new DataParallel(model, group);
/// var optimizer = new FusedSGD(model.parameters(), 0.1, momentum: 0.9);
/// foreach (var (x, y) in MyShareOfTheBatches(group.Rank, group.Size))
/// {
///     optimizer.zero_grad();
///     loss(model.call(x), y).backward();
///     dp.SynchronizeGradients();
///     optimizer.step();
/// }
/// scheduler.step(dp.MeanMetric(validationLoss));
/// </code>
/// </example>
/// <remarks>
/// The same identical-everywhere reasoning covers the adaptive optimizers: with equal parameters and
/// equal averaged gradients, <see cref="HypergradientSGD"/>'s hypergradients (at every scope) and its
/// non-finite check see the same values on every rank, so the rates stay equal and a non-finite
/// gradient on any rank (it makes the mean non-finite) skips the step on all. Gradients are reduced
/// after the backward pass, not overlapped with it: TorchSharp 0.107 has no hook that signals a
/// gradient is ready (docs/distributed.md, "Overlap with the backward pass"). Every parameter that requires a gradient must have
/// one on every rank when gradients are synchronised.
/// </remarks>
public sealed class DataParallel
{
    private readonly Parameter[] _parameters;
    private int _noSyncDepth;

    /// <summary>Wraps <paramref name="model"/>: its parameters and buffers become rank 0's on every rank.</summary>
    /// <param name="model">The model; the same architecture on every rank.</param>
    /// <param name="group">The job (default: <see cref="ProcessGroup.Initialize"/>).</param>
    /// <param name="bucketBytes">Gradients are reduced in buckets of at most this many bytes (default 25 MiB, as PyTorch).</param>
    public DataParallel(nn.Module model, ProcessGroup? group = null, long bucketBytes = ProcessGroup.DefaultBucketBytes)
        : this(model is null ? throw new ArgumentNullException(nameof(model)) : model.parameters(), group, bucketBytes)
    {
        using var _ = torch.no_grad();
        Group.Broadcast(model.buffers().Where(b => b.is_floating_point()), 0, bucketBytes);
    }

    /// <summary>Synchronises the given parameters (those that require a gradient): they become rank 0's on every rank.</summary>
    /// <param name="parameters">The parameters, in the same order on every rank.</param>
    /// <param name="group">The job (default: <see cref="ProcessGroup.Initialize"/>).</param>
    /// <param name="bucketBytes">Gradients are reduced in buckets of at most this many bytes (default 25 MiB, as PyTorch).</param>
    public DataParallel(IEnumerable<Parameter> parameters, ProcessGroup? group = null, long bucketBytes = ProcessGroup.DefaultBucketBytes)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (bucketBytes < 8)
        {
            throw new ArgumentOutOfRangeException(nameof(bucketBytes), $"bucketBytes {bucketBytes} is below 8.");
        }
        Group = group ?? ProcessGroup.Initialize();
        BucketBytes = bucketBytes;
        _parameters = parameters.Where(p => p.requires_grad).ToArray();
        using var _ = torch.no_grad();
        Group.Broadcast(_parameters, 0, bucketBytes);
    }

    /// <summary>The job.</summary>
    public ProcessGroup Group { get; }

    /// <summary>This process's rank.</summary>
    public int Rank => Group.Rank;

    /// <summary>The number of ranks.</summary>
    public int Size => Group.Size;

    /// <summary>The bucket size of the gradient all-reduce, in bytes.</summary>
    public long BucketBytes { get; }

    /// <summary>The bytes of gradient one <see cref="SynchronizeGradients"/> reduces (each rank's payload; what travels depends on MPI's algorithm, see docs/distributed.md).</summary>
    public long GradientBytes => _parameters.Sum(p => p.numel() * p.element_size());

    /// <summary>Whether gradients are synchronised now (false inside <see cref="NoSync"/>).</summary>
    public bool SynchronizesGradients => _noSyncDepth == 0;

    /// <summary>
    /// Replaces every gradient by its mean over the ranks (in buckets), unless inside <see cref="NoSync"/>.
    /// Call it after <c>backward()</c> and before the optimizer's <c>step()</c>, on every rank.
    /// </summary>
    /// <exception cref="InvalidOperationException">A parameter has no gradient.</exception>
    public void SynchronizeGradients()
    {
        if (_noSyncDepth > 0 || Size == 1)
        {
            return;
        }
        var grads = new Tensor[_parameters.Length];
        try
        {
            for (int i = 0; i < _parameters.Length; i++)
            {
                grads[i] = _parameters[i].grad ?? throw new InvalidOperationException(
                    $"DataParallel: parameter {i} has no gradient on rank {Rank}; every rank must reduce the same gradients (run backward first, or leave the parameter out).");
            }
            Group.AllReduce(grads, ReduceOp.Mean, BucketBytes);
        }
        finally
        {
            foreach (var g in grads)
            {
                g?.Dispose();
            }
        }
    }

    /// <summary>
    /// A scope in which <see cref="SynchronizeGradients"/> does nothing: the micro-steps of gradient
    /// accumulation add to the local gradients without communication; the last backward pass, outside
    /// the scope, is followed by one synchronisation of the accumulated gradients.
    /// </summary>
    public IDisposable NoSync()
    {
        _noSyncDepth++;
        return new Scope(this);
    }

    /// <summary>The mean of <paramref name="value"/> over the ranks: the same on every rank (step schedulers with it).</summary>
    public double MeanMetric(double value) => Group.AllReduce(value, ReduceOp.Mean);

    /// <summary>Whether <paramref name="flag"/> is true on any rank (e.g. a non-finite loss seen by one rank).</summary>
    public bool AnyRank(bool flag) => Group.AllReduce(flag ? 1.0 : 0.0, ReduceOp.Max) != 0;

    /// <summary>
    /// The largest absolute difference between this rank's parameters and rank 0's, over every rank:
    /// 0 when the replicas are equal (a check, not for every step: it sends the parameters once).
    /// </summary>
    public double MaxParameterDifference()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var copies = _parameters.Select(p => p.detach().clone()).ToArray();
        Group.Broadcast(copies, 0, BucketBytes);
        double local = 0;
        for (int i = 0; i < copies.Length; i++)
        {
            if (copies[i].numel() > 0)
            {
                local = Math.Max(local, (_parameters[i] - copies[i]).abs().max().to_type(ScalarType.Float64).item<double>());
            }
        }
        return Group.AllReduce(local, ReduceOp.Max);
    }

    private sealed class Scope : IDisposable
    {
        private DataParallel? _owner;

        public Scope(DataParallel owner) => _owner = owner;

        public void Dispose()
        {
            if (_owner is not null)
            {
                _owner._noSyncDepth--;
                _owner = null;
            }
        }
    }
}
