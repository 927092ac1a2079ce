#!/usr/bin/env bash
# The PyTorch backend's tests with real torch (run by scripts/test.sh; a few minutes):
#   Tests/python/test_torch.py all   every operation and scenario on 2 and 3 ranks
#   Tests/python/test_ddp.py 2, 4    DDP over swccl against Gloo from the same seed
#   Tests/python/test_install.sh     `pip install ./python` into a fresh environment finds its library
#   usage: scripts/torch-tests.sh [PYTHON]   (default: the cached environment of scripts/torch-venv.sh)
# Ends with "N passed, M failed" (one check per line above) and exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
py="${1:-}"
if [ -z "$py" ]; then
  py=$(bash scripts/torch-venv.sh | tail -n 1) || { echo "SKIP: PyTorch backend tests: $py"; exit 0; }
fi
export SWCCL_SOCKET_IFNAME=lo GLOO_SOCKET_IFNAME=lo
log=/tmp/swccl-torch-test.log
: > "$log"
passed=0; failed=0
run() {
  echo "-- $*"
  timeout -k 10 900 "$@" 2>&1 | tee -a "$log" | grep -E "PASS|FAIL|passed|error as expected" | cut -c1-300
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "   FAILED (exit $rc): $* (log: $log)"; fi
}
run "$py" Tests/python/test_torch.py all
run "$py" Tests/python/test_ddp.py 2
run "$py" Tests/python/test_ddp.py 4
run bash Tests/python/test_install.sh "$py"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
