#!/usr/bin/env bash
# Install the Debian packages normgpt needs, if any are missing:
#   (no option)  what `make` and `make train` need to build and train (MPICH: for `make MPI=1` and
#                the data-parallel tests; oneDNN: for train.precision=bf16);
#   --plot       also python3-matplotlib and python3-numpy, for scripts/plot and scripts/compare
#                (`make compare`);
#   --test       also those, python3-torch, for `make test`'s PyTorch parity test and the PyTorch
#                benchmark (bench/), and python3-sentencepiece, for scripts/make_dataset.py and the
#                encoder test;
#   --dev        all of --test plus clang and libomp-dev (clang's omp.h), for `make fuzz` (libFuzzer).
# As root this runs apt-get; otherwise it prints the exact command to run and fails.
set -euo pipefail
packages=(gcc make pkg-config libopenblas-openmp-dev libcjson-dev libdnnl-dev mpich libmpich-dev)
case "${1:-}" in
    --plot) packages+=(python3-numpy python3-matplotlib) ;;
    --test) packages+=(python3-torch python3-numpy python3-matplotlib python3-sentencepiece) ;;
    --dev) packages+=(python3-torch python3-numpy python3-matplotlib python3-sentencepiece clang libomp-dev) ;;
esac
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
