#!/usr/bin/env bash
# The CUDA path verified in one run on a GPU machine (README, "GPU check"):
#   1. configure and build the native library and optim_gpu_check for sm_90 (Release, no GoogleTest);
#   2. every CUDA kernel against the CPU path (optim_gpu_check check);
#   3. compute-sanitizer memcheck and racecheck over the same checks at small sizes;
#   4. the SGD and Adam kernels against torch.optim.SGD, Adam and AdamW (fused, foreach, for-loop)
#      through the C ABI;
#   5. the steps timed next to the device's bandwidth reference, and against SGD(fused=True) and
#      SGD(foreach=True).
# Writes gpu-check.log and summary.md to $OUT when set, else to artifacts/gpu/. A failed stage does
# not stop the later ones (one run should find everything); the exit status is non-zero when any
# stage failed, and at once, after the build, when there is no usable CUDA device.
#
#   scripts/gpu-check.sh               everything; needs a CUDA GPU (about 6 minutes on an H200,
#                                      2.3 of them the build)
#   scripts/gpu-check.sh --build-only  the build alone (proves it where there is no GPU)
#   scripts/gpu-check.sh --prebuilt DIR  everything but the build: DIR holds bin/optim_gpu_check and
#                                      lib/libOptim.Native.so, built for the GPU elsewhere (at the
#                                      same path, since the checker finds the library by its
#                                      build-tree RPATH), which saves the build's GPU time
#
# Environment: OUT (output folder), OPTIM_CUDA_ARCHS (default 90), OPTIM_GPU_BUILD (build folder,
# default artifacts/gpu-build), OPTIM_PYTHON (an interpreter with torch), OPTIM_COMMIT (named in the
# summary when the tree has no git metadata), OPTIM_GPU_CHECK_BUDGET (seconds for the whole run,
# default 540: stages that would run past it are cut short and reported).
set -uo pipefail
caller=$(pwd)
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)

build_only=0
prebuilt=""
command_line="scripts/gpu-check.sh"
usage="usage: scripts/gpu-check.sh [--build-only | --prebuilt DIR]"
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only)
      build_only=1
      command_line+=" --build-only"
      ;;
    --prebuilt)
      [ $# -ge 2 ] && [ -n "$2" ] || { echo "$usage" >&2; exit 2; }
      # Relative to where the script was started.
      case "$2" in /*) prebuilt=$2 ;; *) prebuilt=$caller/$2 ;; esac
      command_line+=" --prebuilt $2"
      shift
      ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$prebuilt" ] && [ "$build_only" = 1 ]; then
  echo "$usage" >&2
  exit 2
fi

out=${OUT:-$root/artifacts/gpu}
build=${OPTIM_GPU_BUILD:-$root/artifacts/gpu-build}
archs=${OPTIM_CUDA_ARCHS:-90}
deadline=$((SECONDS + ${OPTIM_GPU_CHECK_BUDGET:-540}))
mkdir -p "$out"
parts=$(mktemp -d)
trap 'rm -rf "$parts"' EXIT
log="$out/gpu-check.log"
: >"$log"
exec > >(tee -a "$log") 2>&1
tee_pid=$!

names=()
results=()
durations=()
verdict=""

# run_stage NAME LIMIT COMMAND...: runs COMMAND with at most LIMIT seconds (less when the run's
# budget is nearly spent); records "ok", "FAILED (...)" or "not run (...)".
run_stage() {
  local name=$1 limit=$2
  shift 2
  local left=$((deadline - SECONDS))
  [ "$left" -lt "$limit" ] && limit=$left
  names+=("$name")
  if [ "$limit" -lt 10 ]; then
    results+=("not run (the run's time budget is spent)")
    durations+=(0)
    echo "== $name: not run (the run's time budget is spent)"
    return 1
  fi
  echo
  echo "== $name: $*"
  local t0=$SECONDS rc
  timeout -k 10 "$limit" "$@"
  rc=$?
  local result=ok
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    result="FAILED (timed out after $limit s)"
  elif [ "$rc" -ne 0 ]; then
    result="FAILED (exit status $rc)"
  fi
  results+=("$result")
  durations+=($((SECONDS - t0)))
  echo "== $name: $result ($((SECONDS - t0)) s)"
  [ "$rc" -eq 0 ]
}

# The nvcc to build with: $CUDACXX, nvcc on PATH, or the newest under /usr/local; its folder joins
# PATH so that compute-sanitizer is found next to it.
find_nvcc() {
  local c versioned=()
  for c in /usr/local/cuda-*/bin/nvcc; do [ -x "$c" ] && versioned+=("$c"); done
  if [ ${#versioned[@]} -gt 0 ]; then
    mapfile -t versioned < <(printf '%s\n' "${versioned[@]}" | sort -V -r)
  fi
  for c in "${CUDACXX:-}" "$(command -v nvcc 2>/dev/null)" /usr/local/cuda/bin/nvcc "${versioned[@]}"; do
    if [ -n "$c" ] && [ -x "$c" ]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

find_sanitizer() {
  local c
  for c in "$(command -v compute-sanitizer 2>/dev/null)" "$(dirname "$nvcc")/compute-sanitizer" \
    "$(dirname "$(dirname "$nvcc")")/compute-sanitizer/compute-sanitizer"; do
    if [ -n "$c" ] && [ -x "$c" ]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

# The summary: what ran where, each stage's result, then each stage's own report.
write_summary() {
  local s="$out/summary.md" i
  {
    echo "# GPU check"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- Command: \`$command_line\` (OPTIM_CUDA_ARCHS=$archs)"
    echo "- Commit: $commit"
    echo "- Machine: $(uname -srm); $(nproc) CPUs ($cpu); $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
    if [ -n "$prebuilt" ]; then
      echo "- Build: prebuilt in $prebuilt (its CUDA runtime's version is in the GPU lines below)"
    else
      echo "- Toolchain: nvcc ${nvcc_version:-not found}; $(cmake --version | head -n 1); ${generator:-make}"
    fi
    echo "- Python: ${torch_version:-no interpreter with torch found}"
    if [ -s "$parts/device.md" ]; then cat "$parts/device.md"; else echo "- GPU: $gpu_line"; fi
    echo
    echo "## Result: $verdict"
    echo
    echo "| stage | result | seconds |"
    echo "|---|---|---:|"
    for i in "${!names[@]}"; do echo "| ${names[$i]} | ${results[$i]} | ${durations[$i]} |"; done
    section "CUDA vs CPU checks (optim_gpu_check check)" check.md
    section "compute-sanitizer (optim_gpu_check check --quick)" sanitizer.md
    section "Against torch.optim.SGD, Adam and AdamW on the GPU (native/gpu/torch_harness.py parity)" parity.md
    section "Steps next to the device's bandwidth reference (optim_gpu_check bench)" bench.md
    section "Against torch.optim.SGD and AdamW, timed (native/gpu/torch_harness.py bench)" torch-bench.md
    echo
    echo "The full output is in gpu-check.log."
  } >"$s"
}
section() {
  [ -s "$parts/$2" ] || return 0
  echo
  echo "## $1"
  echo
  cat "$parts/$2"
}

finish() {
  verdict=$1
  write_summary
  echo
  echo "gpu-check: $verdict"
  echo "gpu-check: wrote $log and $out/summary.md"
  # Let tee write the last lines before the script ends.
  exec >/dev/null 2>&1
  wait "$tee_pid"
  exit "$2"
}

# ---- Environment ------------------------------------------------------------------------------
commit=${OPTIM_COMMIT:-}
if [ -z "$commit" ]; then
  if commit=$(git rev-parse HEAD 2>/dev/null); then
    [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit (with uncommitted changes)"
  else
    commit="unknown (no git metadata here; set OPTIM_COMMIT)"
  fi
fi
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)
gpu_line=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
gpu_line=${gpu_line:-"none visible (nvidia-smi found no GPU or is not installed)"}
generator=""
gen_args=()
if command -v ninja >/dev/null; then
  generator=Ninja
  gen_args=(-G Ninja)
fi
nvcc_version=""
if nvcc=$(find_nvcc); then
  case ":$PATH:" in *":$(dirname "$nvcc"):"*) ;; *) PATH="$(dirname "$nvcc"):$PATH" ;; esac
  nvcc_version="$(nvcc --version | grep -o 'release [0-9.]*' | cut -d' ' -f2) ($nvcc)"
fi
py=""
torch_version=""
if py=$(scripts/find-torch-python); then
  torch_version="$("$py" -c 'import sys, torch; print(f"{sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda})")' 2>/dev/null) ($py)"
fi
echo "gpu-check: commit $commit"
echo "gpu-check: nvcc ${nvcc_version:-not found}; GPU: $gpu_line; Python: ${torch_version:-none with torch}"
echo "gpu-check: output in $out, build in ${prebuilt:-$build}"

# ---- Build ------------------------------------------------------------------------------------
if [ -n "$prebuilt" ]; then
  build=$prebuilt
  # The checker must load this library (its build-tree path), not another one, nor none.
  if ! run_stage "prebuilt binaries in $prebuilt" 10 bash -c 'test -x "$1/bin/optim_gpu_check" &&
    test -f "$1/lib/libOptim.Native.so" &&
    ldd "$1/bin/optim_gpu_check" | grep -qF "=> $(realpath "$1/lib/libOptim.Native.so") "' _ "$build"; then
    finish "FAILED: $prebuilt lacks bin/optim_gpu_check or lib/libOptim.Native.so, or the checker does not load that library (build it at this path)" 1
  fi
elif [ -z "$nvcc_version" ]; then
  names+=("build")
  results+=("FAILED (no nvcc: not on PATH, not in /usr/local/cuda*/bin, no CUDACXX)")
  durations+=(0)
  finish "FAILED: no CUDA compiler" 1
else
  # A build folder made by another generator cannot be reused.
  cache=$build/CMakeCache.txt
  if [ -f "$cache" ] && ! grep -q "^CMAKE_GENERATOR:INTERNAL=${generator:-Unix Makefiles}$" "$cache"; then
    rm -rf "$build"
  fi
  if ! run_stage "configure (sm_$archs)" 120 cmake -S . -B "$build" "${gen_args[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DOPTIM_CUDA=ON -DOPTIM_CUDA_ARCHS="$archs" -DOPTIM_BUILD_TESTS=OFF; then
    finish "FAILED: CMake could not configure the CUDA build" 1
  fi
  if ! run_stage "build" 300 cmake --build "$build" --parallel "$(nproc)" \
    --target optim_native optim_gpu_check; then
    finish "FAILED: the build failed" 1
  fi
fi
bin="$build/bin/optim_gpu_check"
lib="$build/lib/libOptim.Native.so"
if [ "$build_only" = 1 ]; then
  finish "build only: built $bin and $lib; nothing ran on a GPU" 0
fi

# ---- The device -------------------------------------------------------------------------------
if ! run_stage "CUDA device" 30 "$bin" info --markdown "$parts/device.md"; then
  rm -f "$parts/device.md"
  echo
  echo "gpu-check: NO USABLE CUDA DEVICE: nothing was checked on a GPU. This script must run on a"
  echo "gpu-check: machine with an NVIDIA GPU and its driver (see the message above)."
  finish "FAILED: no usable CUDA device; nothing was checked on a GPU" 1
fi

# ---- Checks -----------------------------------------------------------------------------------
run_stage "CUDA vs CPU checks" 180 "$bin" check --require-device --markdown "$parts/check.md"

if sanitizer=$(find_sanitizer); then
  for tool in memcheck racecheck; do
    run_stage "compute-sanitizer $tool" 180 "$sanitizer" --tool "$tool" --error-exitcode 1 \
      --print-limit 20 "$bin" check --quick --require-device >"$parts/$tool.txt" 2>&1
    cat "$parts/$tool.txt"
    {
      summary=$(grep -E '^========= (ERROR|RACECHECK) SUMMARY' "$parts/$tool.txt" |
        sed 's/^========= //' | tr '\n' ' ')
      echo "- $tool: ${results[-1]}; ${summary:-no summary line from compute-sanitizer}"
      grep -E '^check \(quick\):' "$parts/$tool.txt" | sed 's/^/  - /'
    } >>"$parts/sanitizer.md"
  done
else
  names+=("compute-sanitizer")
  results+=("FAILED (compute-sanitizer not found on PATH or next to nvcc)")
  durations+=(0)
  echo "== compute-sanitizer: FAILED: not found on PATH or next to $nvcc"
fi

if [ -n "$py" ]; then
  run_stage "against torch.optim.SGD/Adam/AdamW" 180 "$py" native/gpu/torch_harness.py parity --device cuda \
    --require-fused --lib "$lib" --markdown "$parts/parity.md"
else
  names+=("against torch.optim.SGD/Adam/AdamW")
  results+=("FAILED (no Python that can import torch; set OPTIM_PYTHON)")
  durations+=(0)
fi

# ---- Timings ----------------------------------------------------------------------------------
run_stage "timings: steps vs bandwidth reference" 120 "$bin" bench --markdown "$parts/bench.md"
if [ -n "$py" ]; then
  run_stage "timings: vs torch SGD/AdamW fused/foreach" 180 "$py" native/gpu/torch_harness.py bench \
    --lib "$lib" --markdown "$parts/torch-bench.md"
fi

failed=0
for r in "${results[@]}"; do [ "$r" = ok ] || failed=$((failed + 1)); done
if [ "$failed" -eq 0 ]; then
  finish "PASSED: every stage ran on the GPU and passed" 0
fi
finish "FAILED: $failed stage(s) failed (see the table)" 1
