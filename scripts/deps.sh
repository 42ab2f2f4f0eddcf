#!/usr/bin/env bash
# Installs the Debian packages fspo needs, if any are missing.
# Quick and silent when everything is there; as root it runs apt-get,
# otherwise it prints the exact command to run.
set -euo pipefail

PKGS=(libopenmpi-dev openmpi-bin libopenblas-dev libhdf5-dev hdf5-tools libyaml-dev libjansson-dev libdnnl-dev clang libclang-rt-14-dev
      pkg-config python3-torch python3-h5py python3-numpy gnuplot-nox slurm-wlm munge
      libtcmalloc-minimal4)  # the last: PyTorch's tuned mode in make bench (LD_PRELOAD)

missing=()
for p in "${PKGS[@]}"; do
    # dpkg-query prints "install ok installed" only for a fully installed package
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
# Node.js runs Hugging Face tokenizers, the oracle of tests/test_tokenizer.sh
# (its npm package installs into tests/node/ when that test first runs). Any
# node with npm will do (a NodeSource nodejs bundles npm; Debian splits them).
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "deps: missing Debian packages: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
    echo "deps: run as root:  apt-get update && apt-get install -y ${missing[*]}"
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# a fresh machine has no package lists yet; refresh them once, then install
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "deps: installed ${missing[*]}"
