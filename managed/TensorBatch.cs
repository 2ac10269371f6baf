using Optim.Interop;
using TorchSharp.Modules;

namespace Optim;

/// <summary>
/// The per-step scratch of a fused optimizer: for every tensor of the step, in param-group order, its
/// data pointers (parameter, gradient and the state arrays the optimizer uses), element count, param
/// group and first-step flag, in arrays reused from step to step (a warm step allocates nothing).
/// Owns the gradient handles it was given until <see cref="Release"/>.
/// </summary>
internal sealed class TensorBatch<TState> where TState : class
{
    public nint[] Params = new nint[16];
    public nint[] Grads = new nint[16];
    /// <summary>Momentum buffers (0 where there is none).</summary>
    public nint[] Buffers = new nint[16];
    /// <summary>Previous update directions (hypergradient descent without heavy-ball momentum).</summary>
    public nint[] PrevUpdates = new nint[16];
    /// <summary>Per-element rates (hypergradient descent, per-parameter scope).</summary>
    public nint[] Rates = new nint[16];
    /// <summary>Adam's second moments and their running maxima (0 where there is none); Adam's first moments use <see cref="Buffers"/>.</summary>
    public nint[] ExpAvgSqs = new nint[16];
    public nint[] MaxExpAvgSqs = new nint[16];
    /// <summary>Float32 master copies of 16-bit parameters (0 where there is none).</summary>
    public nint[] Masters = new nint[16];
    /// <summary>Per-tensor step counts after this step (Adam).</summary>
    public long[] Steps = new long[16];
    public long[] Numels = new long[16];
    public byte[] Fresh = new byte[16];
    public int[] GroupIndex = new int[16];
    public bool[] HasGradient = new bool[16];
    public Parameter[] ParamTensors = new Parameter[16];
    public TState[] States = new TState[16];
    private nint[] _gradHandles = new nint[16];
    private int _gradCount;
    private int _group;

    public int Count { get; private set; }

    /// <summary>The tensors the step writes in place (parameters and existing state), for their version bumps.</summary>
    public WrittenTensors Written { get; } = new();

    /// <summary>Every parameter of the step before its checks (filled first by the gather).</summary>
    public PendingTensors<TState> Pending { get; } = new();

    public void Reset()
    {
        Count = 0;
        Pending.Clear();
        _gradCount = 0;
        _group = 0;
        Written.Clear();
    }

    /// <summary>Starts a group; groups are begun in order, each before its tensors are added.</summary>
    public void BeginGroup(int group) => _group = group;

    /// <summary>Takes ownership of a gradient handle (released by <see cref="Release"/>).</summary>
    public void OwnGradientHandle(nint handle)
    {
        if (_gradCount == _gradHandles.Length)
        {
            Array.Resize(ref _gradHandles, _gradHandles.Length * 2);
        }
        _gradHandles[_gradCount++] = handle;
    }

    /// <summary>Adds a parameter with its gradient; the state arrays start at 0. Returns its entry.</summary>
    public int Add(Parameter param, in TensorInfo p, in TensorInfo grad, TState state)
    {
        int k = Next(param, state);
        Params[k] = p.Data;
        Grads[k] = grad.Data;
        Numels[k] = p.Numel;
        HasGradient[k] = true;
        return k;
    }

    /// <summary>Adds a parameter without a gradient as an empty entry (no element is touched).</summary>
    public int AddWithoutGradient(Parameter param, TState state) => Next(param, state);

    private int Next(Parameter param, TState state)
    {
        if (Count == Params.Length)
        {
            Grow();
        }
        int k = Count++;
        Params[k] = Grads[k] = Buffers[k] = PrevUpdates[k] = Rates[k] = ExpAvgSqs[k] = MaxExpAvgSqs[k] = Masters[k] = 0;
        Numels[k] = Steps[k] = 0;
        Fresh[k] = 0;
        HasGradient[k] = false;
        GroupIndex[k] = _group;
        ParamTensors[k] = param;
        States[k] = state;
        return k;
    }

    private void Grow()
    {
        int n = Params.Length * 2;
        Array.Resize(ref Params, n);
        Array.Resize(ref Grads, n);
        Array.Resize(ref Buffers, n);
        Array.Resize(ref PrevUpdates, n);
        Array.Resize(ref Rates, n);
        Array.Resize(ref ExpAvgSqs, n);
        Array.Resize(ref MaxExpAvgSqs, n);
        Array.Resize(ref Masters, n);
        Array.Resize(ref Steps, n);
        Array.Resize(ref Numels, n);
        Array.Resize(ref Fresh, n);
        Array.Resize(ref GroupIndex, n);
        Array.Resize(ref HasGradient, n);
        Array.Resize(ref ParamTensors, n);
        Array.Resize(ref States, n);
    }

    /// <summary>Releases the gradient handles (not the gradients) and drops references to tensors and states.</summary>
    public void Release()
    {
        for (int i = 0; i < _gradCount; i++)
        {
            TorchSharpNative.ReleaseHandle(_gradHandles[i]);
            _gradHandles[i] = 0;
        }
        _gradCount = 0;
        Array.Clear(ParamTensors, 0, Count);
        Array.Clear(States, 0, Count);
        Pending.Clear();
    }
}
