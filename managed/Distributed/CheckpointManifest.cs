using System.Text.Json.Serialization;

namespace Optim.Distributed;

/// <summary>The layout of a sharded checkpoint (manifest.json, written by <see cref="ShardedOptimizer.SaveCheckpoint"/>).</summary>
internal sealed record CheckpointManifest
{
    /// <summary>The manifest's format and version.</summary>
    public string Format { get; init; } = "";

    /// <summary>The wrapped optimizer's type name.</summary>
    public string Optimizer { get; init; } = "";

    /// <summary>The number of ranks that wrote it: shard files 0 to Ranks − 1.</summary>
    public int Ranks { get; init; }

    /// <summary>Every parameter, in param-group order.</summary>
    public CheckpointParameter[] Parameters { get; init; } = Array.Empty<CheckpointParameter>();
}

/// <summary>One parameter of a sharded checkpoint: where it was and which rank's shard holds its state.</summary>
internal sealed record CheckpointParameter
{
    /// <summary>Its param group.</summary>
    public int Group { get; init; }

    /// <summary>Its shape.</summary>
    public long[] Shape { get; init; } = Array.Empty<long>();

    /// <summary>Its element type (TorchSharp's name).</summary>
    public string DType { get; init; } = "";

    /// <summary>The rank whose shard file holds its state.</summary>
    public int Owner { get; init; }
}

/// <summary>The manifest's JSON, generated at build time (no reflection: trimming and AOT safe).</summary>
[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(CheckpointManifest))]
internal sealed partial class CheckpointJson : JsonSerializerContext
{
}
