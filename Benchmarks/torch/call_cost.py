#!/usr/bin/env python3
"""call_cost — what one synchronous 8-byte all_reduce costs at each layer of the swccl torch backend,
on one rank (no peer: the figures are the software's cost per call, nothing of the transport).

    python Benchmarks/torch/call_cost.py [--iters 20000] [--repeat 5] [--count 2]

One process makes two single-rank "swccl" groups: one served through the C++ fast path (when it is
available) and one by the Python backend (Options(native=False), what SWCCL_TORCH_NATIVE=0 gives every
group), then times, best of --repeat loops of --iters calls, each layer from the C call up:

  ctypes C               swcclAllReduce through ctypes (the library call alone, plus ctypes)
  python backend         ProcessGroupSwccl.allreduce([t], opts)  (the Python backend's method)
  C++ backend            the C++ Backend's allreduce through its pybind binding (native group only)
  pg.allreduce           the torch ProcessGroup's allreduce (pybind, dispatcher, backend)
  dist.all_reduce        torch.distributed.all_reduce(t, group=...)
"""
import argparse
import datetime
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--count", type=int, default=2, help="float32 elements (2: 8 bytes)")
    a = ap.parse_args()
    import torch
    import torch.distributed as dist
    import swccl.torch as st
    store = dist.FileStore(os.path.join(tempfile.mkdtemp(prefix="swccl-cost-"), "store"), 1)
    dist.init_process_group("swccl", store=store, rank=0, world_size=1, timeout=datetime.timedelta(seconds=60))
    native = dist.distributed_c10d._get_default_group()
    python = dist.new_group([0], backend="swccl", pg_options=st.Options(native=False))
    t = torch.zeros(a.count)
    opts = dist.AllreduceOptions()
    opts.reduceOp = dist.ReduceOp.SUM
    opts.asyncOp = False

    def bench(f, name):
        for _ in range(1000):
            f()
        best = 1e9
        for _ in range(a.repeat):
            t0 = time.perf_counter_ns()
            for _ in range(a.iters):
                f()
            best = min(best, (time.perf_counter_ns() - t0) / a.iters / 1000)
        print(f"  {name:<22} {best:6.2f} us", flush=True)
        return best

    for label, g in (("native (C++ fast path)", native), ("Python backend", python)):
        pb = st.python_backend(g)
        gate = st.native_gate(g)
        print(f"{label}: {'C++ backend over ' if gate is not None else ''}{type(pb).__name__}, "
              f"{a.count * 4} bytes, load {os.getloadavg()[0]:.1f}")
        lib, comm, p = pb._lib, pb._comm, t.data_ptr()
        bench(lambda: lib.swcclAllReduce(p, p, a.count, 7, 0, comm, None), "ctypes C")
        bench(lambda: pb.allreduce([t], opts), "python backend")
        if gate is not None:
            cb = g._get_backend(torch.device("cpu"))
            bench(lambda: cb.allreduce([t], opts), "C++ backend")
        bench(lambda: g.allreduce([t], opts), "pg.allreduce")
        before = gate.direct if gate is not None else 0
        bench(lambda: dist.all_reduce(t, group=g), "dist.all_reduce")
        if gate is not None:
            print(f"  (direct path taken by {gate.direct - before} of the dist.all_reduce calls)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
