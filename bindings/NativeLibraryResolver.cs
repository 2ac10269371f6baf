using System.Reflection;
using System.Runtime.InteropServices;

namespace Optim.Interop;

/// <summary>
/// Finds <c>libOptim.Native</c> for this assembly's imports. Search order: the path in the environment
/// variable <c>OPTIM_NATIVE_LIBRARY</c> (a file), then <c>runtimes/&lt;rid&gt;/native/</c> and the
/// directory itself under the application's base directory and under this assembly's directory, then
/// the operating system's default search. Other libraries (LibTorchSharp) are left to the default
/// resolution, which finds the copy TorchSharp itself loaded.
/// </summary>
internal static class NativeLibraryResolver
{
    private static int s_registered;

    /// <summary>The path the library was loaded from, once it has been.</summary>
    internal static string? LoadedFrom { get; private set; }

    internal static void Register()
    {
        if (Interlocked.Exchange(ref s_registered, 1) == 0)
        {
            try
            {
                NativeLibrary.SetDllImportResolver(typeof(NativeLibraryResolver).Assembly, Resolve);
            }
            catch (InvalidOperationException)
            {
                // A resolver was already set for this assembly (by the host): respect it.
            }
        }
    }

    internal static IEnumerable<string> CandidatePaths()
    {
        var env = Environment.GetEnvironmentVariable("OPTIM_NATIVE_LIBRARY");
        if (!string.IsNullOrEmpty(env))
        {
            yield return env;
        }

        string file = OperatingSystem.IsWindows() ? "Optim.Native.dll"
            : OperatingSystem.IsMacOS() ? "libOptim.Native.dylib"
            : "libOptim.Native.so";
        string arch = RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        string os = OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux";
        var rids = new[] { RuntimeInformation.RuntimeIdentifier, $"{os}-{arch}" }.Distinct();
#pragma warning disable IL3000 // Location is empty in single-file apps; empty roots are skipped below.
        string assemblyDir = Path.GetDirectoryName(typeof(NativeLibraryResolver).Assembly.Location) ?? "";
#pragma warning restore IL3000
        var roots = new[] { AppContext.BaseDirectory, assemblyDir }
            .Where(d => !string.IsNullOrEmpty(d)).Select(d => d!).Distinct();
        foreach (var root in roots)
        {
            foreach (var rid in rids)
            {
                yield return Path.Combine(root, "runtimes", rid, "native", file);
            }
            yield return Path.Combine(root, file);
        }
    }

    internal static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (libraryName != NativeMethods.Library)
        {
            return IntPtr.Zero;
        }
        foreach (var path in CandidatePaths())
        {
            if (File.Exists(path) && NativeLibrary.TryLoad(path, out var handle))
            {
                LoadedFrom = path;
                return handle;
            }
        }
        return IntPtr.Zero; // default search; failure surfaces in OptimNative with the list above
    }
}
