#!/usr/bin/env bash
# compare-tcp.sh — SwiftCCL all_reduce against Open MPI and Gloo over loopback TCP, interleaved.
#
# The machine's speed drifts (up to 4x from one minute to the next), so absolute figures from
# different runs cannot be compared. This script runs every peer for every size in rounds,
# reversing the order of the peers each round (A B C, C B A, A B C, ...), and reports the
# median over rounds of each figure and the median of the per-round ratios SwiftCCL/peer.
#
# Usage: Benchmarks/compare-tcp.sh            (from the package root; see Benchmarks/README.md)
# Environment (all optional):
#   ROUNDS=5                 rounds
#   NP=2                     ranks
#   SIZES="8 1M 64M"         sizes in bytes (K/M/G suffixes = powers of 1024)
#   ITERS="2000 200 10"      timed iterations, one per size (missing: derived from the size)
#   WARMUP="200 20 3"        warm-up iterations, one per size (missing: derived)
#   PEERS="swccl ompi-tcp gloo ompi-shm"   which to run, in round-1 order (also: swccl-shm, SwiftCCL
#                            over shared memory). ompi-shm (Open MPI
#                            over shared memory, vader) is a reference, not a TCP peer; drop it
#                            to save time. memcpy: single-thread memcpy bandwidth of the same
#                            size (Benchmarks/peers/memcpy_probe.c), the yardstick of the
#                            shared-memory targets (its "busbw" is bytes copied per second).
#   LATENCY_MAX=65536        sizes below this are compared by time, the others by busbw
#   SWCCL_PERF=.build/release/swccl-perf
#   BASE=swccl               whose figures the ratios divide (swccl-shm to compare shared memory)
#   SWCCL_PLACE=out          which swccl-perf columns to use: out (out-of-place) or in (in-place)
#   SWCCL_PEERS_VENV=$HOME/.cache/swccl-peers-venv   venv with torch (Benchmarks/peers/setup.sh)
#   MPIRUN_ARGS="--bind-to none"  extra mpirun arguments
#   RUN_TIMEOUT=300          seconds before one run (one peer, one size) is killed
#   OUT_DIR=<mktemp>         where raw outputs and results.tsv go
#   BUSY_SAMPLE=0.5          seconds of /proc/stat sampling before each run: how busy the cores
#                            are with other processes (recorded as "bg busy %")
#   QUIET_WAIT=0             if > 0: before each run, wait up to this many seconds for the
#   QUIET_MAX=10             background CPU use to drop to QUIET_MAX percent or less
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PEERS_DIR="$HERE/peers"

ROUNDS="${ROUNDS:-5}"
NP="${NP:-2}"
read -r -a SIZES <<<"${SIZES:-8 1M 64M}"
read -r -a ITERS_L <<<"${ITERS-2000 200 10}"
read -r -a WARMUP_L <<<"${WARMUP-200 20 3}"
read -r -a PEERS <<<"${PEERS:-swccl ompi-tcp gloo ompi-shm}"
LATENCY_MAX="${LATENCY_MAX:-65536}"
SWCCL_PERF="${SWCCL_PERF:-$ROOT/.build/release/swccl-perf}"
SWCCL_PLACE="${SWCCL_PLACE:-out}"
VENV="${SWCCL_PEERS_VENV:-$HOME/.cache/swccl-peers-venv}"
MPIRUN_ARGS="${MPIRUN_ARGS:---bind-to none}"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/swccl-compare-tcp.XXXXXX)}"
PYTHON="${PYTHON:-python3}"
BUSY_SAMPLE="${BUSY_SAMPLE:-0.5}"
QUIET_WAIT="${QUIET_WAIT:-0}"
QUIET_MAX="${QUIET_MAX:-10}"
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.tsv"

to_bytes() {
    local s="$1" m=1
    case "${s: -1}" in
        K | k) m=1024; s="${s%?}" ;;
        M | m) m=$((1024 * 1024)); s="${s%?}" ;;
        G | g) m=$((1024 * 1024 * 1024)); s="${s%?}" ;;
    esac
    echo $((s * m))
}
human() {
    local b="$1"
    if ((b >= 1 << 30 && b % (1 << 30) == 0)); then echo "$((b >> 30)) GiB"
    elif ((b >= 1 << 20 && b % (1 << 20) == 0)); then echo "$((b >> 20)) MiB"
    elif ((b >= 1 << 10 && b % (1 << 10) == 0)); then echo "$((b >> 10)) KiB"
    else echo "$b B"; fi
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime; }
# cpu_busy SECONDS: percent of all cores busy over the next SECONDS (nothing of ours runs then),
# i.e. how much other processes are using the machine right before a run.
cpu_busy() {
    local a b
    read -r -a a < <(head -1 /proc/stat) || { echo "?"; return; }
    sleep "$1"
    read -r -a b < <(head -1 /proc/stat) || { echo "?"; return; }
    local i ta=0 tb=0
    for ((i = 1; i < ${#a[@]} && i <= 8; i++)); do ta=$((ta + a[i])); tb=$((tb + b[i])); done
    local idle=$(((b[4] + b[5]) - (a[4] + a[5]))) total=$((tb - ta))
    ((total > 0)) && echo $((100 * (total - idle) / total)) || echo 0
}
# wait_quiet: sample cpu_busy; with QUIET_WAIT > 0, keep sampling (up to QUIET_WAIT seconds)
# until it is at most QUIET_MAX percent. Prints the last sample.
wait_quiet() {
    local busy deadline=$((SECONDS + QUIET_WAIT))
    while :; do
        busy=$(cpu_busy "$BUSY_SAMPLE")
        if ((QUIET_WAIT <= 0 || SECONDS >= deadline)) || [ "$busy" = "?" ] || ((busy <= QUIET_MAX)); then
            break
        fi
    done
    echo "$busy"
}
now() { date '+%Y-%m-%d %H:%M:%S %Z'; }

# Per-size iteration counts: given, or about 256 MiB of traffic per run (10..2000).
declare -a BYTES NITERS WARM
for i in "${!SIZES[@]}"; do
    b=$(to_bytes "${SIZES[$i]}")
    BYTES[$i]=$b
    auto=$(((256 << 20) / b))
    ((auto > 2000)) && auto=2000
    ((auto < 10)) && auto=10
    NITERS[$i]="${ITERS_L[$i]:-$auto}"
    WARM[$i]="${WARMUP_L[$i]:-$(((NITERS[$i] + 9) / 10))}"
done

# ---------------------------------------------------------------- which peers can run
declare -A AVAILABLE WHY
check_peers() {
    local p
    for p in "${PEERS[@]}"; do
        case "$p" in
            swccl | swccl-shm)
                if [ -x "$SWCCL_PERF" ]; then AVAILABLE[$p]=1
                else WHY[$p]="swccl-perf not found at $SWCCL_PERF (build it: swift build -c release, or set SWCCL_PERF)"; fi ;;
            ompi-tcp | ompi-shm)
                if ! command -v mpirun >/dev/null; then
                    WHY[$p]="mpirun not found (run Benchmarks/peers/setup.sh)"
                elif ! { command -v mpicc >/dev/null && make -s -C "$PEERS_DIR" mpi_allreduce >/dev/null 2>&1; } \
                    && [ ! -x "$PEERS_DIR/mpi_allreduce" ]; then
                    WHY[$p]="$PEERS_DIR/mpi_allreduce missing and could not be built (run Benchmarks/peers/setup.sh)"
                else AVAILABLE[$p]=1; fi ;;
            gloo)
                if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
                    'import torch.distributed as d; assert d.is_gloo_available()' >/dev/null 2>&1; then
                    AVAILABLE[$p]=1
                else WHY[$p]="no torch with Gloo in $VENV (run Benchmarks/peers/setup.sh, or set SWCCL_PEERS_VENV)"; fi ;;
            memcpy)
                if make -s -C "$PEERS_DIR" memcpy_probe >/dev/null 2>&1 || [ -x "$PEERS_DIR/memcpy_probe" ]; then AVAILABLE[$p]=1
                else WHY[$p]="$PEERS_DIR/memcpy_probe missing and could not be built (needs gcc)"; fi ;;
            *) WHY[$p]="unknown peer '$p' (known: swccl swccl-shm ompi-tcp gloo ompi-shm memcpy)" ;;
        esac
    done
}

MPIRUN_BASE=(mpirun -np "$NP" --mca oob_tcp_if_include lo)
[ "$(id -u)" -eq 0 ] && MPIRUN_BASE+=(--allow-run-as-root)
# More ranks than cores: Open MPI refuses without --oversubscribe.
[ "$NP" -gt "$(nproc)" ] && MPIRUN_BASE+=(--oversubscribe)
# shellcheck disable=SC2206
MPIRUN_BASE+=($MPIRUN_ARGS)

# run_peer PEER BYTES ITERS WARMUP LOGFILE -> prints "time_us<TAB>busbw" or nothing on failure
run_peer() {
    local p="$1" b="$2" n="$3" w="$4" log="$5" rc
    case "$p" in
        swccl | swccl-shm)
            local transport=tcp
            [ "$p" = swccl-shm ] && transport=shm
            SWCCL_SOCKET_IFNAME=lo timeout -k 10 "$RUN_TIMEOUT" \
                "$SWCCL_PERF" all_reduce -np "$NP" --transport "$transport" -b "$b" -e "$b" -n "$n" -w "$w" -c 0 \
                >"$log" 2>&1
            rc=$?
            # data rows: size count type redop root time algbw busbw #wrong time algbw busbw #wrong
            [ $rc -eq 0 ] && awk -v place="$SWCCL_PLACE" -v b="$b" '
                /^[[:space:]]*#/ || NF < 13 { next }
                $1 == b { if (place == "in") print $10 "\t" $12; else print $6 "\t" $8; exit }' "$log"
            ;;
        ompi-tcp | ompi-shm)
            local mca=(--mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include lo)
            [ "$p" = ompi-shm ] && mca=(--mca pml ob1 --mca btl vader,self)
            timeout -k 10 "$RUN_TIMEOUT" "${MPIRUN_BASE[@]}" "${mca[@]}" \
                "$PEERS_DIR/mpi_allreduce" "$b" "$b" "$w" "$n" allreduce >"$log" 2>&1
            rc=$?
            [ $rc -eq 0 ] && awk '/^[[:space:]]*#/ || NF < 4 { next } { print $2 "\t" $4; exit }' "$log"
            ;;
        gloo)
            GLOO_SOCKET_IFNAME=lo timeout -k 10 "$RUN_TIMEOUT" \
                "$VENV/bin/python" "$PEERS_DIR/gloo_allreduce.py" -np "$NP" -b "$b" -e "$b" -w "$w" -n "$n" \
                -c allreduce --timeout "$RUN_TIMEOUT" >"$log" 2>&1
            rc=$?
            [ $rc -eq 0 ] && awk '/^[[:space:]]*#/ || NF < 4 { next } { print $2 "\t" $4; exit }' "$log"
            ;;
        memcpy)
            timeout -k 10 "$RUN_TIMEOUT" "$PEERS_DIR/memcpy_probe" "$b" >"$log" 2>&1
            rc=$?
            [ $rc -eq 0 ] && awk '$1 == "memcpy" { printf "%.2f\t%s\n", $2 / $3 / 1000, $3; exit }' "$log"
            ;;
    esac
    return $rc
}

# ---------------------------------------------------------------- run
echo "# compare-tcp: all_reduce float sum, $NP ranks, loopback; $ROUNDS rounds, peer order reversed each round"
echo "# start $(now)  load average $(loadavg)  host $(uname -n)  cores $(nproc)"
echo "# sizes: $(for i in "${!BYTES[@]}"; do printf '%s (%s iters, %s warm-up)  ' "$(human "${BYTES[$i]}")" "${NITERS[$i]}" "${WARM[$i]}"; done)"
echo "# raw outputs: $OUT_DIR"
check_peers
RUN_PEERS=()
for p in "${PEERS[@]}"; do
    if [ -n "${AVAILABLE[$p]:-}" ]; then RUN_PEERS+=("$p")
    else echo "# SKIP $p: ${WHY[$p]}"; fi
done
if [ ${#RUN_PEERS[@]} -eq 0 ]; then
    echo "# nothing to run"
    exit 1
fi
echo "# peers: ${RUN_PEERS[*]}"
[ -n "${AVAILABLE[ompi-tcp]:-}${AVAILABLE[ompi-shm]:-}" ] && echo "# $(mpirun --version 2>/dev/null | head -1)"
[ -n "${AVAILABLE[gloo]:-}" ] && echo "# torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)"

printf 'round\tpeer\tsize\ttime_us\tbusbw\tload1\tbg_busy_pct\ttimestamp\n' >"$RESULTS"
failures=0
for ((r = 1; r <= ROUNDS; r++)); do
    order=("${RUN_PEERS[@]}")
    if ((r % 2 == 0)); then
        order=()
        for ((k = ${#RUN_PEERS[@]} - 1; k >= 0; k--)); do order+=("${RUN_PEERS[$k]}"); done
    fi
    echo "# round $r/$ROUNDS: ${order[*]}  $(now)  load $(loadavg)"
    for i in "${!BYTES[@]}"; do
        b=${BYTES[$i]}
        line="#   $(printf '%8s' "$(human "$b")"):"
        for p in "${order[@]}"; do
            log="$OUT_DIR/r${r}-${p}-${b}.log"
            busy=$(wait_quiet)
            res=$(run_peer "$p" "$b" "${NITERS[$i]}" "${WARM[$i]}" "$log")
            rc=$?
            if [ $rc -ne 0 ] || [ -z "$res" ]; then
                echo "# FAIL $p size $b round $r (exit $rc): see $log"
                failures=$((failures + 1))
                continue
            fi
            t=${res%%$'\t'*}
            bw=${res##*$'\t'}
            printf '%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n' "$r" "$p" "$b" "$t" "$bw" \
                "$(cut -d' ' -f1 /proc/loadavg 2>/dev/null)" "$busy" "$(date +%s)" >>"$RESULTS"
            line+="  $p $t us $bw GB/s (bg $busy%);"
        done
        echo "$line"
    done
done
echo "# end $(now)  load average $(loadavg)"
echo

# ---------------------------------------------------------------- summary
"$PYTHON" - "$RESULTS" "$LATENCY_MAX" "$SWCCL_PLACE" "${BASE:-swccl}" <<'EOF'
import collections, statistics, sys

path, latency_max, place, base = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = [l.rstrip("\n").split("\t") for l in open(path)][1:]
data = collections.defaultdict(dict)  # (size, peer) -> {round: (time, busbw)}
peers, sizes = [], []
for r, p, s, t, bw, *_ in rows:
    s = int(s)
    data[(s, p)][int(r)] = (float(t), float(bw))
    if p not in peers: peers.append(p)
    if s not in sizes: sizes.append(s)

def human(b):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if b >= 1 << shift and b % (1 << shift) == 0:
            return f"{b >> shift} {unit}"
    return f"{b} B"

def med(xs):
    return statistics.median(xs) if xs else None

def fmt(x, d=2):
    return "–" if x is None else f"{x:.{d}f}"

names = {"swccl": "SwiftCCL (tcp)", "swccl-shm": "SwiftCCL (shm)", "ompi-tcp": "Open MPI TCP", "ompi-shm": "Open MPI shm (reference)",
         "gloo": "Gloo (torch, TCP)", "memcpy": "memcpy, 1 thread (GB/s copied)"}
for s in sorted(sizes):
    lat = s < latency_max
    print(f"### all_reduce {human(s)} ({s} B), float sum")
    print()
    if lat:
        print("| peer | time µs (median) | busbw GB/s (median) | swccl time / peer time (median of rounds) | rounds |")
    else:
        print("| peer | time µs (median) | busbw GB/s (median) | swccl busbw / peer busbw (median of rounds) | rounds |")
    print("|---|---:|---:|---:|---:|")
    sw = data.get((s, base), {})
    for p in peers:
        d = data.get((s, p), {})
        t = med([v[0] for v in d.values()])
        bw = med([v[1] for v in d.values()])
        ratios = []
        if p != base:
            for r, (pt, pbw) in d.items():
                if r not in sw:
                    continue
                st, sbw = sw[r]
                if lat and pt > 0:
                    ratios.append(st / pt)
                elif not lat and pbw > 0:
                    ratios.append(sbw / pbw)
        if p == base:
            ratio = "—"
        elif not ratios:
            ratio = "n/a"
        else:
            ratio = f"**{med(ratios):.3f}** ({min(ratios):.3f}–{max(ratios):.3f})"
        print(f"| {names.get(p, p)} | {fmt(t)} | {fmt(bw, 3)} | {ratio} | {len(d)} |")
    print()
    loads = [float(row[5]) for row in rows if int(row[2]) == s and row[5]]
    busy = [int(row[6]) for row in rows if int(row[2]) == s and row[6].isdigit()]
    if loads:
        note = f"1-minute load average during these runs: {min(loads):.2f}–{max(loads):.2f}"
        if busy:
            note += (f"; CPU used by other processes just before each run: {min(busy)}–{max(busy)} %"
                     f" of all cores (median {med(busy):.0f} %)")
        print(note)
        print()
print("Ratios are computed per round (peers run back to back, same minute); the table gives their")
print("median in bold and their range over rounds in parentheses.")
print("time ratio < 1: SwiftCCL is faster; busbw ratio > 1: SwiftCCL is faster.")
print(f"Ratios are {names.get(base, base)} against each peer.")
if base in peers:
    print(f"SwiftCCL figures are swccl-perf's {'in-place' if place == 'in' else 'out-of-place'} columns.")
EOF
echo
echo "# results: $RESULTS"
[ $failures -gt 0 ] && echo "# $failures run(s) failed; see the logs in $OUT_DIR"
exit 0
