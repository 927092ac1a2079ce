#!/usr/bin/env python3
"""SwiftCCL's fault campaign: real rank processes, real sockets and shared memory, real faults.

    python3 Tests/faults/campaign.py [--quick] [--only SUBSTRING] [--repeat N] [--lib DIR] [--list]

Each case starts ranks of Tests/faults/fault_rank.c (built here against DIR/libswccl.so, default
.build/release) that loop over collectives checking every result exactly, injects one fault, and
judges what the ranks report:
  hang      a rank still running at the case's hard deadline (every rank is killed then)
  crash     a rank that died of a signal we did not send, or exited with an unexpected code
  wrong     a rank that got a wrong result from a call that returned success
  blame     an error that does not name the culprit (the rank killed, stopped, late or disagreeing)
  slow      detection later than 1 s after a kill, or 2 x SWCCL_TIMEOUT_MS after a stop
  failed    a case that had to succeed (strangers, bad environment values, forks) and did not
Faults: SIGKILL / SIGSTOP of a rank at a random moment of loops of every collective (plain calls,
streams, groups) over tcp and shm, 3-16 ranks; recovery with swcclCommShrink after a kill; strangers
on the bootstrap root's and the ranks' ports (idle, garbage, truncated, huge lengths, forged hellos);
one rank calling with another count, zero count, root, type or op; bad environment values; a rank
6 s late at init (timeout 4 s); a rank that forks a child that uses and drops the inherited
communicator; ranks in PID namespaces of their own; a tiny descriptor limit; a full /dev/shm.
--quick runs the slice CI runs (a few minutes). Prints one line per case, then a summary line and
"N passed, M failed"; exits non-zero if any case failed.
"""
import argparse
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLS = ["allreduce", "broadcast", "reduce", "allgather", "reducescatter", "alltoall", "gather", "scatter", "sendrecv", "barrier"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def listening_ports(pid):
    """TCP ports process `pid` listens on (from /proc: its socket inodes, the kernel's LISTEN table)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                t = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            m = re.match(r"socket:\[(\d+)\]", t)
            if m:
                inodes.add(m.group(1))
    except OSError:
        return []
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and parts[9] in inodes:
                        ports.append(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return sorted(set(ports))


class Stranger:
    """Connections to a port that are not ranks: idle, garbage, truncated, huge lengths, forged hellos."""

    def __init__(self, kind, port):
        self.socks = []
        for _ in range(5 if kind == "idle" else 2):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
            try:
                if kind == "garbage":
                    s.sendall(os.urandom(4096))
                elif kind == "truncated":
                    s.sendall(struct.pack("<I", 1000) + b"SWBR" + b"\x01")
                elif kind == "hugelen":
                    s.sendall(struct.pack("<I", 0xFFFFFFF0))
                elif kind == "forged":
                    for magic in (0x53574252, 0x5357424F):
                        body = struct.pack("<II", magic, 1) + os.urandom(16) + struct.pack("<III", 1, 4, 4000) + struct.pack("<I", 8) + os.urandom(8)
                        s.sendall(struct.pack("<I", len(body)) + body)
            except OSError:
                pass
            self.socks.append(s)

    def close(self):
        for s in self.socks:
            s.close()


class Case:
    def __init__(self, name, ranks=3, transport="tcp", fault=None, colls=None, iters=40, count=4099, mode="plain",
                 timeout_ms=4000, expect="done", victim=None, env=None, rank_env=None, launcher=None, limit_s=None,
                 shrink=False, pause_ms=0):
        self.name, self.ranks, self.transport, self.fault = name, ranks, transport, fault
        self.colls, self.iters, self.count, self.mode = colls, iters, count, mode
        self.timeout_ms, self.expect, self.victim = timeout_ms, expect, victim
        self.env, self.rank_env, self.launcher = env or {}, rank_env or {}, launcher
        self.limit_s = limit_s or (30 + 3 * timeout_ms / 1000 + ranks)
        self.shrink, self.pause_ms = shrink, pause_ms


def run_case(case, binary, workdir):
    """Runs one case; returns (verdicts, detail)."""
    port = free_port()
    d = tempfile.mkdtemp(prefix=f"{case.name}-", dir=workdir)
    victim_file = os.path.join(d, "victim")
    base = dict(os.environ)
    for k in list(base):
        if k.startswith("SWCCL_") or k.startswith("FAULT_"):
            del base[k]
    base.update(SWCCL_SIZE=str(case.ranks), SWCCL_COMM_ID=f"127.0.0.1:{port}", SWCCL_SOCKET_IFNAME="lo",
                SWCCL_TIMEOUT_MS=str(case.timeout_ms), SWCCL_TRANSPORTS=case.transport,
                FAULT_ITERS=str(case.iters), FAULT_COUNT=str(case.count), FAULT_MODE=case.mode)
    if case.colls:
        base["FAULT_COLLS"] = ",".join(case.colls)
    if case.pause_ms:
        base["FAULT_PAUSE_MS"] = str(case.pause_ms)
    if case.shrink:
        base["FAULT_SHRINK"] = victim_file
    base.update(case.env)
    procs, logs, strangers = [], [], []
    t_start = time.monotonic()
    deadline = t_start + case.limit_s

    def spawn(r):
        env = dict(base, SWCCL_RANK=str(r))
        env.update(case.rank_env.get(r, {}))
        log = open(os.path.join(d, f"rank{r}.log"), "w+")
        cmd = (case.launcher or []) + [binary]
        pre = None
        if "nofile" in env:
            n = int(env.pop("nofile"))
            pre = lambda: __import__("resource").setrlimit(__import__("resource").RLIMIT_NOFILE, (n, n))  # noqa: E731
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pre), log

    def read(r):
        logs[r].flush()
        with open(logs[r].name, errors="replace") as f:
            return f.read()

    late = case.fault == "late"
    for r in range(case.ranks):
        if late and r == case.victim:
            procs.append(None)
            logs.append(open(os.path.join(d, f"rank{r}.log"), "w+"))
            continue
        p, log = spawn(r)
        procs.append(p)
        logs.append(log)
        if r == 0 and case.fault and case.fault.startswith("stranger-root"):
            # Strangers at the bootstrap root before the other ranks arrive.
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            strangers.append(Stranger(case.fault.split("-")[-1], port))
    t_fault = None
    if late:
        time.sleep(case.timeout_ms / 1000 * 1.5)
        p, _ = spawn(case.victim)
        procs[case.victim] = p
    # Wait for every rank to enter its loop (or to end), then inject the fault.
    while time.monotonic() < deadline and case.fault in ("kill", "stop", "stranger-ranks") :
        if all(p.poll() is not None or "LOOP" in read(r) for r, p in enumerate(procs)):
            break
        time.sleep(0.02)
    if case.fault in ("kill", "stop"):
        time.sleep(random.uniform(0.05, 0.6))
        t_fault = time.monotonic()
        if procs[case.victim].poll() is None:
            procs[case.victim].send_signal(signal.SIGKILL if case.fault == "kill" else signal.SIGSTOP)
        with open(victim_file, "w") as f:
            f.write(str(case.victim))
    elif case.fault == "stranger-ranks":
        for r, p in enumerate(procs):
            for prt in listening_ports(p.pid):
                if prt != port:
                    for kind in ("idle", "garbage", "truncated", "hugelen", "forged"):
                        strangers.append(Stranger(kind, prt))
    # Wait for the ranks (a stopped victim never ends: it is killed once the others are done).
    while time.monotonic() < deadline:
        if all(p.poll() is not None or (case.fault == "stop" and r == case.victim) for r, p in enumerate(procs)):
            break
        time.sleep(0.02)
    hung = [r for r, p in enumerate(procs) if p.poll() is None and not (case.fault == "stop" and r == case.victim)]
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
        p.wait()
    for s in strangers:
        s.close()
    outs = [read(r) for r in range(case.ranks)]
    codes = [p.returncode for p in procs]
    verdicts, notes, detections = [], [], []
    if hung:
        verdicts.append("hang")
        notes.append(f"ranks {hung} still running after {case.limit_s:.0f} s")
    for r, out in enumerate(outs):
        if "WRONG" in out:
            verdicts.append("wrong")
            notes.append(f"rank {r}: " + next(line for line in out.splitlines() if line.startswith("WRONG")))
    injected = case.fault in ("kill", "stop")
    for r, c in enumerate(codes):
        if r in hung or (injected and r == case.victim):
            continue
        if c is not None and c < 0:
            verdicts.append("crash")
            notes.append(f"rank {r} died of signal {-c}")
        elif c not in (0, 3, 4):
            verdicts.append("crash")
            notes.append(f"rank {r} exited with {c}")
    survivors = [r for r in range(case.ranks) if not (injected and r == case.victim) and r not in hung]
    if case.expect == "done":
        bad = [r for r in survivors if "DONE" not in outs[r]]
        if bad:
            verdicts.append("failed")
            r = bad[0]
            notes.append(f"rank {r} did not finish: " + (next((l for l in outs[r].splitlines() if l.startswith("ERROR")), outs[r][-300:])))
    elif case.expect in ("error", "rooted-mismatch", "p2p-mismatch"):
        # Every survivor must report an error naming the culprit (the deviant itself may name anyone).
        # In a rooted collective a rank whose own exchanges all agreed may finish with the result its
        # arguments promise (docs/RELIABILITY.md, "Argument agreement"): never wrong data (checked
        # above), and the deviant and at least one other rank must fail.
        finished = [r for r in survivors if "DONE" in outs[r]]
        if case.expect == "rooted-mismatch" and case.victim not in finished and len(finished) < len(survivors) - 1:
            survivors = [r for r in survivors if r not in finished]
        if case.expect == "p2p-mismatch":
            # Point to point: the receiver of the message of another size must fail (naming the
            # sender); a sender whose message fit the eager size has completed, as in NCCL.
            survivors = [(case.victim + 1) % case.ranks]
        for r in survivors:
            errs = [l for l in outs[r].splitlines() if l.startswith("ERROR")]
            if not errs:
                verdicts.append("failed")
                notes.append(f"rank {r} reported no error: {outs[r][-200:]!r}")
                continue
            text = errs[0]
            # "rank 7", or a list such as "ranks [3, 7]".
            named = re.search(rf"\brank {case.victim}\b", text) or re.search(rf"\branks \[[0-9, ]*\b{case.victim}\b", text)
            if case.victim is not None and r != case.victim and not named:
                verdicts.append("blame")
                notes.append(f"rank {r} blames someone else: {text[:300]}")
            if injected and t_fault is not None:
                m = re.search(r"t=(\d+)", text)
                if m:
                    ms = int(m.group(1)) - t_fault * 1000
                    detections.append(ms if case.fault == "kill" else ms / case.timeout_ms)
                    limit = 1000 if case.fault == "kill" else 2 * case.timeout_ms
                    if ms > limit:
                        verdicts.append("slow")
                        notes.append(f"rank {r} saw the {case.fault} after {ms:.0f} ms (limit {limit})")
        if case.shrink:
            bad = [r for r in survivors if "RECOVERED" not in outs[r]]
            if bad:
                verdicts.append("failed")
                notes.append(f"ranks {bad} did not recover with shrink")
    ok = not verdicts
    if ok:
        shutil.rmtree(d, ignore_errors=True)
    else:
        notes.append(f"logs in {d}")
    return sorted(set(verdicts)), "; ".join(notes), detections


def pidns_launcher():
    tool = ["/usr/bin/unshare", "-p", "-f", "--kill-child", "/bin/sh", "-c", '"$@"', "sh"]
    if os.geteuid() != 0 or not os.path.exists(tool[0]):
        return None
    if subprocess.run(tool + ["/bin/true"], capture_output=True).returncode != 0:
        return None
    return tool


def shmfull_launcher():
    tool = ["/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
            'mount -t tmpfs -o size=64k swccl-full /dev/shm && exec "$@"', "sh"]
    if os.geteuid() != 0 or not os.path.exists(tool[0]):
        return None
    if subprocess.run(tool + ["/bin/true"], capture_output=True).returncode != 0:
        return None
    return tool


def verbs_cases():
    """Kills and stops over RDMA verbs (`--transports ib`, run inside the Soft-RoCE VM): 3-4 ranks,
    timeouts sized for emulated RDMA (the VM runs without KVM, tens of times slower than the host)."""
    rnd = random.Random(15)
    out = []
    for coll in ("allreduce", "broadcast", "allgather", "reducescatter", "alltoall", "sendrecv"):
        n = rnd.choice([3, 4])
        out.append(Case(f"kill-ib-{coll}-{n}", n, "ib", "kill", colls=[coll], iters=100, pause_ms=2, count=1025,
                        expect="error", victim=rnd.randrange(n), timeout_ms=30000, limit_s=240))
        out.append(Case(f"stop-ib-{coll}-{n}", n, "ib", "stop", colls=[coll], iters=100, pause_ms=2, count=1025,
                        expect="error", victim=rnd.randrange(n), timeout_ms=8000, limit_s=240))
    for mode in ("stream", "group"):
        out.append(Case(f"kill-ib-{mode}-4", 4, "ib", "kill", iters=60, mode=mode, pause_ms=2, count=1025,
                        expect="error", victim=rnd.randrange(4), timeout_ms=30000, limit_s=240))
    return out


def cases(quick, transports=("tcp", "shm")):
    if "ib" in transports:
        return verbs_cases()
    rnd = random.Random(14)
    out = []
    # Kills and stops of a random rank during loops of every collective.
    for transport in ("tcp", "shm"):
        for coll in COLLS:
            n = rnd.choice([3, 4, 5])
            out.append(Case(f"kill-{transport}-{coll}-{n}", n, transport, "kill", colls=[coll], iters=400, pause_ms=2,
                            expect="error", victim=rnd.randrange(n), timeout_ms=5000))
            out.append(Case(f"stop-{transport}-{coll}-{n}", n, transport, "stop", colls=[coll], iters=400, pause_ms=2,
                            expect="error", victim=rnd.randrange(n), timeout_ms=2000))
        for mode in ("stream", "group"):
            out.append(Case(f"kill-{transport}-{mode}-4", 4, transport, "kill", iters=200, mode=mode, pause_ms=2,
                            expect="error", victim=rnd.randrange(4), timeout_ms=5000))
            out.append(Case(f"stop-{transport}-{mode}-4", 4, transport, "stop", iters=200, mode=mode, pause_ms=2,
                            expect="error", victim=rnd.randrange(4), timeout_ms=2000))
        for n in (8, 16):
            out.append(Case(f"kill-{transport}-allreduce-{n}", n, transport, "kill", colls=["allreduce"], iters=300, pause_ms=2,
                            expect="error", victim=rnd.randrange(n), timeout_ms=8000, limit_s=90))
            out.append(Case(f"stop-{transport}-allreduce-{n}", n, transport, "stop", colls=["allreduce"], iters=300, pause_ms=2,
                            expect="error", victim=rnd.randrange(n), timeout_ms=4000, limit_s=90))
        # (shrink's rendezvous needs TCP: with SWCCL_TRANSPORTS=shm it is refused with a clear error, so the
        # shared-memory case uses auto, which is shared memory on one host with a TCP listener beside it)
        out.append(Case(f"shrink-after-kill-{'auto' if transport == 'shm' else transport}-4", 4, "auto" if transport == "shm" else transport, "kill", colls=["allreduce"], iters=400, pause_ms=2,
                        expect="error", victim=rnd.randrange(1, 4), timeout_ms=5000, shrink=True))
    # Strangers.
    for kind in ("idle", "garbage", "truncated", "hugelen", "forged"):
        out.append(Case(f"stranger-root-{kind}", 4, "tcp", f"stranger-root-{kind}", colls=["allreduce", "broadcast"], iters=20))
    out.append(Case("stranger-ranks-tcp", 4, "tcp", "stranger-ranks", colls=["allreduce", "alltoall"], iters=150, pause_ms=5))
    # Mismatched arguments.
    for coll, what in [("allreduce", "count"), ("allreduce", "zero"), ("allreduce", "type"), ("allreduce", "op"),
                       ("broadcast", "root"), ("broadcast", "count"), ("reduce", "root"), ("reduce", "op"),
                       ("allgather", "count"), ("reducescatter", "count"), ("alltoall", "count"), ("gather", "root"),
                       ("scatter", "root"), ("sendrecv", "count")]:
        for transport in ("tcp", "shm"):
            n = 3 if (coll, what) < ("b",) else 4
            dev = rnd.randrange(n)
            rooted = coll in ("broadcast", "reduce", "gather", "scatter")
            out.append(Case(f"mismatch-{transport}-{coll}-{what}", n, transport, "mismatch", colls=[coll], iters=4,
                            expect="p2p-mismatch" if coll == "sendrecv" else "rooted-mismatch" if rooted else "error", victim=dev, rank_env={dev: {"FAULT_MISMATCH": f"{coll}:{what}:2"}}, timeout_ms=3000))
    # Bad environment values: a warning and the default, never a hang or a crash.
    for var, value in [("SWCCL_DEBUG", "WARNING"), ("SWCCL_DEBUG", "debug"), ("SWCCL_DEBUG", "1"), ("SWCCL_ALGO", "allreduce:nonsense"),
                       ("SWCCL_SHM_SLOTS", "-5"), ("SWCCL_SOCKET_NTHREADS", "many"), ("SWCCL_CHUNK_BYTES", "0x"),
                       ("SWCCL_SPIN_US", "1e99"), ("SWCCL_NUMA", "maybe"), ("SWCCL_DEBUG_SUBSYS", "\n^ALL")]:
        out.append(Case(f"env-{var}={value.strip()}", 3, "shm" if "SHM" in var else "tcp", None, colls=["allreduce", "alltoall"], iters=6,
                        env={var: value}))
    # A late rank at init; a rank that forks; PID namespaces; resource limits.
    out.append(Case("late-rank-8", 8, "tcp", "late", colls=["allreduce"], iters=3, expect="error", victim=7, timeout_ms=4000, limit_s=60))
    for transport in ("tcp", "shm"):
        out.append(Case(f"fork-child-{transport}", 3, transport, None, colls=["allreduce", "broadcast"], iters=10,
                        rank_env={0: {"FAULT_FORK_AT": "3"}}))
    pidns = pidns_launcher()
    if pidns:
        out.append(Case("pidns-shm", 3, "shm", None, colls=["allreduce", "allgather", "sendrecv"], iters=10, count=70001, launcher=pidns))
        out.append(Case("pidns-kill-shm", 3, "shm", "kill", colls=["allreduce"], iters=400, pause_ms=2, expect="error", victim=1,
                        timeout_ms=20000, launcher=pidns))
    out.append(Case("nofile-24-tcp", 4, "tcp", None, colls=["allreduce"], iters=4, expect="any", rank_env={r: {"nofile": "24"} for r in range(4)}))
    full = shmfull_launcher()
    if full:
        out.append(Case("shm-full", 3, "auto", None, colls=["allreduce"], iters=4, expect="any", launcher=full))
    if quick:
        keep = re.compile(r"^(kill-(tcp|shm)-(allreduce|broadcast|alltoall|stream|group)-\d+$|stop-tcp-(allreduce|reduce)-\d$|stop-shm-(allgather|alltoall|group)|"
                          r"kill-tcp-allreduce-8|stop-tcp-allreduce-8|shrink-after-kill-tcp|stranger-root-(idle|forged)|stranger-ranks|"
                          r"mismatch-(tcp|shm)-(allreduce-zero|broadcast-root)|mismatch-tcp-(reduce-root|allgather-count)|"
                          r"env-SWCCL_DEBUG=WARNING|env-SWCCL_SHM|late-rank|fork-child|pidns-|nofile|shm-full)")
        out = [c for c in out if keep.search(c.name)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the slice CI runs")
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--lib", default=os.path.join(ROOT, ".build", "release"))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--transports", default="tcp,shm",
                    help="tcp,shm (the default: every case) or ib (kills and stops over RDMA verbs; needs a device)")
    ap.add_argument("--binary", default="", help="a fault_rank already built (where no compiler is, as in the VM)")
    args = ap.parse_args()
    chosen = [c for c in cases(args.quick, tuple(args.transports.split(","))) if args.only in c.name]
    if args.list:
        for c in chosen:
            print(c.name)
        return 0
    lib = os.path.abspath(args.lib)
    work = tempfile.mkdtemp(prefix="swccl-faults-")
    binary = os.path.abspath(args.binary) if args.binary else os.path.join(work, "fault_rank")
    if not args.binary:
        subprocess.run(["gcc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{ROOT}/include", f"{ROOT}/Tests/faults/fault_rank.c",
                        "-o", binary, f"-L{lib}", "-lswccl", f"-Wl,-rpath,{lib}"], check=True)
    tally = {k: 0 for k in ("hang", "crash", "wrong", "blame", "slow", "failed")}
    seen = {}  # (fault, transport) -> detection delays of every survivor: ms for kills, x timeout for stops
    passed = failed = 0
    t0 = time.monotonic()
    for rep in range(args.repeat):
        for c in chosen:
            t = time.monotonic()
            verdicts, detail, det = run_case(c, binary, work)
            if c.fault in ("kill", "stop"):
                key = (c.fault, "shm" if c.transport in ("shm", "auto") else c.transport)
                seen.setdefault(key, []).extend(det)
            for v in verdicts:
                tally[v] += 1
            status = "ok" if not verdicts else "FAIL " + ",".join(verdicts)
            print(f"{c.name:40s} {status:12s} {time.monotonic() - t:5.1f} s  {detail}", flush=True)
            if verdicts:
                failed += 1
            else:
                passed += 1
    print(f"campaign: {passed + failed} cases in {time.monotonic() - t0:.0f} s: {tally['hang']} hangs, {tally['crash']} crashes, "
          f"{tally['wrong']} wrong results as success, {tally['blame']} errors not naming the culprit, "
          f"{tally['slow']} late detections, {tally['failed']} cases that had to succeed and did not")
    for (fault, transport), d in sorted(seen.items()):
        if d:
            d.sort()
            unit = (lambda v: f"{v:.0f} ms") if fault == "kill" else (lambda v: f"{v:.2f} x timeout")
            print(f"detection of a {'killed' if fault == 'kill' else 'stopped'} rank over {transport}: median {unit(d[len(d) // 2])}, "
                  f"max {unit(d[-1])} ({len(d)} survivors)")
    print(f"{passed} passed, {failed} failed")
    if failed == 0:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
