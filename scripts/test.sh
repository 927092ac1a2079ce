#!/usr/bin/env bash
# Every test: Swift unit and multi-process tests (allreduce, transport conformance), then the C ABI
# test through libswccl.so. Installs what it needs first. Set SWCCL_TEST_FULL=1 for the whole
# type × op × count cross-product instead of the deterministic sample.
set -uo pipefail
cd "$(dirname "$0")/.."
SWCCL_BUILD_TESTS=1 bash scripts/setup.sh || exit 1

status=0
echo "== swift tests"
swift test -c release --skip-build 2>&1 | tee /tmp/swccl-swift-test.log | grep -vE "^Test Case .* (started|passed)"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# The last summary is the whole run's; it must report no failure.
grep -E "Executed [0-9]+ tests?, with" /tmp/swccl-swift-test.log | tail -n 1 | grep -q "with 0 failures" || status=1

echo "== C ABI tests"
bash Tests/c/run.sh .build/release 2>&1 | tee /tmp/swccl-c-test.log
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# One closing line for the whole run: XCTest cases plus C checks.
read -r xt xf < <(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" /tmp/swccl-swift-test.log | tail -n 1 |
  sed -E 's/.*Executed ([0-9]+) tests?, with ([0-9]+) failures?.*/\1 \2/')
read -r cp cf < <(grep -E "^[0-9]+ passed, [0-9]+ failed$" /tmp/swccl-c-test.log | tail -n 1 | sed -E 's/([0-9]+) passed, ([0-9]+) failed/\1 \2/')
xt=${xt:-0}; xf=${xf:-1}; cp=${cp:-0}; cf=${cf:-1}
if [ $status -eq 0 ]; then echo "== all tests passed"; else echo "== some tests FAILED"; fi
echo "total: $(( (xt > xf ? xt - xf : 0) + cp )) passed, $((xf + cf)) failed"
exit $status
