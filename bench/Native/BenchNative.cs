using System.Reflection;
using System.Runtime.InteropServices;

namespace Optim.Interop;

/// <summary>
/// The bindings of <c>libOptim.BenchNative</c>, the benchmarks' instruments (not part of the Optim package):
/// compiled into the benchmark projects (eng/BenchNative.targets), which ship the library next to
/// <c>libOptim.Native</c>. The library is loaded from the directory <c>libOptim.Native</c> was loaded from.
/// </summary>
internal static unsafe partial class BenchNative
{
    private const string Library = "Optim.BenchNative";

    [LibraryImport(Library)]
    private static partial int optim_stream_reference(int dtype, StreamTensors* tensors, double scale, double* sum);

    [LibraryImport(Library)]
    private static partial byte* optim_bench_last_error();

    /// <summary>Mirror of <c>optim_stream_tensors</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct StreamTensors
    {
        public long Count;
        public int NRead;
        public int NUpdate;
        public nint* Read;
        public nint* Update;
        public long* Numels;
    }

    // Runs before the first import is called.
    static BenchNative() => NativeLibrary.SetDllImportResolver(typeof(BenchNative).Assembly, Resolve);

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (libraryName != Library)
        {
            return IntPtr.Zero;
        }
        string directory = Path.GetDirectoryName(OptimNative.LibraryPath)
            ?? Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native");
        string path = Path.Combine(directory, "libOptim.BenchNative.so");
        if (!NativeLibrary.TryLoad(path, out var handle))
        {
            throw new DllNotFoundException(
                $"Optim: the benchmarks' library {path} could not be loaded; build the repository with `dotnet build` (it runs CMake).");
        }
        return handle;
    }

    private static void ThrowIfFailed(int status)
    {
        if (status != 0)
        {
            throw OptimNative.StatusException(status, Marshal.PtrToStringUTF8((nint)optim_bench_last_error()) ?? "");
        }
    }

    /// <summary>The most read arrays, and the most update arrays, per tensor of <see cref="StreamReference"/>.</summary>
    public const int StreamMaxArrays = 4;

    /// <summary>
    /// The memory-bandwidth reference of the benchmarks (see <c>optim_stream_reference</c> in <c>native/bench/include/optim_bench.h</c>):
    /// one pass over host arrays that moves <c>(readArrays + 2 * updateArrays)</c> element sizes per element
    /// with the least arithmetic, on the same threads and fixed chunks as the SGD step. Per element,
    /// <c>r</c> is the sum of the read arrays (left to right); each update array gets <c>u += scale * r</c>.
    /// A pass with no update arrays returns the sum of <c>r</c> over every element instead.
    /// </summary>
    /// <param name="dtype">Element type of every array.</param>
    /// <param name="read">Read arrays, tensor-major: entry <c>k * readArrays + j</c> is the j-th of tensor k.</param>
    /// <param name="readArrays">Read arrays per tensor (0 to <see cref="StreamMaxArrays"/>).</param>
    /// <param name="update">Update arrays (read and written in place), laid out like <paramref name="read"/>.</param>
    /// <param name="updateArrays">Update arrays per tensor (0 to <see cref="StreamMaxArrays"/>).</param>
    /// <param name="numels">Element count of each tensor.</param>
    /// <param name="scale">The factor of the update (finite).</param>
    /// <returns>The sum of <c>r</c> when <paramref name="updateArrays"/> is 0, else 0.</returns>
    public static double StreamReference(NativeDType dtype, ReadOnlySpan<nint> read, int readArrays,
        ReadOnlySpan<nint> update, int updateArrays, ReadOnlySpan<long> numels, double scale)
    {
        OptimNative.EnsureLoaded();
        int n = numels.Length;
        if (readArrays < 0 || updateArrays < 0 || read.Length != (long)n * readArrays || update.Length != (long)n * updateArrays)
        {
            throw new ArgumentException(
                $"StreamReference: {n} tensors with {readArrays} read and {updateArrays} update arrays need {(long)n * readArrays} " +
                $"and {(long)n * updateArrays} pointers, got {read.Length} and {update.Length}.");
        }
        double sum = 0;
        fixed (nint* r = read)
        fixed (nint* u = update)
        fixed (long* ne = numels)
        {
            var list = new StreamTensors
            {
                Count = n,
                NRead = readArrays,
                NUpdate = updateArrays,
                Read = r,
                Update = u,
                Numels = ne,
            };
            ThrowIfFailed(optim_stream_reference((int)dtype, &list, scale, &sum));
        }
        return sum;
    }
}
