using TorchSharp;
using static TorchSharp.torch;

namespace Optim;

/// <summary>Helpers for the tensors an optimizer keeps per parameter.</summary>
internal static class StateTensors
{
    /// <summary>The tensor on <paramref name="device"/>, outside any dispose scope; the old one is disposed when a copy was made.</summary>
    public static Tensor? Move(Tensor? t, Device device)
    {
        if (t is null)
        {
            return null;
        }
        var moved = t.to(device).DetachFromDisposeScope();
        if (!ReferenceEquals(moved, t))
        {
            t.Dispose();
        }
        return moved;
    }
}
