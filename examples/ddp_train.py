#!/usr/bin/env python3
"""Train an MLP with DistributedDataParallel on CPU over "swccl" (or "gloo"), launched by torchrun.

    torchrun --nproc-per-node 4 examples/ddp_train.py --backend swccl
    torchrun --nproc-per-node 4 examples/ddp_train.py --backend gloo      # the same job over Gloo

Each rank makes its batches from (seed, rank, step), so a run is reproducible. Rank 0 prints the loss
and the median step time; at the end every rank checks that all ranks hold the same parameters (an
all_gather of a checksum of every parameter), prints "ddp_train: OK" on rank 0 and exits 0 — or exits 1
naming the first rank whose parameters differ. Options: --steps, --width/--depth (the model: depth
Linear layers of width x width; --width 2048 --depth 6 is ~25 M parameters), --batch, --bucket-mb,
--seed, --json FILE (rank 0 writes the step times). Run from a source checkout, the package is found
in ../python; once installed (pip install ./python), `import swccl` finds it.
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402


def make_model(width, depth, seed):
    torch.manual_seed(seed)
    layers = [nn.Linear(64, width), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers += [nn.Linear(width, 8)]
    return nn.Sequential(*layers)


def batch(seed, rank, step, size):
    g = torch.Generator().manual_seed(seed * 1000003 + rank * 1009 + step)
    return torch.randn(size, 64, generator=g), torch.randn(size, 8, generator=g)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="swccl", choices=["swccl", "gloo"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.backend == "swccl":
        import swccl.torch  # noqa: F401  (registers the backend)

    dist.init_process_group(args.backend, timeout=datetime.timedelta(seconds=120))  # env:// from torchrun
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model(args.width, args.depth, args.seed)
    nparams = sum(p.numel() for p in model.parameters())
    ddp = DDP(model, bucket_cap_mb=args.bucket_mb)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    if rank == 0:
        print(f"ddp_train: {args.backend}, {world} ranks, {nparams / 1e6:.1f} M parameters, {args.steps} steps", flush=True)
    times = []
    for step in range(args.steps):
        x, y = batch(args.seed, rank, step, args.batch)
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = ((ddp(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        if rank == 0 and (step % max(1, args.steps // 5) == 0 or step == args.steps - 1):
            print(f"  step {step:4d}  loss {loss.item():.5f}  {times[-1] * 1e3:8.1f} ms", flush=True)

    # every rank must hold the same parameters: all-gather a checksum of each
    sums = torch.tensor([p.detach().double().sum().item() for p in model.parameters()], dtype=torch.float64)
    gathered = [torch.empty_like(sums) for _ in range(world)]
    dist.all_gather(gathered, sums)
    bad = [r for r in range(world) if not torch.equal(gathered[r], gathered[0])]
    timed = times[2:] if len(times) > 4 else times  # the first steps build buckets and warm up
    median = statistics.median(timed)
    if rank == 0:
        print(f"ddp_train: median step {median * 1e3:.2f} ms over {len(timed)} steps", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"backend": args.backend, "world": world, "params": nparams, "step_s": timed,
                           "median_s": median}, f)
    dist.destroy_process_group()
    if bad:
        print(f"ddp_train: FAIL rank {rank}: the parameters of rank(s) {bad} differ from rank 0's", flush=True)
        sys.exit(1)
    if rank == 0:
        print("ddp_train: OK (every rank holds the same parameters)", flush=True)


if __name__ == "__main__":
    main()
