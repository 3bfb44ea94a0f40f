#!/usr/bin/env bash
# Install the Debian packages normgpt needs to build and test, if any are missing (MPICH: for
# `make MPI=1` and the data-parallel tests); with --dev also clang and libomp-dev (clang's omp.h),
# for `make fuzz` (libFuzzer), which `make train` and `make test` do not need.
# As root this runs apt-get; otherwise it prints the exact command to run and fails.
set -euo pipefail
packages=(gcc make pkg-config libopenblas-openmp-dev libcjson-dev mpich libmpich-dev)
[ "${1:-}" = "--dev" ] && packages+=(clang libomp-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
    echo "missing packages: ${missing[*]}; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
