using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Distributed;

/// <summary>
/// ZeRO stage 1 over a <see cref="ProcessGroup"/> (docs/distributed.md, "Sharded optimizer state"): each
/// rank owns whole parameter tensors (about 1/N of the model's elements), and the optimizer it wraps keeps
/// state (momentum buffers, Adam moments, hypergradient rates and previous updates) only for those. A
/// <see cref="step"/> reduce-scatters the gradients (each owner receives the mean of its tensors'
/// gradients), steps the wrapped optimizer over this rank's tensors, then all-gathers the parameters, so
/// every rank ends the step with the same parameters as a replicated optimizer would give.
/// </summary>
/// <example>
/// <code>
/// using var group = ProcessGroup.Initialize();
/// var dp = new DataParallel(model, group);   // rank 0's parameters everywhere
/// var sharded = new ShardedOptimizer(new[] { model.parameters() }, group,
///     mine => new FusedAdamW(mine.Select(p => new FusedAdamW.ParamGroup(p)), 1e-3));
/// // in the loop: sharded.zero_grad(); loss.backward(); sharded.step();   (no dp.SynchronizeGradients)
/// </code>
/// </example>
/// <remarks>
/// Whole tensors, not flat slices, so that every per-tensor quantity (per-tensor hypergradient rates,
/// Adam's per-tensor step counts, PerParameter rates) stays with one rank and needs no communication;
/// tensors go to ranks largest first, each to the least-loaded rank (docs/distributed.md says what that
/// balance costs). Supported: <see cref="FusedSGD"/>, <see cref="FusedAdam"/>, <see cref="FusedAdamW"/>
/// and <see cref="HypergradientSGD"/> at every scope. What a step sums over all parameters is summed over
/// every rank inside the wrapped optimizer's native step, between its read pass and its update (one small
/// collective of a few doubles, combined in rank order so that every rank gets the same bits): the
/// clipping norm of <c>max_grad_norm</c> (every rank clips by the whole model's norm), HD's global and
/// per-group hypergradients (every rank moves its rates alike) and HD's non-finite check (a non-finite
/// gradient on any rank's shard skips the step on every rank). Learning-rate schedulers
/// work on <see cref="Inner"/> as on any optimizer, stepped the same way on every rank.
/// <see cref="SaveCheckpoint"/> and <see cref="LoadCheckpoint"/> move the state between jobs of different
/// sizes. If one rank's wrapped step throws, the others wait in the all-gather until
/// <see cref="ProcessGroup.Timeout"/> ends the job.
/// </remarks>
public sealed class ShardedOptimizer
{
    private readonly Parameter[][] _groups;
    private readonly Parameter[] _parameters;
    private readonly int[] _owners;
    private readonly Func<Parameter[][], OptimizerHelper> _create;

    /// <summary>Shards <paramref name="groups"/> over the ranks of <paramref name="group"/> and wraps the optimizer <paramref name="create"/> makes of this rank's share.</summary>
    /// <param name="groups">The param groups, in the same order and shapes on every rank; only parameters that require a gradient take part.</param>
    /// <param name="group">The job.</param>
    /// <param name="create">Makes the optimizer from this rank's parameters, one array per param group (an array may be empty).</param>
    /// <param name="bucketBytes">The bucket size of the reduce-scatter and all-gather.</param>
    /// <exception cref="NotSupportedException">The optimizer is not one the class supports (see remarks).</exception>
    public ShardedOptimizer(IEnumerable<IEnumerable<Parameter>> groups, ProcessGroup group, Func<Parameter[][], OptimizerHelper> create,
        long bucketBytes = ProcessGroup.DefaultBucketBytes)
    {
        ArgumentNullException.ThrowIfNull(groups);
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(create);
        if (bucketBytes < 8)
        {
            throw new ArgumentOutOfRangeException(nameof(bucketBytes), $"bucketBytes {bucketBytes} is below 8.");
        }
        Group = group;
        BucketBytes = bucketBytes;
        var byGroup = groups.Select(g => (g ?? throw new ArgumentException("A param group is null.", nameof(groups)))
            .Where(p => p.requires_grad).ToArray()).ToArray();
        _groups = byGroup;
        _create = create;
        _parameters = byGroup.SelectMany(g => g).ToArray();
        _owners = Assign(_parameters.Select(p => p.numel()).ToArray(), group.Size);
        var owned = new HashSet<Parameter>(_parameters.Where((_, k) => _owners[k] == group.Rank), ReferenceEqualityComparer.Instance);
        Inner = create(byGroup.Select(g => g.Where(owned.Contains).ToArray()).ToArray())
            ?? throw new ArgumentException("create returned null.", nameof(create));
        // A job of one has nothing to sum across (and may run without MPI).
        ScalarType? shard = group.Size > 1 ? (_parameters.Length > 0 ? _parameters[0].dtype : ScalarType.Float32) : null;
        switch (Inner)
        {
            case FusedSGD sgd:
                sgd.ReduceAcrossRanks(shard);
                break;
            case FusedAdam adam:
                adam.ReduceAcrossRanks(shard);
                break;
            case HypergradientSGD hd:
                hd.ReduceAcrossRanks(shard);
                break;
            default:
                throw new NotSupportedException($"ShardedOptimizer: {Inner.GetType().Name} is not supported (FusedSGD, FusedAdam, FusedAdamW, HypergradientSGD).");
        }
    }

    /// <summary>The job.</summary>
    public ProcessGroup Group { get; }

    /// <summary>The bucket size of the reduce-scatter and all-gather, in bytes.</summary>
    public long BucketBytes { get; }

    /// <summary>The optimizer over this rank's parameters (its state is this rank's shard; schedulers step it).</summary>
    public OptimizerHelper Inner { get; }

    /// <summary>The rank that owns each parameter, in the order of the param groups given.</summary>
    public IReadOnlyList<int> Owners => Array.AsReadOnly(_owners);

    /// <summary>The parameters this rank owns and updates.</summary>
    public IEnumerable<Parameter> OwnedParameters => _parameters.Where((_, k) => _owners[k] == Group.Rank);

    /// <summary>Elements of parameters this rank owns (its optimizer state is this many elements per state tensor kind).</summary>
    public long OwnedElements => OwnedParameters.Sum(p => p.numel());

    /// <summary>Steps skipped on every rank because some rank's gradient shard was not finite (HypergradientSGD only).</summary>
    public long SkippedSteps => Inner is HypergradientSGD hd ? hd.SkippedSteps : 0;

    /// <summary>The bytes of all parameters (each of the two collectives moves this list).</summary>
    public long ParameterBytes => _parameters.Sum(p => p.numel() * p.element_size());

    /// <summary>Sets every parameter's gradient (of every rank's tensors, not only this rank's) to zero.</summary>
    public void zero_grad()
    {
        foreach (var p in _parameters)
        {
            using var grad = p.grad;
            if (grad is not null)
            {
                grad.zero_();
            }
        }
    }

    /// <summary>
    /// One step: reduce-scatter of the gradients (mean), the wrapped optimizer's step on this rank's
    /// parameters, all-gather of the parameters. Every rank calls it, after <c>backward()</c>.
    /// </summary>
    /// <exception cref="InvalidOperationException">A parameter has no gradient.</exception>
    public void step()
    {
        var grads = new Tensor[_parameters.Length];
        try
        {
            for (int k = 0; k < grads.Length; k++)
            {
                grads[k] = _parameters[k].grad ?? throw new InvalidOperationException(
                    $"ShardedOptimizer: parameter {k} has no gradient on rank {Group.Rank}; every rank must reduce the same gradients.");
            }
            Group.ReduceScatter(grads, _owners, ReduceOp.Mean, BucketBytes);
            Inner.step();
        }
        finally
        {
            foreach (var g in grads)
            {
                g?.Dispose();
            }
        }
        using var _ = torch.no_grad();
        Group.AllGather(_parameters, _owners, BucketBytes);
    }

    /// <summary>
    /// Writes this job's optimizer state to <paramref name="directory"/> (every rank calls it; a directory all
    /// ranks can reach): each rank its own shard, <c>shard-R-of-N.bin</c> (the wrapped optimizer's
    /// <c>save_state_dict</c>), and rank 0 <c>manifest.json</c>, which names the layout: the optimizer, the
    /// number of ranks, and each parameter's param group, shape, dtype and owner. Returns on every rank once
    /// every file is written. The parameters themselves are the model's to save (they are equal on every rank).
    /// </summary>
    public void SaveCheckpoint(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        Directory.CreateDirectory(directory);
        Inner.save_state_dict(Path.Combine(directory, ShardFile(Group.Rank, Group.Size)));
        Group.AllReduce(0.0, ReduceOp.Max); // every shard is written before the manifest names them
        if (Group.Rank == 0)
        {
            var manifest = new CheckpointManifest
            {
                Format = ManifestFormat,
                Optimizer = Inner.GetType().Name,
                Ranks = Group.Size,
                Parameters = _groups.SelectMany((g, gi) => g.Select(p => new CheckpointParameter
                {
                    Group = gi,
                    Shape = p.shape,
                    DType = p.dtype.ToString(),
                })).Select((p, k) => p with { Owner = _owners[k] }).ToArray(),
            };
            File.WriteAllText(Path.Combine(directory, ManifestFile), JsonSerializer.Serialize(manifest, CheckpointJson.Default.CheckpointManifest));
        }
        Group.AllReduce(0.0, ReduceOp.Max);
    }

    /// <summary>
    /// Loads a checkpoint written by <see cref="SaveCheckpoint"/> with any number of ranks into this job (N ranks
    /// into M): each rank reads the shards that hold its own parameters' state (per the manifest), into
    /// optimizers made by the same factory over the writing rank's parameters, and copies its parameters'
    /// state and the param groups' options from them. Every rank calls it, over the same parameters as the
    /// writing job (same groups, shapes and dtypes); the model's parameters are loaded separately.
    /// </summary>
    /// <exception cref="InvalidDataException">The manifest does not describe these parameters or this optimizer; nothing was changed.</exception>
    public void LoadCheckpoint(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        string path = Path.Combine(directory, ManifestFile);
        var manifest = JsonSerializer.Deserialize(File.ReadAllText(path), CheckpointJson.Default.CheckpointManifest)
            ?? throw new InvalidDataException($"{path} is empty.");
        CheckManifest(manifest, path);
        var oldOwner = manifest.Parameters.Select(p => p.Owner).ToArray();
        // The shards this rank needs: those holding its parameters' state, or shard 0 for the options alone.
        var needed = _parameters.Select((_, k) => k).Where(k => _owners[k] == Group.Rank).Select(k => oldOwner[k]).Distinct().ToList();
        if (needed.Count == 0)
        {
            needed.Add(0);
        }
        var sources = new List<OptimizerHelper>();
        try
        {
            var stateOf = new Dictionary<Parameter, OptimizerState>(ReferenceEqualityComparer.Instance);
            OptimizerHelper.StateDictionary? first = null;
            var index = new Dictionary<Parameter, int>(ReferenceEqualityComparer.Instance);
            for (int k = 0; k < _parameters.Length; k++)
            {
                index[_parameters[k]] = k;
            }
            foreach (int r in needed.Order())
            {
                var theirs = _groups.Select(g => g.Where(p => oldOwner[index[p]] == r).ToArray()).ToArray();
                var source = _create(theirs);
                sources.Add(source);
                LoadFile(source, Path.Combine(directory, ShardFile(r, manifest.Ranks)));
                var dict = source.state_dict();
                first ??= dict;
                foreach (var (p, state) in theirs.SelectMany(g => g).Zip(dict.State))
                {
                    stateOf[p] = state;
                }
            }
            var target = Inner.state_dict();
            for (int g = 0; g < target.Options.Count; g++)
            {
                target.Options[g] = first!.Options[g];
            }
            var mine = _groups.SelectMany(g => g).Where((_, k) => _owners[k] == Group.Rank).ToArray();
            for (int i = 0; i < mine.Length; i++)
            {
                target.State[i] = stateOf[mine[i]];
            }
            Inner.load_state_dict(target);
        }
        finally
        {
            foreach (var source in sources)
            {
                source.Dispose();
            }
        }
    }

    private const string ManifestFile = "manifest.json";
    private const string ManifestFormat = "optim-sharded-optimizer-1";

    private static string ShardFile(int rank, int ranks) => $"shard-{rank}-of-{ranks}.bin";

    // Loads through the optimizer's own all-or-nothing load (TorchSharp's is not virtual).
    private static void LoadFile(OptimizerHelper optimizer, string path)
    {
        switch (optimizer)
        {
            case FusedSGD o:
                o.load_state_dict(path);
                break;
            case FusedAdam o:
                o.load_state_dict(path);
                break;
            case HypergradientSGD o:
                o.load_state_dict(path);
                break;
            default:
                throw new NotSupportedException($"ShardedOptimizer: cannot load a {optimizer.GetType().Name}.");
        }
    }

    private void CheckManifest(CheckpointManifest m, string path)
    {
        if (m.Format != ManifestFormat)
        {
            throw new InvalidDataException($"{path}: format '{m.Format}', expected '{ManifestFormat}'.");
        }
        if (m.Optimizer != Inner.GetType().Name)
        {
            throw new InvalidDataException($"{path}: the checkpoint is of a {m.Optimizer}, this optimizer is a {Inner.GetType().Name}.");
        }
        if (m.Ranks < 1 || m.Parameters is null || m.Parameters.Length != _parameters.Length)
        {
            throw new InvalidDataException($"{path}: {m.Parameters?.Length ?? 0} parameters on {m.Ranks} ranks; this optimizer has {_parameters.Length} parameters.");
        }
        int k = 0;
        for (int g = 0; g < _groups.Length; g++)
        {
            foreach (var p in _groups[g])
            {
                var saved = m.Parameters[k];
                if (saved.Group != g || !saved.Shape.SequenceEqual(p.shape) || saved.DType != p.dtype.ToString() || saved.Owner < 0 || saved.Owner >= m.Ranks)
                {
                    throw new InvalidDataException($"{path}: parameter {k} was param group {saved.Group}, [{string.Join(", ", saved.Shape)}] {saved.DType} on rank {saved.Owner}; " +
                        $"here it is param group {g}, [{string.Join(", ", p.shape)}] {p.dtype}.");
                }
                k++;
            }
        }
    }

    /// <summary>
    /// The owner of each tensor: largest first, each to the rank with the fewest elements so far (the lower
    /// rank on ties); deterministic, so every rank computes the same assignment from the same shapes.
    /// </summary>
    internal static int[] Assign(long[] numels, int ranks)
    {
        var owners = new int[numels.Length];
        var load = new long[ranks];
        foreach (int k in Enumerable.Range(0, numels.Length).OrderByDescending(k => numels[k]).ThenBy(k => k))
        {
            int best = 0;
            for (int r = 1; r < ranks; r++)
            {
                if (load[r] < load[best])
                {
                    best = r;
                }
            }
            owners[k] = best;
            load[best] += numels[k];
        }
        return owners;
    }
}
