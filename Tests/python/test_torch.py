#!/usr/bin/env python3
"""Multi-process tests of the torch.distributed backend "swccl" (python/swccl/torch.py), real torch.

    python Tests/python/test_torch.py SCENARIO NRANKS      (python: one with torch, e.g. ~/.cache/swccl/torch-venv)
    python Tests/python/test_torch.py all [NRANKS ...]      (every scenario, on 2 and 3 ranks by default)

Starts NRANKS processes of itself, waits for all (with a deadline) and exits 0 only if every rank
passed. Inputs are small integers made from (seed, rank, index), so every result is exact (0 ulp; AVG
of floats within rounding). Scenarios:
  ops        every ProcessGroup operation torch calls on CPU tensors, through torch.distributed's own
             functions, on float32/float64/float16/bfloat16/int8/uint8/int32/int64/float8/bool: all_reduce
             (SUM, PRODUCT, MIN, MAX, AVG, PREMUL_SUM) and its coalesced form, all_gather (list, also
             non-contiguous lists), all_gather_into_tensor, reduce_scatter (list), reduce_scatter_tensor,
             broadcast, reduce, gather, scatter, all_to_all (list, uneven sizes), all_to_all_single (even
             and uneven splits), send/recv, isend/irecv, batch_isend_irecv, barrier, monitored_barrier,
             _coalescing_manager; non-contiguous views are refused naming the tensor; BAND refused
  init-env, init-tcp, init-store, init-multi   init_process_group("swccl") with env:// (torchrun's
             variables), init_method="tcp://...", a TCPStore passed explicitly, "cpu:swccl"
  async      async_op=True: several operations in flight complete in order; is_completed; wait(timeout);
             get_future chained with then() is set exactly once with the output tensors
  subgroups  new_group (odd and even members, nested use with the world group) and split_group
  dead       the last rank is killed (SIGKILL) with operations in flight: every pending Work of every
             other rank fails (wait and future) with an error naming the dead rank, no hang; abort works
  errors     bad input: a CUDA-less device tensor refusal, non-contiguous, wrong sizes, dtype SwiftCCL
             cannot reduce, bitwise ops — clear errors, the group still usable afterwards
  native     which path serves the group: the C++ fast path (python/swccl/csrc) unless SWCCL_TORCH_NATIVE=0
             (then the Python backend alone); with it, the synchronous one-tensor collectives take the
             direct path (its counter rises by one per call) with exact results for every dtype and op,
             the rest goes to the Python backend, and synchronous direct calls mixed with async calls
             (which the Python backend runs on the group's stream) keep their order and results

Every scenario runs on whichever path the environment selects (SWCCL_TORCH_NATIVE=0: the Python backend);
scripts/torch-tests.sh runs them with the C++ fast path and once more (2 ranks) without it.
"""
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

TIMEOUT = datetime.timedelta(seconds=20)
SCENARIOS = ["ops", "init-env", "init-tcp", "init-store", "init-multi", "async", "subgroups", "errors", "dead", "native"]


def fail(msg):
    print(f"[rank {os.environ.get('RANK')}] FAIL {msg}", flush=True)
    sys.stdout.flush()
    os._exit(1)


def expect(cond, msg):
    if not cond:
        fail(msg)


def raises(exc_types, fn, contains=None, what=""):
    try:
        fn()
    except exc_types as e:
        if contains and not all(c in str(e) for c in ([contains] if isinstance(contains, str) else contains)):
            fail(f"{what}: error {e!r} does not mention {contains!r}")
        return e
    fail(f"{what}: no error raised")


def vals(seed, rank, count, dtype, mod=5):
    """Small integers (1..mod) from (seed, rank, index): exact in every dtype and order."""
    import torch
    i = torch.arange(count, dtype=torch.int64)
    v = (i * 7 + rank * 3 + seed) % mod + 1
    if dtype == torch.bool:
        return (v % 2).bool()
    return v.to(dtype)


def init(scenario, rank, n):
    import torch.distributed as dist
    import swccl.torch  # noqa: F401  registers "swccl"
    kind = {"init-env": "env", "init-tcp": "tcp", "init-store": "store", "init-multi": "multi"}.get(scenario, "file")
    if kind == "env":
        dist.init_process_group("swccl", timeout=TIMEOUT)  # RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    elif kind == "tcp":
        dist.init_process_group("swccl", init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}",
                                rank=rank, world_size=n, timeout=TIMEOUT)
    elif kind == "store":
        store = dist.TCPStore("127.0.0.1", int(os.environ["MASTER_PORT"]), n, rank == 0, timeout=TIMEOUT)
        dist.init_process_group("swccl", store=store, rank=rank, world_size=n, timeout=TIMEOUT)
    elif kind == "multi":
        dist.init_process_group("cpu:swccl", init_method=f"file://{os.environ['PYSWCCL_FILE']}",
                                rank=rank, world_size=n, timeout=TIMEOUT)
    else:
        store = dist.FileStore(os.environ["PYSWCCL_FILE"], n)
        dist.init_process_group("swccl", store=store, rank=rank, world_size=n, timeout=TIMEOUT)
    expect(dist.get_backend() in ("swccl", "cpu:swccl"), f"backend is {dist.get_backend()}")
    expect(dist.get_rank() == rank and dist.get_world_size() == n, "rank and size")


def scenario_ops(rank, n):
    import torch
    import torch.distributed as dist
    R = dist.ReduceOp
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
              torch.int32, torch.int64, torch.float8_e4m3fn, torch.float8_e5m2, torch.bool]
    for seed, dtype in enumerate(dtypes):
        fp8 = dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
        calc = torch.float64 if dtype != torch.bool else torch.bool
        for count in (0, 1, 7, 1000, 65537):
            mod = 2 if fp8 else 5
            ins = [vals(seed, r, count, calc if dtype != torch.bool else torch.bool, mod) for r in range(n)]
            if fp8:
                ins = [t.to(dtype).to(torch.float64) for t in ins]
            ops = [("sum", R.SUM), ("max", R.MAX), ("min", R.MIN)]
            if count <= 1000:
                ops.append(("prod", R.PRODUCT))
            if dtype.is_floating_point:
                ops.append(("avg", R.AVG))
                ops.append(("premul", dist._make_nccl_premul_sum(2.0) if hasattr(dist, "_make_nccl_premul_sum")
                            else torch._C._distributed_c10d._make_nccl_premul_sum(2.0)))
            for name, op in ops:
                if dtype == torch.bool:
                    st = torch.stack(ins).to(torch.uint8)
                    want = {"sum": st.max(0).values, "max": st.max(0).values, "min": st.min(0).values,
                            "prod": st.min(0).values}[name].bool() if count else torch.zeros(0, dtype=torch.bool)
                else:
                    st = torch.stack(ins)
                    want = {"sum": st.sum(0), "max": st.max(0).values if count else st.sum(0),
                            "min": st.min(0).values if count else st.sum(0), "prod": st.prod(0),
                            "avg": st.sum(0) / n, "premul": st.sum(0) * 2}[name]
                if fp8 and name in ("prod", "avg", "premul"):
                    continue  # fp8 sums of 0/1 are exact; products and averages of fp8 are not tested here
                t = ins[rank].to(dtype).clone()
                dist.all_reduce(t, op=op)
                got = t.to(torch.float64) if dtype != torch.bool else t
                w = want.to(dtype).to(torch.float64) if dtype != torch.bool else want
                if name == "avg":
                    ok = torch.allclose(got, w, rtol=1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6)
                else:
                    ok = torch.equal(got, w)
                expect(ok, f"all_reduce {name} {dtype} count {count}: got {got[:8].tolist()} want {w[:8].tolist()}")
    # all_reduce_coalesced (through _coalescing_manager) and allreduce_coalesced directly.
    ts = [vals(1, rank, c, torch.float32) for c in (3, 0, 100)]
    with dist._coalescing_manager(async_ops=True) as cm:
        for t in ts:
            dist.all_reduce(t)
    cm.wait()
    for c, t in zip((3, 0, 100), ts):
        expect(torch.equal(t, sum(vals(1, r, c, torch.float32) for r in range(n))), f"coalesced all_reduce count {c}")
    ts = [vals(2, rank, c, torch.int32) for c in (5, 9)]
    dist.distributed_c10d._get_default_group().allreduce_coalesced(ts).wait()
    for c, t in zip((5, 9), ts):
        expect(torch.equal(t, sum(vals(2, r, c, torch.int32) for r in range(n))), "allreduce_coalesced")
    for dtype in (torch.float32, torch.bfloat16, torch.int64, torch.int16, torch.complex64, torch.bool):
        count = 33
        mk = (lambda r, d=dtype: vals(3, r, count, torch.float32).to(d)) if dtype != torch.complex64 else \
             (lambda r: torch.complex(vals(3, r, count, torch.float32), vals(4, r, count, torch.float32)))
        # all_gather (list), all_gather_into_tensor
        outs = [torch.empty(count, dtype=dtype) for _ in range(n)]
        dist.all_gather(outs, mk(rank))
        expect(all(torch.equal(outs[r], mk(r)) for r in range(n)), f"all_gather {dtype}")
        big = torch.full((n * count + 3,), 0, dtype=dtype) if dtype != torch.bool else torch.zeros(n * count + 3, dtype=dtype)
        noncontig = list(big[3:].view(n, count).unbind(0))  # back to back: zero-copy path
        dist.all_gather(noncontig, mk(rank))
        expect(all(torch.equal(noncontig[r], mk(r)) for r in range(n)), f"all_gather into views {dtype}")
        out = torch.empty(n * count, dtype=dtype)
        dist.all_gather_into_tensor(out, mk(rank))
        expect(torch.equal(out, torch.cat([mk(r) for r in range(n)])), f"all_gather_into_tensor {dtype}")
        # broadcast from every root
        for root in range(n):
            t = mk(rank)
            dist.broadcast(t, src=root)
            expect(torch.equal(t, mk(root)), f"broadcast {dtype} root {root}")
        # gather / scatter
        root = n - 1
        g = [torch.empty(count, dtype=dtype) for _ in range(n)] if rank == root else None
        dist.gather(mk(rank), g, dst=root)
        if rank == root:
            expect(all(torch.equal(g[r], mk(r)) for r in range(n)), f"gather {dtype}")
        s = torch.empty(count, dtype=dtype)
        dist.scatter(s, [mk(100 + r) for r in range(n)] if rank == 0 else None, src=0)
        expect(torch.equal(s, mk(100 + rank)), f"scatter {dtype}")
        # all_to_all (list; uneven sizes: rank i sends i+j+1 elements to rank j)
        ins = [torch.arange(rank + j + 1).to(dtype) + (rank * 10 + j if dtype != torch.bool else 0) for j in range(n)]
        if dtype == torch.bool:
            ins = [torch.ones(rank + j + 1, dtype=dtype) for j in range(n)]
        outs = [torch.empty(i + rank + 1, dtype=dtype) for i in range(n)]
        dist.all_to_all(outs, ins)
        for i in range(n):
            w = torch.arange(i + rank + 1).to(dtype) + (i * 10 + rank if dtype != torch.bool else 0)
            if dtype == torch.bool:
                w = torch.ones(i + rank + 1, dtype=dtype)
            expect(torch.equal(outs[i], w), f"all_to_all {dtype} from {i}")
    # reductions over lists / tensors with several dtypes
    for dtype in (torch.float32, torch.bfloat16, torch.int32, torch.float16):
        count = 17
        full = [vals(5, r, n * count, dtype) for r in range(n)]
        want = sum(f.to(torch.float64) for f in full).to(dtype)
        out = torch.empty(count, dtype=dtype)
        dist.reduce_scatter_tensor(out, full[rank])
        expect(torch.equal(out, want[rank * count:(rank + 1) * count]), f"reduce_scatter_tensor {dtype}")
        out = torch.empty(count, dtype=dtype)
        dist.reduce_scatter(out, list(full[rank].clone().chunk(n)), op=dist.ReduceOp.MAX)
        wmax = torch.stack(full).max(0).values
        expect(torch.equal(out, wmax[rank * count:(rank + 1) * count]), f"reduce_scatter (list, back to back) {dtype}")
        out = torch.empty(count, dtype=dtype)
        dist.reduce_scatter(out, [c.clone() for c in full[rank].chunk(n)])
        expect(torch.equal(out, want[rank * count:(rank + 1) * count]), f"reduce_scatter (separate list) {dtype}")
        for root in range(n):
            t = full[rank].clone()
            dist.reduce(t, dst=root)
            if rank == root:
                expect(torch.equal(t, want), f"reduce {dtype} root {root}")
    # all_to_all_single: even, and uneven splits (rank i sends (i + j) % 3 + 1 rows of 2 to rank j)
    for dtype in (torch.float32, torch.bfloat16, torch.int64):
        x = (torch.arange(n * 4, dtype=torch.float32) + 100 * rank).to(dtype)
        y = torch.empty(n * 4, dtype=dtype)
        dist.all_to_all_single(y, x)
        w = torch.cat([(torch.arange(4, dtype=torch.float32) + 4 * rank + 100 * i).to(dtype) for i in range(n)])
        expect(torch.equal(y, w), f"all_to_all_single even {dtype}")
        send_rows = [(rank + j) % 3 + 1 for j in range(n)]
        recv_rows = [(i + rank) % 3 + 1 for i in range(n)]
        x = torch.cat([torch.full((send_rows[j], 2), float(rank * 10 + j)) for j in range(n)]).to(dtype)
        y = torch.full((sum(recv_rows), 2), -1.0).to(dtype)
        dist.all_to_all_single(y, x, output_split_sizes=recv_rows, input_split_sizes=send_rows)
        w = torch.cat([torch.full((recv_rows[i], 2), float(i * 10 + rank)) for i in range(n)]).to(dtype)
        expect(torch.equal(y, w), f"all_to_all_single uneven {dtype}: {y.tolist()} vs {w.tolist()}")
    # send / recv (blocking), isend / irecv, batch_isend_irecv (a ring, both directions, large messages)
    nxt, prv = (rank + 1) % n, (rank - 1) % n
    for count in (5, 300000):
        got = torch.empty(count)
        if rank % 2 == 0:
            dist.send(vals(6, rank, count, torch.float32), nxt)
            dist.recv(got, prv)
        else:
            dist.recv(got, prv)
            dist.send(vals(6, rank, count, torch.float32), nxt)
        expect(torch.equal(got, vals(6, prv, count, torch.float32)), f"send/recv ring {count}")
        a, b = torch.empty(count), torch.empty(count)
        reqs = dist.batch_isend_irecv([dist.P2POp(dist.isend, vals(7, rank, count, torch.float32), nxt),
                                       dist.P2POp(dist.isend, vals(8, rank, count, torch.float32), prv),
                                       dist.P2POp(dist.irecv, a, prv), dist.P2POp(dist.irecv, b, nxt)])
        for q in reqs:
            q.wait()
        expect(torch.equal(a, vals(7, prv, count, torch.float32)) and torch.equal(b, vals(8, nxt, count, torch.float32)),
               f"batch_isend_irecv {count}")
        got = torch.empty(count)
        if rank == 0:
            q = dist.isend(vals(9, 0, count, torch.float32), n - 1)
            q.wait()
        elif rank == n - 1:
            q = dist.irecv(got, 0)
            q.wait()
            expect(torch.equal(got, vals(9, 0, count, torch.float32)), "isend/irecv")
    dist.barrier()
    dist.monitored_barrier(timeout=datetime.timedelta(seconds=10), wait_all_ranks=True)
    # _coalescing_manager around all_gather_into_tensor / reduce_scatter_tensor (the FSDP pattern)
    outs = [torch.empty(n * 6) for _ in range(2)]
    with dist._coalescing_manager(async_ops=True) as cm:
        for k, o in enumerate(outs):
            dist.all_gather_into_tensor(o, vals(10 + k, rank, 6, torch.float32))
    cm.wait()
    for k, o in enumerate(outs):
        expect(torch.equal(o, torch.cat([vals(10 + k, r, 6, torch.float32) for r in range(n)])), "coalesced all_gather_into_tensor")
    rs = [torch.empty(4) for _ in range(2)]
    with dist._coalescing_manager(async_ops=True) as cm:
        for k, o in enumerate(rs):
            dist.reduce_scatter_tensor(o, vals(20 + k, rank, 4 * n, torch.float32))
    cm.wait()
    for k, o in enumerate(rs):
        want = sum(vals(20 + k, r, 4 * n, torch.float32) for r in range(n))[rank * 4:(rank + 1) * 4]
        expect(torch.equal(o, want), "coalesced reduce_scatter_tensor")


def scenario_init(rank, n):
    import torch
    import torch.distributed as dist
    t = torch.full((10,), float(rank + 1))
    dist.all_reduce(t)
    expect(torch.all(t == n * (n + 1) / 2).item(), "all_reduce after init")
    pg = dist.distributed_c10d._get_default_group()
    expect("swccl" in pg.name() or "swccl" in dist.get_backend(), f"backend name {pg.name()}")


def scenario_async(rank, n):
    import torch
    import torch.distributed as dist
    # Many operations in flight, issued before any wait: they complete in order with the right values.
    xs = [vals(i, rank, 1 << 16, torch.float32) for i in range(12)]
    works = [dist.all_reduce(x, async_op=True) for x in xs]
    calls = []
    futs = []
    for i, w in enumerate(works):
        f = w.get_future()
        futs.append(f.then(lambda fut, i=i: calls.append(i) or fut.value()[0].sum().item()))
    expect(works[-1].wait(datetime.timedelta(seconds=20)), "wait returned True")
    for w in works:
        w.wait()
        expect(w.is_completed(), "is_completed after wait")
    for i, x in enumerate(xs):
        expect(torch.equal(x, sum(vals(i, r, 1 << 16, torch.float32) for r in range(n))), f"async all_reduce {i}")
    sums = [f.wait() for f in futs]
    expect(sums == [x.sum().item() for x in xs], "future values are the outputs")
    expect(sorted(calls) == list(range(12)) and len(calls) == 12, f"each future completed exactly once ({calls})")
    expect(calls == list(range(12)), f"futures completed in issue order ({calls})")
    # The call returns while the collective runs: rank 0 issues, and its work is not complete until the
    # others join (they join after a pause of at least 0.5 s).
    t = torch.ones(1000)
    if rank == 0:
        w = dist.all_reduce(t, async_op=True)
        expect(not w.is_completed(), "an all_reduce with peers still away is not complete")
        try:
            w.wait(datetime.timedelta(milliseconds=100))
            fail("wait(100 ms) returned while the peers were away")
        except RuntimeError as e:
            expect("did not complete within" in str(e), f"wait timeout error: {e}")
        w.wait()
    else:
        time.sleep(0.5)
        w = dist.all_reduce(t, async_op=True)
        w.wait()
    expect(torch.all(t == n).item(), "all_reduce after a wait timeout")
    # Mixed kinds in flight, then one sync call: all in order.
    a = vals(1, rank, 100, torch.float32)
    g = torch.empty(n * 100)
    b = vals(2, rank, 100, torch.float32)
    w1 = dist.all_reduce(a, async_op=True)
    w2 = dist.all_gather_into_tensor(g, vals(3, rank, 100, torch.float32), async_op=True)
    w3 = dist.broadcast(b, src=n - 1, async_op=True)
    c = vals(4, rank, 100, torch.float32)
    dist.all_reduce(c)
    expect(w1.is_completed() and w2.is_completed() and w3.is_completed(), "earlier works complete before a later sync call returns")
    expect(torch.equal(a, sum(vals(1, r, 100, torch.float32) for r in range(n))), "mixed: all_reduce")
    expect(torch.equal(g, torch.cat([vals(3, r, 100, torch.float32) for r in range(n)])), "mixed: all_gather")
    expect(torch.equal(b, vals(2, n - 1, 100, torch.float32)), "mixed: broadcast")
    expect(torch.equal(c, sum(vals(4, r, 100, torch.float32) for r in range(n))), "mixed: sync all_reduce")


def scenario_subgroups(rank, n):
    import torch
    import torch.distributed as dist
    evens = [r for r in range(n) if r % 2 == 0]
    odds = [r for r in range(n) if r % 2 == 1]
    ge = dist.new_group(evens)
    go = dist.new_group(odds) if odds else None
    mine, members = (ge, evens) if rank % 2 == 0 else (go, odds)
    for i in range(3):
        t = vals(i, rank, 50, torch.float32)
        dist.all_reduce(t, group=mine)
        expect(torch.equal(t, sum(vals(i, r, 50, torch.float32) for r in members)), f"subgroup all_reduce {i}")
        w = torch.full((4,), float(rank))
        dist.all_reduce(w)  # the world group, interleaved
        expect(torch.all(w == n * (n - 1) / 2).item(), "world all_reduce between subgroup calls")
    # broadcast in the subgroup from its last member (a global rank)
    t = torch.full((8,), float(rank))
    dist.broadcast(t, src=members[-1], group=mine)
    expect(torch.all(t == members[-1]).item(), "subgroup broadcast")
    # split_group: ranks {0, n-1} and the rest
    parts = [[0, n - 1]] + ([list(range(1, n - 1))] if n > 2 else [])
    sg = dist.split_group(split_ranks=parts, timeout=TIMEOUT)
    my = next(p for p in parts if rank in p)
    expect(sg is not None, "split_group gave this rank a group")
    t = torch.full((6,), float(rank + 1))
    dist.all_reduce(t, group=sg)
    expect(torch.all(t == sum(r + 1 for r in my)).item(), f"split_group all_reduce ({my})")
    dist.destroy_process_group(sg)
    t = torch.ones(3)
    dist.all_reduce(t)
    expect(torch.all(t == n).item(), "world group after destroying a subgroup")


def scenario_errors(rank, n):
    import torch
    import torch.distributed as dist
    t = torch.arange(20, dtype=torch.float32).view(4, 5).t()
    raises((ValueError, RuntimeError), lambda: dist.all_reduce(t), ["not contiguous", ".contiguous()"], "non-contiguous")
    m = torch.empty(4, device="meta")
    if native_expected():
        # A C++ backend never sees a meta tensor: torch's dispatcher runs its meta kernel (for tracing)
        # and returns, as for Gloo and NCCL.
        dist.all_reduce(m)
    else:
        raises((ValueError, RuntimeError, NotImplementedError), lambda: dist.all_reduce(m), ["meta", ".cpu()"], "meta device")
    raises((ValueError, RuntimeError), lambda: dist.all_reduce(torch.ones(4, dtype=torch.int32), op=dist.ReduceOp.BAND),
           "BAND is not supported", "BAND")
    raises((TypeError, RuntimeError), lambda: dist.all_reduce(torch.ones(4, dtype=torch.int16)), "int16", "int16 reduction")
    raises((ValueError, RuntimeError), lambda: dist.all_gather_into_tensor(torch.empty(3), torch.ones(2)), "must hold", "all_gather sizes")
    raises((ValueError, RuntimeError), lambda: dist.all_to_all_single(torch.empty(n), torch.ones(n), [1] * n, [2] * n),
           "split_sizes", "all_to_all_single splits")
    raises((ValueError, RuntimeError), lambda: dist.all_reduce(torch.ones(2, dtype=torch.bool), op=dist.ReduceOp.AVG), "bool", "bool avg")
    x = torch.ones(9)
    dist.all_reduce(x)
    expect(torch.all(x == n).item(), "usable after bad calls")
    # ranks that disagree (different counts): every rank gets an error, none hangs
    y = torch.ones(100 if rank == 0 else 101)
    e = raises((RuntimeError,), lambda: dist.all_reduce(y), None, "mismatched counts")
    print(f"[rank {rank}] mismatch error as expected ({type(e).__name__}): {e}", flush=True)
    expect("rank" in str(e) and "\n" not in str(e), "the error names a rank, on one line")
    expect(isinstance(e, getattr(dist, "DistBackendError", RuntimeError)), f"a DistBackendError ({type(e)})")


def native_expected():
    return os.environ.get("SWCCL_TORCH_NATIVE", "1") != "0"


def scenario_native(rank, n):
    import torch
    import torch.distributed as dist
    import swccl.torch as st
    R = dist.ReduceOp
    pg = dist.distributed_c10d._get_default_group()
    gate = st.native_gate()
    py = st.python_backend()
    expect(isinstance(py, st.ProcessGroupSwccl), f"python_backend() is the group's ProcessGroupSwccl ({py!r})")
    if not native_expected():
        expect(gate is None and isinstance(pg, st.ProcessGroupSwccl),
               f"SWCCL_TORCH_NATIVE=0: the Python backend is the group itself ({pg!r}, gate {gate})")
        print(f"[rank {rank}] native: the Python backend serves the group (SWCCL_TORCH_NATIVE=0)", flush=True)
        return
    expect(gate is not None, "the C++ fast path serves the default group (is it built? python -m swccl._torch_native build)")
    expect(not isinstance(pg, st.ProcessGroupSwccl) and pg._get_backend(torch.device("cpu")).name() == "swccl",
           "torch calls the C++ backend")

    def direct(fn, what, calls=1):
        d0, g0 = gate.direct, gate.delegated
        out = fn()
        expect(gate.direct - d0 == calls and gate.delegated == g0,
               f"{what}: the direct path took {gate.direct - d0} of {calls} calls ({gate.delegated - g0} delegated)")
        return out

    # Every reduction dtype and op of the direct path, exact.
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int32,
              torch.int64, torch.float8_e4m3fn, torch.bool]
    for seed, dtype in enumerate(dtypes):
        fp8 = dtype == torch.float8_e4m3fn
        ins = [vals(seed, r, 37, torch.float64 if dtype != torch.bool else torch.bool, 2 if fp8 else 5) for r in range(n)]
        ops = [("sum", R.SUM), ("max", R.MAX), ("min", R.MIN)] + ([] if fp8 else [("prod", R.PRODUCT)])
        if dtype.is_floating_point and not fp8:
            ops.append(("avg", R.AVG))
        for name, op in ops:
            if dtype == torch.bool:
                st_ = torch.stack(ins).to(torch.uint8)
                want = (st_.max(0).values if name in ("sum", "max") else st_.min(0).values).bool()
            else:
                st_ = torch.stack(ins)
                want = {"sum": st_.sum(0), "max": st_.max(0).values, "min": st_.min(0).values, "prod": st_.prod(0),
                        "avg": st_.sum(0) / n}[name].to(dtype)
            t = ins[rank].to(dtype).clone()
            direct(lambda: dist.all_reduce(t, op=op), f"all_reduce {name} {dtype}")
            ok = torch.allclose(t.double(), want.double(), rtol=1e-2) if name == "avg" else torch.equal(t, want)
            expect(ok, f"direct all_reduce {name} {dtype}: {t[:6].tolist()} vs {want[:6].tolist()}")
    # The other direct operations (data-moving ones on a dtype SwiftCCL cannot reduce too).
    for dtype in (torch.float32, torch.bfloat16, torch.int64, torch.complex64, torch.int16):
        mk = (lambda r, c, d=dtype: vals(7, r, c, torch.float32).to(d))
        root = n - 1
        t = mk(rank, 19)
        direct(lambda: dist.broadcast(t, src=root), f"broadcast {dtype}")
        expect(torch.equal(t, mk(root, 19)), f"direct broadcast {dtype}")
        out = torch.empty(n * 5, dtype=dtype)
        direct(lambda: dist.all_gather_into_tensor(out, mk(rank, 5)), f"all_gather_into_tensor {dtype}")
        expect(torch.equal(out, torch.cat([mk(r, 5) for r in range(n)])), f"direct all_gather_into_tensor {dtype}")
        if dtype in (torch.complex64, torch.int16):
            continue
        full = [vals(8, r, 4 * n, torch.float64) for r in range(n)]
        o = torch.empty(4, dtype=dtype)
        direct(lambda: dist.reduce_scatter_tensor(o, full[rank].to(dtype)), f"reduce_scatter_tensor {dtype}")
        expect(torch.equal(o, sum(full)[rank * 4:(rank + 1) * 4].to(dtype)), f"direct reduce_scatter_tensor {dtype}")
        t = full[rank].to(dtype).clone()
        direct(lambda: dist.reduce(t, dst=root, op=R.MAX), f"reduce {dtype}")
        if rank == root:
            expect(torch.equal(t, torch.stack(full).max(0).values.to(dtype)), f"direct reduce {dtype}")
    direct(lambda: dist.barrier(), "barrier")
    # The Work of a direct call: completed, its future holds the outputs.
    t = torch.full((3,), float(rank + 1))
    opts = dist.AllreduceOptions()
    opts.asyncOp = False
    w = direct(lambda: pg.allreduce([t], opts), "pg.allreduce(asyncOp=False)")
    expect(w.is_completed() and w.wait() and torch.equal(w.get_future().wait()[0], t) and t[0].item() == n * (n + 1) / 2,
           "a direct call's Work is complete and its future holds the output")
    # What the direct path does not take goes to the Python backend.
    d0, g0 = gate.direct, gate.delegated
    w = dist.all_reduce(torch.ones(4), async_op=True)
    w.wait()
    dist.all_reduce(torch.ones(4), op=dist._make_nccl_premul_sum(2.0) if hasattr(dist, "_make_nccl_premul_sum")
                    else torch._C._distributed_c10d._make_nccl_premul_sum(2.0))
    dist.all_gather([torch.empty(2) for _ in range(n)], torch.ones(2))
    expect(gate.direct == d0 and gate.delegated - g0 == 3,
           f"async, PREMUL_SUM and list calls go to the Python backend ({gate.direct - d0} direct, {gate.delegated - g0} delegated)")
    # Mixed: async calls (the Python backend, on the group's stream) and synchronous ones (direct when
    # nothing is in flight, else behind what is) on the same tensors: the order of the calls is the order
    # of the operations (SUM, MIN, MAX and a broadcast of locally changed values give other results in another order).
    x = [vals(20 + k, rank, 64, torch.float64) for k in range(4)]
    cur = [[vals(20 + k, r, 64, torch.float64) for r in range(n)] for k in range(4)]  # every rank's x[k]
    pending = {k: [] for k in range(4)}
    d0, g0 = gate.direct, gate.delegated
    for i in range(16):
        k, kind = i % 4, (i // 4 + i) % 4
        if kind == 0:    # async SUM
            pending[k].append(dist.all_reduce(x[k], async_op=True))
            cur[k] = [sum(cur[k])] * n
        elif kind == 1:  # sync MIN: direct when nothing is in flight, else behind what is
            dist.all_reduce(x[k], op=R.MIN)
            cur[k] = [torch.stack(cur[k]).min(0).values] * n
        elif kind == 2:  # a local change (once x[k]'s operations completed), then a sync broadcast
            for w in pending[k]:
                w.wait()
            pending[k] = []
            x[k] += rank
            cur[k] = [c + r for r, c in enumerate(cur[k])]
            dist.broadcast(x[k], src=n - 1)
            cur[k] = [cur[k][n - 1]] * n
        else:            # async MAX
            pending[k].append(dist.all_reduce(x[k], op=R.MAX, async_op=True))
            cur[k] = [torch.stack(cur[k]).max(0).values] * n
        if i % 5 == 4:   # now and then everything completes: the next sync calls go direct again
            for k2 in range(4):
                for w in pending[k2]:
                    w.wait()
                pending[k2] = []
    for k in range(4):
        for w in pending[k]:
            w.wait()
            expect(w.is_completed() and w.exception() is None, "mixed: every async Work completed without error")
        expect(torch.equal(x[k], cur[k][rank]), f"mixed sync/async: tensor {k}: {x[k][:4].tolist()} vs {cur[k][rank][:4].tolist()}")
    expect(gate.direct > d0 and gate.delegated > g0,
           f"mixed: both paths were taken ({gate.direct - d0} direct, {gate.delegated - g0} delegated)")
    expect(gate.busy == 0, f"nothing is in flight afterwards (gate count {gate.busy})")
    print(f"[rank {rank}] native: {gate.direct} direct, {gate.delegated} delegated", flush=True)


def scenario_dead(rank, n):
    import torch
    import torch.distributed as dist
    t = torch.ones(10)
    dist.all_reduce(t)
    victim = n - 1
    if rank == victim:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.monotonic()
    works = [dist.all_reduce(torch.ones(1 << 16), async_op=True) for _ in range(6)]
    futs = [w.get_future() for w in works]
    errors = 0
    for w in works:
        try:
            w.wait()
        except RuntimeError as e:
            errors += 1
            if errors == 1:
                print(f"[rank {rank}] error after {time.monotonic() - t0:.2f} s as expected: {e}", flush=True)
                expect(f"rank {victim}" in str(e), f"the error names the dead rank {victim}: {e}")
    expect(errors == len(works), f"every pending Work failed ({errors} of {len(works)})")
    for f in futs:
        raises((RuntimeError,), f.wait, None, "future of a failed Work")
    expect(time.monotonic() - t0 < 2 * TIMEOUT.total_seconds(), "failed within the timeout")
    dist.distributed_c10d._get_default_group().abort()
    print(f"[rank {rank}] PASS dead", flush=True)
    os._exit(0)


def rank_main(scenario):
    rank, n = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    init(scenario, rank, n)
    import torch.distributed as dist
    fn = {"ops": scenario_ops, "async": scenario_async, "subgroups": scenario_subgroups,
          "errors": scenario_errors, "dead": scenario_dead, "native": scenario_native}.get(scenario, scenario_init)
    fn(rank, n)
    if scenario != "errors":  # (the mismatch broke the communicator: abort instead)
        dist.barrier()
        dist.destroy_process_group()
    else:
        dist.distributed_c10d._get_default_group().abort()
    print(f"[rank {rank}] PASS {scenario}", flush=True)
    os._exit(0)


def launch(scenario, n, deadline_s=240):
    port = 20000 + (os.getpid() * 7 + n * 131 + SCENARIOS.index(scenario) * 17) % 30000
    tmp = tempfile.mkdtemp(prefix="swccl-torch-")
    procs = []
    for r in range(n):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), PYSWCCL_FILE=os.path.join(tmp, "store"), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, __file__, "--rank", scenario], env=env))
    deadline = time.monotonic() + deadline_s
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            codes.append(f"hung (killed after {deadline_s} s)")
    ok = all(c == 0 or (scenario == "dead" and r == n - 1 and c == -signal.SIGKILL) for r, c in enumerate(codes))
    print(f"torch {scenario} with {n} processes: exit codes {codes}: {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rank":
        rank_main(sys.argv[2])
    elif len(sys.argv) >= 2 and sys.argv[1] == "all":  # all [NRANKS ...] (default 2 3)
        results = [(s, n, launch(s, n)) for n in ([int(a) for a in sys.argv[2:]] or (2, 3)) for s in SCENARIOS]
        failed = [f"{s}/{n}" for s, n, ok in results if not ok]
        print(f"{len(results) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
        sys.exit(1 if failed else 0)
    elif len(sys.argv) == 3:
        sys.exit(0 if launch(sys.argv[1], int(sys.argv[2])) else 1)
    else:
        print(__doc__)
        sys.exit(2)
