#!/usr/bin/env bash
# Benchmarks/compare/ab.sh - a change against a baseline, same run: two swccl-perf binaries, alternating
# (the order reversed every other round), the median of each size's time over the rounds and the
# median and range of the per-round ratios NEW/OLD (time: < 1 is faster).
#
#   OLD=/path/to/old/swccl-perf NEW=.build/release/swccl-perf ROUNDS=7 \
#     Benchmarks/compare/ab.sh all_reduce -np 2 --transport shm -b 8 -e 8 -n 2000
#
# Every argument after the script's goes to both binaries; the out-of-place time column is compared.
set -euo pipefail
OLD=${OLD:?set OLD to the baseline swccl-perf}
NEW=${NEW:-.build/release/swccl-perf}
ROUNDS=${ROUNDS:-7}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((r = 0; r < ROUNDS; r++)); do
  if ((r % 2 == 0)); then order="OLD NEW"; else order="NEW OLD"; fi
  for which in $order; do
    bin=${!which}
    # Data rows: size count type redop root time algbw busbw #wrong ...; keep size and time.
    "$bin" "$@" 2>/dev/null | awk -v w="$which" -v r="$r" '$1 ~ /^[0-9]+$/ && NF >= 9 { print w, r, $1, $6, $9 }' >>"$tmp/rows"
  done
done
python3 - "$tmp/rows" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
sizes = sorted({int(r[2]) for r in rows})
print(f"{'size':>10} {'old us':>10} {'new us':>10} {'new/old median':>15} {'range':>16}  wrong")
for s in sizes:
    t = {w: {int(r[1]): float(r[3]) for r in rows if r[0] == w and int(r[2]) == s} for w in ("OLD", "NEW")}
    rounds = sorted(set(t["OLD"]) & set(t["NEW"]))
    ratios = [t["NEW"][k] / t["OLD"][k] for k in rounds]
    wrong = sum(int(r[4]) for r in rows if int(r[2]) == s and r[4].isdigit())
    print(f"{s:>10} {statistics.median(t['OLD'].values()):>10.2f} {statistics.median(t['NEW'].values()):>10.2f} "
          f"{statistics.median(ratios):>15.3f} {min(ratios):>7.3f}-{max(ratios):<7.3f}  {wrong}")
PY
