#!/usr/bin/env bash
# Fuzzes every parser of what arrives from the network (docs/RELIABILITY.md, "Fuzzing"):
#   bash Tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default 60 s, every target)
# Builds Tests/fuzz (a package of its own: the root package's build never includes it) with libFuzzer
# and AddressSanitizer, refreshes the seed corpus Tests/fuzz/corpus/<target>/ from the library's own
# encoders, runs each target for the given time (one at a time), and prints one line per target
# (executions, coverage, corpus, crashes) and a closing summary. Inputs that crash, hang (>10 s) or
# allocate more than 64 MiB at once are saved as Tests/fuzz/artifacts/<target>-crash-* (also
# leak-*, timeout-*, oom-*); the status is non-zero if there was any. What the fuzzer learnt is kept in
# .build/fuzz/<target>/ and reused by the next run. Replay one input:
#   SWCCL_FUZZ_TARGET=<target> Tests/fuzz/.build/release/swccl-fuzz <file>
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${1:-60}
shift || true
cd "$here"
echo "== building the fuzz harness (libFuzzer + AddressSanitizer)"
# SwiftPM passes -sanitize=fuzzer and -sanitize=address to swiftc as two flags, and the last one wins: the
# Swift code would get AddressSanitizer but no coverage. The combined flag, last, gives both.
swift build -c release --sanitize=fuzzer --sanitize=address -Xswiftc -sanitize=fuzzer,address 2>&1 | grep -vE "Cannot export local symbol '__asan_extra_spill_area'" | tail -n 3
bin="$here/.build/release/swccl-fuzz"
[ -x "$bin" ] || { echo "build failed"; exit 1; }
mkdir -p corpus artifacts
SWCCL_FUZZ_SEEDS="$here/corpus" "$bin" >/dev/null 2>&1 || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(bootstrap-hello rendezvous-answer oob mesh-hello tcp-stream notice shm-slot verbs unique-id)
status=0
summary=()
total_runs=0
for t in "${targets[@]}"; do
  work="$root/.build/fuzz/$t"
  mkdir -p "$work" "corpus/$t"
  log="$root/.build/fuzz/$t.log"
  before=$(ls artifacts | wc -l)
  echo "== $t: ${seconds} s"
  SWCCL_FUZZ_TARGET=$t "$bin" "$work" "corpus/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=64 \
      -print_final_stats=1 -artifact_prefix="artifacts/$t-" >"$log" 2>&1
  rc=$?
  after=$(ls artifacts | wc -l)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  done_line=$(grep -E "^#[0-9]+[[:space:]]+(DONE|INITED|NEW|REDUCE|pulse)" "$log" | tail -n 1)
  cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$done_line"); ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$done_line")
  corp=$(sed -nE 's/.*corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$done_line")
  found=$((after - before))
  line="$t: ${runs:-0} runs in ${seconds} s, cov ${cov:-?} ft ${ft:-?}, corpus ${corp:-?}, $found new artifact(s)"
  if [ $rc -ne 0 ] || [ $found -gt 0 ]; then
    status=1
    line="$line: FOUND (exit $rc; $(grep -m1 -E "ERROR: |Fatal error|SUMMARY" "$log"); log $log)"
  fi
  echo "   $line"
  summary+=("$line")
  total_runs=$((total_runs + ${runs:-0}))
done
echo "== summary"
for l in "${summary[@]}"; do echo "   $l"; done
echo "fuzz: ${#targets[@]} target(s), $total_runs runs, $([ $status -eq 0 ] && echo "nothing found" || echo "FINDINGS in Tests/fuzz/artifacts")"
exit $status
