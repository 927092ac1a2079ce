#!/usr/bin/env bash
# Installs the Debian packages SwiftCCL builds and tests with (idempotent, quick when nothing is missing),
# then builds everything in release mode. Sourced by bench.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-dev (Python.h) and g++: the torch backend's C++ fast path is compiled against the torch venv's
# python (scripts/torch-venv.sh, made with python3-venv from Debian's python3).
packages=(libibverbs-dev librdmacm-dev libnuma-dev pkg-config gcc g++ binutils python3 python3-dev python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Python package's tests need python3 with numpy (Debian's python3-numpy if the python3 on PATH lacks it).
if ! python3 -c 'import numpy' >/dev/null 2>&1; then
  echo "== installing python3-numpy"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-numpy >/dev/null
fi

command -v swift >/dev/null || { echo "swift is not on PATH (install the Swift toolchain, e.g. /opt/swift/usr/bin)"; exit 1; }

echo "== building (release)"
swift build -c release ${SWCCL_BUILD_TESTS:+--build-tests} 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || { echo "build failed"; exit 1; }
# libswccl.so carries the SONAME libswccl.so.0: give the loader that name beside it.
ln -sf libswccl.so .build/release/libswccl.so.0

# The PyTorch backend's tests: a virtual environment with torch and numpy, made once and cached
# (scripts/torch-venv.sh). Its python, or why there is none, goes to .build/torch-python for test.sh.
if out=$(bash scripts/torch-venv.sh); then
  echo "$out" | tail -n 1 > .build/torch-python
else
  echo "SKIP: $(echo "$out" | tail -n 1)" > .build/torch-python
fi
