#!/usr/bin/env bash
# The torch backend's C++ fast path against the Python backend alone (SWCCL_TORCH_NATIVE=0), whole runs
# alternated (native, python, native, python, ...), as docs/PERFORMANCE.md's "The C++ fast path" table:
# bench_torch.py on NP ranks, the collectives and sizes given, "swccl" and "C" only (the C call in the same
# processes, so "swccl − C" is the torch path's own cost), PAIRS pairs of runs of ROUNDS rounds each.
# bench_torch.py's own swccl-py variant gives the same comparison inside one run; this one also changes
# every group of the job, the default group included.
#   usage: bash Benchmarks/torch/native_ab.sh [OUTDIR]     (NPS="2 4", PAIRS=3, ROUNDS=7,
#          COLLS=all_reduce, SIZES=8, PYTHON: a python with torch, default the cached venv)
# Writes OUTDIR/np<NP>-<native|python>-<i>.json and prints, per rank count, each run's
# all_reduce "swccl − C" median, then the medians and ranges over the runs of each kind.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-/tmp/swccl-native-ab}"
mkdir -p "$out"
py="${PYTHON:-$(bash scripts/torch-venv.sh | tail -n 1)}"
export SWCCL_SOCKET_IFNAME="${SWCCL_SOCKET_IFNAME:-lo}" GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-lo}"
for np in ${NPS:-2 4}; do
  for i in $(seq 1 "${PAIRS:-3}"); do
    for kind in native python; do
      native=1; [ "$kind" = python ] && native=0
      echo "np=$np $kind run $i, load $(cut -d' ' -f1-3 /proc/loadavg)"
      SWCCL_TORCH_NATIVE=$native "$py" Benchmarks/torch/bench_torch.py -np "$np" --rounds "${ROUNDS:-7}" \
        --colls "${COLLS:-all_reduce}" --sizes "${SIZES:-8}" --variants swccl,C --json "$out/np$np-$kind-$i.json" >/dev/null
    done
  done
done
"$py" - "$out" <<'PYEOF'
import glob, json, os, statistics, sys
out = sys.argv[1]
rows = {}
for path in sorted(glob.glob(os.path.join(out, "np*-*-*.json"))):
    np_, kind, i = os.path.basename(path)[:-5].split("-")
    d = json.load(open(path))
    res = d["results"]
    for coll, size in sorted({(r[0], r[1]) for r in res}):
        t = {v: {r[3]: r[4] for r in res if r[0] == coll and r[1] == size and r[2] == v} for v in ("swccl", "C")}
        gap = statistics.median((t["swccl"][r] - t["C"][r]) * 1e6 for r in t["swccl"])
        sw = statistics.median(t["swccl"].values()) * 1e6
        rows.setdefault((int(np_[2:]), coll, size, kind), []).append((gap, sw))
        print(f"{np_} {kind:6} run {i}: {coll} {size} B: swccl {sw:.1f} µs, swccl − C {gap:.1f} µs")
print()
print("| ranks | collective | size | runs | native: swccl − C µs | Python: swccl − C µs | native: swccl µs | Python: swccl µs |")
print("|---|---|---|---|---|---|---|---|")
for key in sorted({k[:3] for k in rows}):
    nat, pyt = rows.get(key + ("native",), []), rows.get(key + ("python",), [])
    f = lambda xs, j: f"{statistics.median(x[j] for x in xs):.1f} ({min(x[j] for x in xs):.1f}..{max(x[j] for x in xs):.1f})" if xs else "—"  # noqa: E731
    print(f"| {key[0]} | {key[1]} | {key[2]} B | {len(nat)} + {len(pyt)} | {f(nat, 0)} | {f(pyt, 0)} | {f(nat, 1)} | {f(pyt, 1)} |")
PYEOF
