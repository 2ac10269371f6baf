namespace Optim;

/// <summary>A growable list of LibTorch tensor handles, reused from step to step (a warm step allocates nothing).</summary>
internal sealed class HandleList
{
    private nint[] _handles = new nint[16];

    public int Count { get; private set; }

    public ReadOnlySpan<nint> Span => _handles.AsSpan(0, Count);

    public void Clear() => Count = 0;

    public void Add(nint handle)
    {
        if (Count == _handles.Length)
        {
            Array.Resize(ref _handles, _handles.Length * 2);
        }
        _handles[Count++] = handle;
    }
}
