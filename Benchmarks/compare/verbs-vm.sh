#!/usr/bin/env bash
# verbs-vm.sh — SwiftCCL's 2-rank sendrecv over verbs beside perftest's ib_write_bw on the same RDMA
# device, interleaved round by round, as same-run ratios. Needs an RDMA device; on machines without
# one run it in the Soft-RoCE VM:
#   bash scripts/rdma-vm.sh run -- bash Benchmarks/compare/verbs-vm.sh
# Compares like with like: swccl-perf sendrecv on 2 ranks moves SIZE bytes each way per iteration
# (busbw = SIZE / time); ib_write_bw -b (bidirectional) does the same with raw RDMA writes and reports
# the sum of both directions, halved here to a per-direction figure. ib_write_bw without -b (one
# direction) is shown for reference. Under emulation (Soft-RoCE under QEMU TCG) absolute figures mean
# little: read the ratios.
#   SIZES="65536 1048576 8388608"  ROUNDS=3  DEVICE=<first ib port>  GID=<its GID index>
set -uo pipefail
cd "$(dirname "$0")/../.."
PERF=.build/release/swccl-perf
SIZES="${SIZES:-65536 1048576 8388608}"
ROUNDS="${ROUNDS:-3}"
port_line=$("$PERF" --transports | sed -n 's/^ib: //p' | grep -v '^unavailable' | head -1)
[ -n "$port_line" ] || { echo "no RDMA device: $("$PERF" --transports | grep '^ib')"; exit 2; }
DEVICE="${DEVICE:-$(echo "$port_line" | sed -E 's/^([^:]+):.*/\1/')}"
GID="${GID:-$(echo "$port_line" | sed -E 's/.*GID\[([0-9]+)\].*/\1/')}"
ADDR="${ADDR:-$(ip -4 -o addr show 2>/dev/null | awk '$2 != "lo" { sub(/\/.*/, "", $4); print $4; exit }')}"
ulimit -l unlimited 2>/dev/null || true
echo "# device $DEVICE GID index $GID, server address ${ADDR:-127.0.0.1}; $ROUNDS rounds, interleaved"
echo "# round  size  swccl_sendrecv_MBps  ib_write_bw_bidir_per_direction_MBps  ib_write_bw_unidir_MBps"
tcp_port=18600
ibbw() {  # size, extra flags -> average MB/s as ib_write_bw reports it
    local size=$1; shift
    tcp_port=$((tcp_port + 1))
    local iters=$(( size >= 1048576 ? 40 : 400 ))
    ib_write_bw -d "$DEVICE" -x "$GID" -s "$size" -n "$iters" -F -p $tcp_port "$@" >/tmp/ibbw-server.log 2>&1 &
    local server=$!
    sleep 1
    ib_write_bw -d "$DEVICE" -x "$GID" -s "$size" -n "$iters" -F -p $tcp_port "$@" "${ADDR:-127.0.0.1}" 2>/dev/null |
        awk -v s="$size" '$1 == s { print $4; exit }'
    wait $server
}
swccl() {  # size -> MB/s (bytes per microsecond of the out-of-place time)
    "$PERF" sendrecv -np 2 -b "$1" -e "$1" -n $(( $1 >= 1048576 ? 20 : 200 )) -w 2 -c 0 --transport ib 2>/dev/null |
        awk -v s="$1" '$1 == s { printf "%.1f", $1 / $6; exit }'
}
for r in $(seq 1 "$ROUNDS"); do
    for s in $SIZES; do
        # Order reversed every other round, so that a drift of the machine favours neither side.
        if [ $((r % 2)) -eq 1 ]; then
            sw=$(swccl "$s"); bi=$(ibbw "$s" -b); uni=$(ibbw "$s")
        else
            uni=$(ibbw "$s"); bi=$(ibbw "$s" -b); sw=$(swccl "$s")
        fi
        bi_half=$(awk -v b="${bi:-0}" 'BEGIN { printf "%.1f", b / 2 }')
        echo "$r  $s  ${sw:-NA}  $bi_half  ${uni:-NA}"
    done
done
