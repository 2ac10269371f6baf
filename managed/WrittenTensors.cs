using Optim.Interop;

namespace Optim;

/// <summary>
/// The tensors a fused step writes in place (their LibTorch handles), so that their autograd version
/// counters can be bumped as LibTorch's own in-place operations bump them: a graph that saved a
/// parameter before the step then refuses to run backward instead of silently using the new values.
/// Reused from step to step (a warm step allocates nothing).
/// </summary>
internal sealed class WrittenTensors
{
    private nint[] _handles = new nint[16];
    private int _count;

    public void Clear() => _count = 0;

    public void Add(nint tensorHandle)
    {
        if (_count == _handles.Length)
        {
            Array.Resize(ref _handles, _handles.Length * 2);
        }
        _handles[_count++] = tensorHandle;
    }

    /// <summary>One native call, one atomic increment per tensor; made once every check has passed, just before the write.</summary>
    public void BumpVersions() => OptimNative.BumpTorchVersions(_handles.AsSpan(0, _count));
}
