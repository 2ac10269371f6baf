using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Distributed;

/// <summary>
/// The CUDA tensors of one collective, staged through host copies: the MPI plugin reads and writes host
/// memory only, so the collective runs on the copies and <see cref="CopyBack"/> writes each result into its
/// CUDA tensor; CPU tensors pass through as they are. Every staged byte crosses PCIe twice (there and back)
/// on top of the network. (A CUDA-aware MPI would take the device pointers; that path is not written.)
/// </summary>
internal sealed class HostStaging : IDisposable
{
    private readonly List<(Tensor Device, Tensor Host)> _staged = new();

    public HostStaging(IEnumerable<Tensor> tensors, string name)
    {
        var all = new List<Tensor>();
        int index = 0;
        try
        {
            foreach (var t in tensors)
            {
                if (t is not null && !t.IsInvalid && t.device_type == DeviceType.CUDA)
                {
                    if (t.is_sparse || !t.is_contiguous())
                    {
                        throw new ArgumentException($"Tensor {index} must be dense and contiguous.", name);
                    }
                    var host = t.cpu(); // waits for the work that writes it
                    _staged.Add((t, host));
                    all.Add(host);
                }
                else
                {
                    all.Add(t!);
                }
                index++;
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        Tensors = all;
    }

    /// <summary>The tensors the collective runs on: the host copy of each CUDA tensor, the others as given.</summary>
    public IReadOnlyList<Tensor> Tensors { get; }

    /// <summary>Writes each host copy's result into its CUDA tensor (after the collective succeeded).</summary>
    public void CopyBack()
    {
        foreach (var (device, host) in _staged)
        {
            device.copy_(host);
        }
    }

    public void Dispose()
    {
        foreach (var (_, host) in _staged)
        {
            host.Dispose();
        }
        _staged.Clear();
    }
}
