using System.Runtime.InteropServices;
using Optim.Interop;

namespace Optim.Tests;

/// <summary>The bindings of the benchmarks' bandwidth reference: the formula of optim.h through the wrapper, and span checks.</summary>
[TestFixture]
public class StreamReferenceTests
{
    // Pins arrays for the duration of a test and hands out their addresses.
    private sealed class Pins : IDisposable
    {
        private readonly List<GCHandle> _handles = new();

        public nint Address(Array array)
        {
            var h = GCHandle.Alloc(array, GCHandleType.Pinned);
            _handles.Add(h);
            return h.AddrOfPinnedObject();
        }

        public void Dispose()
        {
            foreach (var h in _handles)
            {
                h.Free();
            }
        }
    }

    [Test]
    public void UpdatePassAddsTheScaledSumOfTheReadArrays()
    {
        // Two tensors, each with two read arrays and one update array.
        float[] a = { 1, 2, 3 }, b = { 10, 20, 30 }, u = { 100, 200, 300 };
        float[] c = { 4, 4 }, d = { -1, 2 }, w = { 0, 1 };
        using (var pin = new Pins())
        {
            nint[] read = { pin.Address(a), pin.Address(b), pin.Address(c), pin.Address(d) };
            nint[] update = { pin.Address(u), pin.Address(w) };
            double result = BenchNative.StreamReference(NativeDType.Float32, read, 2, update, 1, new long[] { 3, 2 }, 0.5);
            Assert.That(result, Is.EqualTo(0.0));
        }
        Assert.That(u, Is.EqualTo(new float[] { 105.5f, 211, 316.5f }));
        Assert.That(w, Is.EqualTo(new float[] { 1.5f, 4 }));
        Assert.That(a, Is.EqualTo(new float[] { 1, 2, 3 }), "a read array was written");
        Assert.That(d, Is.EqualTo(new float[] { -1, 2 }), "a read array was written");
    }

    [Test]
    public void ReadOnlyPassReturnsTheSum()
    {
        double[] a = { 1, 2, 3, 4 }, b = { 0.5, 0.5, 0.5, 0.5 };
        using var pin = new Pins();
        nint[] read = { pin.Address(a), pin.Address(b) };
        double sum = BenchNative.StreamReference(NativeDType.Float64, read, 2, ReadOnlySpan<nint>.Empty, 0, new long[] { 4 }, 1.0);
        Assert.That(sum, Is.EqualTo(12.0));
    }

    [Test]
    public void MismatchedSpansAndNativeErrorsThrowArgumentException()
    {
        Assert.That(() => BenchNative.StreamReference(NativeDType.Float32, new nint[1], 2, ReadOnlySpan<nint>.Empty, 0, new long[] { 0 }, 1.0),
            Throws.ArgumentException.With.Message.Contains("need 2 and 0 pointers, got 1 and 0"));
        Assert.That(() => BenchNative.StreamReference(NativeDType.Float32, new nint[1], 1, ReadOnlySpan<nint>.Empty, 0, new long[] { 0 }, double.NaN),
            Throws.ArgumentException.With.Message.Contains("optim_stream_reference: scale must be finite"));
    }
}
