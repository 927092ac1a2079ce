#!/usr/bin/env bash
# The PyTorch backend's tests with real torch (run by scripts/test.sh; a few minutes):
#   python -m swccl._torch_native build   the backend's C++ fast path (python/swccl/csrc), built once into
#                                    ~/.cache/swccl/torch_extensions (cached with the venv) or found there;
#                                    every test below then runs through it
#   Tests/python/test_torch.py all   every operation and scenario on 2 and 3 ranks
#   SWCCL_TORCH_NATIVE=0 Tests/python/test_torch.py all 2   the same on 2 ranks, the Python backend alone
#   Tests/python/test_ddp.py 2, 4    DDP over swccl against Gloo from the same seed
#   Tests/python/test_install.sh     `pip install ./python` into a fresh environment finds its library
#   Tests/python/test_fsdp.py 2      FSDP2 (fully_shard) over swccl against Gloo from the same seed
#   Tests/python/torch_suite.py      torch's own distributed tests (DistributedTest._DistTestBase), a
#                                    representative slice, with the plugin's gates and with Gloo's
#                                    (the full run: docs/PYTORCH.md, "Torch's own tests")
#   examples/ddp_train.py            under torchrun --standalone --nproc-per-node 2, a few steps
#   examples/rl_weight_sync.py       under torchrun, 1 trainer and 2 rollout workers, a small policy
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
  timeout -k 10 900 "$@" 2>&1 | tee -a "$log" | grep -E "PASS|FAIL|passed|error as expected|fast path|ddp_train: (OK|FAIL)|rl_weight_sync: (OK|FAIL|sync)|torch suite" | cut -c1-300
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "   FAILED (exit $rc): $* (log: $log)"; fi
}
run env PYTHONPATH=python "$py" -m swccl._torch_native build
run "$py" Tests/python/test_torch.py all
run env SWCCL_TORCH_NATIVE=0 "$py" Tests/python/test_torch.py all 2
run "$py" Tests/python/test_ddp.py 2
run "$py" Tests/python/test_ddp.py 4
run bash Tests/python/test_install.sh "$py"
run "$py" Tests/python/test_fsdp.py 2
run "$py" Tests/python/torch_suite.py run --backend swccl --slice ci --test-timeout 60 --quiet
run "$py" Tests/python/torch_suite.py run --backend swccl --gates gloo --slice ci --test-timeout 60 --quiet
torchrun="$(dirname "$py")/torchrun"
run env OMP_NUM_THREADS=1 "$torchrun" --standalone --nproc-per-node 2 examples/ddp_train.py --backend swccl --steps 4
run env OMP_NUM_THREADS=1 "$torchrun" --standalone --nproc-per-node 3 examples/rl_weight_sync.py --trainers 1 --steps 3 --blocks 24 --dim 64
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
