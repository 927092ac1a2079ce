#!/usr/bin/env bash
# Every test: Swift unit and multi-process tests (allreduce, transport conformance), then the C ABI
# test through libswccl.so, then the PyTorch backend (Tests/python/test_torch.py, test_ddp.py, test_install.sh; torch from
# scripts/torch-venv.sh, cached; a visible SKIP without it), then the quick slice of the fault campaign (Tests/faults), then the RDMA verbs tests (natively with an RDMA device, else in a
# Soft-RoCE VM: scripts/verbs-tests.sh, scripts/rdma-vm.sh). Installs what it needs first. Set SWCCL_TEST_FULL=1 for the whole
# type × op × count cross-product instead of the deterministic sample.
set -uo pipefail
cd "$(dirname "$0")/.."
SWCCL_BUILD_TESTS=1 bash scripts/setup.sh || exit 1

status=0
# The layering: Package.swift's target graph against docs/ARCHITECTURE.md, and every file's imports.
echo "== layers"
bash scripts/check-layers.sh || status=1

echo "== swift tests"
swift test -c release --skip-build 2>&1 | tee /tmp/swccl-swift-test.log | grep -vE "^Test Case .* (started|passed)"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# The last summary is the whole run's ("Executed 112 tests, with 2 tests skipped and 0 failures"); it
# must report no failure. Skipped tests print their reason (XCTSkip) in the log above.
last=$(grep -E "Executed [0-9]+ tests?, with" /tmp/swccl-swift-test.log | tail -n 1)
xt=$(sed -nE 's/.*Executed ([0-9]+) tests?, with.*/\1/p' <<<"$last")
xs=$(sed -nE 's/.* ([0-9]+) tests? skipped.*/\1/p' <<<"$last")
xf=$(sed -nE 's/.* ([0-9]+) failures?.*/\1/p' <<<"$last")
xt=${xt:-0}; xs=${xs:-0}; xf=${xf:-1}
[ "$xf" -eq 0 ] || status=1
grep -E "^Test Case .* skipped" /tmp/swccl-swift-test.log | sed 's/^/   SKIP: /'

echo "== C ABI tests"
bash Tests/c/run.sh .build/release 2>&1 | tee /tmp/swccl-c-test.log
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# The torch.distributed backend "swccl" (python/swccl/torch.py) with real torch: every operation on 2
# and 3 ranks, DDP against Gloo on 2 and 4 ranks, and `pip install ./python` into a fresh environment.
echo "== PyTorch backend tests"
tp=0; tf=0
torch_py=$(cat .build/torch-python 2>/dev/null || echo "SKIP: scripts/setup.sh did not record a torch environment")
if [[ "$torch_py" == SKIP:* ]]; then
  echo "SKIP: PyTorch backend tests: ${torch_py#SKIP: }"
else
  bash scripts/torch-tests.sh "$torch_py" 2>&1 | tee /tmp/swccl-torch-summary.log
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  read -r tp tf < <(grep -E "^[0-9]+ passed, [0-9]+ failed$" /tmp/swccl-torch-summary.log | tail -n 1 | sed -E 's/([0-9]+) passed, ([0-9]+) failed/\1 \2/')
  tp=${tp:-0}; tf=${tf:-1}
fi

echo "== fault campaign (quick slice: python3 Tests/faults/campaign.py --quick; the full one without --quick)"
timeout -k 10 1200 python3 Tests/faults/campaign.py --quick 2>&1 | tee /tmp/swccl-faults.log
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# RDMA verbs: natively where this host has an RDMA device, else inside the Soft-RoCE VM
# (scripts/rdma-vm.sh builds it once and caches it), else skipped with the reason.
echo "== RDMA verbs tests"
vt=0; vf=0
if .build/release/swccl-perf --transports | grep -qE "^ib: [^u]"; then
  echo "   this host has an RDMA device: running natively"
  bash scripts/verbs-tests.sh 2>&1 | tee /tmp/swccl-verbs-test.log || { status=1; vf=1; }
  vt=1
elif why=$(bash scripts/rdma-vm.sh check 2>&1); then
  echo "   no RDMA device here ($(.build/release/swccl-perf --transports | sed -n 's/^ib: unavailable: //p')): running in the Soft-RoCE VM"
  if ! bash scripts/rdma-vm.sh build; then
    echo "   the VM image could not be built"; status=1; vf=1
  elif ! SWCCL_VM_TIMEOUT=2400 bash scripts/rdma-vm.sh run -- bash scripts/verbs-tests.sh 2>&1 | tee /tmp/swccl-verbs-test.log; then
    status=1; vf=1
  fi
  vt=1
else
  echo "SKIP: RDMA verbs tests: this host has no RDMA device and cannot run the Soft-RoCE VM: ${why#rdma-vm: unavailable: }"
fi

# One closing line for the whole run: XCTest cases plus C checks (plus the verbs run as one check).
read -r cp cf < <(grep -E "^[0-9]+ passed, [0-9]+ failed$" /tmp/swccl-c-test.log | tail -n 1 | sed -E 's/([0-9]+) passed, ([0-9]+) failed/\1 \2/')
read -r fp ff < <(grep -E "^[0-9]+ passed, [0-9]+ failed$" /tmp/swccl-faults.log | tail -n 1 | sed -E 's/([0-9]+) passed, ([0-9]+) failed/\1 \2/')
cp=${cp:-0}; cf=${cf:-1}; fp=${fp:-0}; ff=${ff:-1}
if [ $status -eq 0 ]; then echo "== all tests passed"; else echo "== some tests FAILED"; fi
echo "total: $(( (xt > xf + xs ? xt - xf - xs : 0) + cp + fp + vt - vf + tp )) passed, $((xf + cf + ff + vf + tf)) failed, $xs skipped"
exit $status
