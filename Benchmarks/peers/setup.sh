#!/usr/bin/env bash
# Installs the peers that Benchmarks/compare-tcp.sh measures SwiftCCL against:
#   - Open MPI (Debian packages openmpi-bin, libopenmpi-dev) and builds peers/mpi_allreduce
#   - a Python virtual environment with CPU torch (for torch.distributed's Gloo backend)
# Idempotent: every step is skipped when its result is already there.
#
# Environment:
#   SWCCL_PEERS_VENV   venv directory (default: $HOME/.cache/swccl-peers-venv)
#   SWCCL_TORCH_WHEEL  a torch wheel file to install (optional; tried first)
#   SWCCL_TORCH_CPU_INDEX  pip index with CPU-only torch wheels (default: PyTorch's CPU index);
#                      set it to "" to skip it. It is only used when pip can reach it.
#   SWCCL_SKIP_APT=1   do not run apt-get
#   SWCCL_SKIP_TORCH=1 do not create the venv / install torch
#
# Torch is looked for in this order:
#   1. $SWCCL_TORCH_WHEEL, or a torch-*+cpu wheel for this Python in pip's find-links
#      directories (PIP_FIND_LINKS / pip config) — small (~200 MB), no CUDA;
#   2. the CPU index, if reachable (it often is not: only PyPI may be);
#   3. plain `pip install torch` from PyPI — works, but pulls ~3 GB of CUDA libraries
#      (~5.4 GB venv); torch then cannot be imported without them.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${SWCCL_PEERS_VENV:-$HOME/.cache/swccl-peers-venv}"
CPU_INDEX="${SWCCL_TORCH_CPU_INDEX-https://download.pytorch.org/whl/cpu}"
PYTHON="${PYTHON:-python3}"

log() { printf '[peers-setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# ---------------------------------------------------------------- Open MPI
if [ "${SWCCL_SKIP_APT:-0}" != 1 ]; then
    if command -v mpicc >/dev/null && command -v mpirun >/dev/null \
        && dpkg -s openmpi-bin libopenmpi-dev >/dev/null 2>&1; then
        log "Open MPI already installed: $(mpirun --version 2>/dev/null | head -1)"
    else
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        log "installing Open MPI with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update
        $SUDO apt-get install -y openmpi-bin libopenmpi-dev
    fi
    if ! command -v iperf3 >/dev/null; then
        log "installing iperf3 (the loopback TCP yardstick of Benchmarks/compare/compare.sh)"
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y iperf3 \
            || { $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y iperf3; } \
            || log "iperf3 could not be installed (the comparison runs without that yardstick)"
    fi
fi

if command -v mpicc >/dev/null; then
    log "building $HERE/mpi_allreduce"
    make -s -C "$HERE" mpi_allreduce
else
    log "mpicc not found: Open MPI peer unavailable"
fi

# ---------------------------------------------------------------- torch / Gloo
if [ "${SWCCL_SKIP_TORCH:-0}" = 1 ]; then
    log "SWCCL_SKIP_TORCH=1: skipping torch"
    exit 0
fi

torch_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import torch, torch.distributed as dist
assert dist.is_available() and dist.is_gloo_available()
EOF
}

# numpy only silences torch's "Failed to initialize NumPy" warning at import.
ensure_numpy() {
    "$VENV/bin/python" -c 'import numpy' >/dev/null 2>&1 \
        || "$VENV/bin/python" -m pip --disable-pip-version-check install -q numpy \
        || log "numpy not installed (harmless: torch prints a warning at import)"
}

if torch_ok; then
    log "torch already usable in $VENV: $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
    ensure_numpy
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV with $($PYTHON --version 2>&1)"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# 1. a local CPU wheel
wheel="${SWCCL_TORCH_WHEEL:-}"
if [ -z "$wheel" ]; then
    pytag="cp$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
    links="${PIP_FIND_LINKS:-$("${PIP[@]}" config get global.find-links 2>/dev/null || true)}"
    for d in $links; do
        d="${d#file://}"
        [ -d "$d" ] || continue
        for w in "$d"/torch-*+cpu-"$pytag"-"$pytag"-*linux*_x86_64.whl "$d"/torch-*+cpu-"$pytag"-"$pytag"-*linux*_aarch64.whl; do
            [ -f "$w" ] && wheel="$w"
        done
    done
fi
if [ -n "$wheel" ]; then
    log "installing torch from local wheel $wheel (dependencies from the default index)"
    if "${PIP[@]}" install "$wheel" && torch_ok; then
        log "torch OK: $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
        ensure_numpy
        exit 0
    fi
    log "local wheel failed; trying the indexes"
fi

# 2. the CPU-only index, if pip can reach it (probe with a short timeout, no retries)
if [ -n "$CPU_INDEX" ]; then
    # (not `pip index versions`: that also answers from find-links directories)
    if "$VENV/bin/python" - "$CPU_INDEX" <<'EOF' >/dev/null 2>&1; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=8).read(1)
EOF
        log "installing CPU torch from $CPU_INDEX"
        if "${PIP[@]}" install torch --index-url "$CPU_INDEX" && torch_ok; then
            log "torch OK: $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
            exit 0
        fi
        log "CPU index install failed; falling back to PyPI"
    else
        log "CPU index $CPU_INDEX not reachable; falling back to PyPI"
    fi
fi

# 3. plain PyPI (large: CUDA libraries come along)
log "installing torch from PyPI (~3 GB with CUDA libraries; this takes a while)"
"${PIP[@]}" install torch
if torch_ok; then
    log "torch OK: $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
    ensure_numpy
else
    log "ERROR: torch installed but torch.distributed/Gloo not usable"
    exit 1
fi
