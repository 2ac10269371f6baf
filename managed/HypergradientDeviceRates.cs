using TorchSharp;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// The CUDA residency of the hypergradient optimizers' scalar rates and skip counter (for
/// <see cref="HypergradientRates{TState}"/>): the rates live in device memory between steps (a step never
/// waits for the host) and are copied back to their owners (a param group's <c>LearningRate</c>, or a
/// tensor's <c>tensor_rate</c>) only when asked, or
/// when the layout of the rates changes, before the device copy is rebuilt from the host. Each slot
/// remembers its owner, so a copy back always reaches the group or tensor the rate belongs to.
/// Compiled and reasoned about, not yet run on a GPU (the kernels it feeds are checked on an H200).
/// </summary>
internal sealed class HypergradientDeviceRates : IDisposable
{
    private readonly Func<object, double> _read;
    private readonly Action<object, double> _write;
    private Tensor? _rates;
    private Tensor? _skipped;
    private object[] _owners = Array.Empty<object>();

    /// <param name="read">An owner's current host rate.</param>
    /// <param name="write">Sets an owner's host rate (with the global scope, every group's).</param>
    public HypergradientDeviceRates(Func<object, double> read, Action<object, double> write)
    {
        _read = read;
        _write = write;
    }

    /// <summary>CUDA steps launched since the skip counter was created (skipped ones included).</summary>
    public long Attempts { get; private set; }

    /// <summary>The device's count of skipped steps (a synchronization); 0 before the first CUDA step.</summary>
    public long Skipped()
    {
        if (_skipped is null)
        {
            return 0;
        }
        using var host = _skipped.cpu();
        return host.item<long>();
    }

    /// <summary>
    /// The device addresses of the rates (0 for the per-parameter scope) and of the skip counter for a
    /// step whose slots belong to <paramref name="owners"/> (param groups, or per-tensor states, in slot
    /// order; none for the per-parameter scope).
    /// </summary>
    public (nint Rates, nint Skipped) Prepare(IReadOnlyList<object> owners, Device device)
    {
        if (_rates is not null && !SameOwners(owners))
        {
            // The layout changed (a group was added, a group's parameters replaced): every rate goes
            // back to its owner first, so the rebuilt copy starts from current values.
            CopyBack();
            _rates.Dispose();
            _rates = null;
        }
        if (_rates is null && owners.Count > 0)
        {
            var host = new double[owners.Count];
            for (int k = 0; k < host.Length; k++)
            {
                host[k] = _read(owners[k]);
            }
            _rates = torch.tensor(host, ScalarType.Float64).to(device).DetachFromDisposeScope();
            _owners = owners.ToArray();
        }
        _skipped ??= torch.zeros(1, ScalarType.Int64, device).DetachFromDisposeScope();
        return (_rates is null ? 0 : Interop.TorchSharpNative.DataPointer(_rates.Handle), Interop.TorchSharpNative.DataPointer(_skipped.Handle));
    }

    /// <summary>Counts a launched step.</summary>
    public void Launched() => Attempts++;

    private bool SameOwners(IReadOnlyList<object> owners)
    {
        if (owners.Count != _owners.Length)
        {
            return false;
        }
        for (int k = 0; k < owners.Count; k++)
        {
            if (!ReferenceEquals(owners[k], _owners[k]))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>Copies the device rates back to their owners (a synchronization); a no-op before the first CUDA step.</summary>
    public void CopyBack()
    {
        if (_rates is null)
        {
            return;
        }
        using var host = _rates.cpu();
        var rates = host.data<double>().ToArray();
        for (int k = 0; k < rates.Length; k++)
        {
            _write(_owners[k], rates[k]);
        }
    }

    /// <summary>Forgets the device state (after a load replaced the host values, which are then the truth).</summary>
    public void Reset()
    {
        _rates?.Dispose();
        _skipped?.Dispose();
        _rates = _skipped = null;
        _owners = Array.Empty<object>();
        Attempts = 0;
    }

    public void Dispose() => Reset();
}
