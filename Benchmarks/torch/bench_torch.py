#!/usr/bin/env python3
"""bench_torch — the swccl torch.distributed backend against Gloo and against SwiftCCL's own C call,
interleaved in the same processes and the same run.

    python Benchmarks/torch/bench_torch.py -np 2 [--rounds 5] [--colls all_reduce,all_gather,...]
                                           [--sizes 8,64K,1M,16M,64M] [--variants swccl,swccl-py,C,...]
                                           [--ddp] [--json FILE]
    bash Benchmarks/torch/run.sh          # 2 and 4 ranks, collectives and DDP (how PERFORMANCE.md's table was made)

Starts NP ranks (this script again, --rank), joined through a FileStore. Every rank makes, over the same
ranks: the default group "swccl" (shared memory between the ranks of this host; served through the
backend's C++ fast path unless SWCCL_TORCH_NATIVE=0), a swccl group served by the Python backend alone
(swccl.torch.Options(native=False)), a swccl group with transports="tcp" (SwiftCCL over TCP only), and a
"gloo" group (TCP; torch's Gloo has no other transport). Per collective and size, every round measures
each variant once, in an order reversed every other round:

  swccl        torch.distributed call on the swccl group (async_op=False: the backend's direct path, in
               C++ when the fast path serves the group)
  swccl-py     the same call on the group the Python backend serves (its direct path, in Python): the
               fast path against the Python backend, same processes, same run
  swccl-async  the call with async_op=True and work.wait() (through the group's stream)
  swccl-tcp    the call on the TCP-only swccl group
  gloo         the call on the Gloo group
  C            swcclAllReduce/AllGather/ReduceScatter/Broadcast on the swccl group's own communicator,
               called through ctypes in a loop (stream NULL): SwiftCCL's C figure, in the same processes

Timing as nccl-tests: after a barrier each rank times ITERS back-to-back calls; the per-rank times are
all-reduced with MAX (outside the timed loop) and divided by ITERS. The barrier and the MAX are
SwiftCCL's C calls on the default group's communicator (Gloo's threads may still be busy right after
a Gloo barrier; its own variant is measured after the same barrier). Sizes are the whole array (all-gather
output, reduce-scatter input), float32 sum; busbw factors 2(n-1)/n, (n-1)/n, (n-1)/n, 1. Buffers are
allocated and filled once before timing. With --ddp, DDP training steps of an MLP of ~25 M parameters
(examples/ddp_train.py's model, --width 2048 --depth 8; batch 32) alternate between a DDP over the swccl
group and one over the Gloo group (same seed, same data), --ddp-steps steps per round after 2 warm-up
steps; the median step time is recorded per round.

Rank 0 prints, per (collective, size), the median time and busbw of each variant over the rounds, and
the median (min..max) of the per-round ratios swccl/gloo (speed-up: gloo time / swccl time),
swccl-tcp/gloo, swccl - C and swccl-py - C (µs); --json writes every round's figures. --variants
measures only those named (the others show as —).
"""
import argparse
import ctypes
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "examples"))

BUSBW = {"all_reduce": lambda n: 2 * (n - 1) / n, "all_gather": lambda n: (n - 1) / n,
         "reduce_scatter": lambda n: (n - 1) / n, "broadcast": lambda n: 1.0}


def parse_size(s):
    s = s.strip().upper()
    mult = 1
    if s[-1] in "KMG":
        mult = 1024 ** ("KMG".index(s[-1]) + 1)
        s = s[:-1]
    return int(float(s) * mult)


def human(b):
    for unit, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= f and b % f == 0:
            return f"{b // f} {unit}"
    return f"{b} B"


def iters_for(nbytes):
    return 300 if nbytes <= 4096 else 100 if nbytes <= 256 * 1024 else 20 if nbytes <= 4 * 2**20 else 6


def rank_main(a):
    import torch
    import torch.distributed as dist
    import swccl
    import swccl.torch as swt
    rank, n = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.FileStore(os.environ["BENCH_STORE"], n)
    dist.init_process_group("swccl", store=store, rank=rank, world_size=n, timeout=datetime.timedelta(seconds=300))
    sw = dist.distributed_c10d._get_default_group()
    tcp = dist.new_group(backend="swccl", pg_options=swt.Options(transports="tcp", name="bench-tcp"))
    py = dist.new_group(backend="swccl", pg_options=swt.Options(native=False, name="bench-py"))
    gloo = dist.new_group(backend="gloo")
    lib = swccl._load()
    comm = swt.python_backend(sw)._comm
    if rank == 0:
        from swccl import _torch_native
        print(f"# group 'swccl': {'C++ fast path' if swt.native_gate(sw) is not None else 'Python backend: ' + str(_torch_native.reason())}",
              file=sys.stderr, flush=True)
    stream_null = None
    FLOAT, SUM = 7, 0
    results = []  # (coll, size, variant, round, seconds per call)

    el = torch.zeros(1, dtype=torch.float64)

    def sync():  # SwiftCCL's own barrier (C), not Gloo's: Gloo's threads may still be busy after its barrier
        if lib.swcclBarrier(comm, None) != 0:
            raise RuntimeError(f"swcclBarrier failed: {swccl.last_error(comm)}")

    def slowest(seconds):  # MAX over ranks, outside the timed loop
        el[0] = seconds
        if lib.swcclAllReduce(el.data_ptr(), el.data_ptr(), 1, 8, 2, comm, None) != 0:
            raise RuntimeError(f"swcclAllReduce failed: {swccl.last_error(comm)}")
        return el.item()

    def timed(fn, iters, group=None):
        sync()
        fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return slowest(time.perf_counter() - t0) / iters

    colls = a.colls.split(",")
    sizes = [parse_size(s) for s in a.sizes.split(",")]
    big = max(sizes)
    src = torch.arange(big // 4 + n * 16, dtype=torch.float32) % 7 + rank
    out = torch.empty(big // 4 + n * 16, dtype=torch.float32)
    for coll in colls:
        for size in sizes:
            count = max(1, size // 4)
            if coll in ("all_gather", "reduce_scatter"):
                count = max(1, count // n) * n  # the whole array, a multiple of n elements
            chunk = count // n
            x = src[:count].clone()
            y = out[:count]
            xs, ys = x[:chunk], y[:chunk]
            p_x, p_y, p_xs, p_ys = x.data_ptr(), y.data_ptr(), xs.data_ptr(), ys.data_ptr()

            def torch_call(group, async_op=False):
                if coll == "all_reduce":
                    w = dist.all_reduce(x, group=group, async_op=async_op)
                elif coll == "all_gather":
                    w = dist.all_gather_into_tensor(y, xs, group=group, async_op=async_op)
                elif coll == "reduce_scatter":
                    w = dist.reduce_scatter_tensor(ys, x, group=group, async_op=async_op)
                else:
                    w = dist.broadcast(x, src=0, group=group, async_op=async_op)
                if async_op:
                    w.wait()

            def c_call():
                if coll == "all_reduce":
                    r = lib.swcclAllReduce(p_x, p_x, count, FLOAT, SUM, comm, stream_null)
                elif coll == "all_gather":
                    r = lib.swcclAllGather(p_xs, p_y, chunk, FLOAT, comm, stream_null)
                elif coll == "reduce_scatter":
                    r = lib.swcclReduceScatter(p_x, p_ys, chunk, FLOAT, SUM, comm, stream_null)
                else:
                    r = lib.swcclBroadcast(p_x, p_x, count, FLOAT, 0, comm, stream_null)
                if r != 0:
                    raise RuntimeError(f"swccl C call failed: {r}: {swccl.last_error(comm)}")

            variants = {"swccl": lambda: torch_call(sw), "swccl-py": lambda: torch_call(py),
                        "swccl-async": lambda: torch_call(sw, True),
                        "swccl-tcp": lambda: torch_call(tcp), "gloo": lambda: torch_call(gloo), "C": c_call}
            order = [v for v in variants if v in a.variants.split(",")]
            it = iters_for(size)
            for rnd in range(a.rounds):
                for v in (order if rnd % 2 == 0 else order[::-1]):
                    if coll == "reduce_scatter" or coll == "all_reduce":
                        x.copy_(src[:count])  # values stay bounded (sums of small integers)
                    results.append((coll, count * 4, v, rnd, timed(variants[v], it)))
            if rank == 0:
                print(f"# {coll} {human(count * 4)} done", file=sys.stderr, flush=True)
    ddp = []
    if a.ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        from ddp_train import batch, make_model
        models = {name: DDP(make_model(a.width, a.depth, 1), process_group=g, bucket_cap_mb=25)
                  for name, g in (("swccl", sw), ("gloo", gloo))}
        opts = {name: torch.optim.SGD(m.parameters(), lr=1e-4) for name, m in models.items()}
        nparams = sum(p.numel() for p in models["swccl"].parameters())
        step_no = {name: 0 for name in models}

        def steps(name, k):
            m, o = models[name], opts[name]
            times = []
            for _ in range(k):
                x, y = batch(1, rank, step_no[name], 32)
                step_no[name] += 1
                sync()
                t0 = time.perf_counter()
                o.zero_grad()
                ((m(x) - y) ** 2).mean().backward()
                o.step()
                times.append(slowest(time.perf_counter() - t0))
            return statistics.median(times)
        for name in models:
            steps(name, 2)  # warm-up: bucket rebuild
        for rnd in range(a.rounds):
            for name in (["swccl", "gloo"] if rnd % 2 == 0 else ["gloo", "swccl"]):
                ddp.append((name, rnd, steps(name, a.ddp_steps)))
        if rank == 0:
            print(f"# ddp ({nparams / 1e6:.1f} M parameters) done", file=sys.stderr, flush=True)
    if rank == 0:
        with open(os.environ["BENCH_OUT"], "w") as f:
            json.dump({"np": n, "results": results, "ddp": ddp, "native": swt.native_gate(sw) is not None,
                       "ddp_params": nparams if a.ddp else 0}, f)
    dist.destroy_process_group()
    os._exit(0)


def report(data, out=sys.stdout):
    n = data["np"]
    res = data["results"]
    rounds = sorted({r[3] for r in res})
    keys = []
    for coll, size, _, _, _ in res:
        if (coll, size) not in keys:
            keys.append((coll, size))
    print(f"\n### {n} ranks ({len(rounds)} interleaved rounds; medians; ratio = median of per-round ratios, (min..max); "
          f"'swccl' {'through the C++ fast path' if data.get('native') else 'by the Python backend'})\n", file=out)
    print("| collective | size | swccl µs | swccl-py µs | swccl-async µs | C µs | swccl − C µs | swccl-py − C µs | gloo µs | "
          "swccl vs gloo | swccl busbw GB/s | gloo busbw GB/s | swccl-tcp busbw GB/s | swccl-tcp vs gloo |", file=out)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", file=out)
    variants = ("swccl", "swccl-py", "swccl-async", "C", "gloo", "swccl-tcp")
    for coll, size in keys:
        t = {v: {r[3]: r[4] for r in res if r[0] == coll and r[1] == size and r[2] == v} for v in variants}
        med = {v: statistics.median(t[v].values()) for v in t if t[v]}
        bw = {v: size / med[v] / 1e9 * BUSBW[coll](n) for v in med}

        def us(v):
            return f"{med[v] * 1e6:.1f}" if v in med else "—"

        def gbs(v):
            return f"{bw[v]:.2f}" if v in bw else "—"

        def ratio(f, a, b, bold=False, unit="×", scale=1.0):
            if a not in med or b not in med:
                return "—"
            xs = [f(t[a][r], t[b][r]) * scale for r in rounds if r in t[a] and r in t[b]]
            m = f"{statistics.median(xs):.2f}{unit}" if unit == "×" else f"{statistics.median(xs):.1f}"
            return f"{'**' + m + '**' if bold else m} ({min(xs):.{2 if unit == '×' else 1}f}..{max(xs):.{2 if unit == '×' else 1}f})"
        speed = lambda s_, g: g / s_  # noqa: E731
        diff = lambda s_, c: s_ - c  # noqa: E731
        print(f"| {coll} | {human(size)} | {us('swccl')} | {us('swccl-py')} | {us('swccl-async')} | {us('C')} | "
              f"{ratio(diff, 'swccl', 'C', unit='µs', scale=1e6)} | {ratio(diff, 'swccl-py', 'C', unit='µs', scale=1e6)} | "
              f"{us('gloo')} | {ratio(speed, 'swccl', 'gloo', bold=True)} | {gbs('swccl')} | {gbs('gloo')} | "
              f"{gbs('swccl-tcp')} | {ratio(speed, 'swccl-tcp', 'gloo')} |", file=out)
    if data.get("ddp"):
        d = data["ddp"]
        sw = {r: s for name, r, s in d if name == "swccl"}
        gl = {r: s for name, r, s in d if name == "gloo"}
        ratios = [gl[r] / sw[r] for r in sw]
        print(f"\nDDP step, {data['ddp_params'] / 1e6:.1f} M parameters, {n} ranks: swccl median "
              f"{statistics.median(sw.values()) * 1e3:.0f} ms, gloo {statistics.median(gl.values()) * 1e3:.0f} ms; "
              f"gloo/swccl **{statistics.median(ratios):.2f}×** ({min(ratios):.2f}..{max(ratios):.2f}) over "
              f"{len(ratios)} rounds", file=out)


def launch(a):
    tmp = tempfile.mkdtemp(prefix="swccl-bench-torch-")
    outp = os.path.join(tmp, "out.json")
    procs = []
    for r in range(a.np):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(a.np), BENCH_STORE=os.path.join(tmp, "store"),
                   BENCH_OUT=outp, OMP_NUM_THREADS="1")
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        env.setdefault("SWCCL_SOCKET_IFNAME", "lo")
        procs.append(subprocess.Popen([sys.executable, __file__, "--rank"] + sys.argv[1:], env=env))
    deadline = time.monotonic() + a.deadline
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            codes.append("hung")
    if any(c != 0 for c in codes):
        print(f"bench_torch: ranks exited with {codes}", file=sys.stderr)
        return 1
    data = json.load(open(outp))
    if a.json:
        json.dump(data, open(a.json, "w"))
    report(data)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-np", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--colls", default="all_reduce,all_gather,reduce_scatter,broadcast")
    ap.add_argument("--sizes", default="8,64K,1M,16M,64M")
    ap.add_argument("--variants", default="swccl,swccl-py,swccl-async,swccl-tcp,gloo,C",
                    help="the variants to measure (default: all)")
    ap.add_argument("--ddp", action="store_true")
    ap.add_argument("--ddp-steps", type=int, default=4)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--json")
    ap.add_argument("--report", help="print the report of a --json file and exit")
    ap.add_argument("--deadline", type=float, default=3600)
    ap.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.report:
        report(json.load(open(a.report)))
        return 0
    if a.rank:
        rank_main(a)
    return launch(a)


if __name__ == "__main__":
    sys.exit(main())
