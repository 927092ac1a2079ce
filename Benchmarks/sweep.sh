#!/usr/bin/env bash
# sweep.sh — every collective of swccl-perf over every transport at full range, checked exactly:
#   swccl-perf C -np 4 -b 8 -e 64M -d all -o all -c 1 --transport T
# (issue 6's acceptance run; about 1-2 hours per transport on this 2-core machine, most of it the fp8 types).
# Prints one line per run (exit status, the "Out of bounds values" verdict, rows, minutes) and
# exits non-zero if any run failed or reported a wrong value. Logs stay in OUT_DIR.
# Environment: TRANSPORTS="shm tcp"  COLLS="<all ten>"  NP=4  MAXBYTES=64M  EXTRA=""  OUT_DIR=<mktemp>
#              SWCCL_PERF=.build/release/swccl-perf
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SWCCL_PERF="${SWCCL_PERF:-$ROOT/.build/release/swccl-perf}"
read -r -a TRANSPORTS <<<"${TRANSPORTS:-shm tcp}"
read -r -a COLLS <<<"${COLLS:-all_reduce all_gather reduce_scatter broadcast reduce alltoall sendrecv gather scatter barrier}"
NP="${NP:-4}"
MAXBYTES="${MAXBYTES:-64M}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/swccl-sweep.XXXXXX)}"
mkdir -p "$OUT_DIR"
[ -x "$SWCCL_PERF" ] || (cd "$ROOT" && swift build -c release --product swccl-perf) || exit 1
status=0
echo "# swccl-perf C -np $NP -b 8 -e $MAXBYTES -d all -o all -c 1 --transport T ${EXTRA:-}   (logs: $OUT_DIR)"
for t in "${TRANSPORTS[@]}"; do
    for c in "${COLLS[@]}"; do
        log="$OUT_DIR/$c-$t.log"
        start=$SECONDS
        # shellcheck disable=SC2086
        "$SWCCL_PERF" "$c" -np "$NP" -b 8 -e "$MAXBYTES" -d all -o all -c 1 --transport "$t" -T 900 ${EXTRA:-} >"$log" 2>&1
        rc=$?
        verdict=$(grep -h "Out of bounds values" "$log" | sed 's/^# *//')
        rows=$(grep -cE '^ +[0-9]' "$log")  # data rows only (not log lines)
        printf '%-15s %-4s exit %d  %-34s %5d rows  %5.1f min\n' "$c" "$t" "$rc" "${verdict:-no verdict}" "$rows" \
            "$(awk -v s=$((SECONDS - start)) 'BEGIN { print s / 60 }')"
        if [ $rc -ne 0 ] || ! grep -q "Out of bounds values : 0 OK" "$log"; then status=1; fi
    done
done
exit $status
