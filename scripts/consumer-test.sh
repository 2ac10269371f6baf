#!/usr/bin/env bash
# The consumer test: what a user of the package does, outside the repository.
#   1. dotnet pack at the root: exactly the Optim package (and its symbols) in artifacts/packages/
#   2. its contents: the assembly, XML docs, the native library, the GLIBCXX fix, README, licence,
#      the exact TorchSharp dependency; a native library that needs no CUDA on the consumer's machine
#      (and, with OPTIM_CUDA=ON, holds the CUDA kernels)
#   3. control: where the system's libstdc++ lacks GLIBCXX_3.4.32, a fresh project with TorchSharp-cpu
#      alone must fail to load it (else the next check would prove nothing)
#   4. a fresh console project in a temporary folder (tests/consumer: its project file has the two
#      package references and nothing else) restores Optim from a local folder feed holding only the
#      package, builds, and trains the MNIST MLP with FusedSGD, per-parameter HypergradientSGD, and
#      Adam under GreedyLR: three checks, each that the held-out loss fell
#   5. examples/ build against the same package; each runs
# Ends with "N passed, N failed, N skipped".
#   scripts/consumer-test.sh [mnist-dir]     (default: artifacts/data/mnist, fetched by scripts/setup.sh)
set -uo pipefail   # so: no `producer | grep -q` (grep's early exit fails the producer with SIGPIPE)
cd "$(dirname "$0")/.."
version=$(tr -d '[:space:]' < VERSION)
torchsharp=$(sed -n 's:.*<TorchSharpVersion>\(.*\)</TorchSharpVersion>.*:\1:p' Directory.Build.props)
mnist=$(realpath -m "${1:-artifacts/data/mnist}")
packages=artifacts/packages
log=artifacts/test-logs/consumer
mkdir -p "$log"
work=$(mktemp -d /tmp/optim-consumer.XXXXXX)   # outside the repository: none of its files apply there
trap 'rm -rf "$work"' EXIT
# TorchSharp 0.107's own optimizers pass implicit Scalars a GC may finalize mid-call (docs/design.md):
# a large gen0 budget makes a GC during these short runs unlikely, as in the repository's tests.
export DOTNET_GCgen0size=0x10000000 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

passed=0
failed=0
skipped=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
skip() { echo "SKIP $*"; skipped=$((skipped + 1)); }
finish() { echo "$passed passed, $failed failed, $skipped skipped"; [ "$failed" -eq 0 ]; exit $?; }

# 1. Pack.
pack_args=()
[ "${OPTIM_CUDA:-AUTO}" = "ON" ] && pack_args+=(-p:OptimPackRequireCuda=true)
rm -rf "$packages"
if dotnet pack Optim.sln -c Release -o "$packages" "${pack_args[@]}" >"$log/pack.log" 2>&1; then
  grep -E "Optim: packing" "$log/pack.log" | sed 's/^ *//'
  produced=$(cd "$packages" && ls | sort | tr '\n' ' ')
  if [ "$produced" = "Optim.$version.nupkg Optim.$version.snupkg " ]; then
    pass "pack: dotnet pack Optim.sln produces only Optim $version (and its symbols)"
  else
    fail "pack: dotnet pack Optim.sln produced: $produced"
  fi
else
  tail -n 30 "$log/pack.log"; fail "pack: dotnet pack Optim.sln failed"; finish
fi
nupkg=$packages/Optim.$version.nupkg

# 2. Contents.
echo "package contents ($nupkg):"
unzip -l "$nupkg" | sed 's/^/  /'
listing=$(unzip -Z1 "$nupkg" | grep -vE '^(_rels/|\[Content_Types\]\.xml|package/services/)' | sort | tr '\n' ' ')
expected="Optim.nuspec README.md buildTransitive/Optim.targets lib/net10.0/Optim.dll lib/net10.0/Optim.xml runtimes/linux-x64/native/libOptim.Native.so"
# The MPI plugin ships next to the library when the build found MPI (docs/distributed.md).
if [ -f artifacts/native/lib/libOptim.Native.Mpi.so ]; then expected="$expected runtimes/linux-x64/native/libOptim.Native.Mpi.so"; fi
expected=$(printf '%s\n' $expected | sort | tr '\n' ' ')
if [ "$listing" = "$expected" ]; then pass "contents: assembly, XML docs, native library, buildTransitive fix, README"; else fail "contents: got $listing, expected $expected"; fi

mkdir -p "$work/unpacked" && unzip -q "$nupkg" -d "$work/unpacked"
nuspec=$work/unpacked/Optim.nuspec
if grep -q "<dependency id=\"TorchSharp\" version=\"\[$torchsharp\]\"" "$nuspec" &&
  [ "$(grep -c '<dependency ' "$nuspec")" -eq 1 ] &&
  grep -q '<license type="expression">MIT</license>' "$nuspec" &&
  grep -q '<readme>README.md</readme>' "$nuspec" &&
  grep -qE '<repository type="git"[^>]* commit="[0-9a-f]{40}"' "$nuspec"; then
  pass "nuspec: depends on exactly TorchSharp [$torchsharp] and nothing else; MIT; README; repository commit"
else
  cat "$nuspec"; fail "nuspec: dependency, licence, readme or repository metadata"
fi
if cmp -s "$work/unpacked/buildTransitive/Optim.targets" eng/TorchSharpGlibcxxFix.targets; then
  pass "buildTransitive/Optim.targets is eng/TorchSharpGlibcxxFix.targets (one copy of the rule)"
else
  fail "buildTransitive/Optim.targets differs from eng/TorchSharpGlibcxxFix.targets"
fi
if unzip -Z1 "$packages/Optim.$version.snupkg" | grep -x 'lib/net10.0/Optim.pdb' >/dev/null; then pass "symbols: Optim.pdb in the .snupkg"; else fail "symbols: no Optim.pdb in the .snupkg"; fi

so=$work/unpacked/runtimes/linux-x64/native/libOptim.Native.so
needed=$(readelf -d "$so" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | paste -sd ' ')
if echo "$needed" | grep -iE 'cuda|cudart|nvrtc' >/dev/null; then fail "native: needs CUDA libraries at load: $needed"; else pass "native: loads without CUDA (needs only: $needed)"; fi
# The benchmarks' instruments live in libOptim.BenchNative, which is not packed (the listing above).
if nm -D --defined-only "$so" | grep -E ' optim_(stream_reference|bench_)' >/dev/null; then
  fail "native: the packed library exports a benchmark instrument"
else
  pass "native: no benchmark instrument among the exports"
fi
if [ "${OPTIM_CUDA:-AUTO}" = "ON" ]; then
  archs=$(readelf -S "$so" | grep '\.nv_fatbin' >/dev/null && command -v cuobjdump >/dev/null && cuobjdump --list-elf "$so" | grep -oE 'sm_[0-9]+' | sort -u | paste -sd ' ')
  if [ "$archs" = "sm_70 sm_80 sm_90" ]; then pass "native: CUDA kernels for $archs"; else fail "native: CUDA kernels expected for sm_70 sm_80 sm_90, found '${archs:-none}'"; fi
fi

# A fresh project in the temporary folder: NuGet.config adds the local folder feed to the machine's
# usual sources (nothing else); the cached copy of this version is dropped so the one just packed is used
# (two runs at once on one machine would race for it: the hash check below then fails, not passes).
mkdir -p "$work/feed" && cp "$nupkg" "$work/feed/"
cat >"$work/NuGet.config" <<EOF
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="optim-local" value="$work/feed" />
  </packageSources>
</configuration>
EOF
cache=$(dotnet nuget locals global-packages --list | sed 's/^global-packages: //')
rm -rf "${cache%/}/optim/$version"

# 3. Control: TorchSharp-cpu alone.
libstdcxx=$({ ldconfig -p 2>/dev/null || /sbin/ldconfig -p; } | sed -n 's/.*libstdc++.so.6 (libc6,x86-64) => //p' | head -n 1)
if [ -n "$libstdcxx" ] && ! grep -qa 'GLIBCXX_3.4.32' "$libstdcxx"; then
  mkdir -p "$work/control"
  cat >"$work/control/Control.csproj" <<EOF
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <ImplicitUsings>enable</ImplicitUsings>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="TorchSharp-cpu" Version="$torchsharp" />
  </ItemGroup>
</Project>
EOF
  echo 'Console.WriteLine(TorchSharp.torch.ones(3).sum().item<float>());' >"$work/control/Program.cs"
  if dotnet build "$work/control" -c Release >"$log/control-build.log" 2>&1; then
    # In a subshell, so that the abort it is expected to die of is not reported by this shell.
    rc=$( (dotnet "$work/control/bin/Release/net10.0/Control.dll" >"$log/control-run.log" 2>&1; echo $?) 2>/dev/null)
    if [ $rc -ne 0 ] && grep -q "doesn't contain a reference to libtorch-cpu" "$log/control-run.log"; then
      pass "control: without Optim, TorchSharp-cpu fails to load here (exit $rc; $libstdcxx lacks GLIBCXX_3.4.32)"
    else
      fail "control: TorchSharp-cpu alone was expected to fail here (exit $rc); see $log/control-run.log"
    fi
  else
    tail -n 20 "$log/control-build.log"; fail "control: build failed"
  fi
else
  skip "control: the system's libstdc++ has GLIBCXX_3.4.32, so TorchSharp loads without the fix"
fi

# 4. The consumer.
mkdir -p "$work/consumer"
sed -e "s/@OPTIM_VERSION@/$version/" -e "s/@TORCHSHARP_VERSION@/$torchsharp/" tests/consumer/Consumer.csproj.in >"$work/consumer/Consumer.csproj"
cp tests/consumer/Program.cs "$work/consumer/"
if [ ! -f "$mnist/package/src/digits/9.json" ]; then
  fail "consumer: no MNIST digits at $mnist (scripts/setup.sh fetches them)"
elif dotnet build "$work/consumer" -c Release >"$log/consumer-build.log" 2>&1; then
  restored=$(cat "${cache%/}/optim/$version/optim.$version.nupkg.sha512" 2>/dev/null)
  if [ "$restored" = "$(openssl dgst -sha512 -binary "$nupkg" | base64 -w0)" ]; then
    pass "consumer: restored the package just packed from the local feed, built"
  else
    fail "consumer: the restored Optim $version is not the package just packed"
  fi
  grep -E "Optim: marked" "$log/consumer-build.log" | sed 's/^ *//' | head -n 1
  echo "consumer: training (DOTNET_GCgen0size=$DOTNET_GCgen0size)"
  dotnet "$work/consumer/bin/Release/net10.0/Consumer.dll" "$mnist" 300 2>&1 | tee "$log/consumer-run.log"
  rc=${PIPESTATUS[0]}
  p=$(grep -c '^PASS ' "$log/consumer-run.log")
  f=$(grep -c '^FAIL ' "$log/consumer-run.log")
  passed=$((passed + p))
  failed=$((failed + f))
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then fail "consumer: exited with $rc"; fi
  [ $((p + f)) -eq 3 ] || fail "consumer: expected 3 training checks, saw $((p + f))"
else
  tail -n 30 "$log/consumer-build.log"; fail "consumer: build failed"
fi

# 5. The examples, against the same package (examples/NuGet.config names artifacts/packages).
if dotnet build examples/Examples.slnx -c Release >"$log/examples-build.log" 2>&1; then
  pass "examples: all build against the package"
  for dir in examples/*/; do
    name=$(basename "$dir")
    [ -f "$dir/$name.csproj" ] || continue
    if timeout 300 dotnet "$dir/bin/Release/net10.0/$name.dll" >"$log/example-$name.log" 2>&1; then
      pass "example $name runs: $(tail -n 1 "$log/example-$name.log")"
    else
      tail -n 20 "$log/example-$name.log"; fail "example $name failed"
    fi
  done
else
  grep -E "error" "$log/examples-build.log" | sort -u | head -n 20; fail "examples: build failed"
fi
if dotnet format examples/Examples.slnx --verify-no-changes >"$log/examples-format.log" 2>&1 &&
  dotnet format whitespace --folder tests/consumer --verify-no-changes >>"$log/examples-format.log" 2>&1; then
  pass "format: examples and the consumer program"
else
  cat "$log/examples-format.log"; fail "format: run dotnet format examples/Examples.slnx (and dotnet format whitespace --folder tests/consumer)"
fi

finish
