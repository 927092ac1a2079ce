#!/usr/bin/env python3
"""RL weight sync: trainers update a policy; every step the new weights go to the rollout workers.

    torchrun --nproc-per-node 4 examples/rl_weight_sync.py                  # 2 trainers, 2 workers, swccl
    torchrun --nproc-per-node 3 examples/rl_weight_sync.py --trainers 1 --steps 5 --blocks 16 --dim 128
    torchrun --nproc-per-node 4 examples/rl_weight_sync.py --backend gloo   # the same over Gloo

The pattern of VeRL / OpenRLHF-style post-training on CPU: ranks 0..T-1 are trainers, ranks T..N-1
rollout (inference) workers, each kind in its own process group:
  - `trainers`   (new_group of ranks 0..T-1): the trainers' gradient all-reduce (DDP);
  - `sync`       (new_group of rank 0 and the workers): trainer 0 broadcasts the policy's state_dict;
  - `workers`    (new_group of the workers): the rollouts' statistics (an all-reduce of the rewards).
The policy is a stack of --blocks residual blocks (Linear + LayerNorm: 4 tensors each, plus an int64
buffer), so its state_dict holds hundreds of tensors. They are packed into flat buckets of at most
--bucket-mb per dtype; the workers' model tensors are views into their own buckets, so a broadcast
writes the weights in place (no unpacking). Every step: the trainers train one step; trainer 0 copies
the state_dict into its buckets and broadcasts all buckets with async_op=True (all in flight, then
waited); trainer 0 then broadcasts a BLAKE2b digest of every bucket and each worker checks its buckets
against it (bit-equality of every weight), runs a rollout (a forward pass on the step's prompts) and
the rollout outputs of worker 1 are gathered to trainer 0, which checks them bit-equal to its own
forward pass. Rank 0 reports the sync throughput: state_dict bytes / time of the bucket broadcasts
(median over the steps, GB/s). Exits 0 with "rl_weight_sync: OK" on rank 0, or 1 naming what differed.
"""
import argparse
import datetime
import hashlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return x + torch.tanh(self.norm(self.fc(x)))


class Policy(nn.Module):
    def __init__(self, dim, blocks):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(blocks)])
        self.head = nn.Linear(dim, 16)
        self.register_buffer("version", torch.zeros(4, dtype=torch.int64))

    def forward(self, x):
        return self.head(self.blocks(x))


def make_buckets(tensors, bucket_bytes):
    """Groups (name, tensor) by dtype into buckets of at most bucket_bytes (a bigger tensor alone):
    [(dtype, flat uint8 buffer, [(name, byte offset, tensor), ...])]."""
    by_dtype = {}
    for name, t in tensors:
        by_dtype.setdefault(t.dtype, []).append((name, t))
    buckets = []
    for dtype, items in by_dtype.items():
        current, size = [], 0
        for name, t in items:
            nb = t.numel() * t.element_size()
            if current and size + nb > bucket_bytes:
                buckets.append((dtype, current, size))
                current, size = [], 0
            current.append((name, size, t))
            size += (nb + 63) // 64 * 64  # 64-byte aligned slots
        if current:
            buckets.append((dtype, current, size))
    return [(dtype, torch.empty(size, dtype=torch.uint8), members) for dtype, members, size in buckets]


def view_of(buffer, offset, t):
    nb = t.numel() * t.element_size()
    return buffer[offset:offset + nb].view(t.dtype).view(t.shape)


def digest(buffer):
    return hashlib.blake2b(buffer.numpy(), digest_size=16).digest()  # zero-copy over the tensor's memory


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="swccl", choices=["swccl", "gloo"])
    ap.add_argument("--trainers", type=int, default=0, help="number of trainer ranks (default: half the ranks)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=96, help="residual blocks (4 tensors each)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--bucket-mb", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if args.backend == "swccl":
        import swccl.torch  # noqa: F401  (registers the backend)
    dist.init_process_group(args.backend, timeout=datetime.timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    ntrain = args.trainers or max(1, world // 2)
    if not 1 <= ntrain < world:
        sys.exit(f"rl_weight_sync: need at least one trainer and one worker ({world} ranks, --trainers {ntrain})")
    trainer_ranks, worker_ranks = list(range(ntrain)), list(range(ntrain, world))
    trainers = dist.new_group(trainer_ranks)
    sync = dist.new_group([0] + worker_ranks)
    workers = dist.new_group(worker_ranks)
    is_trainer = rank < ntrain

    torch.manual_seed(args.seed)
    policy = Policy(args.dim, args.blocks)
    state = list(policy.state_dict(keep_vars=True).items())
    total = sum(t.numel() * t.element_size() for _, t in state)
    buckets = make_buckets(state, int(args.bucket_mb * 2**20))
    if not is_trainer:
        # the worker's weights live in its buckets: a broadcast into a bucket updates them in place
        with torch.no_grad():
            for _, buf, members in buckets:
                for name, off, t in members:
                    v = view_of(buf, off, t)
                    v.copy_(t)
                    t.set_(v)  # the parameter/buffer now lives in the bucket (zero-copy receive)
    if rank == 0:
        print(f"rl_weight_sync: {args.backend}, {ntrain} trainer(s), {len(worker_ranks)} worker(s), "
              f"state_dict of {len(state)} tensors, {total / 2**20:.1f} MiB in {len(buckets)} buckets", flush=True)

    model = DDP(policy, process_group=trainers) if is_trainer and ntrain > 1 else policy
    opt = torch.optim.SGD(policy.parameters(), lr=0.01) if is_trainer else None
    seconds, failures = [], []
    for step in range(args.steps):
        if is_trainer:
            g = torch.Generator().manual_seed(args.seed * 7919 + rank * 131 + step)
            x, y = torch.randn(16, args.dim, generator=g), torch.randn(16, 16, generator=g)
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
            policy.version.fill_(step + 1)
        # the weight sync: trainer 0 -> every worker
        if rank == 0:
            with torch.no_grad():
                for _, buf, members in buckets:
                    for name, off, t in members:
                        view_of(buf, off, t).copy_(t.detach())
        if rank == 0 or not is_trainer:
            dist.barrier(group=sync)  # time the transfer, not the trainers' step
            t0 = time.perf_counter()
            works = [dist.broadcast(buf, src=0, group=sync, async_op=True) for _, buf, _ in buckets]
            for w in works:
                w.wait()
            seconds.append(time.perf_counter() - t0)
            # correctness: every bucket bit-equal to trainer 0's (BLAKE2b digests broadcast by rank 0)
            digests = torch.zeros(len(buckets), 16, dtype=torch.uint8)
            if rank == 0:
                for i, (_, buf, _) in enumerate(buckets):
                    digests[i] = torch.frombuffer(bytearray(digest(buf)), dtype=torch.uint8)
            dist.broadcast(digests, src=0, group=sync)
            if rank != 0:
                for i, (dtype, buf, members) in enumerate(buckets):
                    if bytes(digests[i].tolist()) != digest(buf):
                        failures.append(f"step {step}: rank {rank}: bucket {i} ({dtype}, {members[0][0]} ...) differs from trainer 0's")
                if int(policy.version[0]) != step + 1:
                    failures.append(f"step {step}: rank {rank}: policy version {int(policy.version[0])}, expected {step + 1}")
        if not is_trainer:
            # a rollout with the new weights; the workers agree on a statistic
            g = torch.Generator().manual_seed(args.seed * 104729 + step)
            prompts = torch.randn(8, args.dim, generator=g)
            with torch.no_grad():
                out = policy(prompts)
            reward = out.sum().reshape(1)
            dist.all_reduce(reward, group=workers)
        # trainer 0 checks worker 1's rollout bit-equal to its own forward pass (sync group)
        if rank == 0 or rank == ntrain:
            g = torch.Generator().manual_seed(args.seed * 104729 + step)
            prompts = torch.randn(8, args.dim, generator=g)
            with torch.no_grad():
                mine = policy(prompts) if rank == 0 else out
            if rank == ntrain:
                dist.send(mine, dst=0, group=sync)
            else:
                theirs = torch.empty_like(mine)
                dist.recv(theirs, src=ntrain, group=sync)
                if not torch.equal(theirs, mine):
                    failures.append(f"step {step}: worker rank {ntrain}'s rollout differs from trainer 0's forward pass "
                                    f"(max |diff| {(theirs - mine).abs().max().item():.3g})")
    if rank == 0 or not is_trainer:
        timed = seconds[1:] if len(seconds) > 2 else seconds
        med = statistics.median(timed)
        if rank == 0:
            print(f"rl_weight_sync: sync of {total / 2**20:.1f} MiB to {len(worker_ranks)} worker(s): median "
                  f"{med * 1e3:.2f} ms, {total / med / 1e9:.2f} GB/s (min {min(timed) * 1e3:.2f} ms, max "
                  f"{max(timed) * 1e3:.2f} ms, {len(timed)} steps)", flush=True)
    ok = torch.tensor([0 if failures else 1], dtype=torch.int32)
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    for f in failures[:5]:
        print(f"rl_weight_sync: FAIL {f}", flush=True)
    dist.destroy_process_group()
    if int(ok) != 1:
        if rank == 0:
            print("rl_weight_sync: FAIL (see the lines above)", flush=True)
        sys.exit(1)
    if rank == 0:
        print(f"rl_weight_sync: OK ({args.steps} steps: every worker's weights bit-equal to the trainer's, "
              f"rollouts equal)", flush=True)


if __name__ == "__main__":
    main()
