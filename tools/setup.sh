#!/usr/bin/env bash
# Installs every system package kvtrain needs to build, test and run its main job (Debian 12).
# Safe to run again: apt-get skips what is installed. Needs root (or sudo).
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config git
  libyaml-cpp-dev libdnnl-dev libopenblas-openmp-dev libhdf5-dev hdf5-tools
  libopenmpi-dev openmpi-bin libsentencepiece-dev sentencepiece
  libgtest-dev libcli11-dev nlohmann-json3-dev libssl-dev libpcre2-dev zlib1g-dev
  python3-torch python3-h5py python3-numpy python3-matplotlib python3-yaml python3-pip python3-venv
  bible-kjv
  # the Fast KVzip study's texts (tools/prepare_kvzip_text.sh)
  debian-reference-en debian-faq developers-reference debian-policy gnu-standards python3.11-doc
  debian-handbook installation-guide-amd64 harden-doc
  clang libclang-rt-14-dev  # the parser fuzzers (tools/fuzz.sh, CTest fuzz_parsers_short)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
