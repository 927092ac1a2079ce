#!/usr/bin/env python3
"""torch's own generic distributed tests against a backend: `swccl` (registered as a plugin) or `gloo`.

    python Tests/python/torch_suite.py run --backend swccl [--gates gloo] [--world-size 3] [--slice ci]
                                        [-k PATTERN ...] [--json FILE] [--test-timeout S] [--quiet]
    python Tests/python/torch_suite.py compare SWCCL.json GLOO.json     (the table of docs/PYTORCH.md)
    python Tests/python/torch_suite.py list                             (every test name)

Runs `DistributedTest._DistTestBase` of torch/testing/_internal/distributed/distributed_test.py (shipped
in the torch wheel) the way torch's test/distributed/test_distributed_spawn.py does: a test class
`TestDistBackend + _DistTestBase`, each test in WORLD_SIZE fresh processes (multiprocessing spawn), the
process group made with init_method=file://, BACKEND/WORLD_SIZE/TEMP_DIR/INIT_METHOD set as it expects.
A plugin backend is gated through `DistTestCases.backend_feature[...]`: "swccl" is added to the
"plugin", "ddp" and "subgroup" sets (what it implements on CPU) before distributed_test is imported;
tests written for one named backend (`BACKEND != "gloo"`, "nccl", CUDA) skip themselves as they do for
any other backend; receive-from-any-source is declared missing through skip_collective, as for nccl.
With `--gates gloo` the gates and test bodies see BACKEND=gloo while every default group is made with
--backend: exactly the tests Gloo runs (a same-tests comparison; see KNOWN for what that costs).

Every test ends as pass, fail or skip (with its reason, first line); `--json` writes them with the time
each took; the summary line reads "N passed, M failed, K skipped". Exit status 1 if any failed, except
tests listed in KNOWN below with a one-line explanation (they are reported as "known" and also counted
as failures in the figures). `--slice ci` runs a representative few (collectives of every kind, async,
subgroups, DDP) that CI runs in a few minutes; the full run is `run` without --slice.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))

# -- what the test module reads at import: set before importing it (the spawned ranks inherit it) --
if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "run":
    _argv = sys.argv[2:]
    _be = _argv[_argv.index("--backend") + 1] if "--backend" in _argv else "swccl"
    _ws = _argv[_argv.index("--world-size") + 1] if "--world-size" in _argv else "3"
    _to = _argv[_argv.index("--test-timeout") + 1] if "--test-timeout" in _argv else "180"
    _gates = _argv[_argv.index("--gates") + 1] if "--gates" in _argv else _be
    os.environ["SUITE_BACKEND"] = _be
    os.environ["BACKEND"] = _gates  # what distributed_test's gates and test bodies see
    os.environ["WORLD_SIZE"] = _ws
    os.environ["DISTRIBUTED_TESTS_DEFAULT_TIMEOUT"] = _to
os.environ.setdefault("BACKEND", "swccl")
os.environ.setdefault("SUITE_BACKEND", os.environ["BACKEND"])
os.environ.setdefault("WORLD_SIZE", "3")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
os.environ.setdefault("SWCCL_SOCKET_IFNAME", "lo")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MASTER_ADDR", "127.0.0.1")

import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

import torch  # noqa: E402,F401
import torch.distributed as dist  # noqa: E402
import swccl.torch  # noqa: E402,F401  (registers "swccl")
from torch.testing._internal.common_distributed import DistTestCases, initialize_temp_directories  # noqa: E402

if os.environ["BACKEND"] == "swccl":
    for _feature in ("plugin", "ddp", "subgroup"):
        DistTestCases.backend_feature[_feature].add("swccl")
    # What torch provides to say a collective is not implemented (as for nccl): recv from any source.
    DistTestCases.skip_collective["sendrecv anysource"].add("swccl")

# TEMP_DIR must exist (with barrier/) before distributed_test is imported; TestDistBackend.setUp makes
# a fresh one per test.
if "TEMP_DIR" not in os.environ:
    initialize_temp_directories()

from torch.testing._internal.distributed.distributed_test import DistributedTest, TestDistBackend  # noqa: E402




class TestDistBackendWithSpawn(TestDistBackend, DistributedTest._DistTestBase):
    """test_distributed_spawn.py's class. The ranks start from a fork server that imported torch and
    this module once (each test's processes start in ~0.1 s instead of importing torch for seconds;
    the library is not loaded there: swccl loads it at the first group). What the spawned ranks would
    inherit from the environment per test (TEMP_DIR) is passed along and set in each rank."""

    def setUp(self):
        super().setUp()
        import torch.multiprocessing as tmp
        self._start_processes(tmp.get_context(_START_METHOD).Process)

    def _start_processes(self, proc):
        self.processes = []
        for rank in range(int(self.world_size)):
            parent_conn, child_conn = torch.multiprocessing.Pipe()
            p = proc(target=self.__class__._run, name=f"process {rank}",
                     args=(rank, self._current_test_name(), self.file_name, child_conn),
                     kwargs={"fake_pg": False, "env": {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}})
            p.start()
            self.pid_to_pipe[p.pid] = parent_conn
            self.processes.append(p)

    @classmethod
    def _run(cls, rank, test_name, file_name, pipe, **kwargs):
        os.environ.update(kwargs.pop("env", {}))
        real = os.environ["SUITE_BACKEND"]
        if real != os.environ["BACKEND"]:
            # --gates: the tests and their gates see BACKEND (e.g. gloo), every process group made
            # with that name is made with the real backend (new_group(backend="gloo") stays Gloo).
            init = dist.init_process_group

            def init_process_group(*a, **k):
                if k.get("backend") == os.environ["BACKEND"]:
                    k["backend"] = real
                return init(*a, **k)
            dist.init_process_group = init_process_group
        super()._run(rank, test_name, file_name, pipe, **kwargs)


_START_METHOD = os.environ.get("SWCCL_SUITE_START", "forkserver")
_PASSED_ENV = ("TEMP_DIR", "INIT_METHOD", "MASTER_ADDR", "MASTER_PORT", "BACKEND", "SUITE_BACKEND", "WORLD_SIZE")


# -- the CI slice: a representative few of every kind (a few minutes on 2 cores) --
CI_SLICE = [
    "test_all_reduce_max", "test_all_reduce_full_group_product", "test_all_reduce_sum_async",
    "test_all_reduce_sum_complex", "test_all_reduce_complex_unsupported_ops", "test_all_reduce_coalesced_full_group_sum",
    "test_broadcast", "test_reduce_product", "test_reduce_sum_twice", "test_all_gather", "test_all_gather_coalesced_simple",
    "test_all_gather_object_default_pg", "test_gather", "test_scatter", "test_scatter_object_list",
    "test_send_recv_with_tag", "test_isend", "test_irecv", "test_batch_isend_irecv_gloo", "test_get_future",
    "test_barrier_full_group", "test_barrier_timeout_full_group", "test_monitored_barrier_gloo",
    "test_get_rank_size_group", "test_destroy_group", "test_DistributedDataParallelCPU",
    "test_DistributedDataParallel_requires_grad", "test_accumulate_gradients_no_sync_allreduce_with_then_hook",
    "test_grads_same_across_ranks_with_no_sync", "test_ddp_create_graph", "test_static_graph_api_cpu",
]

# Every test that fails with swccl, explained: name -> one line (why, and whether Gloo fails it too).
# From the full runs (docs/PYTORCH.md, "Torch's own tests"); a failure not listed here fails the run.
KNOWN = {
    "test_barrier_timeout_global": "re-initialises the default group on the same file:// store after destroying it "
                                   "and times out in this harness; Gloo fails it the same way",
    "test_get_backend": "--gates gloo only: asserts dist.get_backend() == 'gloo' (the name the gates see); "
                        "passes in the plugin run",
    "test_send_recv_any_source": "recv from any source is not supported (as NCCL; the plugin run skips it through "
                                 "skip_collective['sendrecv anysource'], as torch does for nccl); Gloo passes",
    "test_send_recv_any_source_autograd_profiler": "as test_send_recv_any_source",
    "test_send_recv_any_source_torch_profiler": "as test_send_recv_any_source",
    "test_sparse_all_reduce_sum": "sparse all-reduce is not supported (refused: 'is a sparse tensor'; the plugin "
                                  "run skips it, 'Only Gloo backend supports sparse all reduce'); Gloo passes",
    "test_ddp_logging_data_cpu": "with the C++ fast path only: DDP's C++ logger records ProcessGroup::getBackendName(), "
                                 "which torch makes 'custom' for every C++ backend registered from outside torch "
                                 "(dist.get_backend() is 'swccl'); passes with SWCCL_TORCH_NATIVE=0; Gloo passes",
}
QUIET = False


class _Result(unittest.TextTestResult):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.records = {}
        self._t0 = {}

    def startTest(self, test):
        self._t0[test.id()] = time.monotonic()
        super().startTest(test)

    def _rec(self, test, outcome, detail=""):
        name = test.id().rsplit(".", 1)[-1]
        lines = [ln.strip() for ln in str(detail).splitlines() if ln.strip()]
        # the innermost exception a rank raised ("ValueError: swccl: ..."), else the last line
        errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Failure)\b.*:", ln)
                  and not ln.startswith("RuntimeError: Process ")]
        line = (lines[0] if outcome == "skip" else errors[-1] if errors else lines[-1]) if lines else ""
        self.records[name] = {"outcome": outcome, "seconds": round(time.monotonic() - self._t0.get(test.id(), time.monotonic()), 2),
                              "detail": line[:300]}
        if not QUIET or outcome == "fail":
            print(f"  {outcome.upper():4s} {name} ({self.records[name]['seconds']} s){(': ' + line[:200]) if line else ''}", flush=True)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._rec(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._rec(test, "fail", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._rec(test, "fail", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._rec(test, "skip", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._rec(test, "pass", "expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._rec(test, "fail", "unexpected success")


def _label():
    real, gates = os.environ["SUITE_BACKEND"], os.environ["BACKEND"]
    return real if real == gates else f"{real} (under {gates}'s gates)"


def all_names():
    return sorted(n for n in dir(TestDistBackendWithSpawn) if n.startswith("test_"))


def run(args):
    global QUIET
    QUIET = args.quiet
    names = all_names()
    if args.slice == "ci":
        missing = [n for n in CI_SLICE if n not in names]
        if missing:
            print(f"note: not in this torch's suite: {missing}")
        names = [n for n in CI_SLICE if n in names]
    if args.k:
        names = [n for n in names if any(p in n for p in args.k)]
    if _START_METHOD == "forkserver":
        import torch.multiprocessing as tmp
        # By module name: Python 3.11's fork server ignores "__main__" (it looks for a preparation key
        # that no longer exists), so the ranks would import torch again. Importing this file as a
        # module there runs the set-up above (feature sets first, then distributed_test) once. The
        # server does not apply the parent's sys.path (3.11 ignores its sys_path argument): PYTHONPATH.
        os.environ["PYTHONPATH"] = os.pathsep.join([HERE, os.path.join(ROOT, "python")] +
                                                   ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
        tmp.get_context("forkserver").set_forkserver_preload([os.path.splitext(os.path.basename(__file__))[0]])
    suite = unittest.TestSuite(TestDistBackendWithSpawn(n) for n in names)
    print(f"torch {torch.__version__}: {len(names)} tests of DistributedTest._DistTestBase, backend "
          f"{_label()}, world size {os.environ['WORLD_SIZE']}", flush=True)
    t0 = time.monotonic()
    runner = unittest.TextTestRunner(stream=open(os.devnull, "w"), resultclass=_Result, verbosity=0)
    result = runner.run(suite)
    rec = result.records
    counts = {k: sum(1 for r in rec.values() if r["outcome"] == k) for k in ("pass", "fail", "skip")}
    unexplained = [n for n, r in rec.items() if r["outcome"] == "fail" and n not in KNOWN]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": _label(), "world_size": int(os.environ["WORLD_SIZE"]),
                       "torch": torch.__version__, "seconds": round(time.monotonic() - t0, 1), "tests": rec}, f, indent=1, sort_keys=True)
    for n in sorted(rec):
        if rec[n]["outcome"] == "fail":
            print(f"  failed: {n}: {KNOWN.get(n, rec[n]['detail'])}{' (known)' if n in KNOWN else ''}")
    print(f"torch suite, backend {_label()}: {counts['pass']} passed, {counts['fail']} failed "
          f"({len(unexplained)} unexplained), {counts['skip']} skipped in {time.monotonic() - t0:.0f} s", flush=True)
    return 1 if unexplained else 0


def compare(a_path, b_path):
    a, b = json.load(open(a_path)), json.load(open(b_path))
    ta, tb = a["tests"], b["tests"]
    na, nb = a["backend"], b["backend"]
    out = []
    for k in ("pass", "fail", "skip"):
        out.append(f"| {k} | {sum(1 for r in ta.values() if r['outcome'] == k)} | {sum(1 for r in tb.values() if r['outcome'] == k)} |")
    print(f"| outcome | {na} | {nb} |\n|---|---|---|\n" + "\n".join(out))
    print()
    print(f"| test | {na} | {nb} | {na}'s reason |\n|---|---|---|---|")
    for n in sorted(set(ta) | set(tb)):
        oa, ob = ta.get(n, {}).get("outcome", "-"), tb.get(n, {}).get("outcome", "-")
        if oa != ob or oa == "fail":
            why = KNOWN.get(n) or ta.get(n, {}).get("detail", "")
            print(f"| {n} | {oa} | {ob} | {why[:160]} |")


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--backend", default="swccl")
    r.add_argument("--world-size", default="3")
    r.add_argument("--test-timeout", default="180")
    r.add_argument("--gates", help="the backend name distributed_test's gates see (e.g. gloo: run exactly the "
                   "tests Gloo runs, every default group made with --backend)")
    r.add_argument("--slice", choices=["ci"])
    r.add_argument("-k", action="append")
    r.add_argument("--quiet", action="store_true", help="print only failed tests and the summary")
    r.add_argument("--json")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    sub.add_parser("list")
    args = ap.parse_args()
    if args.cmd == "list":
        print("\n".join(all_names()))
        return 0
    if args.cmd == "compare":
        compare(args.a, args.b)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
