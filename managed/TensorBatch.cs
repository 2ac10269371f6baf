using Optim.Interop;
using TorchSharp.Modules;

namespace Optim;

/// <summary>
/// The per-step scratch of a fused optimizer: data pointers, element counts and fresh-buffer flags of
/// every tensor that has a gradient, grouped by param group, in arrays reused from step to step (a warm
/// step allocates nothing). Owns the gradient handles it was given until <see cref="Release"/>.
/// </summary>
internal sealed class TensorBatch<TState> where TState : class
{
    public nint[] Params = new nint[16];
    public nint[] Grads = new nint[16];
    public nint[] Buffers = new nint[16];
    public long[] Numels = new long[16];
    public byte[] Fresh = new byte[16];
    public int[] GroupIndex = new int[16];
    public Parameter[] ParamTensors = new Parameter[16];
    public TState[] States = new TState[16];
    private nint[] _gradHandles = new nint[16];
    private int _gradCount;
    private int _currentGroup;
    private int[] _groupStart = new int[4];
    private int _groups;

    public int Count { get; private set; }

    /// <summary>The tensors the step writes in place (parameters and existing state), for their version bumps.</summary>
    public WrittenTensors Written { get; } = new();

    public void Reset(int groups)
    {
        Count = 0;
        _gradCount = 0;
        Written.Clear();
        if (_groupStart.Length < groups + 1)
        {
            _groupStart = new int[groups + 1];
        }
        _groups = groups;
        Array.Clear(_groupStart, 0, groups + 1);
    }

    /// <summary>Starts a group; groups are begun in order, each before its tensors are added.</summary>
    public void BeginGroup(int group)
    {
        _currentGroup = group;
        for (int g = group; g <= _groups; g++)
        {
            _groupStart[g] = Count;
        }
    }

    public (int Start, int Count) Group(int group) => (_groupStart[group], _groupStart[group + 1] - _groupStart[group]);

    /// <summary>Takes ownership of a gradient handle (released by <see cref="Release"/>).</summary>
    public void OwnGradientHandle(nint handle)
    {
        if (_gradCount == _gradHandles.Length)
        {
            Array.Resize(ref _gradHandles, _gradHandles.Length * 2);
        }
        _gradHandles[_gradCount++] = handle;
    }

    public void Add(Parameter param, in TensorInfo p, in TensorInfo grad, nint buffer, TState state, bool fresh)
    {
        if (Count == Params.Length)
        {
            Grow();
        }
        int k = Count++;
        Params[k] = p.Data;
        Grads[k] = grad.Data;
        Buffers[k] = buffer;
        Numels[k] = p.Numel;
        Fresh[k] = fresh ? (byte)1 : (byte)0;
        GroupIndex[k] = _currentGroup;
        ParamTensors[k] = param;
        States[k] = state;
        _groupStart[_groups] = Count; // the end of the last group
    }

    private void Grow()
    {
        int n = Params.Length * 2;
        Array.Resize(ref Params, n);
        Array.Resize(ref Grads, n);
        Array.Resize(ref Buffers, n);
        Array.Resize(ref Numels, n);
        Array.Resize(ref Fresh, n);
        Array.Resize(ref GroupIndex, n);
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
    }
}
