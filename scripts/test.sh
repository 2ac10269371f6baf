#!/usr/bin/env bash
# Builds everything and runs every test: format checks, the native suites through CTest (GoogleTest,
# the GPU check's dry run, the CMake rules), the native suites again under AddressSanitizer +
# UndefinedBehaviorSanitizer and the concurrency suite under ThreadSanitizer, a bounded libFuzzer run
# over the C ABI, the C ABI against torch.optim.SGD, Adam and AdamW on the CPU (when a Python can import torch),
# scripts/gpu-check.sh's build and loud failure without a GPU, the NUnit suite (dotnet test), the
# data-parallel checks on 2 MPI ranks (tests/Optim.MpiTests under mpirun), and the consumer test (scripts/consumer-test.sh: the package, packed and used from a fresh project outside
# the repository, and the examples built against it). Ends with one line of totals:
# "N passed, N failed, N skipped".
#   OPTIM_CUDA=ON|AUTO|OFF   whether the CUDA kernels must be compiled (default AUTO; CI uses ON)
#   OPTIM_FUZZ_SECONDS=N     length of the fuzzing run (default 60)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

build=artifacts/native
log=artifacts/test-logs
mkdir -p "$log"
passed=0
failed=0
skipped=0
status=0
started=$SECONDS

# Each step prints its own time when the next one starts (docs/reliability.md: the CI time).
step() { step_done; step_name=$*; step_start=$SECONDS; echo; echo "== $*"; }
step_done() { if [ -n "${step_name:-}" ]; then echo "   ($((SECONDS - step_start)) s)"; fi; step_name=""; }
fail_step() { failed=$((failed + 1)); status=1; }
totals() { step_done; echo; echo "(all steps: $((SECONDS - started)) s)"; echo "$passed passed, $failed failed, $skipped skipped"; }

# configure_and_build NAME DIR CMAKE-ARGS...: logs to $log/NAME-*.log; nonzero when either fails.
configure_and_build() {
  local name=$1 dir=$2
  shift 2
  if ! cmake -S . -B "$dir" "$@" >"$log/$name-cmake.log" 2>&1; then
    cat "$log/$name-cmake.log"; return 1
  fi
  grep -E "optim: CUDA" "$log/$name-cmake.log" || true
  if ! cmake --build "$dir" --parallel >"$log/$name-build.log" 2>&1; then
    grep -E "error|Error" "$log/$name-build.log" | head -n 30; tail -n 5 "$log/$name-build.log"; return 1
  fi
  tail -n 1 "$log/$name-build.log"
}

# run_ctest NAME DIR [CTEST-ARGS...]: runs CTest in DIR (logged to $log/NAME.log) and adds its
# counts to the totals.
run_ctest() {
  local name=$1 dir=$2
  shift 2
  (cd "$dir" && ctest --output-on-failure --timeout 300 "$@") >"$log/$name.log" 2>&1
  local rc=$?
  tail -n 15 "$log/$name.log"
  local summary
  summary=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log/$name.log" | tail -1)
  if [ -n "$summary" ]; then
    local total nfail nskip
    total=$(echo "$summary" | sed -E 's/.*out of ([0-9]+).*/\1/')
    nfail=$(echo "$summary" | sed -E 's/.* ([0-9]+) tests failed.*/\1/')
    nskip=$(grep -cE "\(Skipped\)" "$log/$name.log" || true)
    passed=$((passed + total - nfail - nskip))
    skipped=$((skipped + nskip))
    failed=$((failed + nfail))
  else
    failed=$((failed + 1))
  fi
  [ $rc -eq 0 ] || status=1
}

step "format: clang-format and dotnet format"
mapfile -t files < <(git ls-files 'native/*.cpp' 'native/*.hpp' 'native/*.h' 'native/*.cu' 2>/dev/null || find native -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.cu')
if clang-format --dry-run -Werror "${files[@]}"; then passed=$((passed + 1)); else echo "format: run clang-format -i on the files above"; fail_step; fi

step "native: configure and build (OPTIM_CUDA=${OPTIM_CUDA:-AUTO})"
if ! configure_and_build native "$build" -DCMAKE_BUILD_TYPE=Release -DOPTIM_CUDA="${OPTIM_CUDA:-AUTO}"; then
  fail_step; totals; exit 1
fi

step "native: ctest"
run_ctest ctest "$build"

# Sanitizers: CPU only, each in its own build directory, with only the library and its tests.
step "native: ctest under AddressSanitizer + UndefinedBehaviorSanitizer (artifacts/native-asan)"
if configure_and_build asan artifacts/native-asan -DCMAKE_BUILD_TYPE=Release -DOPTIM_CUDA=OFF \
    -DOPTIM_SANITIZE=address,undefined; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_ctest ctest-asan artifacts/native-asan --parallel 2
else
  fail_step
fi

step "native: concurrency tests under ThreadSanitizer (artifacts/native-tsan)"
if configure_and_build tsan artifacts/native-tsan -DCMAKE_BUILD_TYPE=Release -DOPTIM_CUDA=OFF \
    -DOPTIM_SANITIZE=thread; then
  TSAN_OPTIONS=halt_on_error=1 run_ctest ctest-tsan artifacts/native-tsan
else
  fail_step
fi

# libFuzzer (clang) over the C ABI, from the seed corpus in the repository; new inputs go to
# artifacts/fuzz-corpus, a crashing input to artifacts/fuzz-crashes/. One pass or fail.
step "native: libFuzzer over the C ABI, ${OPTIM_FUZZ_SECONDS:-60} s (artifacts/native-fuzz)"
if configure_and_build fuzz artifacts/native-fuzz -DCMAKE_BUILD_TYPE=Release -DOPTIM_CUDA=OFF \
    -DCMAKE_CXX_COMPILER=clang++-14 -DOPTIM_BUILD_TESTS=OFF -DOPTIM_FUZZ=ON \
    -DOPTIM_SANITIZE=address,undefined; then
  mkdir -p artifacts/fuzz-corpus artifacts/fuzz-crashes
  if artifacts/native-fuzz/bin/optim_fuzz_abi -max_total_time="${OPTIM_FUZZ_SECONDS:-60}" \
      -max_len=2048 -print_final_stats=1 -artifact_prefix=artifacts/fuzz-crashes/ \
      artifacts/fuzz-corpus native/fuzz/corpus >"$log/fuzz.log" 2>&1; then
    passed=$((passed + 1))
    grep -E "^stat::(number_of_executed_units|new_units_added)|DONE" "$log/fuzz.log"
  else
    grep -E -A 30 "ERROR|runtime error|fuzz assertion" "$log/fuzz.log" | head -n 60
    echo "fuzz: reproduce with artifacts/native-fuzz/bin/optim_fuzz_abi <the crash file above>"
    fail_step
  fi
else
  fail_step
fi

step "python: the C ABI against torch.optim.SGD, Adam and AdamW on the CPU (native/gpu/torch_harness.py)"
if py=$(scripts/find-torch-python); then
  "$py" native/gpu/torch_harness.py parity --device cpu --lib "$build/lib/libOptim.Native.so" \
    >"$log/torch-parity.log" 2>&1
  parity_rc=$?
  head -n 1 "$log/torch-parity.log"
  grep -E "^(FAIL|     )" "$log/torch-parity.log" | head -n 40
  line=$(grep -E "^parity: [0-9]+ passed, [0-9]+ failed" "$log/torch-parity.log")
  if [ -n "$line" ]; then
    echo "$line"
    passed=$((passed + $(echo "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/')))
    failed=$((failed + $(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')))
  else
    tail -n 20 "$log/torch-parity.log"
    failed=$((failed + 1))
  fi
  [ $parity_rc -eq 0 ] || status=1
else
  echo "skipped: no Python can import torch (Debian: apt-get install python3-torch, as scripts/setup.sh does)"
  skipped=$((skipped + 1))
fi

step "gpu-check: without a GPU, scripts/gpu-check.sh builds for sm_90, then fails loudly"
checker=$build/bin/optim_gpu_check
if [ ! -x "$checker" ]; then
  echo "skipped: this build has no CUDA kernels (OPTIM_CUDA=${OPTIM_CUDA:-AUTO})"
  skipped=$((skipped + 1))
elif "$checker" info >/dev/null 2>&1; then
  echo "skipped: a GPU is present; run scripts/gpu-check.sh itself"
  skipped=$((skipped + 1))
else
  gpu_out=$log/gpu-check
  rm -rf "$gpu_out"
  OUT=$gpu_out scripts/gpu-check.sh >"$log/gpu-check.out" 2>&1
  gpu_rc=$?
  tail -n 3 "$log/gpu-check.out"
  if [ $gpu_rc -ne 0 ] && grep -q "^| build | ok |" "$gpu_out/summary.md" &&
    grep -q "^## Result: FAILED: no usable CUDA device" "$gpu_out/summary.md" &&
    ! grep -q "PASSED" "$gpu_out/gpu-check.log"; then
    echo "ok: built, then exit status $gpu_rc and a summary that says why"
    passed=$((passed + 1))
  else
    echo "FAILED: expected a build, a non-zero exit and 'FAILED: no usable CUDA device' (exit status $gpu_rc); see $log/gpu-check.out"
    fail_step
  fi
fi

step "managed: dotnet format"
if dotnet format Optim.sln --verify-no-changes >"$log/dotnet-format.log" 2>&1; then passed=$((passed + 1)); else cat "$log/dotnet-format.log"; fail_step; fi

step "managed: dotnet test"
dotnet test Optim.sln -c Release >"$log/dotnet-test.log" 2>&1
dotnet_rc=$?
grep -E "^\s+Failed |error |Error Message" -A3 "$log/dotnet-test.log" | head -80 || true
line=$(grep -E "(Passed|Failed)! +- Failed: +[0-9]+, Passed: +[0-9]+" "$log/dotnet-test.log")
echo "$line"
if [ -n "$line" ]; then
  while read -r l; do
    f=$(echo "$l" | sed -E 's/.*Failed: +([0-9]+),.*/\1/')
    p=$(echo "$l" | sed -E 's/.*Passed: +([0-9]+),.*/\1/')
    s=$(echo "$l" | sed -E 's/.*Skipped: +([0-9]+),.*/\1/')
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  done <<< "$line"
else
  tail -n 40 "$log/dotnet-test.log"
  failed=$((failed + 1))
fi
[ $dotnet_rc -eq 0 ] || status=1

# Data parallelism over MPI: 2 ranks on loopback, each printing PASS/FAIL lines (one per check and
# rank); then a rank that throws and a rank that is killed must each end the job with an error
# within the time limit (docs/distributed.md).
step "distributed: 2 MPI ranks on loopback (tests/Optim.MpiTests under mpirun)"
mpi_dll=tests/Optim.MpiTests/bin/Release/net10.0/Optim.MpiTests.dll
mpirun_opts=(--allow-run-as-root --oversubscribe --mca btl self,vader,tcp --mca btl_tcp_if_include lo)
mpirun_lo=(mpirun "${mpirun_opts[@]}" -np 2)
if ! command -v mpirun >/dev/null; then
  echo "skipped: no mpirun (Debian: apt-get install openmpi-bin libopenmpi-dev, as scripts/setup.sh does)"
  skipped=$((skipped + 1))
elif [ ! -f "$build/lib/libOptim.Native.Mpi.so" ]; then
  echo "skipped: $build has no MPI plugin (CMake found no MPI: apt-get install libopenmpi-dev, then reconfigure)"
  skipped=$((skipped + 1))
elif ! dotnet build tests/Optim.MpiTests -c Release >"$log/mpi-build.log" 2>&1; then
  grep -E "error" "$log/mpi-build.log" | head -n 20; fail_step
else
  timeout 600 "${mpirun_lo[@]}" dotnet "$mpi_dll" checks >"$log/mpi-checks.log" 2>&1
  mpi_rc=$?
  grep -E "^(FAIL|rank [0-9]+:)" "$log/mpi-checks.log"
  mpi_pass=$(grep -c "^PASS" "$log/mpi-checks.log")
  mpi_fail=$(grep -c "^FAIL" "$log/mpi-checks.log")
  echo "mpi checks: $mpi_pass passed, $mpi_fail failed (rank lines; exit status $mpi_rc)"
  passed=$((passed + mpi_pass)); failed=$((failed + mpi_fail))
  if [ $mpi_rc -ne 0 ] || [ "$mpi_pass" -eq 0 ]; then
    [ "$mpi_fail" -gt 0 ] || { tail -n 20 "$log/mpi-checks.log"; failed=$((failed + 1)); }
    status=1
  fi
  # Sharded checkpoints across job sizes: written by 2 ranks and loaded by 1, and the reverse; the
  # loading run continues and must equal the writing run's uninterrupted continuation.
  for sizes in "2 1" "1 2"; do
    read -r n_save n_load <<<"$sizes"
    ckpt=artifacts/mpi-checkpoint/$n_save-to-$n_load
    rm -rf "$ckpt"
    if timeout 300 mpirun "${mpirun_opts[@]}" -np "$n_save" dotnet "$mpi_dll" checkpoint save "$ckpt" >"$log/mpi-checkpoint-$n_save-$n_load.log" 2>&1 &&
        timeout 300 mpirun "${mpirun_opts[@]}" -np "$n_load" dotnet "$mpi_dll" checkpoint load "$ckpt" >>"$log/mpi-checkpoint-$n_save-$n_load.log" 2>&1; then
      echo "ok: sharded checkpoints written by $n_save ranks, loaded by $n_load, equal the uninterrupted run"
      passed=$((passed + 1))
    else
      grep -aE "^(FAIL|rank [0-9]+:)|xception" "$log/mpi-checkpoint-$n_save-$n_load.log" | head -n 20
      echo "FAILED: sharded checkpoints $n_save ranks to $n_load; see $log/mpi-checkpoint-$n_save-$n_load.log"
      fail_step
    fi
  done
  # A rank that hangs while alive: rank 0's collective times out after 5 s and ends the job, saying so.
  mpi_start=$SECONDS
  timeout 120 "${mpirun_lo[@]}" dotnet "$mpi_dll" hang >"$log/mpi-hang.log" 2>&1
  mpi_rc=$?
  if [ $mpi_rc -ne 0 ] && [ $mpi_rc -ne 124 ] && [ $((SECONDS - mpi_start)) -le 60 ] &&
      grep -q "MPI_Iallreduce in optim_mpi_allreduce did not complete within the timeout of 5 s" "$log/mpi-hang.log"; then
    echo "ok: hang on rank 1 ended the job by rank 0's timeout with exit status $mpi_rc after $((SECONDS - mpi_start)) s"
    passed=$((passed + 1))
  else
    echo "FAILED: hang on rank 1: exit status $mpi_rc after $((SECONDS - mpi_start)) s (124: still running at 120 s; the bound is 60 s with the timeout's message); see $log/mpi-hang.log"
    fail_step
  fi
  for mode in fault kill; do
    mpi_start=$SECONDS
    timeout 120 "${mpirun_lo[@]}" dotnet "$mpi_dll" "$mode" >"$log/mpi-$mode.log" 2>&1
    mpi_rc=$?
    if [ $mpi_rc -ne 0 ] && [ $mpi_rc -ne 124 ]; then
      echo "ok: $mode on rank 1 ended the job with exit status $mpi_rc after $((SECONDS - mpi_start)) s"
      passed=$((passed + 1))
    else
      echo "FAILED: $mode on rank 1: exit status $mpi_rc after $((SECONDS - mpi_start)) s (124: still running at 120 s); see $log/mpi-$mode.log"
      fail_step
    fi
  done
fi

step "package: consumer test (scripts/consumer-test.sh)"
# Its own totals line is read from the log, not echoed: the totals below stay the only such line.
scripts/consumer-test.sh 2>&1 | tee "$log/consumer-test.log" | grep -vE '^  |^[0-9]+ passed, [0-9]+ failed'
consumer_rc=${PIPESTATUS[0]}
line=$(tail -n 1 "$log/consumer-test.log")
if [[ $line =~ ^[0-9]+\ passed,\ [0-9]+\ failed,\ [0-9]+\ skipped$ ]]; then
  echo "consumer test: $(echo "$line" | sed -E 's/ passed,/ checks passed,/')"
  passed=$((passed + $(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')))
  failed=$((failed + $(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')))
  skipped=$((skipped + $(echo "$line" | sed -E 's/.* ([0-9]+) skipped$/\1/')))
else
  failed=$((failed + 1))
fi
[ $consumer_rc -eq 0 ] || status=1

totals
exit $status
