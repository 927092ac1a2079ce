#!/usr/bin/env python3
"""FSDP2 equivalence: a small model trained with torch.distributed.fsdp.fully_shard over "swccl" and over
"gloo", on CPU.

    python Tests/python/test_fsdp.py NRANKS           (python with torch; 2 in CI)

Each rank runs both trainings in one job: the default group is "swccl" (its DeviceMesh made by
init_device_mesh("cpu")), a second group over the same ranks is "gloo" (DeviceMesh.from_group). From
the same seed, with data made from (seed, rank, step), a 4-layer MLP with every layer and the root
fully_shard'ed is trained STEPS steps with SGD (momentum), three times over swccl: as FSDP2 runs on CPU by
default (all-gathers and reduce-scatters with async_op=False: it only goes asynchronous on CUDA's side
streams), with async unshard (`_set_unshard_async_op(True)`: all-gathers with async_op=True) and explicit
forward/backward prefetching of the next two layers (several all-gathers in flight), and that with
forced SUM reductions; the sharded parameters (each rank's local shard) and
the full parameters (full_tensor(), gathered over each run's own backend) must be equal within float32
reduction-order tolerance (rtol 1e-5, atol 1e-6), and must have changed. FSDP2 reduces gradients over
swccl with ReduceOp.AVG (what it picks for float32); Gloo has no AVG reduce-scatter, so its run uses
set_force_sum_reduction_for_comms (SUM, then FSDP divides). Every run also checks, by recording the
calls the swccl group received, that FSDP drove it with all_gather_into_tensor and reduce_scatter_tensor,
and the prefetching runs that all-gathers came with async_op=True.
"""
import datetime
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
STEPS = 5


def fail(msg):
    print(f"[rank {os.environ.get('RANK')}] FAIL {msg}", flush=True)
    os._exit(1)


def make_model(seed):
    import torch
    import torch.nn as nn
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 48),
                         nn.ReLU(), nn.Linear(48, 5))


def batch(seed, rank, step):
    import torch
    g = torch.Generator().manual_seed(seed * 1000003 + rank * 1009 + step)
    return torch.randn(8, 16, generator=g), torch.randn(8, 5, generator=g)


def train(mesh, force_sum, prefetch, rank, seed=3):
    import torch
    from torch.distributed.fsdp import fully_shard
    model = make_model(seed)
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if force_sum:
        model.set_force_sum_reduction_for_comms(True)
    if prefetch:
        # all-gathers with async_op=True, the next layers' prefetched while one computes
        model._set_unshard_async_op(True)
        for i, layer in enumerate(layers):
            layer.set_modules_to_forward_prefetch(layers[i + 1:i + 3])
            layer.set_modules_to_backward_prefetch(layers[max(0, i - 2):i][::-1])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(STEPS):
        x, y = batch(seed, rank, step)
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    local = [p.to_local().detach().clone() for p in model.parameters()]
    full = [p.full_tensor().detach().clone() for p in model.parameters()]
    return local, full


def record_calls(group):
    """take() -> (operation, async_op) of every call the swccl group received since the last take():
    those its Python backend ran (its _submit, wrapped) and those the C++ fast path ran directly
    (synchronous; noted by its Gate)."""
    import swccl.torch as st
    calls = []
    pg = st.python_backend(group)
    gate = st.native_gate(group)
    submit = pg._submit

    def recording(op, enqueue, outputs, async_op=True, keep=(), post=None):
        calls.append((op, bool(async_op)))
        return submit(op, enqueue, outputs, async_op, keep, post)
    pg._submit = recording
    if gate is not None:
        gate.record(True)

    def take():
        out = calls[:] + ([(op, False) for op in gate.recorded()] if gate is not None else [])
        del calls[:]
        return out
    return take


def rank_main():
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
    import swccl.torch  # noqa: F401
    rank, n = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.FileStore(os.environ["PYSWCCL_FILE"], n)
    dist.init_process_group("swccl", store=store, rank=rank, world_size=n, timeout=datetime.timedelta(seconds=60))
    sw = dist.distributed_c10d._get_default_group()
    gloo = dist.new_group(backend="gloo")
    sw_mesh = init_device_mesh("cpu", (n,))
    gloo_mesh = DeviceMesh.from_group(gloo, "cpu")
    # (dist.get_backend, not group.name(): a C++ backend from outside torch, as swccl's fast path, is "custom" there)
    if dist.get_backend(sw_mesh.get_group()) != "swccl" or dist.get_backend(gloo_mesh.get_group()) != "gloo":
        fail(f"meshes are over {dist.get_backend(sw_mesh.get_group())} and {dist.get_backend(gloo_mesh.get_group())}")
    take_calls = record_calls(sw)
    ref_local, ref_full = train(gloo_mesh, True, False, rank)
    initial = [p.detach().clone() for p in make_model(3).parameters()]
    if all(torch.equal(a, b) for a, b in zip(ref_full, initial)):
        fail("training changed nothing (the test would prove nothing)")
    checked = 0
    for force_sum, prefetch in ((False, False), (False, True), (True, True)):
        take_calls()
        local, full = train(sw_mesh, force_sum, prefetch, rank)
        calls = take_calls()
        names = {op for op, a in calls}
        if not names & {"all_gather_into_tensor", "all_gather_into_tensor_coalesced"} or \
                not names & {"reduce_scatter_tensor", "reduce_scatter_tensor_coalesced"}:
            fail(f"FSDP did not drive swccl with all-gathers and reduce-scatters into tensors: calls {sorted(set(calls))}")
        if prefetch and not any(a and op.startswith("all_gather_into_tensor") for op, a in calls):
            fail(f"with async unshard and prefetching, no all-gather was issued with async_op=True: {sorted(set(calls))}")
        for i, (a, b) in enumerate(zip(local + full, ref_local + ref_full)):
            what = f"{'local shard' if i < len(local) else 'full parameter'} {i % len(local)}"
            if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
                fail(f"{'sum' if force_sum else 'avg'}: {what} differs between swccl and gloo: max |diff| "
                     f"{(a - b).abs().max().item() if a.shape == b.shape else 'shape ' + str(tuple(a.shape))}")
            checked += 1
        exact = sum(torch.equal(a, b) for a, b in zip(full, ref_full))
        print(f"[rank {rank}] swccl ({'SUM' if force_sum else 'AVG'} reductions, {'async prefetching' if prefetch else 'sync'}; "
              f"{len(calls)} calls: {sorted(set(calls))}): {exact}/{len(full)} full parameters bit-equal to gloo's", flush=True)
    print(f"[rank {rank}] PASS fsdp2: {checked} tensors equal between swccl and gloo", flush=True)
    dist.destroy_process_group()
    os._exit(0)


def launch(n, deadline_s=300):
    tmp = tempfile.mkdtemp(prefix="swccl-fsdp-")
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
    print(f"fsdp2 equivalence with {n} processes: exit codes {codes}: {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--rank":
        rank_main()
    elif len(sys.argv) == 2:
        sys.exit(0 if launch(int(sys.argv[1])) else 1)
    else:
        print(__doc__)
        sys.exit(2)
