using System.Runtime.InteropServices;

namespace Optim.Interop;

/// <summary>The imports of <c>optim.h</c>'s "Data parallelism over MPI" section.</summary>
internal static unsafe partial class NativeMethods
{
    [LibraryImport(Library)]
    internal static partial int optim_mpi_compiled();

    [LibraryImport(Library)]
    internal static partial int optim_mpi_init(int* rank, int* size);

    [LibraryImport(Library)]
    internal static partial int optim_mpi_finalize();

    [LibraryImport(Library)]
    internal static partial int optim_mpi_abort(int errorCode);

    [LibraryImport(Library)]
    internal static partial int optim_mpi_broadcast(int device, int dtype, CommTensors* tensors, int root, long bucketBytes);

    [LibraryImport(Library)]
    internal static partial int optim_mpi_allreduce(int device, int dtype, CommTensors* tensors, int op, long bucketBytes);

    [LibraryImport(Library)]
    internal static partial int optim_mpi_allreduce_scalars(double* values, long count, int op);

    [LibraryImport(Library)]
    internal static partial int optim_mpi_set_timeout(double seconds);

    [LibraryImport(Library)]
    internal static partial int optim_mpi_get_timeout(double* seconds);

    [LibraryImport(Library)]
    internal static partial int optim_mpi_reduce_scatter(int device, int dtype, CommTensors* tensors, int* owners, int op, long bucketBytes);

    [LibraryImport(Library)]
    internal static partial int optim_mpi_allgather(int device, int dtype, CommTensors* tensors, int* owners, long bucketBytes);
}

/// <summary>Mirror of <c>optim_comm_tensors</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct CommTensors
{
    public long Count;
    public nint* Data;
    public long* Numels;
}

/// <summary>The MPI collectives of the native library, statuses turned into exceptions (<see cref="OptimNative.ThrowIfFailed"/>).</summary>
internal static unsafe class MpiNative
{
    /// <summary>Whether the native library was built with its MPI plugin.</summary>
    public static bool Compiled
    {
        get
        {
            OptimNative.EnsureLoaded();
            return NativeMethods.optim_mpi_compiled() != 0;
        }
    }

    /// <summary>Joins the MPI job (initialising MPI if needed): this process's rank and the number of ranks.</summary>
    public static (int Rank, int Size) Init()
    {
        OptimNative.EnsureLoaded();
        int rank, size;
        OptimNative.ThrowIfFailed(NativeMethods.optim_mpi_init(&rank, &size));
        return (rank, size);
    }

    /// <summary>Leaves the MPI job (collective).</summary>
    public static void Leave() => OptimNative.ThrowIfFailed(NativeMethods.optim_mpi_finalize());

    /// <summary>Ends the whole job (MPI_Abort); returns only if MPI could not abort.</summary>
    public static void Abort(int errorCode) => OptimNative.ThrowIfFailed(NativeMethods.optim_mpi_abort(errorCode));

    /// <summary>Broadcasts host arrays from <paramref name="root"/>, in place.</summary>
    public static void Broadcast(NativeDType dtype, ReadOnlySpan<nint> data, ReadOnlySpan<long> numels, int root, long bucketBytes)
    {
        Check(data, numels);
        fixed (nint* d = data)
        fixed (long* n = numels)
        {
            var list = new CommTensors { Count = data.Length, Data = d, Numels = n };
            OptimNative.ThrowIfFailed(NativeMethods.optim_mpi_broadcast((int)NativeDevice.Cpu, (int)dtype, &list, root, bucketBytes));
        }
    }

    /// <summary>Reduces host arrays across ranks in place with <paramref name="op"/> (an <c>OPTIM_REDUCE_*</c> value).</summary>
    public static void AllReduce(NativeDType dtype, ReadOnlySpan<nint> data, ReadOnlySpan<long> numels, int op, long bucketBytes)
    {
        Check(data, numels);
        fixed (nint* d = data)
        fixed (long* n = numels)
        {
            var list = new CommTensors { Count = data.Length, Data = d, Numels = n };
            OptimNative.ThrowIfFailed(NativeMethods.optim_mpi_allreduce((int)NativeDevice.Cpu, (int)dtype, &list, op, bucketBytes));
        }
    }

    /// <summary>How long a collective waits for the other ranks before it ends the job (seconds; +infinity: for ever).</summary>
    public static double TimeoutSeconds
    {
        get
        {
            double seconds;
            OptimNative.ThrowIfFailed(NativeMethods.optim_mpi_get_timeout(&seconds));
            return seconds;
        }
        set => OptimNative.ThrowIfFailed(NativeMethods.optim_mpi_set_timeout(value));
    }

    /// <summary>Reduces each tensor across ranks into its owner's copy (<paramref name="owners"/>: one rank per tensor).</summary>
    public static void ReduceScatter(NativeDType dtype, ReadOnlySpan<nint> data, ReadOnlySpan<long> numels, ReadOnlySpan<int> owners, int op, long bucketBytes)
    {
        Check(data, numels, owners);
        fixed (nint* d = data)
        fixed (long* n = numels)
        fixed (int* o = owners)
        {
            var list = new CommTensors { Count = data.Length, Data = d, Numels = n };
            OptimNative.ThrowIfFailed(NativeMethods.optim_mpi_reduce_scatter((int)NativeDevice.Cpu, (int)dtype, &list, o, op, bucketBytes));
        }
    }

    /// <summary>Overwrites every tensor on every rank with its owner's values (<paramref name="owners"/>: one rank per tensor).</summary>
    public static void AllGather(NativeDType dtype, ReadOnlySpan<nint> data, ReadOnlySpan<long> numels, ReadOnlySpan<int> owners, long bucketBytes)
    {
        Check(data, numels, owners);
        fixed (nint* d = data)
        fixed (long* n = numels)
        fixed (int* o = owners)
        {
            var list = new CommTensors { Count = data.Length, Data = d, Numels = n };
            OptimNative.ThrowIfFailed(NativeMethods.optim_mpi_allgather((int)NativeDevice.Cpu, (int)dtype, &list, o, bucketBytes));
        }
    }

    /// <summary>Reduces doubles across ranks in place.</summary>
    public static void AllReduceScalars(Span<double> values, int op)
    {
        fixed (double* v = values)
        {
            OptimNative.ThrowIfFailed(NativeMethods.optim_mpi_allreduce_scalars(v, values.Length, op));
        }
    }

    private static void Check(ReadOnlySpan<nint> data, ReadOnlySpan<long> numels, ReadOnlySpan<int> owners)
    {
        Check(data, numels);
        if (owners.Length != data.Length)
        {
            throw new ArgumentException($"{data.Length} data pointers but {owners.Length} owners.");
        }
    }

    private static void Check(ReadOnlySpan<nint> data, ReadOnlySpan<long> numels)
    {
        if (data.Length != numels.Length)
        {
            throw new ArgumentException($"{data.Length} data pointers but {numels.Length} element counts.");
        }
    }
}
