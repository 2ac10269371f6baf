using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Benchmarks;

/// <summary>
/// The tensors of one benchmark case: <c>parameters</c> float32 elements split into <c>tensors</c>
/// contiguous tensors (the last one takes the remainder), allocated one by one as a model's would be.
/// Everything created here is disposed by <see cref="Dispose"/>.
/// </summary>
internal sealed class Workload : IDisposable
{
    private readonly List<IDisposable> _owned = new();

    public Workload(long parameters, int tensors)
    {
        SettleGarbage();
        if (tensors <= 0 || parameters < tensors)
        {
            throw new ArgumentException($"Cannot split {parameters} parameters into {tensors} tensors.");
        }
        long per = parameters / tensors;
        Numels = Enumerable.Range(0, tensors).Select(i => i == tensors - 1 ? parameters - per * (tensors - 1) : per).ToArray();
        torch.manual_seed(1);
    }

    /// <summary>
    /// Collects the garbage of earlier cases and runs its finalizers now: MemoryDiagnoser counts the whole
    /// process's allocations, and TorchSharp finalizers running during this case's measurement would count.
    /// </summary>
    public static void SettleGarbage()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
    }

    /// <summary>Element count of each tensor.</summary>
    public long[] Numels { get; }

    /// <summary>Parameters with gradients attached (values ~N(0, 1), gradients ~N(0, 1e-6)); steps reuse the gradients.</summary>
    public List<Parameter> Parameters()
    {
        var list = new List<Parameter>(Numels.Length);
        foreach (long n in Numels)
        {
            var p = new Parameter(torch.randn(n));
            var g = torch.randn(n).mul_(1e-3);
            p.grad = g;
            _owned.Add(g);
            _owned.Add(p);
            list.Add(p);
        }
        return list;
    }

    /// <summary>One plain tensor per layout tensor, each filled with <paramref name="value"/> or, when null, ~N(0, 1e-6).</summary>
    public Tensor[] Arrays(double? value = null)
    {
        var arrays = new Tensor[Numels.Length];
        for (int k = 0; k < Numels.Length; k++)
        {
            arrays[k] = value is double v ? torch.full(Numels[k], v, ScalarType.Float32) : torch.randn(Numels[k]).mul_(1e-3);
            _owned.Add(arrays[k]);
        }
        return arrays;
    }

    /// <summary>Keeps <paramref name="item"/> alive until the workload is disposed, then disposes it.</summary>
    public T Own<T>(T item) where T : IDisposable
    {
        _owned.Add(item);
        return item;
    }

    public void Dispose()
    {
        // Optimizers (added after the tensors they use) first.
        for (int i = _owned.Count - 1; i >= 0; i--)
        {
            _owned[i].Dispose();
        }
        _owned.Clear();
    }
}

/// <summary>
/// The bandwidth reference of one optimizer step: one <see cref="BenchNative.StreamReference"/> call per
/// pass of the step, each over the same kind and number of arrays as that pass, with pointer arrays built
/// once, so a run is exactly the native passes (no managed gathering).
/// </summary>
internal sealed class StreamPlan
{
    private readonly List<Pass> _passes = new();
    private readonly long[] _numels;

    private sealed record Pass(nint[] Read, int ReadArrays, nint[] Update, int UpdateArrays);

    public StreamPlan(long[] numels) => _numels = numels;

    /// <summary>Adds a pass that reads <paramref name="read"/> and updates <paramref name="update"/> in place (or, with no update array, only reads).</summary>
    public StreamPlan Then(Tensor[][] read, Tensor[][] update)
    {
        _passes.Add(new Pass(Pointers(read), read.Length, Pointers(update), update.Length));
        return this;
    }

    /// <summary>Bytes one run moves per element (float32).</summary>
    public int BytesPerElement => _passes.Sum(p => 4 * (p.ReadArrays + 2 * p.UpdateArrays));

    private nint[] Pointers(Tensor[][] arrays)
    {
        // Tensor-major: entry k * arrays.Length + j is array j of tensor k.
        var pointers = new nint[_numels.Length * arrays.Length];
        for (int k = 0; k < _numels.Length; k++)
        {
            for (int j = 0; j < arrays.Length; j++)
            {
                pointers[k * arrays.Length + j] = TorchSharpNative.DataPointer(arrays[j][k].Handle);
            }
        }
        return pointers;
    }

    /// <summary>Runs every pass; returns the read-only passes' sums (so nothing can be elided).</summary>
    public double Run()
    {
        double sum = 0;
        foreach (var p in _passes)
        {
            sum += BenchNative.StreamReference(NativeDType.Float32, p.Read, p.ReadArrays, p.Update, p.UpdateArrays, _numels, -1e-6);
        }
        return sum;
    }
}
