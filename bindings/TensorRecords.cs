using System.Runtime.Intrinsics.X86;

namespace Optim.Interop;

/// <summary>
/// Brings the LibTorch records of many tensors into cache before a step reads them, level by level
/// across all tensors, so that their cache misses overlap instead of forming one chain per tensor
/// (docs/design.md, "Many tensors"). Only prefetches: the one field read is the first word of an
/// <c>at::Tensor</c> (its <c>TensorImpl*</c>) and three words inside that <c>TensorImpl</c>, whose
/// values are used only as prefetch addresses, which never fault; a wrong guess costs time, not safety.
/// </summary>
internal static unsafe class TensorRecords
{
    // c10::TensorImpl (LibTorch 2.x): vtable and refcounts (16 bytes), then storage_ (a StorageImpl*),
    // autograd_meta_ (where the gradient lives), extra_meta_, version_counter_.
    internal const int StorageField = 16;
    internal const int AutogradMetaField = 24;
    internal const int VersionCounterField = 40;
    // The fields a step's reads touch lie in the first four cache lines of a TensorImpl.
    private const int ImplLines = 4;

    /// <summary>Whether this machine has a prefetch instruction .NET exposes (x86); elsewhere <see cref="Prefetch"/> does nothing.</summary>
    public static bool Supported => Sse.IsSupported;

    /// <summary>The <c>TensorImpl*</c> of the live tensor behind <paramref name="handle"/> (the first word of its <c>at::Tensor</c>), as a prefetch hint for a later step.</summary>
    public static nint ImplOf(nint handle) => *(nint*)handle;

    /// <summary>The storage record a <c>TensorImpl</c> points to, as a prefetch hint (a read inside the <c>TensorImpl</c>; 0 for 0).</summary>
    public static nint StorageOf(nint impl) => impl == 0 ? 0 : *(nint*)((byte*)impl + StorageField);

    /// <summary>
    /// Prefetches records remembered from an earlier step (<c>TensorImpl</c>s and storage records; 0
    /// entries skipped). The addresses may be stale, even freed: a prefetch never faults.
    /// </summary>
    public static void PrefetchHints(ReadOnlySpan<nint> impls, ReadOnlySpan<nint> storages)
    {
        if (!Sse.IsSupported)
        {
            return;
        }
        for (int k = 0; k < impls.Length; k++)
        {
            byte* impl = (byte*)impls[k];
            if (impl is null)
            {
                continue;
            }
            for (int line = 0; line < ImplLines; line++)
            {
                Sse.Prefetch0(impl + 64 * line);
            }
            Sse.Prefetch0((void*)storages[k]);
        }
    }

    /// <summary>
    /// Prefetches, for each live tensor handle in <paramref name="handles"/> (0 entries skipped), its
    /// <c>at::Tensor</c>, its <c>TensorImpl</c>, and the storage, autograd and version records that
    /// <c>TensorImpl</c> points to. <paramref name="scratch"/> holds at least as many entries.
    /// </summary>
    public static void Prefetch(ReadOnlySpan<nint> handles, Span<nint> scratch)
    {
        if (!Sse.IsSupported)
        {
            return;
        }
        for (int k = 0; k < handles.Length; k++)
        {
            Sse.Prefetch0((void*)handles[k]);
        }
        for (int k = 0; k < handles.Length; k++)
        {
            nint impl = handles[k] == 0 ? 0 : *(nint*)handles[k];
            scratch[k] = impl;
            for (int line = 0; line < ImplLines; line++)
            {
                Sse.Prefetch0((byte*)impl + 64 * line);
            }
        }
        for (int k = 0; k < handles.Length; k++)
        {
            byte* impl = (byte*)scratch[k];
            if (impl is null)
            {
                continue;
            }
            Sse.Prefetch0(*(void**)(impl + StorageField));
            Sse.Prefetch0(*(void**)(impl + AutogradMetaField));
            Sse.Prefetch0(*(void**)(impl + VersionCounterField));
        }
    }
}
