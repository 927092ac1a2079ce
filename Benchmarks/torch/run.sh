#!/usr/bin/env bash
# The torch-backend benchmark of docs/PERFORMANCE.md ("PyTorch backend against Gloo"): bench_torch.py on 2
# and 4 ranks (every collective at 8 B, 64 KiB, 1 MiB, 16 MiB, 64 MiB; DDP steps of a ~25 M-parameter
# MLP), ROUNDS interleaved rounds (default 7), the load average recorded before and after each, and
# swccl-perf's 8-byte all_reduce (pure C, its own processes) before and after each.
#   usage: bash Benchmarks/torch/run.sh [OUTDIR]      (PYTHON: a python with torch; default the cached venv)
# Writes OUTDIR/np2.json, np4.json and report.md (the tables; bench_torch.py --report FILE reprints one).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-/tmp/swccl-bench-torch}"
mkdir -p "$out"
py="${PYTHON:-$(bash scripts/torch-venv.sh | tail -n 1)}"
rounds="${ROUNDS:-7}"
export SWCCL_SOCKET_IFNAME="${SWCCL_SOCKET_IFNAME:-lo}" GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-lo}"
: > "$out/report.md"
perf=.build/release/swccl-perf
c8() {  # SwiftCCL's 8-byte all_reduce in C (swccl-perf, its own processes), beside the in-process figures
  if [ -x "$perf" ]; then
    echo "swccl-perf all_reduce 8 B, $1 ranks (pure C, out of place, µs): $("$perf" all_reduce -np "$1" -b 8 -e 8 -n 5000 -w 500 \
      | awk '$1 == 8 {print $6}')" | tee -a "$out/report.md"
  fi
}
for np in ${NPS:-2 4}; do
  echo "load before np=$np: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/report.md"
  c8 "$np"
  "$py" Benchmarks/torch/bench_torch.py -np "$np" --rounds "$rounds" --ddp ${BENCH_ARGS:-} --json "$out/np$np.json" | tee -a "$out/report.md"
  c8 "$np"
  echo "load after np=$np: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/report.md"
done
echo "report: $out/report.md"
