#!/usr/bin/env bash
# algorithms.sh — does the cost model pick well? Runs swccl-perf for one collective with the model's
# choice (auto) and with every algorithm forced, interleaved in rounds (order reversed every other
# round, because this machine's speed drifts by up to 4x from minute to minute), then prints, for
# every size, the median time of each over the rounds and auto's ratio to the best forced algorithm.
#
# Usage: Benchmarks/algorithms.sh            (from the package root, after scripts/setup.sh)
# Environment (all optional):
#   COLL=all_reduce   NP=4   ROUNDS=3   MIN=8   MAX=256M   FACTOR=2   ITERS=5   WARMUP=2   TRANSPORT=tcp
#   ALGOS="auto ring tree recdbl rabenseifner"   (default: auto and every algorithm of COLL)
#   SWCCL_PERF=.build/release/swccl-perf   OUT_DIR=<mktemp>
#   ANALYZE_ONLY=1    skip the runs; print the table from OUT_DIR/times.tsv of an earlier run
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
COLL="${COLL:-all_reduce}"
NP="${NP:-4}"
ROUNDS="${ROUNDS:-3}"
MIN="${MIN:-8}"
MAX="${MAX:-256M}"
FACTOR="${FACTOR:-2}"
ITERS="${ITERS:-5}"
WARMUP="${WARMUP:-2}"
TRANSPORT="${TRANSPORT:-tcp}"
PERF="${SWCCL_PERF:-$ROOT/.build/release/swccl-perf}"
MODEL="${SWCCL_MODEL:-$ROOT/.build/release/swccl-model}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/swccl-algorithms.XXXXXX)}"
[ -x "$PERF" ] || { echo "algorithms.sh: $PERF not built (run scripts/setup.sh)" >&2; exit 2; }
if [ -z "${ALGOS:-}" ]; then
    ALGOS="auto $("$MODEL" --algorithms "$COLL")" || { echo "algorithms.sh: cannot list algorithms of $COLL" >&2; exit 2; }
    # oneshot needs shared memory; elsewhere forcing it falls back to the model's choice.
    [ "$TRANSPORT" = shm ] || ALGOS="${ALGOS/ oneshot/}"
fi
read -r -a ALGO_L <<<"$ALGOS"
mkdir -p "$OUT_DIR"
RAW="$OUT_DIR/times.tsv"
[ "${ANALYZE_ONLY:-0}" = 1 ] && ROUNDS=0 || : >"$RAW"
echo "# $COLL, $NP ranks over $TRANSPORT, rounds $ROUNDS, sizes $MIN..$MAX x$FACTOR, $ITERS iterations; raw data in $RAW" >&2

for ((round = 1; round <= ROUNDS; round++)); do
    order=("${ALGO_L[@]}")
    if ((round % 2 == 0)); then
        order=(); for ((i = ${#ALGO_L[@]} - 1; i >= 0; i--)); do order+=("${ALGO_L[i]}"); done
    fi
    for algo in "${order[@]}"; do
        log="$OUT_DIR/$algo.$round.txt"
        echo "# round $round: $algo" >&2
        if ! "$PERF" "$COLL" -np "$NP" --transport "$TRANSPORT" -a "$algo" -b "$MIN" -e "$MAX" -f "$FACTOR" -n "$ITERS" -w "$WARMUP" -c 0 -T 600 >"$log" 2>&1; then
            echo "algorithms.sh: $algo failed in round $round, see $log" >&2
            exit 1
        fi
        # size, out-of-place time (us)
        awk -v a="$algo" -v r="$round" '/^ +[0-9]/ { print a "\t" r "\t" $1 "\t" $6 }' "$log" >>"$RAW"
    done
done

# Median per (algorithm, size); then per size: auto's median against the best forced median.
sort -k3,3n -k1,1 -k4,4g "$RAW" | awk -F'\t' -v algos="$ALGOS" -v model="$MODEL" -v np="$NP" -v coll="$COLL" '
    function flush(   n, m) {
        if (key == "") return
        n = cnt; m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        med[size, algo] = m
        key = ""
    }
    { k = $1 SUBSEP $3
      if (k != key) { flush(); key = k; algo = $1; size = $3; cnt = 0; if (!(size in seen)) { seen[size] = 1; sizes[++ns] = size } }
      v[++cnt] = $4 }
    END {
        flush()
        na = split(algos, A, " ")
        printf "| size |"; for (i = 1; i <= na; i++) printf " %s µs |", A[i]; printf " model picks | best forced | pick / best | auto run / best |\n"
        printf "|---:|"; for (i = 1; i <= na; i++) printf "---:|"; printf "---|---|---:|---:|\n"
        worst = 0
        for (s = 1; s <= ns; s++) {
            sz = sizes[s]; best = ""; bt = 0
            for (i = 1; i <= na; i++) {
                t = med[sz, A[i]]
                if (A[i] != "auto" && t != "" && (best == "" || t + 0 < bt)) { best = A[i]; bt = t + 0 }
            }
            cmd = model " --choose " coll " " np " " sz; cmd | getline pick; close(cmd)
            printf "| %s |", sz
            for (i = 1; i <= na; i++) printf " %.1f |", med[sz, A[i]]
            # The criterion: the median of the picked algorithm against the best forced median. The auto
            # run executes the same algorithm; its separate median shows the run-to-run noise.
            ratio = (bt > 0 && med[sz, pick] != "") ? med[sz, pick] / bt : 0
            aratio = (bt > 0 && med[sz, "auto"] != "") ? med[sz, "auto"] / bt : 0
            if (ratio > worst) { worst = ratio; wsz = sz }
            printf " %s | %s | %.2f | %.2f |\n", pick, best, ratio, aratio
        }
        printf "\nworst pick/best: %.2f at %s bytes\n", worst, wsz
    }'
