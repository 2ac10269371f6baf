using Optim.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// The per-step scratch of a fused optimizer: data pointers, element counts and fresh-buffer flags of
/// every tensor that has a gradient, grouped by param group, in arrays reused from step to step (a warm
/// step allocates no arrays). Holds the gradient wrappers until <see cref="ReleaseGradients"/>.
/// </summary>
internal sealed class TensorBatch
{
    public nint[] Params = new nint[16];
    public nint[] Grads = new nint[16];
    public nint[] Buffers = new nint[16];
    public long[] Numels = new long[16];
    public byte[] Fresh = new byte[16];
    public Tensor[] ParamTensors = new Tensor[16];
    public FusedSGD.State[] States = new FusedSGD.State[16];
    private Tensor[] _gradients = new Tensor[16];
    private int _gradientCount;
    private int[] _groupStart = new int[4];
    private int _groups;

    public int Count { get; private set; }

    public void Reset(int groups)
    {
        Count = 0;
        _gradientCount = 0;
        if (_groupStart.Length < groups + 1)
        {
            _groupStart = new int[groups + 1];
        }
        _groups = groups;
        Array.Clear(_groupStart, 0, groups + 1);
    }

    /// <summary>Starts a group; groups must be begun in order, each before its tensors are added.</summary>
    public void BeginGroup(int group)
    {
        for (int g = group; g <= _groups; g++)
        {
            _groupStart[g] = Count;
        }
    }

    public (int Start, int Count) Group(int group) => (_groupStart[group], _groupStart[group + 1] - _groupStart[group]);

    /// <summary>Keeps a gradient wrapper to dispose after the step.</summary>
    public void AddGradient(Tensor grad)
    {
        if (_gradientCount == _gradients.Length)
        {
            Array.Resize(ref _gradients, _gradients.Length * 2);
        }
        _gradients[_gradientCount++] = grad;
    }

    public void Add(Tensor param, Tensor grad, Tensor? buffer, FusedSGD.State state, bool fresh)
    {
        if (Count == Params.Length)
        {
            Grow();
        }
        int k = Count++;
        Params[k] = TorchSharpNative.DataPointer(param.Handle);
        Grads[k] = TorchSharpNative.DataPointer(grad.Handle);
        Buffers[k] = buffer is null ? 0 : TorchSharpNative.DataPointer(buffer.Handle);
        Numels[k] = param.numel();
        Fresh[k] = fresh ? (byte)1 : (byte)0;
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
        Array.Resize(ref ParamTensors, n);
        Array.Resize(ref States, n);
    }

    /// <summary>Disposes the gradient wrappers (not the gradients) and drops references to tensors.</summary>
    public void ReleaseGradients()
    {
        for (int i = 0; i < _gradientCount; i++)
        {
            _gradients[i].Dispose();
            _gradients[i] = null!;
        }
        _gradientCount = 0;
        Array.Clear(ParamTensors, 0, Count);
        Array.Clear(States, 0, Count);
    }
}
