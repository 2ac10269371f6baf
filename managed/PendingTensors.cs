using Optim.Interop;
using TorchSharp.Modules;

namespace Optim;

/// <summary>
/// Every parameter of a step before its checks, in param-group order: the parameter, its handle, state,
/// group and index, and its gradient handle once read; with the records to prefetch (docs/design.md,
/// "Many tensors"). Arrays reused from step to step; the batch that holds it owns the gradient handles.
/// </summary>
internal sealed class PendingTensors<TState> where TState : class
{
    public Parameter[] Params = new Parameter[16];
    public nint[] Handles = new nint[16];
    public TState[] States = new TState[16];
    public int[] Groups = new int[16];
    public int[] Indices = new int[16];
    /// <summary>Gradient handles (0 for a parameter without a gradient).</summary>
    public nint[] Grads = new nint[16];
    private nint[] _scratch = new nint[16];
    // The gradients' TensorImpl and storage records at each position in the last step: prefetch hints
    // only (a gradient kept across steps is found in cache; a replaced one costs a wasted prefetch).
    private nint[] _gradImplHints = new nint[16];
    private nint[] _gradStorageHints = new nint[16];

    public int Count { get; private set; }

    /// <summary>Handles of the state tensors, prefetched with the parameters.</summary>
    public HandleList Records { get; } = new();

    public void Clear()
    {
        Array.Clear(Params, 0, Count);
        Array.Clear(States, 0, Count);
        Count = 0;
        Records.Clear();
    }

    public void Add(Parameter param, nint handle, TState state, int group, int index)
    {
        if (Count == Params.Length)
        {
            int n = Params.Length * 2;
            Array.Resize(ref Params, n);
            Array.Resize(ref Handles, n);
            Array.Resize(ref States, n);
            Array.Resize(ref Groups, n);
            Array.Resize(ref Indices, n);
            Array.Resize(ref Grads, n);
            Array.Resize(ref _gradImplHints, n);
            Array.Resize(ref _gradStorageHints, n);
        }
        int j = Count++;
        Params[j] = param;
        Handles[j] = handle;
        States[j] = state;
        Groups[j] = group;
        Indices[j] = index;
        Grads[j] = 0;
        Records.Add(handle);
    }

    /// <summary>Prefetches the records of the parameters and their state tensors, and those of the last step's gradients.</summary>
    public void PrefetchRecords()
    {
        TensorRecords.Prefetch(Records.Span, Scratch(Records.Count));
        TensorRecords.PrefetchHints(_gradImplHints.AsSpan(0, Count), _gradStorageHints.AsSpan(0, Count));
    }

    /// <summary>Prefetches the records of the gradients (once <see cref="Grads"/> is filled) and keeps them as the next step's hints.</summary>
    public void PrefetchGradients()
    {
        TensorRecords.Prefetch(Grads.AsSpan(0, Count), Scratch(Count));
        for (int j = 0; j < Count; j++)
        {
            nint impl = Grads[j] == 0 ? 0 : TensorRecords.ImplOf(Grads[j]);
            _gradImplHints[j] = impl;
            _gradStorageHints[j] = TensorRecords.StorageOf(impl);
        }
    }

    private Span<nint> Scratch(int n)
    {
        if (_scratch.Length < n)
        {
            _scratch = new nint[Math.Max(n, 2 * _scratch.Length)];
        }
        return _scratch.AsSpan(0, n);
    }
}
