#!/usr/bin/env bash
# The Python environment with torch and numpy that the PyTorch backend's tests run in:
# ~/.cache/swccl/torch-venv (SWCCL_TORCH_VENV to move it), created only when missing (python3 -m venv,
# then pip install numpy and torch: the CPU wheel from PyTorch's index, else PyPI's; expecttest and ninja),
# reused afterwards.
# Prints the environment's python on the last line of stdout, or exits 1 with the reason on the
# last line (the caller prints it as a visible SKIP). SWCCL_TORCH=0 skips on purpose.
set -uo pipefail
venv="${SWCCL_TORCH_VENV:-$HOME/.cache/swccl/torch-venv}"
py="$venv/bin/python"
if [ "${SWCCL_TORCH:-1}" = "0" ]; then echo "SWCCL_TORCH=0"; exit 1; fi
# torch's own test utilities (Tests/python/torch_suite.py) import expecttest, which the wheel does not
# depend on: installed alongside (small, pure Python), best effort (the suite reports it missing).
# ninja: torch.utils.cpp_extension builds the backend's C++ fast path with it (python/swccl/_torch_native.py).
extras() {
  "$py" -c 'import expecttest' >/dev/null 2>&1 || "$py" -m pip install -q expecttest >&2 2>&1 || true
  "$py" -c 'import ninja' >/dev/null 2>&1 || "$py" -m pip install -q ninja >&2 2>&1 || true
}
if [ -x "$py" ] && "$py" -c 'import torch, numpy, torch.distributed as d; assert d.is_available()' >/dev/null 2>&1; then
  extras; echo "$py"; exit 0
fi
command -v python3 >/dev/null || { echo "no python3 on PATH to create $venv"; exit 1; }
echo "== creating $venv (torch, numpy; once, cached)" >&2
if [ ! -x "$py" ]; then
  python3 -m venv "$venv" >&2 2>&1 || { echo "python3 -m venv $venv failed (Debian: apt-get install python3-venv)"; exit 1; }
fi
"$py" -m pip install -q --upgrade pip >&2 2>&1 || true
"$py" -m pip install -q numpy >&2 2>&1 || { echo "pip install numpy failed (no network?)"; exit 1; }
# PyTorch's CPU index (a 200 MB wheel) where it is reachable; PyPI's wheel (CUDA build, ≈5 GB with its
# nvidia-* dependencies, CPU use works) otherwise. The index is probed first: pip retries an
# unreachable index for minutes.
index="${SWCCL_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
if ! { curl -fsI --max-time 8 "$index/" >/dev/null 2>&1 && "$py" -m pip install -q --timeout 30 --index-url "$index" torch >&2 2>&1; }; then
  "$py" -m pip install -q torch >&2 2>&1 || { echo "pip install torch failed (no network, or no wheel for this python)"; exit 1; }
fi
"$py" -c 'import torch, torch.distributed as d; assert d.is_available()' >&2 2>&1 \
  || { echo "torch was installed in $venv but does not import with torch.distributed"; exit 1; }
extras
echo "$py"
