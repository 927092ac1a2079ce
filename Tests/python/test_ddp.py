#!/usr/bin/env python3
"""DDP equivalence: the same model trained with DistributedDataParallel over "swccl" and over "gloo".

    python Tests/python/test_ddp.py NRANKS           (python with torch; 2 and 4 in CI)

Each rank runs both trainings in one job: the default group is "swccl", a second group over the same
ranks is "gloo" (dist.new_group(backend="gloo")). From the same seed, with data made from (seed, rank,
step), every configuration must end with parameters equal on both backends:
  - integer-valued data (integer weights and inputs, one linear layer, loss = sum of the outputs, so
    every gradient is a sum of integers, exact in any order; lr 2^-6): bit-equal;
  - a float MLP: equal within float32 reduction-order tolerance (rtol 1e-5, atol 1e-6; with the bf16
    hook, whose sums are rounded to bfloat16 in a backend-specific order: rtol 1e-3, atol 1e-4);
with and without gradient_as_bucket_view, small buckets (several per step), a comm hook (bf16
compression: torch's bf16_compress_hook), no_sync (gradient accumulation over two micro-batches), and
uneven inputs (rank r has r extra batches, under model.join()). The parameters must also agree across
ranks (each rank checks the broadcast of rank 0's). Then, test_c10d_pypg-style (torch's test of Python
process groups under DDP, whose helpers are not in the wheel): a ProcessGroupSwccl made directly, not
through init_process_group, passed to DDP with and without gradient_as_bucket_view; DDP on each rank's
slice of a global batch must track a local model trained on the whole batch (pypg_style()).
"""
import datetime
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
STEPS = 6


def fail(msg):
    print(f"[rank {os.environ.get('RANK')}] FAIL {msg}", flush=True)
    os._exit(1)


def make_model(kind, seed):
    import torch
    import torch.nn as nn
    torch.manual_seed(seed)
    if kind == "int":
        # loss = sum of outputs: every gradient is a sum of integer inputs, exact in any order
        m = nn.Sequential(nn.Linear(8, 6, bias=True))
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed)
            for p in m.parameters():
                p.copy_(torch.randint(-3, 4, p.shape, generator=g).float())
        return m
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def batch(kind, seed, rank, step):
    import torch
    g = torch.Generator().manual_seed(seed * 1000003 + rank * 1009 + step)
    if kind == "int":
        return torch.randint(-2, 3, (4, 8), generator=g).float(), None
    return torch.randn(8, 16, generator=g), torch.randn(8, 4, generator=g)


def train(pg, kind, config, rank, seed=1):
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    model = make_model(kind, seed)
    ddp = DDP(model, process_group=pg, bucket_cap_mb=0.001, gradient_as_bucket_view=(config == "views"))
    if config == "bf16hook":
        ddp.register_comm_hook(pg, default_hooks.bf16_compress_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=2.0 ** -6 if kind == "int" else 0.05)

    def loss_of(x, y):
        out = ddp(x)
        return out.sum() if kind == "int" else ((out - y) ** 2).mean()

    steps = STEPS + (rank if config == "join" else 0)
    if config == "join":
        with ddp.join():
            for step in range(steps):
                opt.zero_grad()
                loss_of(*batch(kind, seed, rank, step)).backward()
                opt.step()
    else:
        for step in range(steps):
            opt.zero_grad()
            if config == "nosync":
                with ddp.no_sync():
                    loss_of(*batch(kind, seed, rank, 100 + step)).backward()
            loss_of(*batch(kind, seed, rank, step)).backward()
            opt.step()
    return [p.detach().clone() for p in model.parameters()]


def pypg_style(rank, n, iterations=3):
    """As torch's test_c10d_pypg does with its Python process groups: a ProcessGroupSwccl made directly
    (its own FileStore; not registered through init_process_group) passed to DDP, with and without
    gradient_as_bucket_view; DDP on rank r's slice of a global batch must track a local model trained on
    the whole batch (rtol 1.3e-6, atol 5e-5, CommonDistributedDataParallelTest's tolerance), and
    DDP must have driven the group through Work.wait() and Work.get_future()."""
    import copy
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP
    from swccl.torch import ProcessGroupSwccl
    checked = 0
    for views in (False, True):
        store = dist.FileStore(os.environ["PYSWCCL_FILE"] + f".pypg{int(views)}", n)
        pg = ProcessGroupSwccl(store, rank, n, datetime.timedelta(seconds=60))
        calls = {"wait": 0, "get_future": 0}

        def counted(fn):  # counts what DDP calls on the works the group returns
            def work_call(*a, **k):
                w = fn(*a, **k)
                for meth in calls:
                    def wrapped(*aa, _orig=getattr(w, meth), _m=meth, **kk):
                        calls[_m] += 1
                        return _orig(*aa, **kk)
                    setattr(w, meth, wrapped)
                return w
            return work_call
        pg.allreduce = counted(pg.allreduce)
        pg.broadcast = counted(pg.broadcast)
        torch.manual_seed(1234)
        model = nn.Sequential(nn.Linear(2, 10, bias=False), nn.ReLU(), nn.Linear(10, 50, bias=False), nn.ReLU(),
                              nn.Linear(50, 4, bias=False))
        ddp = DDP(copy.deepcopy(model), process_group=pg, bucket_cap_mb=0.001, gradient_as_bucket_view=views)
        g = torch.Generator().manual_seed(4321)
        inp, target = torch.randn(n, 2, generator=g), torch.randn(n, 4, generator=g)
        for it in range(iterations):
            for m, x, y in ((model, inp, target), (ddp, inp[rank:rank + 1], target[rank:rank + 1])):
                m.train()
                F.mse_loss(F.softmax(m(x), dim=1), y).backward()
                for p_ in m.parameters():
                    with torch.no_grad():
                        p_ -= p_.grad
                    p_.grad = None
            for i, (a, b) in enumerate(zip(model.parameters(), ddp.parameters())):
                if not torch.allclose(a, b, rtol=1.3e-6, atol=5e-5):
                    fail(f"pypg-style (views={views}) iteration {it}: parameter {i} differs from the local model: "
                         f"max |diff| {(a - b).abs().max().item():.3g}")
                checked += 1
            inp = inp[torch.randperm(n, generator=torch.Generator().manual_seed(1337 + it))]
        if calls["get_future"] == 0 and calls["wait"] == 0:
            fail(f"pypg-style: DDP never waited on the group's works ({calls})")
        pg.shutdown()
    return checked


def rank_main():
    import torch
    import torch.distributed as dist
    import swccl.torch  # noqa: F401
    rank, n = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.FileStore(os.environ["PYSWCCL_FILE"], n)
    dist.init_process_group("swccl", store=store, rank=rank, world_size=n, timeout=datetime.timedelta(seconds=60))
    sw = dist.distributed_c10d._get_default_group()
    gloo = dist.new_group(backend="gloo")
    checked = 0
    for kind in ("int", "float"):
        for config in ("plain", "views", "bf16hook", "nosync", "join"):
            a = train(sw, kind, config, rank)
            b = train(gloo, kind, config, rank)
            for i, (pa, pb) in enumerate(zip(a, b)):
                if kind == "int" and config != "bf16hook":
                    ok = torch.equal(pa, pb)
                elif config == "bf16hook":  # gradients summed in bfloat16 (8 bits): its reduction-order tolerance
                    ok = torch.allclose(pa, pb, rtol=1e-3, atol=1e-4)
                else:
                    ok = torch.allclose(pa, pb, rtol=1e-5, atol=1e-6)
                if not ok:
                    fail(f"{kind} {config}: parameter {i} differs between swccl and gloo: max |diff| "
                         f"{(pa - pb).abs().max().item():.3g}")
                # every rank holds the same parameters (rank 0's, broadcast over gloo)
                p0 = pa.clone()
                dist.broadcast(p0, src=0, group=gloo)
                if not torch.equal(p0, pa):
                    fail(f"{kind} {config}: parameter {i} differs across ranks")
                checked += 1
            if kind == "int" and config == "plain" and all(torch.equal(p, q) for p, q in zip(a, [x.detach() for x in make_model(kind, 1).parameters()])):
                fail("training changed nothing (the test would prove nothing)")
    checked += pypg_style(rank, n)
    print(f"[rank {rank}] PASS ddp: {checked} parameters equal between swccl and gloo (and the local model)", flush=True)
    dist.destroy_process_group()
    os._exit(0)


def launch(n, deadline_s=400):
    tmp = tempfile.mkdtemp(prefix="swccl-ddp-")
    procs = []
    for r in range(n):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(n), PYSWCCL_FILE=os.path.join(tmp, "store"),
                   OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
        procs.append(subprocess.Popen([sys.executable, __file__, "--rank"], env=env))
    deadline = time.monotonic() + deadline_s
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            codes.append("hung")
    ok = all(c == 0 for c in codes)
    print(f"ddp equivalence with {n} processes: exit codes {codes}: {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--rank":
        rank_main()
    elif len(sys.argv) == 2:
        sys.exit(0 if launch(int(sys.argv[1])) else 1)
    else:
        print(__doc__)
        sys.exit(2)
