#!/usr/bin/env python3
"""Multi-process tests of the Python package (python/swccl) on libswccl.so.

    python3 Tests/python/test_swccl.py SCENARIO NRANKS      (library: $SWCCL_LIBRARY or the loader's)

Starts NRANKS processes of itself (rank 0 makes the unique id and hands it over in the environment),
waits for all, and exits 0 only if every rank passed. Scenarios:
  collectives  allreduce of float32 arrays (counts 0, 1, 7, 1000, 2^20+1; in place and out of place;
               sum, max, min, prod, avg) exact, then broadcast, reduce, all-gather, reduce-scatter,
               all-to-all, send/recv and barrier on numpy arrays and on array.array buffers;
  mismatch     rank 0 allreduces 100 elements, the others 101: every rank gets a SwcclError;
  fromenv      the communicator from torchrun-style variables (RANK, WORLD_SIZE, MASTER_ADDR,
               MASTER_PORT): swccl.Communicator() with no arguments, then an allreduce;
  dead         the last rank is killed (SIGKILL) after init: every other rank's allreduce raises a
               SwcclError naming it within twice the timeout;
  fork, fork-tcp  rank 0 forks with os.fork(): the child's allreduce on the inherited communicator
               raises a SwcclError saying it is a forked child's, and the child exits normally
               (interpreter shutdown destroys its copy); a multiprocessing child (fork start method)
               makes and uses a communicator of its own; then the job runs 20 checked allreduces
               (shared memory, or TCP for fork-tcp): the children must not have touched it.
"""
import array
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
import numpy as np  # noqa: E402
import swccl  # noqa: E402

TIMEOUT_MS = 3000


def fail(msg):
    print(f"[rank {os.environ.get('PYSWCCL_RANK')}] FAIL {msg}", flush=True)
    sys.exit(1)


def expect(cond, msg):
    if not cond:
        fail(msg)


def inputs(rank, count, seed):
    # Small integers: every sum, product, max and min of them is exact in float32, in any order.
    i = np.arange(count, dtype=np.int64)
    return ((i * 7 + rank * 3 + seed) % 5 + 1).astype(np.float32)


def collectives(comm, rank, n):
    for seed, count in enumerate([0, 1, 7, 1000, (1 << 20) + 1]):
        for op in ["sum", "max", "min", "prod", "avg"]:
            if op == "prod" and count > 1000:
                continue
            allin = [inputs(r, count, seed) for r in range(n)]
            want = {"sum": sum(allin), "max": np.maximum.reduce(allin), "min": np.minimum.reduce(allin),
                    "prod": np.prod(allin, axis=0), "avg": sum(allin) / n}[op] if count else np.zeros(0, np.float32)
            x = inputs(rank, count, seed)
            out = np.full(count, -1, dtype=np.float32)
            comm.allreduce(x, out, op=op)
            comm.allreduce(x, op=op)  # in place
            for got, where in ((out, "out of place"), (x, "in place")):
                if op == "avg":
                    expect(np.allclose(got, want, rtol=1e-6), f"allreduce avg {count} {where}")
                else:
                    expect(np.array_equal(got, want.astype(np.float32)), f"allreduce {op} count {count} {where}")
    # The other collectives, small and exact.
    b = np.arange(10, dtype=np.int32) * (rank + 1)
    comm.broadcast(b, root=n - 1)
    expect(np.array_equal(b, np.arange(10, dtype=np.int32) * n), "broadcast")
    r = np.empty(10, dtype=np.int64)
    comm.reduce(np.full(10, rank + 1, dtype=np.int64), r, op="sum", root=0)
    if rank == 0:
        expect(np.all(r == n * (n + 1) // 2), "reduce")
    g = np.empty(3 * n, dtype=np.float64)
    comm.allgather(np.full(3, float(rank)), g)
    expect(np.array_equal(g, np.repeat(np.arange(n, dtype=np.float64), 3)), "allgather")
    rs = np.empty(4, dtype=np.uint32)
    comm.reduce_scatter(np.arange(4 * n, dtype=np.uint32), rs, op="sum")
    expect(np.array_equal(rs, (np.arange(4, dtype=np.uint32) + 4 * rank) * n), "reduce_scatter")
    a2a = np.empty(2 * n, dtype=np.int32)
    comm.alltoall(np.array([rank * 100 + j // 2 for j in range(2 * n)], dtype=np.int32), a2a)
    expect(np.array_equal(a2a, np.array([i * 100 + rank for i in range(n) for _ in range(2)], dtype=np.int32)), "alltoall")
    # Any buffer-protocol object: array.array.
    buf = array.array("d", [rank + 0.5] * 5)
    comm.allreduce(buf)
    expect(list(buf) == [sum(r + 0.5 for r in range(n))] * 5, "allreduce on array.array")
    if n > 1:
        peer = (rank + 1) % n
        src = (rank - 1) % n
        got = np.empty(6, dtype=np.uint8)
        if rank % 2 == 0:
            comm.send(np.full(6, rank, dtype=np.uint8), peer)
            comm.recv(got, src)
        else:
            comm.recv(got, src)
            comm.send(np.full(6, rank, dtype=np.uint8), peer)
        expect(np.all(got == src), "send/recv ring")
    comm.barrier()
    # Bad calls: a clear Python exception, the communicator still usable.
    try:
        comm.allreduce(np.zeros(3, np.float32), np.zeros(4, np.float32))
        fail("mismatched send/recv sizes accepted")
    except ValueError:
        pass
    try:
        comm.allreduce(np.zeros(3, np.complex64))
        fail("complex dtype accepted")
    except TypeError:
        pass
    x = np.ones(5, np.float32)
    comm.allreduce(x)
    expect(np.all(x == n), "usable after bad calls")


def own_communicator(q):
    """In a forked child of a rank: a one-rank communicator of its own, then an allreduce."""
    uid = swccl.get_unique_id()
    comm = swccl.Communicator(uid, 0, 1, timeout_ms=TIMEOUT_MS)
    x = np.arange(100, dtype=np.float32)
    comm.allreduce(x)
    ok = bool(np.all(x == np.arange(100, dtype=np.float32)))
    comm.destroy()
    q.put("ok" if ok else "wrong")


def rank_main(scenario):
    rank, n = int(os.environ["PYSWCCL_RANK"]), int(os.environ["PYSWCCL_SIZE"])
    if scenario == "fromenv":
        comm = swccl.Communicator()
        expect(comm.rank == int(os.environ["RANK"]) and comm.size == int(os.environ["WORLD_SIZE"]), "rank and size from the environment")
        x = np.full(257, rank + 1, np.float32)
        comm.allreduce(x)
        expect(np.all(x == n * (n + 1) / 2), "allreduce on a communicator from the environment")
        comm.destroy()
        print(f"[rank {rank}] PASS {scenario}", flush=True)
        return
    if scenario == "fork-tcp":
        os.environ["SWCCL_TRANSPORTS"] = "tcp"
    uid = bytes.fromhex(os.environ["PYSWCCL_ID"])
    comm = swccl.Communicator(uid, rank, n, timeout_ms=TIMEOUT_MS)
    expect(comm.rank == rank and comm.size == n, "rank and size")
    if scenario == "collectives":
        collectives(comm, rank, n)
    elif scenario == "mismatch":
        try:
            comm.allreduce(np.ones(100 if rank == 0 else 101, np.float32))
            fail("an allreduce with mismatched sizes succeeded")
        except swccl.SwcclError as e:
            print(f"[rank {rank}] error as expected: {e}", flush=True)
            expect(e.result in (5, 6, 8), f"an invalid usage, remote or timeout error (got {e.result})")
    elif scenario in ("fork", "fork-tcp"):
        x = np.full(4097, rank + 1, np.float32)
        comm.allreduce(x)
        expect(np.all(x == n * (n + 1) / 2), "allreduce before the fork")
        if rank == 0:
            pid = os.fork()
            if pid == 0:
                try:
                    comm.allreduce(np.ones(8, np.float32))
                    print("[child] FAIL an allreduce on the inherited communicator succeeded", flush=True)
                    os._exit(3)
                except swccl.SwcclError as e:
                    if "forked child" not in e.message:
                        print(f"[child] FAIL the error does not say why: {e}", flush=True)
                        os._exit(4)
                sys.exit(0)  # a normal exit: the interpreter's shutdown destroys the inherited copy
            _, status = os.waitpid(pid, 0)
            expect(os.waitstatus_to_exitcode(status) == 0, f"the forked child ended with {status}")
            import multiprocessing
            q = multiprocessing.get_context("fork").Queue()
            child = multiprocessing.get_context("fork").Process(target=own_communicator, args=(q,))
            child.start()
            child.join(60)
            if child.is_alive():
                child.kill()
                fail("a multiprocessing child making its own communicator hung")
            expect(child.exitcode == 0 and not q.empty() and q.get() == "ok", f"a multiprocessing child's own communicator (exit {child.exitcode})")
        time.sleep(0.5)  # a goodbye on the parent's connections, had the child sent one, has arrived
        for i in range(20):
            y = np.full(1 << 14, rank + i, np.float32)
            comm.allreduce(y)
            expect(np.all(y == sum(r + i for r in range(n))), f"allreduce {i} after the children exited")
    elif scenario == "dead":
        if rank == n - 1:
            os.kill(os.getpid(), signal.SIGKILL)
        t0 = time.monotonic()
        try:
            for _ in range(100):
                comm.allreduce(np.ones(1 << 16, np.float32))
            fail("allreduce with a dead rank succeeded")
        except swccl.SwcclError as e:
            ms = (time.monotonic() - t0) * 1000
            print(f"[rank {rank}] error after {ms:.0f} ms as expected: {e}", flush=True)
            expect(f"rank {n - 1}" in e.message, "the error names the dead rank")
            expect(ms < 2 * TIMEOUT_MS, f"error within twice the timeout ({ms:.0f} ms)")
        comm.abort()
        print(f"[rank {rank}] PASS {scenario}", flush=True)
        return
    comm.destroy()
    print(f"[rank {rank}] PASS {scenario}", flush=True)


def launch(scenario, n):
    uid = swccl.get_unique_id()
    port = 20000 + os.getpid() % 20000
    procs = []
    for r in range(n):
        env = dict(os.environ, PYSWCCL_RANK=str(r), PYSWCCL_SIZE=str(n), PYSWCCL_ID=uid.hex())
        if scenario == "fromenv":
            env.update(RANK=str(r), WORLD_SIZE=str(n), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, __file__, "--rank", scenario], env=env))
    deadline = time.monotonic() + 120
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    ok = all(c == 0 or (scenario == "dead" and r == n - 1 and c == -signal.SIGKILL) for r, c in enumerate(codes))
    print(f"{scenario} with {n} processes ({swccl.library_path}): exit codes {codes}: {'PASS' if ok else 'FAIL'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rank":
        rank_main(sys.argv[2])
    elif len(sys.argv) == 3:
        sys.exit(launch(sys.argv[1], int(sys.argv[2])))
    else:
        print(__doc__)
        sys.exit(2)
