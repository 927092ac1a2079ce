#!/usr/bin/env bash
# compare.sh — SwiftCCL side by side with Open MPI and torch's Gloo, interleaved in one run:
# all_reduce, all_gather, reduce_scatter and broadcast (float32, sum) at 2 and 4 local ranks, over
# shared memory (SwiftCCL shm against Open MPI vader) and over loopback TCP (SwiftCCL tcp against
# Open MPI tcp and Gloo, which has TCP only).
#
# This machine's speed drifts by up to 4x between minutes, so only figures from one run, taken
# close together, can be compared. For every (collective, ranks) the peers run one after another,
# each sweeping all sizes, in an order reversed every round; the report gives the median over rounds
# of each busbw and the median of the per-round ratios SwiftCCL/peer.
#
# Usage (from the package root):  Benchmarks/compare/compare.sh
#   installs what is missing first (Benchmarks/peers/setup.sh: Open MPI, the MPI and memcpy probes,
#   torch in a venv, iperf3) and builds swccl-perf if needed. Then writes
#     $OUT_DIR/report.md            tables of medians and ratios
#     $OUT_DIR/results.tsv          every row: round coll np peer size time_us busbw
#     $CHART_DIR/compare-<coll>-<np>.svg   one chart per collective and rank count
# Environment (all optional):
#   COLLS="all_reduce all_gather reduce_scatter broadcast"   NPS="2 4"   ROUNDS=3
#   MINBYTES=16 MAXBYTES=64M STEP=4   sizes 16 B, 64 B, ... 64 MiB, in two sweeps per peer:
#   SMALL_MAX=16K                     up to here ITERS_SMALL=500 timed iterations (WARMUP_SMALL=50):
#                                     a single scheduling hiccup of a few ms would otherwise dominate
#   ITERS=20 WARMUP=5                 above SMALL_MAX, for every peer
#   PEERS="swccl-shm ompi-shm swccl-tcp ompi-tcp gloo"   in round-1 order
#   REFERENCES="memcpy iperf3"        measured once per round: single-thread memcpy of MAXBYTES
#                                     and one loopback TCP stream (yardsticks, not peers)
#   OUT_DIR=<mktemp>  CHART_DIR=$OUT_DIR   SWCCL_PERF=.build/release/swccl-perf
#   SWCCL_PEERS_VENV=$HOME/.cache/swccl-peers-venv   MPIRUN_ARGS="--bind-to none"   RUN_TIMEOUT=600
#   SKIP_SETUP=1                      do not run Benchmarks/peers/setup.sh
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEERS_DIR="$ROOT/Benchmarks/peers"

read -r -a COLLS <<<"${COLLS:-all_reduce all_gather reduce_scatter broadcast}"
read -r -a NPS <<<"${NPS:-2 4}"
read -r -a PEERS <<<"${PEERS:-swccl-shm ompi-shm swccl-tcp ompi-tcp gloo}"
read -r -a REFS <<<"${REFERENCES-memcpy iperf3}"
ROUNDS="${ROUNDS:-3}"
MINBYTES="${MINBYTES:-16}"
MAXBYTES="${MAXBYTES:-64M}"
STEP="${STEP:-4}"
ITERS="${ITERS:-20}"
WARMUP="${WARMUP:-5}"
SMALL_MAX="${SMALL_MAX:-16K}"
ITERS_SMALL="${ITERS_SMALL:-500}"
WARMUP_SMALL="${WARMUP_SMALL:-50}"
SWCCL_PERF="${SWCCL_PERF:-$ROOT/.build/release/swccl-perf}"
VENV="${SWCCL_PEERS_VENV:-$HOME/.cache/swccl-peers-venv}"
MPIRUN_ARGS="${MPIRUN_ARGS:---bind-to none}"
RUN_TIMEOUT="${RUN_TIMEOUT:-600}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/swccl-compare.XXXXXX)}"
CHART_DIR="${CHART_DIR:-$OUT_DIR}"
mkdir -p "$OUT_DIR" "$CHART_DIR"
RESULTS="$OUT_DIR/results.tsv"
REFS_TSV="$OUT_DIR/references.tsv"
log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- set-up
if [ "${SKIP_SETUP:-0}" != 1 ]; then
    bash "$PEERS_DIR/setup.sh" >&2 || log "peers set-up failed; peers that cannot run are skipped"
fi
if [ ! -x "$SWCCL_PERF" ]; then
    log "building swccl-perf"
    (cd "$ROOT" && swift build -c release --product swccl-perf >&2) || { log "cannot build swccl-perf"; exit 1; }
fi
make -s -C "$PEERS_DIR" mpi_allreduce memcpy_probe >/dev/null 2>&1

declare -A WHY
for p in "${PEERS[@]}"; do
    case "$p" in
        swccl-shm | swccl-tcp) ;;
        ompi-shm | ompi-tcp) [ -x "$PEERS_DIR/mpi_allreduce" ] && command -v mpirun >/dev/null || WHY[$p]="no mpirun or mpi_allreduce" ;;
        gloo) "$VENV/bin/python" -c 'import torch.distributed as d; assert d.is_gloo_available()' >/dev/null 2>&1 || WHY[$p]="no torch with Gloo in $VENV" ;;
        *) WHY[$p]="unknown peer (known: swccl-shm swccl-tcp ompi-shm ompi-tcp gloo)" ;;
    esac
    [ -n "${WHY[$p]:-}" ] && log "SKIP $p: ${WHY[$p]}"
done

mpirun_base() { # NP
    local a=(mpirun -np "$1" --mca oob_tcp_if_include lo)
    [ "$(id -u)" -eq 0 ] && a+=(--allow-run-as-root)
    [ "$1" -gt "$(nproc)" ] && a+=(--oversubscribe)
    # shellcheck disable=SC2206
    a+=($MPIRUN_ARGS)
    printf '%s\n' "${a[@]}"
}

# run_peer PEER COLL NP LOG MINBYTES MAXBYTES ITERS WARMUP -> rows "size<TAB>time_us<TAB>busbw" on
# stdout; non-zero on failure
run_peer() {
    local p="$1" coll="$2" np="$3" log="$4" MINBYTES="$5" MAXBYTES="$6" ITERS="$7" WARMUP="$8" rc mcoll
    case "$coll" in all_reduce) mcoll=allreduce ;; all_gather) mcoll=allgather ;;
        reduce_scatter) mcoll=reducescatter ;; broadcast) mcoll=bcast ;; esac
    case "$p" in
        swccl-shm | swccl-tcp)
            SWCCL_SOCKET_IFNAME=lo timeout -k 10 "$RUN_TIMEOUT" "$SWCCL_PERF" "$coll" -np "$np" --transport "${p#swccl-}" \
                -b "$MINBYTES" -e "$MAXBYTES" -f "$STEP" -n "$ITERS" -w "$WARMUP" -c 0 >"$log" 2>&1
            rc=$?
            # Broadcast: the in-place columns, as MPI_Bcast (one buffer) is; the others out-of-place, as
            # the MPI peer runs them.
            [ $rc -eq 0 ] && awk -v ip="$([ "$coll" = broadcast ] && echo 1)" '$1 !~ /^[0-9]+$/ || NF < 9 { next }
                { if (ip) print $1 "\t" $10 "\t" $12; else print $1 "\t" $6 "\t" $8 }' "$log" ;;
        ompi-shm | ompi-tcp)
            local mca=(--mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include lo)
            [ "$p" = ompi-shm ] && mca=(--mca pml ob1 --mca btl vader,self)
            local base
            mapfile -t base < <(mpirun_base "$np")
            timeout -k 10 "$RUN_TIMEOUT" "${base[@]}" "${mca[@]}" "$PEERS_DIR/mpi_allreduce" \
                "$MINBYTES" "$MAXBYTES" "$WARMUP" "$ITERS" "$mcoll" "$STEP" >"$log" 2>&1
            rc=$?
            [ $rc -eq 0 ] && awk '$1 !~ /^[0-9]+$/ || NF < 4 { next } { print $1 "\t" $2 "\t" $4 }' "$log" ;;
        gloo)
            GLOO_SOCKET_IFNAME=lo timeout -k 10 "$RUN_TIMEOUT" "$VENV/bin/python" "$PEERS_DIR/gloo_allreduce.py" \
                -np "$np" -b "$MINBYTES" -e "$MAXBYTES" -f "$STEP" -w "$WARMUP" -n "$ITERS" -c "$mcoll" \
                --timeout "$RUN_TIMEOUT" >"$log" 2>&1
            rc=$?
            [ $rc -eq 0 ] && awk '$1 !~ /^[0-9]+$/ || NF < 4 { next } { print $1 "\t" $2 "\t" $4 }' "$log" ;;
    esac
    return $rc
}

run_references() { # ROUND
    local r="$1" maxb
    maxb=$(to_bytes "$MAXBYTES")
    for ref in "${REFS[@]}"; do
        case "$ref" in
            memcpy)
                [ -x "$PEERS_DIR/memcpy_probe" ] && "$PEERS_DIR/memcpy_probe" "$maxb" 2>/dev/null \
                    | awk -v r="$r" '$1 == "memcpy" { printf "%s\tmemcpy\t%.3f\n", r, $3 }' >>"$REFS_TSV" ;;
            iperf3)
                command -v iperf3 >/dev/null || continue
                # The one-shot server is bounded too: a client that never connects must not hang the run.
                timeout 30 iperf3 -s -1 -p 5299 -B 127.0.0.1 >/dev/null 2>&1 &
                local srv=$!
                sleep 1
                timeout 30 iperf3 -c 127.0.0.1 -p 5299 -t 3 -f g 2>/dev/null \
                    | awk -v r="$r" '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Gbits/sec") printf "%s\tiperf3\t%.3f\n", r, $i / 8 }' >>"$REFS_TSV"
                kill "$srv" 2>/dev/null
                wait "$srv" 2>/dev/null ;;
        esac
    done
}

# ---------------------------------------------------------------- run
to_bytes() { awk -v s="$1" 'BEGIN { m = 1; u = toupper(substr(s, length(s))); if (u == "K") m = 1024; else if (u == "M") m = 1048576; else if (u == "G") m = 1073741824; if (m > 1) s = substr(s, 1, length(s) - 1); print s * m }'; }
# The large sweep starts at the first size of the MINBYTES * STEP^k series above SMALL_MAX.
LARGE_MIN=$(awk -v b="$(to_bytes "$MINBYTES")" -v s="$(to_bytes "$SMALL_MAX")" -v f="$STEP" 'BEGIN { while (b <= s) b *= f; print b }')
printf 'round\tcoll\tnp\tpeer\tsize\ttime_us\tbusbw\n' >"$RESULTS"
printf 'round\treference\tGBps\n' >"$REFS_TSV"
log "output in $OUT_DIR; ${#COLLS[@]} collectives x ${#NPS[@]} rank counts x ${#PEERS[@]} peers x $ROUNDS rounds"
started=$(date '+%Y-%m-%d %H:%M:%S %Z')
for ((r = 1; r <= ROUNDS; r++)); do
    order=("${PEERS[@]}")
    if ((r % 2 == 0)); then order=(); for ((i = ${#PEERS[@]} - 1; i >= 0; i--)); do order+=("${PEERS[$i]}"); done; fi
    run_references "$r"
    for coll in "${COLLS[@]}"; do
        for np in "${NPS[@]}"; do
            for p in "${order[@]}"; do
                [ -n "${WHY[$p]:-}" ] && continue
                lg="$OUT_DIR/r$r-$coll-$np-$p"
                rows=""
                if small=$(run_peer "$p" "$coll" "$np" "$lg-small.log" "$MINBYTES" "$SMALL_MAX" "$ITERS_SMALL" "$WARMUP_SMALL") \
                    && large=$(run_peer "$p" "$coll" "$np" "$lg-large.log" "$LARGE_MIN" "$MAXBYTES" "$ITERS" "$WARMUP"); then
                    rows=$(printf '%s\n%s\n' "$small" "$large" | awk 'NF')
                fi
                if [ -n "$rows" ]; then
                    printf '%s\n' "$rows" | awk -v r="$r" -v c="$coll" -v n="$np" -v p="$p" '{ print r "\t" c "\t" n "\t" p "\t" $0 }' >>"$RESULTS"
                    log "round $r $coll -np $np $p: $(printf '%s\n' "$rows" | wc -l) sizes"
                else
                    log "FAIL round $r $coll -np $np $p (see $lg-*.log)"
                fi
            done
        done
    done
done
finished=$(date '+%Y-%m-%d %H:%M:%S %Z')

# ---------------------------------------------------------------- report and charts
python3 "$HERE/report.py" "$RESULTS" "$REFS_TSV" "$OUT_DIR" \
    --started "$started" --finished "$finished" --rounds "$ROUNDS" \
    --iters "$ITERS_SMALL up to $SMALL_MAX, then $ITERS" --warmup "$WARMUP_SMALL / $WARMUP" \
    --mpi "$(mpirun --version 2>/dev/null | head -1)" \
    --torch "$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)" >"$OUT_DIR/report.md"
for coll in "${COLLS[@]}"; do
    for np in "${NPS[@]}"; do
        [ -s "$OUT_DIR/series-$coll-$np.json" ] || continue
        "$SWCCL_PERF" plot --compare "$OUT_DIR/series-$coll-$np.json" --plot "$CHART_DIR/compare-$coll-$np.svg" \
            --title "$coll, $np ranks, float32 sum: median busbw of $ROUNDS interleaved rounds" || log "chart $coll $np failed"
    done
done
cat "$OUT_DIR/report.md"
log "report: $OUT_DIR/report.md; charts in $CHART_DIR"
