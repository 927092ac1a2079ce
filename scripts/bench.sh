#!/usr/bin/env bash
# The main job: the allreduce bandwidth benchmark on local ranks (one per core by default).
# Extra arguments go to swccl-perf, e.g. `scripts/bench.sh -np 4 -e 256M -d all`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .build/release/swccl-perf all_reduce -b 8 -e 64M "$@"
