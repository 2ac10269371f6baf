using System.Globalization;
using Optim.Interop;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// New tensors made while a load is checked, before it is committed: owned here until
/// <see cref="Commit"/>, freed by <see cref="Dispose"/> otherwise, so a failed load leaves nothing behind.
/// </summary>
internal sealed class Staging : IDisposable
{
    private readonly List<Tensor> _tensors = new();

    /// <summary>Takes ownership of a new tensor (detached from any dispose scope).</summary>
    public Tensor Own(Tensor t)
    {
        t.DetachFromDisposeScope();
        _tensors.Add(t);
        return t;
    }

    /// <summary>Frees one owned tensor now (an intermediate copy).</summary>
    public void Free(Tensor t)
    {
        _tensors.Remove(t);
        t.Dispose();
    }

    /// <summary>The owned tensors now belong to the optimizer's state.</summary>
    public void Commit() => _tensors.Clear();

    public void Dispose()
    {
        foreach (var t in _tensors)
        {
            t.Dispose();
        }
        _tensors.Clear();
    }
}

/// <summary>
/// Reads the optimizers' saved state (TorchSharp's optimizer format) without trusting it: every value
/// is checked, every tensor is read into a new tensor (never into the live state), and any problem,
/// a truncated stream included, becomes an <see cref="InvalidDataException"/> that names the optimizer,
/// the part being read and the problem. New tensors are owned by <see cref="Staged"/> until committed.
/// </summary>
internal sealed class StateReader : IDisposable
{
    private const int MaxDimensions = 64;
    private readonly BinaryReader _reader;
    private readonly string _owner;

    public StateReader(BinaryReader reader, string owner)
    {
        _reader = reader;
        _owner = owner;
    }

    /// <summary>The tensors read so far, freed unless the load is committed.</summary>
    public Staging Staged { get; } = new();

    /// <summary>What is being read, for messages ("param group 1", "state of parameter 2 of param group 0").</summary>
    public string Part { get; set; } = "header";

    public InvalidDataException Invalid(string problem) => new($"{_owner}: invalid saved state ({Part}): {problem}");

    private static string F(double v) => v.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Runs a read, turning a premature end of the data into <see cref="InvalidDataException"/>.</summary>
    public T Read<T>(Func<BinaryReader, T> read, string what)
    {
        try
        {
            return read(_reader);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"{_owner}: invalid saved state ({Part}): the data ends before {what}.", e);
        }
    }

    public string ReadString(string what) => Read(r => r.ReadString(), what);

    public double ReadDouble(string what) => Read(r => r.ReadDouble(), what);

    /// <summary>A finite, non-negative double (rates, momentum, weight decay).</summary>
    public double ReadNonNegative(string what)
    {
        double v = ReadDouble(what);
        return double.IsFinite(v) && v >= 0 ? v : throw Invalid($"{what} must be finite and >= 0, got {F(v)}.");
    }

    public double ReadFinite(string what)
    {
        double v = ReadDouble(what);
        return double.IsFinite(v) ? v : throw Invalid($"{what} must be finite, got {F(v)}.");
    }

    /// <summary>A boolean written by <see cref="BinaryWriter.Write(bool)"/>: exactly 0 or 1.</summary>
    public bool ReadBool(string what)
    {
        byte b = Read(r => r.ReadByte(), what);
        return b <= 1 ? b == 1 : throw Invalid($"{what} must be a boolean (0 or 1), got the byte {b}.");
    }

    public long ReadCount(string what)
    {
        long v = Read(r => r.ReadInt64(), what);
        return v >= 0 ? v : throw Invalid($"{what} must be >= 0, got {v}.");
    }

    /// <summary>A non-negative LEB128 integer, as TorchSharp encodes counts, dtypes and shapes.</summary>
    public long ReadEncoded(string what)
    {
        long result = 0;
        for (int shift = 0; ; shift += 7)
        {
            if (shift > 56)
            {
                throw Invalid($"{what} is not a valid encoded integer (too many bytes).");
            }
            byte b = Read(r => r.ReadByte(), what);
            result |= (long)(b & 0x7f) << shift;
            if ((b & 0x80) == 0)
            {
                return result;
            }
        }
    }

    /// <summary>
    /// A tensor saved by <c>SaveConditionalStateTensor</c> (a flag, then dtype, shape and raw data) that must
    /// have <paramref name="like"/>'s dtype and shape; null when the flag says there is none. The tensor is
    /// new, contiguous, on <paramref name="like"/>'s device and outside any dispose scope.
    /// </summary>
    public Tensor? ReadOptionalTensor(string what, Tensor like, ScalarType? dtype = null)
    {
        if (!ReadBool($"the presence flag of the {what}"))
        {
            return null;
        }
        return ReadTensor(what, like, dtype);
    }

    /// <summary>
    /// A tensor saved by <c>Tensor.Save</c> (dtype, shape and raw data, no flag) that must have
    /// <paramref name="like"/>'s dtype (or <paramref name="dtype"/> when given: float32 state of a 16-bit parameter) and
    /// shape; new, contiguous, on <paramref name="like"/>'s device and outside any dispose scope.
    /// </summary>
    public Tensor ReadTensor(string what, Tensor like, ScalarType? dtype = null)
    {
        var type = dtype ?? like.dtype;
        long code = ReadEncoded($"the dtype of the {what}");
        if (code != (long)type)
        {
            throw Invalid(dtype is null
                ? $"the {what} has dtype code {code} but its parameter is {like.dtype}."
                : $"the {what} has dtype code {code} but must be {type} (its parameter is {like.dtype}).");
        }
        long ndim = ReadEncoded($"the rank of the {what}");
        if (ndim != like.shape.Length || ndim > MaxDimensions)
        {
            throw Invalid($"the {what} has {ndim} dimensions but its parameter has {like.shape.Length}.");
        }
        var shape = new long[ndim];
        for (int i = 0; i < ndim; i++)
        {
            shape[i] = ReadEncoded($"the shape of the {what}");
        }
        if (!shape.SequenceEqual(like.shape))
        {
            throw Invalid($"the {what} has shape [{string.Join(", ", shape)}] but its parameter has [{string.Join(", ", like.shape)}].");
        }
        var cpu = Staged.Own(torch.empty(shape, type));
        ReadInto(cpu, what);
        if (like.device_type == DeviceType.CPU)
        {
            return cpu;
        }
        var moved = Staged.Own(cpu.to(like.device));
        Staged.Free(cpu);
        return moved;
    }

    // The raw bytes, straight into the new tensor's memory (no second copy of a large state).
    private unsafe void ReadInto(Tensor t, string what)
    {
        long bytes = t.numel() * t.element_size();
        byte* data = (byte*)TorchSharpNative.DataPointer(t.Handle);
        var stream = _reader.BaseStream;
        for (long done = 0; done < bytes;)
        {
            int n = (int)Math.Min(bytes - done, 1 << 30);
            try
            {
                stream.ReadExactly(new Span<byte>(data + done, n));
            }
            catch (EndOfStreamException e)
            {
                throw new InvalidDataException($"{_owner}: invalid saved state ({Part}): the data ends inside the {what}.", e);
            }
            done += n;
        }
    }

    /// <summary>Checks that every element of a staged tensor is finite and non-negative (rates).</summary>
    public void RequireNonNegative(Tensor t, string what)
    {
        using var scope = torch.NewDisposeScope();
        if (!t.isfinite().all().item<bool>() || t.lt(0).any().item<bool>())
        {
            throw Invalid($"the {what} has NaN, infinite or negative elements.");
        }
    }

    public void Dispose() => Staged.Dispose();
}
