#!/usr/bin/env bash
# verbs-tests.sh — the RDMA verbs tests: the transport conformance suite on the `ib` backend, then
# the two-host tests (shared memory within a host, verbs across), and swccl-perf over `--transport ib`
# for every collective with 2, 3 and 4 ranks, checked exactly.
# Needs an RDMA device (a real one, or Soft-RoCE); scripts/test.sh runs it natively when the host
# has one and inside the Soft-RoCE VM (scripts/rdma-vm.sh) otherwise. Expects a release build with
# tests (.build/release). Sized for emulation (≈50 MB/s): correctness only, never speed.
#   VERBS_MAXBYTES=256K  largest message of the swccl-perf runs
#   VERBS_TIMEOUT_MS=20000  transport and collective timeout (emulated RDMA is slow)
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.build/release
max="${VERBS_MAXBYTES:-256K}"
timeout_ms="${VERBS_TIMEOUT_MS:-20000}"
status=0
ulimit -l unlimited 2>/dev/null || true

echo "== verbs: transport conformance suite on ib"
"$bin/swccl-perf" --transports | sed 's/^/   /'
SWCCL_TEST_CONFORMANCE_BACKENDS=ib SWCCL_TEST_CONFORMANCE_TIMEOUT_MS="$timeout_ms" \
    "$bin/SwiftCCLPackageTests.xctest" SwiftCCLTests.ConformanceTests 2>&1 | tee /tmp/swccl-verbs-conformance.log |
    grep -E "^Test Case .*(passed|failed)|error:|SKIP|Executed" | sed 's/^/   /'
grep -qE "Executed [0-9]+ tests, with 0 failures" /tmp/swccl-verbs-conformance.log || status=1
# A skip would mean no device after all: that is a failure here, not a pass.
if grep -q "SKIP conformance" /tmp/swccl-verbs-conformance.log; then echo "   ib was skipped: no usable RDMA device"; status=1; fi

echo "== verbs: ranks on two hosts (a second /dev/shm): shm within a host, ib across, chosen per pair"
"$bin/SwiftCCLPackageTests.xctest" SwiftCCLTests.TwoHostTests 2>&1 | tee /tmp/swccl-verbs-twohost.log |
    grep -E "^Test Case .*(passed|failed|skipped)|error:|Executed|second host" | sed 's/^/   /'
grep -qE "Executed [0-9]+ tests, with 0 failures" /tmp/swccl-verbs-twohost.log || status=1

echo "== verbs: a killed or stopped rank is named by every survivor (notices on the control connections)"
"$bin/SwiftCCLPackageTests.xctest" SwiftCCLTests.BlameTests/testKilledRankIsBlamedOverVerbs,SwiftCCLTests.BlameTests/testStoppedRankIsBlamedOverVerbs 2>&1 |
    tee /tmp/swccl-verbs-blame.log | grep -E "^Test Case .*(passed|failed|skipped)|error:|Executed|blame:" | sed 's/^/   /'
grep -qE "Executed [0-9]+ tests, with 0 failures" /tmp/swccl-verbs-blame.log || status=1

echo "== verbs: every collective over --transport ib, 2, 3 and 4 ranks, #wrong 0"
for np in 2 3 4; do
    for c in all_reduce all_gather reduce_scatter broadcast reduce alltoall sendrecv gather scatter barrier; do
        # Every type and operator at 3 ranks; float with every operator at 2 and 4.
        if [ "$np" = 3 ]; then dt=(-d all -o all); else dt=(-d float -o all); fi
        log="/tmp/swccl-verbs-$c-$np.log"
        start=$SECONDS
        "$bin/swccl-perf" "$c" -np "$np" -b 8 -e "$max" -f 8 "${dt[@]}" -c 1 -n 2 -w 1 --transport ib -T $((timeout_ms / 1000 * 3)) \
            >"$log" 2>&1
        rc=$?
        verdict=$(grep -h "Out of bounds values" "$log" | sed 's/^# *//')
        transport=$(sed -n 's/.*transport \([a-z+]*\).*/\1/p' "$log" | head -1)
        printf '   %-15s np %d  transport %-3s exit %d  %-34s %4d rows  %3d s\n' "$c" "$np" "${transport:-?}" "$rc" \
            "${verdict:-no verdict}" "$(grep -cE '^ +[0-9]' "$log")" $((SECONDS - start))
        # Warnings have no place in a clean run (a clean close must not look like a failure).
        grep -E " WARN " "$log" | head -3 | sed 's/^/      | /'
        if [ $rc -ne 0 ] || [ "$transport" != ib ] || ! grep -q "Out of bounds values : 0 OK" "$log" || grep -q " WARN " "$log"; then
            status=1
            tail -n 20 "$log" | sed 's/^/      | /'
        fi
    done
done
if [ $status -eq 0 ]; then echo "== verbs tests passed"; else echo "== verbs tests FAILED"; fi
exit $status
