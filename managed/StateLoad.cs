using TorchSharp.Modules;
using static TorchSharp.torch.optim;

namespace Optim;

/// <summary>A piece of optimizer state that can be loaded all or nothing: read and checked first, applied later.</summary>
internal interface IStagedLoad
{
    /// <summary>Reads and checks this piece from a saved state; returns the action that applies it (which cannot fail).</summary>
    Action ReadStaged(StateReader reader);

    /// <summary>Checks and copies this piece from another optimizer's state; returns the action that applies it.</summary>
    Action CopyStaged(object source, Staging staging);
}

/// <summary>
/// All-or-nothing loading for the fused optimizers. TorchSharp's <c>OptimizerHelper.load_state_dict</c>
/// applies each param group's options and each parameter's state as it reads them, so a truncated or
/// corrupt file leaves an optimizer half overwritten; these read and check everything first, into new
/// tensors, and change the optimizer only when all of it is valid.
/// </summary>
internal static class StateLoad
{
    /// <summary>Loads a stream written by <c>save_state_dict</c>: the optimizer's type name, the counts, every group's options, every parameter's state.</summary>
    /// <exception cref="InvalidDataException">The data is not a valid state of this optimizer; nothing was changed.</exception>
    public static void Load(OptimizerHelper optimizer, BinaryReader reader, IList<TorchSharp.Modules.ParamGroup> groups,
        IDictionary<IntPtr, OptimizerState> states)
    {
        ArgumentNullException.ThrowIfNull(reader);
        string owner = optimizer.GetType().Name;
        using var r = new StateReader(reader, owner);
        string name = r.ReadString("the optimizer's name");
        if (name != owner)
        {
            throw r.Invalid($"the data is the state of a '{name}', not of a '{owner}'.");
        }
        int parameters = groups.Sum(g => g.Parameters.Count());
        long savedGroups = r.ReadEncoded("the number of param groups");
        long savedStates = r.ReadEncoded("the number of parameter states");
        if (savedGroups != groups.Count || savedStates != parameters)
        {
            throw r.Invalid($"it has {savedGroups} param groups and {savedStates} parameter states, but this optimizer has {groups.Count} and {parameters}.");
        }
        var apply = new List<Action>();
        for (int g = 0; g < groups.Count; g++)
        {
            r.Part = $"options of param group {g}";
            apply.Add(((IStagedLoad)groups[g].Options).ReadStaged(r));
        }
        for (int g = 0; g < groups.Count; g++)
        {
            int i = 0;
            foreach (var p in groups[g].Parameters)
            {
                r.Part = $"state of parameter {i++} of param group {g}";
                apply.Add(((IStagedLoad)states[p.Handle]).ReadStaged(r));
            }
        }
        r.Staged.Commit();
        foreach (var a in apply)
        {
            a();
        }
    }

    /// <summary>Loads another optimizer's <c>state_dict()</c> (copies of its tensors), all or nothing.</summary>
    /// <exception cref="ArgumentException">The dictionary does not fit this optimizer; nothing was changed.</exception>
    public static void Copy(OptimizerHelper optimizer, OptimizerHelper.StateDictionary source, OptimizerHelper.StateDictionary target)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.Options.Count != target.Options.Count || source.State.Count != target.State.Count)
        {
            throw new ArgumentException($"{optimizer.GetType().Name}: the state dictionary has {source.Options.Count} param groups and " +
                $"{source.State.Count} parameter states, but this optimizer has {target.Options.Count} and {target.State.Count}.", nameof(source));
        }
        using var staging = new Staging();
        var apply = new List<Action>();
        for (int i = 0; i < source.Options.Count; i++)
        {
            if (!ReferenceEquals(source.Options[i], target.Options[i]))
            {
                apply.Add(((IStagedLoad)target.Options[i]).CopyStaged(source.Options[i], staging));
            }
        }
        for (int i = 0; i < source.State.Count; i++)
        {
            if (!ReferenceEquals(source.State[i], target.State[i]))
            {
                apply.Add(((IStagedLoad)target.State[i]).CopyStaged(source.State[i], staging));
            }
        }
        staging.Commit();
        foreach (var a in apply)
        {
            a();
        }
    }

    /// <summary>A staged copy of a state tensor on <paramref name="parameter"/>'s device, checked against it.</summary>
    public static TorchSharp.torch.Tensor? CopyTensor(TorchSharp.torch.Tensor? t, Parameter parameter, Staging staging, string owner, string what,
        TorchSharp.torch.ScalarType? dtype = null)
    {
        if (t is null)
        {
            return null;
        }
        if (t.dtype != (dtype ?? parameter.dtype) || !t.shape.SequenceEqual(parameter.shape))
        {
            throw new ArgumentException($"{owner}: the source's {what} ({t.dtype}, [{string.Join(", ", t.shape)}]) does not match its parameter " +
                $"({dtype ?? parameter.dtype}, [{string.Join(", ", parameter.shape)}]).", "source");
        }
        var copy = staging.Own(t.to(parameter.device, copy: true));
        if (copy.is_contiguous())
        {
            return copy;
        }
        var contiguous = staging.Own(copy.contiguous());
        staging.Free(copy);
        return contiguous;
    }
}
