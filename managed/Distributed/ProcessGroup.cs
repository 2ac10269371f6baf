using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Distributed;

/// <summary>How <see cref="ProcessGroup"/>'s all-reduce combines the ranks' values.</summary>
public enum ReduceOp
{
    /// <summary>The sum over ranks.</summary>
    Sum = 0,
    /// <summary>The sum divided by the number of ranks (in the tensor's element type).</summary>
    Mean = 1,
    /// <summary>The largest value.</summary>
    Max = 2,
    /// <summary>The smallest value.</summary>
    Min = 3,
}

/// <summary>
/// The processes of one data-parallel job and the collectives between them, over MPI in the native
/// library (docs/distributed.md). Launched by <c>mpirun -np N dotnet app.dll</c>, every process joins
/// the job on <see cref="Initialize"/> and learns its <see cref="Rank"/> and the job's <see cref="Size"/>
/// from the launcher's environment; started without a launcher, the process is a job of one and no
/// MPI is used (every collective returns its input). One group per process; dispose it (every rank)
/// before the process ends, or mpirun reports the job as failed.
/// </summary>
/// <remarks>
/// Every rank must make the same collective calls in the same order on tensors of the same shapes
/// and dtypes. Tensors must be dense, contiguous, float32 or float64, on the CPU or on CUDA (CUDA tensors
/// are staged through host copies: every byte crosses PCIe there and back; the CUDA-aware path is not
/// written, and the staging has not yet run on a GPU). Calls from several
/// threads are serialised. An MPI failure throws <see cref="OptimNativeException"/> with status
/// <see cref="NativeStatus.MpiError"/>; the job should then end.
/// </remarks>
public sealed class ProcessGroup : IDisposable
{
    /// <summary>The default bucket size of tensor collectives: 25 MiB, as PyTorch's DistributedDataParallel.</summary>
    public const long DefaultBucketBytes = 25L * 1024 * 1024;

    // The launchers' variables: Open MPI's mpirun, MPICH/Intel MPI's Hydra, and PMIx launchers.
    private static readonly string[] s_launcherVariables = { "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK" };
    private static readonly object s_lock = new();
    private static ProcessGroup? s_current;
    private static bool s_finalized;
    private static bool s_abortsOnUnhandled;

    private bool _disposed;
    private TimeSpan _aloneTimeout = System.Threading.Timeout.InfiniteTimeSpan;

    private ProcessGroup(int rank, int size, bool usesMpi)
    {
        Rank = rank;
        Size = size;
        UsesMpi = usesMpi;
    }

    /// <summary>This process's rank, in [0, <see cref="Size"/>).</summary>
    public int Rank { get; }

    /// <summary>The number of processes in the job.</summary>
    public int Size { get; }

    /// <summary>Whether the job runs over MPI (launched by an MPI launcher), rather than as one process alone.</summary>
    public bool UsesMpi { get; }

    /// <summary>
    /// How long a collective waits for the other ranks (default 30 minutes, PyTorch's). Past it a rank has died
    /// or hangs, and a collective cannot be cancelled: the waiting rank prints which collective waited how
    /// long and ends the whole job (MPI_Abort; <c>mpirun</c> exits with an error). Not a limit on computing
    /// between collectives. <see cref="System.Threading.Timeout.InfiniteTimeSpan"/> waits for ever. In a job
    /// of one nothing waits; the value is kept and unused.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Zero or negative.</exception>
    public TimeSpan Timeout
    {
        get
        {
            ThrowIfDisposed();
            if (!UsesMpi)
            {
                return _aloneTimeout;
            }
            double seconds = MpiNative.TimeoutSeconds;
            return double.IsPositiveInfinity(seconds) ? System.Threading.Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(seconds);
        }
        set
        {
            ThrowIfDisposed();
            bool infinite = value == System.Threading.Timeout.InfiniteTimeSpan;
            if (!infinite && value <= TimeSpan.Zero)
            {
                throw new ArgumentOutOfRangeException(nameof(value), $"The timeout {value} is not positive (Timeout.InfiniteTimeSpan waits for ever).");
            }
            if (UsesMpi)
            {
                MpiNative.TimeoutSeconds = infinite ? double.PositiveInfinity : value.TotalSeconds;
            }
            _aloneTimeout = value;
        }
    }

    /// <summary>Whether this process was started by an MPI launcher (its environment names the job).</summary>
    public static bool LaunchedByMpi => s_launcherVariables.Any(v => Environment.GetEnvironmentVariable(v) is not null);

    /// <summary>
    /// Joins the job (once per process; later calls return the same group until it is disposed).
    /// </summary>
    /// <exception cref="NotSupportedException">Launched by MPI, but the native library has no MPI support, or
    /// its MPI plugin or libmpi could not be loaded; the message says which.</exception>
    /// <exception cref="InvalidOperationException">The group was disposed: MPI cannot be joined twice.</exception>
    public static ProcessGroup Initialize()
    {
        lock (s_lock)
        {
            if (s_current is not null)
            {
                return s_current;
            }
            if (s_finalized)
            {
                throw new InvalidOperationException("The process group was disposed; MPI cannot be initialised twice in one process.");
            }
            OptimNative.EnsureLoaded();
            if (!LaunchedByMpi)
            {
                return s_current = new ProcessGroup(0, 1, usesMpi: false);
            }
            var (rank, size) = MpiNative.Init();
            s_current = new ProcessGroup(rank, size, usesMpi: true);
            if (!s_abortsOnUnhandled)
            {
                // A rank that dies of an exception ends the job, instead of leaving the others waiting in a
                // collective (and its own Dispose waiting in MPI_Finalize for them).
                AppDomain.CurrentDomain.UnhandledException += (_, e) =>
                {
                    if (s_current is not { UsesMpi: true })
                    {
                        return; // the job was left (disposed): nothing waits for this rank
                    }
                    Console.Error.WriteLine($"Optim: rank {rank} of {size} ends the MPI job: unhandled {e.ExceptionObject}");
                    Console.Error.Flush();
                    MpiNative.Abort(1);
                };
                s_abortsOnUnhandled = true;
            }
            return s_current;
        }
    }

    /// <summary>Copies <paramref name="tensors"/> from rank <paramref name="root"/> to every other rank, in place.</summary>
    public void Broadcast(IEnumerable<Tensor> tensors, int root = 0, long bucketBytes = DefaultBucketBytes)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ThrowIfDisposed();
        if (root < 0 || root >= Size)
        {
            throw new ArgumentOutOfRangeException(nameof(root), $"root {root} is not a rank of this job of {Size}.");
        }
        using var staged = new HostStaging(tensors, nameof(tensors));
        foreach (var (dtype, data, numels) in ByDType(staged.Tensors, nameof(tensors)))
        {
            if (UsesMpi)
            {
                MpiNative.Broadcast(dtype, data, numels, root, bucketBytes);
            }
        }
        staged.CopyBack();
    }

    /// <summary>Reduces <paramref name="tensors"/> element-wise across ranks, in place: every rank then holds the result.
    /// Tensors are packed into buckets of at most <paramref name="bucketBytes"/> (one MPI_Allreduce each); larger ones go in place.</summary>
    public void AllReduce(IEnumerable<Tensor> tensors, ReduceOp op, long bucketBytes = DefaultBucketBytes)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ThrowIfDisposed();
        using var staged = new HostStaging(tensors, nameof(tensors));
        foreach (var (dtype, data, numels) in ByDType(staged.Tensors, nameof(tensors)))
        {
            if (UsesMpi)
            {
                MpiNative.AllReduce(dtype, data, numels, (int)op, bucketBytes);
            }
        }
        staged.CopyBack();
    }

    /// <summary>
    /// Reduces each tensor across ranks into the copy of the rank that owns it (ZeRO's reduce-scatter over whole
    /// tensors): on return every tensor this rank owns holds the reduction; the others are left as they were.
    /// Within a bucket the tensors are laid out rank by rank (one MPI_Reduce_scatter each); larger ones go to their
    /// owner in place. Each rank sends about (size − 1)/size of the bytes, half an all-reduce's.
    /// </summary>
    /// <param name="tensors">The tensors, in the same order and shapes on every rank.</param>
    /// <param name="owners">The rank that owns each tensor, the same on every rank.</param>
    /// <param name="op">How values combine.</param>
    /// <param name="bucketBytes">The largest bucket, in bytes.</param>
    public void ReduceScatter(IReadOnlyList<Tensor> tensors, IReadOnlyList<int> owners, ReduceOp op, long bucketBytes = DefaultBucketBytes)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ThrowIfDisposed();
        using var staged = new HostStaging(tensors, nameof(tensors));
        foreach (var (dtype, data, numels, ranks) in ByDType(staged.Tensors, owners))
        {
            if (UsesMpi)
            {
                MpiNative.ReduceScatter(dtype, data, numels, ranks, (int)op, bucketBytes);
            }
        }
        staged.CopyBack();
    }

    /// <summary>
    /// Overwrites every tensor on every rank with the values of the rank that owns it (ZeRO's all-gather of the
    /// parameters after each rank updated its own). Buckets as <see cref="ReduceScatter"/>'s (one MPI_Allgatherv each).
    /// </summary>
    /// <param name="tensors">The tensors, in the same order and shapes on every rank.</param>
    /// <param name="owners">The rank that owns each tensor, the same on every rank.</param>
    /// <param name="bucketBytes">The largest bucket, in bytes.</param>
    public void AllGather(IReadOnlyList<Tensor> tensors, IReadOnlyList<int> owners, long bucketBytes = DefaultBucketBytes)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ThrowIfDisposed();
        using var staged = new HostStaging(tensors, nameof(tensors));
        foreach (var (dtype, data, numels, ranks) in ByDType(staged.Tensors, owners))
        {
            if (UsesMpi)
            {
                MpiNative.AllGather(dtype, data, numels, ranks, bucketBytes);
            }
        }
        staged.CopyBack();
    }

    /// <summary>Reduces <paramref name="values"/> across ranks, in place (metrics, flags).</summary>
    public void AllReduce(Span<double> values, ReduceOp op)
    {
        ThrowIfDisposed();
        if (UsesMpi)
        {
            MpiNative.AllReduceScalars(values, (int)op);
        }
    }

    /// <summary>Reduces one value across ranks.</summary>
    public double AllReduce(double value, ReduceOp op)
    {
        Span<double> one = stackalloc double[1] { value };
        AllReduce(one, op);
        return one[0];
    }

    /// <summary>
    /// Ends the whole job at once: every rank stops and <c>mpirun</c> exits with an error. For a rank that
    /// cannot go on (an unhandled exception does this by itself). In a job of one, exits the process.
    /// </summary>
    /// <param name="errorCode">The exit status the job reports.</param>
    public void Abort(int errorCode = 1)
    {
        if (UsesMpi)
        {
            MpiNative.Abort(errorCode);
        }
        Environment.Exit(errorCode);
    }

    /// <summary>Leaves the job (every rank must call it, after its last collective); MPI is finalised if Optim
    /// initialised it. Not on the way out of a failure: <see cref="Abort"/> ends the job then.</summary>
    public void Dispose()
    {
        lock (s_lock)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            s_current = null;
            if (UsesMpi)
            {
                s_finalized = true;
                MpiNative.Leave();
            }
        }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    // ByDType with an owner per tensor, each checked to be a rank of this job.
    private List<(NativeDType DType, nint[] Data, long[] Numels, int[] Owners)> ByDType(IReadOnlyList<Tensor> tensors, IReadOnlyList<int> owners)
    {
        ArgumentNullException.ThrowIfNull(owners);
        if (owners.Count != tensors.Count)
        {
            throw new ArgumentException($"{tensors.Count} tensors but {owners.Count} owners.", nameof(owners));
        }
        for (int k = 0; k < owners.Count; k++)
        {
            if (owners[k] < 0 || owners[k] >= Size)
            {
                throw new ArgumentOutOfRangeException(nameof(owners), $"Tensor {k}'s owner {owners[k]} is not a rank of this job of {Size}.");
            }
        }
        var byType = ByDType(tensors, nameof(tensors));
        var f32 = new List<int>();
        var f64 = new List<int>();
        for (int k = 0; k < tensors.Count; k++)
        {
            (tensors[k].dtype == ScalarType.Float64 ? f64 : f32).Add(owners[k]);
        }
        return byType.Select(t => (t.DType, t.Data, t.Numels, (t.DType == NativeDType.Float64 ? f64 : f32).ToArray())).ToList();
    }

    // Checks every tensor, then splits them by dtype (float32 first), keeping their order.
    private static List<(NativeDType DType, nint[] Data, long[] Numels)> ByDType(IEnumerable<Tensor> tensors, string name)
    {
        var f32 = (Data: new List<nint>(), Numels: new List<long>());
        var f64 = (Data: new List<nint>(), Numels: new List<long>());
        int index = 0;
        foreach (var t in tensors)
        {
            if (t is null || t.IsInvalid)
            {
                throw new ArgumentException($"Tensor {index} is null or disposed.", name);
            }
            var info = TorchSharpNative.Describe(t.Handle);
            if (info.Sparse || !info.Contiguous)
            {
                throw new ArgumentException($"Tensor {index} must be dense and contiguous.", name);
            }
            if (info.DeviceType != TorchSharpNative.CpuDeviceType)
            {
                throw new NotSupportedException($"Tensor {index} is on {t.device}: only CPU and CUDA tensors are supported.");
            }
            var list = (ScalarType)info.ScalarType switch
            {
                ScalarType.Float32 => f32,
                ScalarType.Float64 => f64,
                _ => throw new ArgumentException($"Tensor {index} is {t.dtype}; only float32 and float64 are supported.", name),
            };
            list.Data.Add(info.Data);
            list.Numels.Add(info.Numel);
            index++;
        }
        var result = new List<(NativeDType, nint[], long[])>(2);
        if (f32.Data.Count > 0)
        {
            result.Add((NativeDType.Float32, f32.Data.ToArray(), f32.Numels.ToArray()));
        }
        if (f64.Data.Count > 0)
        {
            result.Add((NativeDType.Float64, f64.Data.ToArray(), f64.Numels.ToArray()));
        }
        return result;
    }
}
