#!/usr/bin/env python3
"""gloo_allreduce — times a torch.distributed collective with the Gloo backend, nccl-tests style.

    python gloo_allreduce.py [-np N] [-b MINBYTES] [-e MAXBYTES] [-f STEPFACTOR] [-w WARMUP] [-n ITERS]
                             [-c allreduce|allgather|reducescatter|bcast] [--port PORT]

Starts N ranks as separate processes (this script again, with --rank), joined with
init_method tcp://127.0.0.1:PORT (a free port is picked when none is given) and
GLOO_SOCKET_IFNAME=lo unless already set. Gloo in torch only has a TCP transport.

Output on rank 0, one line per size (sizes step by a factor STEPFACTOR, default 2; lines starting with '#' are
comments), the same format as mpi_allreduce.c:

    size_bytes time_us algbw busbw

time_us: each rank times ITERS back-to-back calls after a barrier; the per-rank elapsed times
are all-reduced with MAX and divided by ITERS (mean over iterations of the slowest rank).
algbw = size / time (GB/s, 1e9 B/s); busbw = algbw * 2(n-1)/n (allreduce), (n-1)/n
(allgather, reducescatter: size is the whole array), 1 (bcast).
Data: float32, sum. Buffers are allocated once at the largest size and filled before timing.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time

COLLS = ("allreduce", "allgather", "reducescatter", "bcast")


def parse_size(s):
    s = s.strip()
    mult = 1
    suffix = s[-1:].upper()
    if suffix in ("K", "M", "G"):
        mult = 1024 ** ("KMG".index(suffix) + 1)
        s = s[:-1]
    elif suffix == "B":
        s = s[:-1]
    return int(float(s) * mult)


def parse_coll(s):
    c = s.lower().replace("_", "").replace("-", "")
    if c == "broadcast":
        c = "bcast"
    if c not in COLLS:
        raise argparse.ArgumentTypeError(f"unknown collective {s!r}; one of {', '.join(COLLS)}")
    return c


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sizes(minb, maxb, step=2):
    b = minb
    while b <= maxb:
        yield b
        b *= step


def worker(args):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # Gloo reduces in its own threads; keep torch's pool out of the way
    n = args.np
    rank = args.rank
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank, world_size=n
    )
    coll = args.coll
    factor = {"allreduce": 2.0 * (n - 1) / n, "allgather": (n - 1) / n,
              "reducescatter": (n - 1) / n, "bcast": 1.0}[coll]

    maxcount = max(args.maxbytes // 4, n)
    # Allocated once, at the largest size, and written (faulted in) before any timing.
    send = torch.arange(maxcount, dtype=torch.float32).remainder_(64).add_(1).mul_(rank + 1)
    recv = torch.zeros(maxcount, dtype=torch.float32)

    def make_call(count):
        block = count // n
        if coll == "allreduce":
            t = recv[:count]
            src = send[:count]

            # dist.all_reduce is in place. Check one result, then reduce a zeroed buffer in
            # place during timing (like nccl-tests' in-place column): summing zeros costs the
            # same as summing data, and values cannot overflow over thousands of iterations.
            t.copy_(src)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            want = n * (n + 1) / 2
            if t[0].item() != want:
                print(f"# warning: rank {rank} allreduce result {t[0].item()}, expected {want}",
                      file=sys.stderr)
            t.zero_()

            def call():
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
            return call
        if coll == "allgather":
            out = recv[: block * n]
            inp = send[:block]
            # newest name first (all_gather_into_tensor is deprecated from torch 2.13)
            for name in ("all_gather_single", "all_gather_into_tensor"):
                fn = getattr(dist, name, None)
                if fn is None:
                    continue
                try:
                    fn(out, inp)
                    return lambda: fn(out, inp)
                except (RuntimeError, NotImplementedError):
                    pass
            outs = list(out.split(block))
            return lambda: dist.all_gather(outs, inp)
        if coll == "reducescatter":
            out = recv[:block]
            inp = send[: block * n]
            for name in ("reduce_scatter_single", "reduce_scatter_tensor"):
                fn = getattr(dist, name, None)
                if fn is None:
                    continue
                try:
                    fn(out, inp, op=dist.ReduceOp.SUM)
                    return lambda: fn(out, inp, op=dist.ReduceOp.SUM)
                except (RuntimeError, NotImplementedError):
                    pass
            ins = list(inp.split(block))
            return lambda: dist.reduce_scatter(out, ins, op=dist.ReduceOp.SUM)
        t = send[:count]
        return lambda: dist.broadcast(t, src=0)

    if rank == 0:
        print(f"# gloo_allreduce coll {coll} nranks {n} type float redop sum "
              f"warmup {args.warmup} iters {args.iters}")
        print(f"# torch {torch.__version__} backend gloo "
              f"GLOO_SOCKET_IFNAME={os.environ.get('GLOO_SOCKET_IFNAME', '')}")
        print("# size_bytes time_us algbw busbw", flush=True)

    timing = torch.zeros(1, dtype=torch.float64)
    for b in sizes(args.minbytes, args.maxbytes, args.stepfactor):
        unit = 4 * n if coll in ("allgather", "reducescatter") else 4
        size = b // unit * unit
        if size == 0:
            continue
        count = size // 4
        call = make_call(count)
        for _ in range(args.warmup):
            call()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            call()
        elapsed = time.perf_counter() - t0
        timing[0] = elapsed
        dist.all_reduce(timing, op=dist.ReduceOp.MAX)
        if rank == 0:
            time_us = timing.item() / args.iters * 1e6
            algbw = size / (time_us * 1e-6) / 1e9
            print(f"{size:12d} {time_us:12.2f} {algbw:8.3f} {algbw * factor:8.3f}", flush=True)

    dist.barrier()
    dist.destroy_process_group()


def launcher(args):
    port = args.port or free_port()
    env = dict(os.environ)
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("OMP_NUM_THREADS", "1")
    common = [sys.executable, os.path.abspath(__file__), "-np", str(args.np),
              "-b", str(args.minbytes), "-e", str(args.maxbytes), "-f", str(args.stepfactor), "-w", str(args.warmup),
              "-n", str(args.iters), "-c", args.coll, "--port", str(port)]
    # On SIGTERM/SIGINT (e.g. from `timeout`), raise so that the finally below kills the ranks.
    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    procs = [subprocess.Popen(common + ["--rank", str(r)], env=env) for r in range(args.np)]
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    rc = 0
    try:
        pending = list(procs)
        while pending:
            for p in list(pending):
                code = p.poll()
                if code is not None:
                    pending.remove(p)
                    if code != 0:
                        rc = rc or code
                        # one rank failed: the others would hang waiting for it
                        for q in pending:
                            q.kill()
            if deadline is not None and time.monotonic() > deadline:
                print(f"# gloo_allreduce: timeout after {args.timeout} s", file=sys.stderr)
                for q in pending:
                    q.kill()
                rc = rc or 124
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    return rc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-np", "--np", type=int, default=2, help="ranks (processes) to start")
    ap.add_argument("-b", "--minbytes", type=parse_size, default=8)
    ap.add_argument("-e", "--maxbytes", type=parse_size, default=64 << 20)
    ap.add_argument("-f", "--stepfactor", type=int, default=2)
    ap.add_argument("-w", "--warmup", type=int, default=5)
    ap.add_argument("-n", "--iters", type=int, default=20)
    ap.add_argument("-c", "--coll", type=parse_coll, default="allreduce")
    ap.add_argument("--port", type=int, default=0, help="rendezvous port on 127.0.0.1")
    ap.add_argument("--timeout", type=float, default=0, help="kill the ranks after S seconds")
    ap.add_argument("--rank", type=int, default=-1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.np < 1 or args.iters < 1 or args.warmup < 0 or args.minbytes < 1 or args.stepfactor < 2 \
            or args.maxbytes < args.minbytes:
        ap.error("bad arguments")
    if args.rank >= 0:
        worker(args)
        return 0
    return launcher(args)


if __name__ == "__main__":
    sys.exit(main())
