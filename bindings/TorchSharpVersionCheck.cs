namespace Optim.Interop;

/// <summary>
/// <see cref="TorchSharpNative"/> declares internal LibTorchSharp exports whose signatures belong to one
/// TorchSharp release; with any other, a call could read the wrong fields. So the loaded TorchSharp must
/// be exactly the version these bindings were built against (<c>TorchSharpVersion</c> in
/// Directory.Build.props, compiled in as <see cref="BuildConstants.TorchSharpVersion"/>).
/// </summary>
internal static class TorchSharpVersionCheck
{
    /// <summary>The TorchSharp version the bindings were written and tested against.</summary>
    internal const string Expected = BuildConstants.TorchSharpVersion;

    /// <summary>Checks the TorchSharp assembly loaded in this process.</summary>
    /// <exception cref="InvalidOperationException">It is another version.</exception>
    internal static void CheckLoaded()
    {
        var torchSharp = typeof(TorchSharp.torch).Assembly;
#pragma warning disable IL3000 // Location is empty in single-file apps; the message then names no path.
        Check(torchSharp.GetName().Version, Expected, torchSharp.Location);
#pragma warning restore IL3000
    }

    /// <summary>
    /// Throws unless <paramref name="loaded"/> has the major, minor and patch numbers of
    /// <paramref name="expected"/> (TorchSharp's assembly version is its package version plus ".0").
    /// </summary>
    /// <exception cref="InvalidOperationException">The versions differ, or the loaded one is unknown.</exception>
    internal static void Check(Version? loaded, string expected, string? location = null)
    {
        var want = Version.Parse(expected);
        if (loaded is not null && loaded.Major == want.Major && loaded.Minor == want.Minor && Math.Max(loaded.Build, 0) == Math.Max(want.Build, 0))
        {
            return;
        }
        string found = loaded is null ? "of unknown version" : $"{loaded.Major}.{loaded.Minor}.{Math.Max(loaded.Build, 0)}";
        string where = string.IsNullOrEmpty(location) ? "" : $" (from {location})";
        throw new InvalidOperationException(
            $"Optim {BuildConstants.OptimVersion} needs TorchSharp {expected}, but TorchSharp {found} is loaded{where}. " +
            $"Optim calls LibTorchSharp functions whose signatures belong to TorchSharp {expected}; with another version they " +
            $"could read the wrong memory. Reference TorchSharp {expected} (for example TorchSharp-cpu {expected}), or an Optim " +
            "release built for the TorchSharp you use.");
    }
}
