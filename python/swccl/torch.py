"""The torch.distributed backend "swccl": SwiftCCL collectives on CPU tensors.

    import swccl.torch                      # or `import swccl` with torch installed
    import torch.distributed as dist
    dist.init_process_group("swccl")        # torchrun (env://), init_method="tcp://...", store=..., "cpu:swccl"

Each process group owns one SwiftCCL communicator, made through the store torch gives the backend (rank 0
of the group calls swcclGetUniqueId and store.set()s the id under a key unique per group and
initialisation; the others store.get() it), with the group's timeout as the communicator's
`timeoutMs`, and one swcclStream_t on which every operation is enqueued in call order. A Work completes
when the stream has run its operation: with stream events (swcclEventRecord after each operation,
swcclEventWait / swcclEventQuery) when the library has them, else by swcclStreamSynchronize on the
group's completion thread. That thread (a Python thread that only calls into the library with the GIL
released) completes Works and their futures in order, each future exactly once. A synchronous call
(async_op=False) on a group with nothing in flight runs directly on the calling thread (stream NULL).

What torch calls and how it maps (docs/PYTORCH.md has the table): allreduce (+ coalesced), allgather
(list, into tensor, coalesced), reduce_scatter (list, tensor, coalesced), broadcast, reduce, gather,
scatter, alltoall (list) and all_to_all_single (uneven splits: a group of sends and receives),
send/recv (matched in call order per pair, as NCCL; tags are not matched), barrier, monitored_barrier
(through the store), split_group / new_group (a communicator per group through the store),
start_coalescing / end_coalescing (swcclGroupStart / swcclGroupEnd). Reductions: SUM, PRODUCT, MIN, MAX,
AVG, PREMUL_SUM; BAND/BOR/BXOR are refused (SwiftCCL has no bitwise reductions).
"""
import collections
import ctypes
import datetime
import os
import threading
import time

import torch
import torch.distributed as dist
from torch.futures import Future

import swccl as _sw

__all__ = ["ProcessGroupSwccl", "SwcclWork", "Options", "BACKEND_NAME", "python_backend", "native_gate"]

BACKEND_NAME = "swccl"
_IN_PROGRESS = _sw.IN_PROGRESS
_GRACE_S = 0.002     # how long the completion thread leaves a work to a thread in Work.wait()
_IDLE_MAX_S = 0.05   # its longest poll interval when nothing is pending
_NO_LIMIT = -1
_GATE_CLOSED = 1 << 40     # added to a Gate's count when the group closes (never taken back)
_GATE_NO_DIRECT = 1 << 41  # a Gate's count when the group's direct path is off

try:
    _BackendError = dist.DistBackendError
except AttributeError:  # older torch
    _BackendError = RuntimeError

_RedOpType = dist.ReduceOp.RedOpType
_OPS = {_RedOpType.SUM: 0, _RedOpType.PRODUCT: 1, _RedOpType.MAX: 2, _RedOpType.MIN: 3, _RedOpType.AVG: 4}
_BITWISE = {_RedOpType.BAND: "BAND", _RedOpType.BOR: "BOR", _RedOpType.BXOR: "BXOR"}


class Options:
    """pg_options of init_process_group / new_group for "swccl" (all optional):
    transports ("shm,tcp", "tcp", ...: swcclConfig_t.transports), name (the communicator's name in
    SwiftCCL's errors; default 'torch:<group name>'), direct (run synchronous calls on the calling
    thread when nothing is in flight; default True), native (serve the group through the C++ fast path
    when it is available; default True; SWCCL_TORCH_NATIVE=0 turns it off for every group)."""

    def __init__(self, transports=None, name=None, direct=True, native=True):
        self.transports = transports
        self.name = name
        self.direct = direct
        self.native = native


def _ms(timeout, default_ms=0):
    if timeout is None:
        return default_ms
    if isinstance(timeout, datetime.timedelta):
        ms = int(timeout.total_seconds() * 1000)
    else:
        ms = int(float(timeout) * 1000)
    return max(0, min(ms, 2**31 - 1))


def _reduce_op(opts):
    """(swcclRedOp code or None, premul factor or None) from torch's options / ReduceOp."""
    op = getattr(opts, "reduceOp", opts)
    if op is None:
        return 0, None
    kind = getattr(op, "op", op)
    if kind in _BITWISE:
        raise ValueError(f"swccl: ReduceOp.{_BITWISE[kind]} is not supported: SwiftCCL has no bitwise "
                         f"reductions (SUM, PRODUCT, MIN, MAX, AVG and PREMUL_SUM are); for bool tensors "
                         f"use MAX (or) / MIN (and)")
    if kind == _RedOpType.PREMUL_SUM:
        factor = op.factor
        if isinstance(factor, torch.Tensor):
            factor = factor.item()
        return None, factor
    if kind not in _OPS:
        raise ValueError(f"swccl: unknown reduction {op}")
    return _OPS[kind], None


_TYPE_CODES = {}  # torch.dtype -> swcclDataType_t (or None), filled as dtypes are seen


def _type_of(t, what):
    """swcclDataType_t of a tensor that is reduced; bool reduces as uint8."""
    code = _TYPE_CODES.get(t.dtype, -1)
    if code == -1:
        name = str(t.dtype).replace("torch.", "")
        code = _TYPE_CODES[t.dtype] = _sw._DTYPES.get("uint8" if name == "bool" else name)
    if code is None:
        raise TypeError(f"swccl: {what} has dtype {t.dtype}, which SwiftCCL cannot reduce (it reduces "
                        f"{', '.join(_sw._DTYPES)} and bool); convert it, or use a data-moving operation")
    return code


def _ptr(t, what):
    return _sw.check_tensor(t, what) if t.numel() else None


def _nbytes(t):
    return t.numel() * t.element_size()


def _flat(tensors):
    """The address of tensors laid out back to back in one buffer (zero-copy), else None."""
    if not tensors:
        return None
    for t in tensors:
        if t.device.type != "cpu" or not t.is_contiguous() or t.dtype != tensors[0].dtype:
            return None
    base = tensors[0].data_ptr()
    at = base
    for t in tensors:
        if t.data_ptr() != at:
            return None
        at += _nbytes(t)
    return base


class _DeviceTypes(list):
    """The group's device types: [cpu] to `in` and iteration (monitored_barrier and split_group check
    for cpu), but false as a truth value, which is how torch tells a Python ProcessGroup (no C++
    backend, so no name for its flight recorder to file entries under) and skips attaching the recorder."""

    def __bool__(self):
        return False


_CPU_ONLY = _DeviceTypes([torch.device("cpu")])


class SwcclWork(dist._Work):
    """One operation (or a coalesced batch) of a swccl process group.

    wait(timeout) blocks (GIL released) until the operation completed on this rank and raises its
    error (SwiftCCL's line: operation, rank, peer, cause); is_completed() never blocks; get_future() is
    completed exactly once, with the output tensors (or the error), in issue order."""

    def __init__(self, pg, op, outputs, keep=(), post=None):
        super().__init__()
        self._pg = pg
        self._op = op
        self._outputs = outputs
        self._keep = keep
        self._post = post
        self._future = Future()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._claimed = False
        self._error = None
        self._event = None       # swcclEvent_t (events mode)
        self._event_users = 0
        self._event_release = False
        self._seq = 0            # position in the group's stream (fallback mode)
        self._tracked = False    # counted in the group's operations in flight
        self._shared_event = None
        self._wanted = False     # its future was asked for: the completion thread completes it at once

    # -- completion (any thread; exactly once) --
    def _finish(self, result, message=None):
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
        error = None
        if result == 0:
            try:
                if self._post is not None:
                    self._post()
            except Exception as e:  # a copy-out failed: report it like an operation error
                error = _BackendError(f"swccl: {self._op} on rank {self._pg._rank}: copying the result out failed: {e}")
        else:
            error = _BackendError(message or self._pg._error_text(self._op, result))
        self._keep = ()
        self._post = None
        self._error = error
        self._pg._retire(self)
        self._done.set()
        if error is None:
            self._future.set_result(self._outputs)
        else:
            self._future.set_exception(error)
        return True

    def _release_event(self, by_owner):
        lib = self._pg._lib
        with self._lock:
            if by_owner:
                self._event_release = True
            else:
                self._event_users -= 1
            ev = self._event if (self._event_release and self._event_users == 0) else None
            if ev is not None:
                self._event = None
        if ev is not None:
            lib.swcclEventDestroy(ev)

    def _wait_event(self, ms):
        """swcclEventWait on this work's event (GIL released); the result, or None if it is gone."""
        with self._lock:
            ev = self._event
            if ev is None or self._event_release:
                return None
            self._event_users += 1
        try:
            return self._pg._lib.swcclEventWait(ev, ms)
        finally:
            self._release_event(by_owner=False)

    # -- torch's Work API --
    def wait(self, timeout=None):
        ms = _ms(timeout, 0)
        limit = ms if ms > 0 else _NO_LIMIT
        if not self._done.is_set():
            r = self._wait_event(limit) if self._event is not None else None
            if r is None and limit < 0 and self._tracked and not self._pg._events:
                # Fallback mode, no time limit: wait for the stream on this thread (GIL released) and
                # complete what it ran, rather than wait for the completion thread to do so.
                while not self._done.is_set():
                    self._pg._drain()
                completed = True
            elif r is None:  # no event of its own (a coalesced member, a time limit, or already completed)
                completed = self._done.wait(None if limit < 0 else limit / 1000.0)
            elif r == _IN_PROGRESS:
                completed = False
            else:
                # Complete this work and every earlier one still pending, in issue order (futures are
                # set in the order the operations ran, whoever notices first).
                self._pg._complete_through(self, r)
                completed = self._done.wait()  # (another thread may be finishing it)
            if not completed:
                raise _BackendError(f"swccl: {self._op} on rank {self._pg._rank} of process group "
                                    f"'{self._pg._group_label()}' did not complete within {ms} ms (Work.wait timeout); "
                                    f"it is still in flight")
        if self._error is not None:
            raise self._error
        return True

    def is_completed(self):
        if not self._done.is_set() and self._event is None and self._tracked and not self._pg._events:
            # without events: if the stream has run everything, complete it here (no blocking)
            if self._pg._stream.value and self._pg._lib.swcclStreamQuery(self._pg._stream) != _IN_PROGRESS:
                self._pg._drain()
        if not self._done.is_set() and self._event is not None:
            with self._lock:
                ev = None if self._event_release else self._event
                if ev is not None:
                    self._event_users += 1
            if ev is not None:
                try:
                    r = self._pg._lib.swcclEventQuery(ev)
                finally:
                    self._release_event(by_owner=False)
                if r != _IN_PROGRESS:
                    self._pg._complete_through(self, r)
        return self._done.is_set()

    def is_success(self):
        return self.is_completed() and self._error is None

    def exception(self):
        return self._error

    def get_future(self):
        if not self._wanted:
            self._wanted = True
            if not self._done.is_set():
                self._pg._poke()
        return self._future

    def result(self):
        self.wait()
        return self._outputs

    def synchronize(self):
        self.wait()

    def source_rank(self):
        raise ValueError("swccl: source_rank is only meaningful for recv_anysource, which swccl does not support")

    def __repr__(self):
        return f"SwcclWork({self._op}, {'done' if self._done.is_set() else 'in flight'})"


class _CompletedWork(dist._Work):
    """The Work of an operation that completed before the call returned (a synchronous call on the
    direct path): wait() returns (or raises the operation's error) at once; the future is made when
    asked for, already completed with the output tensors or the error."""

    def __init__(self, pg, op, outputs, error=None):
        super().__init__()
        self._pg = pg
        self._op = op
        self._outputs = outputs
        self._error = error
        self._future = None

    def wait(self, timeout=None):
        if self._error is not None:
            raise self._error
        return True

    def is_completed(self):
        return True

    def is_success(self):
        return self._error is None

    def exception(self):
        return self._error

    def get_future(self):
        if self._future is None:
            self._future = Future()
            if self._error is None:
                self._future.set_result(self._outputs)
            else:
                self._future.set_exception(self._error)
        return self._future

    def result(self):
        self.wait()
        return self._outputs

    def synchronize(self):
        self.wait()

    def source_rank(self):
        raise ValueError("swccl: source_rank is only meaningful for recv_anysource, which swccl does not support")

    def __repr__(self):
        return f"SwcclWork({self._op}, done)"


class ProcessGroupSwccl(dist.ProcessGroup):
    """A torch.distributed ProcessGroup over one SwiftCCL communicator and stream (see the module doc)."""

    def __init__(self, store, rank, size, timeout=None, group_name=None, options=None, global_ranks=None):
        super().__init__(store, rank, size)
        self._lib = _sw._load()
        self._store = store
        self._rank = rank
        self._size = size
        self._options = options if options is not None else Options()
        self._timeout = timeout if timeout is not None else datetime.timedelta(minutes=30)
        self._timeout_ms = _ms(self._timeout, 0)
        self._global_ranks = list(global_ranks) if global_ranks else list(range(size))
        self._name = group_name
        self._comm = ctypes.c_void_p()
        self._stream = ctypes.c_void_p()
        self._events = _sw.has_events
        self._lock = threading.RLock()
        self._cond = threading.Condition(threading.Lock())
        self._sync_lock = threading.RLock()  # serializes _drain (re-entered by a future callback that waits)
        self._sticky = None                  # (result, text) of the first failure seen by _drain
        self._urgent = False                 # complete what is pending now (see _complete_loop)
        self._pending = collections.deque()
        self._inflight = 0
        self._seq = 0
        self._closed = False
        self._aborted = False
        self._coalescing = None   # list of works recorded between start_coalescing and end_coalescing
        self._deferred_ops = []   # PREMUL_SUM operators to destroy once their calls returned
        # The C++ fast path's Gate when this object serves a group through it (_native): held around
        # every call on the communicator; its count is kept above zero while anything is in flight
        # on the stream, a coalescing block is open, the group is closed or the direct path is off.
        self._gate = None
        self._direct = bool(getattr(self._options, "direct", True)) and os.environ.get("SWCCL_TORCH_DIRECT", "1") != "0"
        # Waiting ranks yield the core between polls (SwiftCCL's default yields only when this host has
        # more ranks than cores). A torch process shares its cores with intra-op threads, data loaders
        # and other jobs: there, spinning without yielding made 2-rank collectives 4-6x slower
        # (docs/PERFORMANCE.md), while a yield costs ~1 us on a call that costs ~8 us of Python.
        # SWCCL_SPIN_YIELD set by the user (0 or 1) is left alone.
        os.environ.setdefault("SWCCL_SPIN_YIELD", "1")
        self._init_comm()
        _sw._check(self._lib.swcclStreamCreate(ctypes.byref(self._stream)))
        self._thread = threading.Thread(target=self._complete_loop, name=f"swccl-completion-{self._group_label()}", daemon=True)
        self._thread.start()

    # -- set-up --
    def _group_label(self):
        return self._name if self._name else "default"

    def _init_comm(self):
        """The communicator, through the store: rank 0 makes the unique id and sets it under a key
        unique to this initialisation; the others get it (bounded by the store's timeout)."""
        store = self._store
        n = store.add("swccl/initialisations", 1)
        key = f"swccl/unique_id/{(n - 1) // self._size}"
        if self._rank == 0:
            saved = os.environ.pop("SWCCL_COMM_ID", None)  # each group needs a rendezvous of its own
            try:
                uid = _sw.get_unique_id()
            finally:
                if saved is not None:
                    os.environ["SWCCL_COMM_ID"] = saved
            store.set(key, uid)
        else:
            uid = bytes(store.get(key))
        cu = _sw._UniqueId()
        ctypes.memmove(ctypes.addressof(cu), uid, _sw.UNIQUE_ID_BYTES)
        name = getattr(self._options, "name", None) or f"torch:{self._group_label()}"
        transports = getattr(self._options, "transports", None)
        self._name_bytes = name.encode()
        self._transports_bytes = transports.encode() if transports else None
        cfg = _sw._Config(ctypes.sizeof(_sw._Config), 0x5357434C, _sw.version(), self._timeout_ms,
                          self._transports_bytes, self._name_bytes)
        r = self._lib.swcclCommInitRankConfig(ctypes.byref(self._comm), self._size, cu, self._rank, ctypes.byref(cfg))
        if r != 0:
            text = _sw.last_error(None)
            raise _BackendError(f"swccl: creating the communicator of process group '{self._group_label()}' "
                                f"(rank {self._rank} of {self._size}) failed: {_sw.RESULTS.get(r, r)}: {text}")

    def _error_text(self, op, result):
        text = _sw.last_error(self._comm) if self._comm.value else ""
        if self._aborted:
            text = (text + "; " if text else "") + "the process group was aborted"
        return (f"swccl: {op} on process group '{self._group_label()}' failed: "
                f"{_sw.RESULTS.get(result, f'result {result}')}: {text or _sw.last_error(None) or 'no detail'}")

    # -- torch's identity --
    def getBackendName(self):
        return BACKEND_NAME

    # The group's name and description live here (the C++ ProcessGroup keeps them in its backends,
    # which a Python group has none of).
    def setGroupName(self, name):
        self._name = name

    def getGroupName(self):
        return self._name or ""

    def setGroupDesc(self, desc):
        self._desc = desc

    def getGroupDesc(self):
        return getattr(self, "_desc", "") or ""

    @property
    def _device_types(self):
        return _CPU_ONLY

    def _get_backend(self, device=None):
        return self

    @property
    def supports_splitting(self):
        return True

    @property
    def supports_coalescing(self):
        return True

    @property
    def options(self):
        return self._options

    def set_timeout(self, timeout):
        self._timeout = timeout  # SwiftCCL's deadline was fixed when the communicator was made

    def __repr__(self):
        return f"ProcessGroupSwccl(group '{self._group_label()}', rank {self._rank} of {self._size})"

    # -- the engine --
    def _usable(self, op):
        if self._closed or not self._comm.value:
            raise ValueError(f"swccl: {op} on process group '{self._group_label()}' after it was "
                             f"{'aborted' if self._aborted else 'destroyed'}")

    def _submit(self, op, enqueue, outputs, async_op=True, keep=(), post=None):
        """Runs enqueue(stream) (the library calls of one operation) on the group's stream, or directly
        (stream NULL) for a synchronous call when nothing is in flight; returns its Work."""
        gate = self._gate
        if gate is None:
            return self._submit_locked(op, enqueue, outputs, async_op, keep, post)
        with self._lock:
            gate.acquire()
            try:
                return self._submit_locked(op, enqueue, outputs, async_op, keep, post)
            finally:
                gate.release()

    def _submit_locked(self, op, enqueue, outputs, async_op, keep, post):
        with self._lock:
            self._usable(op)
            if self._direct and not async_op and self._inflight == 0 and self._coalescing is None:
                r = enqueue(None)  # blocking, GIL released by ctypes
                if self._deferred_ops:
                    self._flush_ops()
                error = None
                if r != 0:
                    error = _BackendError(self._error_text(op, r))
                elif post is not None:
                    try:
                        post()
                    except Exception as e:  # a copy-out failed: report it like an operation error
                        error = _BackendError(f"swccl: {op} on rank {self._rank}: copying the result out failed: {e}")
                return _CompletedWork(self, op, outputs, error)
            work = SwcclWork(self, op, outputs, keep, post)
            if self._coalescing is not None:
                r = enqueue(self._stream)
                if r != 0:
                    raise _BackendError(self._error_text(op, r))
                self._coalescing.append(work)
                return work
            r = enqueue(self._stream)
            self._flush_ops()
            if r != 0:
                raise _BackendError(self._error_text(op, r))
            self._track([work])
            return work

    def _track(self, works):
        """Marks the stream's current end as the completion point of works and queues them."""
        marker = None
        if self._events:
            marker = ctypes.c_void_p()
            _sw._check(self._lib.swcclEventCreate(ctypes.byref(marker)))
            r = self._lib.swcclEventRecord(marker, self._stream)
            if r != 0:
                self._lib.swcclEventDestroy(marker)
                raise _BackendError(self._error_text("swcclEventRecord", r))
        with self._cond:
            self._seq += 1
            for i, w in enumerate(works):
                w._seq = self._seq
                w._tracked = True
                if marker is not None:
                    w._event = marker if i == len(works) - 1 else None
                    w._shared_event = marker
                self._inflight += 1
                self._pending.append(w)
            if self._gate is not None:  # (the caller holds the gate: no direct call overtakes these)
                self._gate.add(len(works))
            # No wake-up here: a thread in Work.wait() usually completes the work itself; the
            # completion thread is woken by get_future() (_poke) and otherwise finds it by polling.

    def _poke(self):
        """Asks the completion thread to complete what is pending now (a future was asked for, or
        the group is closing) rather than after its grace period."""
        with self._cond:
            self._urgent = True
            self._cond.notify()

    def _retire(self, work):
        if work._tracked:
            with self._cond:
                self._inflight -= 1
            if self._gate is not None:
                self._gate.add(-1)

    def _flush_ops(self):
        for op in self._deferred_ops:
            self._lib.swcclRedOpDestroy(op, self._comm)
        self._deferred_ops = []

    def _complete_through(self, target, result):
        """Events mode: `target`'s event reported `result`. Completes every pending work up to and
        including it, in issue order; the earlier ones ran before it on the stream, so their events are
        complete too and say each one's own result. (The completion thread skips what is gone.)"""
        with self._cond:
            if not any(w is target for w in self._pending):
                batch = None
            else:
                batch = []
                while self._pending:
                    w = self._pending.popleft()
                    batch.append(w)
                    if w is target:
                        break
        if batch is None:  # the completion thread has it: it finishes it (in order) promptly
            return
        results = {}
        for w in batch:
            ev = w._shared_event
            if w is target:
                r = result
            elif id(ev) in results:
                r = results[id(ev)]
            else:
                r = self._lib.swcclEventQuery(ev)
                if r == _IN_PROGRESS:  # cannot be (in-order stream); treat as the later result
                    r = result
            results[id(ev)] = r
            w._finish(r)
            if w._event is not None:  # the last work of its batch owns the event
                w._release_event(by_owner=True)

    def _complete_loop(self):
        """The completion thread: completes pending works in order (calls into the library release
        the GIL; only this Python thread touches futures from here)."""
        lib = self._lib
        idle = _GRACE_S
        stale = None
        while True:
            with self._cond:
                # Completes pending works at once when asked (_poke: a future was asked for; closing),
                # else gives the head of the queue one grace period for a thread in Work.wait() to
                # complete it (one thread wake-up less per operation), then completes it here. Idle,
                # it polls with a growing interval (a work nobody waits for or asks the future of
                # completes within that interval).
                while True:
                    if not self._pending:
                        self._urgent = False
                        if self._closed:
                            return
                        self._cond.wait(idle)
                        idle = min(idle * 2, _IDLE_MAX_S)
                        continue
                    idle = _GRACE_S
                    head = self._pending[0]
                    if self._urgent or self._closed or head._wanted or head is stale:
                        break
                    stale = head
                    self._cond.wait(_GRACE_S)
                work = self._pending[0]
                upto = self._seq
            if self._events:
                ev = getattr(work, "_shared_event", None)
                r = _IN_PROGRESS
                while r == _IN_PROGRESS:
                    r = lib.swcclEventWait(ev, 1000)
                with self._cond:
                    batch = []
                    while self._pending and getattr(self._pending[0], "_shared_event", None) is ev:
                        batch.append(self._pending.popleft())
                if not batch:  # a waiter completed them meanwhile (_complete_through)
                    continue
                for w in batch:
                    w._finish(r)
                # The event is destroyed once no waiter uses it (the last work of the batch owns it).
                batch[-1]._release_event(by_owner=True)
            else:
                self._drain()

    def _drain(self):
        """Without stream events: waits for the stream (GIL released) and completes, in issue order,
        every work enqueued before. Called by the completion thread, and by a thread in Work.wait()
        (which then wakes as soon as the stream is done, without a hand-off through the completion
        thread). Calls are serialized: swcclStreamSynchronize clears the stream's error, so exactly one
        caller sees it; it is kept here, and every work still pending then fails with it (the
        communicator is broken anyway)."""
        with self._sync_lock:
            with self._cond:
                upto = self._seq
            if self._stream.value:
                r = self._lib.swcclStreamSynchronize(self._stream)
                if r != 0 and self._sticky is None:
                    self._sticky = (r, self._error_text("operation", r))
            sticky = self._sticky
            with self._cond:
                batch = []
                while self._pending and (sticky is not None or self._pending[0]._seq <= upto):
                    batch.append(self._pending.popleft())
            for w in batch:
                if sticky is None:
                    w._finish(0)
                else:
                    w._finish(sticky[0], sticky[1].replace("swccl: operation", f"swccl: {w._op}", 1))

    def _wait_idle(self, limit_s):
        deadline = time.monotonic() + limit_s
        while True:
            with self._cond:
                if not self._pending:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)

    # -- operations: helpers --
    def _op_code(self, opts, tensor, what):
        code, factor = _reduce_op(opts)
        dtype = _type_of(tensor, what)
        if tensor.dtype == torch.bool:
            if code == 4 or factor is not None:
                raise ValueError(f"swccl: {'AVG' if code == 4 else 'PREMUL_SUM'} is meaningless on the bool {what}; use MAX or MIN")
            code = {0: 2, 1: 3}.get(code, code)  # sum = or, product = and (as NCCL)
        if factor is not None:
            op = ctypes.c_int()
            value = _sw.scalar_bytes(factor, dtype)
            gate = self._gate
            if gate is not None:
                gate.acquire()
            try:
                r = self._lib.swcclRedOpCreatePreMulSum(ctypes.byref(op), value, dtype, 1, self._comm)
            finally:
                if gate is not None:
                    gate.release()
            _sw._check(r, self._comm)
            self._deferred_ops.append(op.value)
            code = op.value
        return dtype, code

    def _group(self, calls):
        """enqueue(stream) that runs several library calls as one swcclGroupStart/End unit."""
        lib = self._lib

        def enqueue(stream):
            lib.swcclGroupStart()
            first = 0
            for call in calls:
                r = call(stream)
                if r != 0 and first == 0:
                    first = r
            r = lib.swcclGroupEnd()
            return first or r
        return enqueue

    # -- allreduce --
    def _allreduce_calls(self, tensors, opts, name):
        lib, comm = self._lib, self._comm
        calls = []
        for i, t in enumerate(tensors):
            what = f"tensor {i} of {name}"
            p = _ptr(t, what)
            dtype, code = self._op_code(opts, t, what)
            n = t.numel()
            calls.append(lambda s, p=p, n=n, dtype=dtype, code=code: lib.swcclAllReduce(p, p, n, dtype, code, comm, s))
        return calls

    def allreduce(self, tensors, opts=None):
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        if len(tensors) == 1 and opts is not None and not opts.asyncOp and self._direct:
            # The synchronous all-reduce of one tensor (dist.all_reduce): the library call and a
            # completed Work, nothing else (what _allreduce_calls/_submit do, minus their generality).
            t = tensors[0]
            code = _OPS.get(opts.reduceOp.op)
            dtype = _TYPE_CODES.get(t.dtype)
            if (code is not None and dtype is not None and t.dtype != torch.bool and t.layout == torch.strided
                    and t.is_cpu and t.is_contiguous()):
                gate = self._gate
                with self._lock:
                    if gate is not None:
                        gate.acquire()
                    try:
                        if self._inflight == 0 and self._coalescing is None and not self._closed and self._comm.value:
                            n = t.numel()
                            p = t.data_ptr() if n else None
                            r = self._lib.swcclAllReduce(p, p, n, dtype, code, self._comm, None)
                            return _CompletedWork(self, "allreduce", tensors,
                                                  None if r == 0 else _BackendError(self._error_text("allreduce", r)))
                    finally:
                        if gate is not None:
                            gate.release()
        calls = self._allreduce_calls(tensors, opts, "allreduce")
        enqueue = calls[0] if len(calls) == 1 else self._group(calls)
        return self._submit("allreduce", enqueue, tensors, getattr(opts, "asyncOp", True), keep=tensors)

    def allreduce_coalesced(self, tensors, opts=None):
        calls = self._allreduce_calls(tensors, opts, "allreduce_coalesced")
        return self._submit("allreduce_coalesced", self._group(calls), tensors, getattr(opts, "asyncOp", True), keep=tensors)

    # -- broadcast / reduce --
    def broadcast(self, tensors, opts=None):
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        root = getattr(opts, "rootRank", 0)
        lib, comm = self._lib, self._comm
        calls = []
        for i, t in enumerate(tensors):
            p = _ptr(t, f"tensor {i} of broadcast")
            nb = _nbytes(t)
            calls.append(lambda s, p=p, nb=nb: lib.swcclBroadcast(p, p, nb, _sw.BYTES, root, comm, s))
        enqueue = calls[0] if len(calls) == 1 else self._group(calls)
        return self._submit("broadcast", enqueue, tensors, getattr(opts, "asyncOp", True), keep=tensors)

    def reduce(self, tensors, opts=None):
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        root = getattr(opts, "rootRank", 0)
        lib, comm = self._lib, self._comm
        calls = []
        for i, t in enumerate(tensors):
            what = f"tensor {i} of reduce"
            p = _ptr(t, what)
            dtype, code = self._op_code(opts, t, what)
            n = t.numel()
            calls.append(lambda s, p=p, n=n, dtype=dtype, code=code: lib.swcclReduce(p, p, n, dtype, code, root, comm, s))
        enqueue = calls[0] if len(calls) == 1 else self._group(calls)
        return self._submit("reduce", enqueue, tensors, getattr(opts, "asyncOp", True), keep=tensors)

    # -- all-gather --
    def _allgather_base_call(self, output, input, name):
        n = self._size
        if output.numel() != n * input.numel() or output.dtype != input.dtype:
            raise ValueError(f"swccl: {name}: the output tensor must hold {n} x {input.numel()} elements of "
                             f"{input.dtype} (it has {output.numel()} of {output.dtype})")
        pi, po = _ptr(input, f"input tensor of {name}"), _ptr(output, f"output tensor of {name}")
        nb, lib, comm = _nbytes(input), self._lib, self._comm
        return lambda s: lib.swcclAllGather(pi, po, nb, _sw.BYTES, comm, s)

    def _allgather_list_call(self, outputs, input, name):
        """All-gather into a list of tensors: straight into them when they lie back to back, else
        through a flat buffer copied out when the operation completed."""
        n = self._size
        if len(outputs) != n:
            raise ValueError(f"swccl: {name}: the output list must hold {n} tensors (the group size), not {len(outputs)}")
        for j, o in enumerate(outputs):
            if o.numel() != input.numel() or o.dtype != input.dtype:
                raise ValueError(f"swccl: {name}: output tensor {j} must have {input.numel()} elements of "
                                 f"{input.dtype} (it has {o.numel()} of {o.dtype})")
            if o.device.type != "cpu":
                _sw.check_tensor(o, f"output tensor {j} of {name}")
        pi = _ptr(input, f"input tensor of {name}")
        base = _flat(outputs)
        keep, post = [input, outputs], None
        if base is None:
            flat = torch.empty(n * input.numel(), dtype=input.dtype)
            base = flat.data_ptr() if flat.numel() else None
            keep.append(flat)

            def post(flat=flat, outputs=outputs):
                for o, c in zip(outputs, flat.chunk(n) if flat.numel() else [flat] * n):
                    o.copy_(c.view_as(o))
        nb, lib, comm = _nbytes(input), self._lib, self._comm
        return (lambda s: lib.swcclAllGather(pi, base, nb, _sw.BYTES, comm, s)), keep, post

    def allgather(self, output_tensors, input_tensors, opts=None):
        if isinstance(input_tensors, torch.Tensor):
            input_tensors, output_tensors = [input_tensors], [output_tensors]
        calls, keeps, posts = [], [], []
        for i, (outs, inp) in enumerate(zip(output_tensors, input_tensors)):
            c, k, p = self._allgather_list_call(outs, inp, "allgather")
            calls.append(c)
            keeps.append(k)
            if p:
                posts.append(p)
        enqueue = calls[0] if len(calls) == 1 else self._group(calls)
        return self._submit("allgather", enqueue, output_tensors, getattr(opts, "asyncOp", True), keep=keeps,
                            post=(lambda: [p() for p in posts]) if posts else None)

    def allgather_coalesced(self, output_lists, input_list, opts=None):
        """all_gather_coalesced: output_lists[r][i] receives rank r's input_list[i] (one list per
        rank, the transpose of allgather's one list per input)."""
        n = self._size
        if len(output_lists) != n or any(len(o) != len(input_list) for o in output_lists):
            raise ValueError(f"swccl: allgather_coalesced: the output must be {n} lists (one per rank) of "
                             f"{len(input_list)} tensors (one per input)")
        per_input = [[output_lists[r][i] for r in range(n)] for i in range(len(input_list))]
        work = self.allgather(per_input, input_list, opts)
        work._outputs = output_lists
        return work

    def _allgather_base(self, output, input, opts=None):
        return self._submit("all_gather_into_tensor", self._allgather_base_call(output, input, "all_gather_into_tensor"),
                            [output], getattr(opts, "asyncOp", True), keep=(output, input))

    all_gather_single = _allgather_base

    def allgather_into_tensor_coalesced(self, outputs, inputs, opts=None):
        calls = [self._allgather_base_call(o, i, "all_gather_into_tensor_coalesced") for o, i in zip(outputs, inputs)]
        return self._submit("all_gather_into_tensor_coalesced", self._group(calls), outputs,
                            getattr(opts, "asyncOp", True), keep=(outputs, inputs))

    all_gather_single_coalesced = allgather_into_tensor_coalesced

    # -- reduce-scatter --
    def _reduce_scatter_base_call(self, output, input, opts, name, pi=None):
        n = self._size
        if input is not None:
            if input.numel() != n * output.numel() or output.dtype != input.dtype:
                raise ValueError(f"swccl: {name}: the input tensor must hold {n} x {output.numel()} elements of "
                                 f"{output.dtype} (it has {input.numel()} of {input.dtype})")
            pi = _ptr(input, f"input tensor of {name}")
        po = _ptr(output, f"output tensor of {name}")
        dtype, code = self._op_code(opts, output, f"output tensor of {name}")
        count, lib, comm = output.numel(), self._lib, self._comm
        return lambda s: lib.swcclReduceScatter(pi, po, count, dtype, code, comm, s)

    def reduce_scatter(self, output_tensors, input_tensors, opts=None):
        if isinstance(output_tensors, torch.Tensor):
            output_tensors, input_tensors = [output_tensors], [input_tensors]
        calls, keep = [], []
        for out, ins in zip(output_tensors, input_tensors):
            if len(ins) != self._size:
                raise ValueError(f"swccl: reduce_scatter: the input list must hold {self._size} tensors, not {len(ins)}")
            for j, t in enumerate(ins):
                if t.numel() != out.numel() or t.dtype != out.dtype:
                    raise ValueError(f"swccl: reduce_scatter: input tensor {j} must have {out.numel()} elements of {out.dtype}")
                _sw.check_tensor(t, f"input tensor {j} of reduce_scatter")
            base = _flat(ins) if out.numel() else None
            flat = None
            if base is None and out.numel():
                flat = torch.cat([t.reshape(-1) for t in ins])  # the inputs as they are now
                base = flat.data_ptr()
            calls.append(self._reduce_scatter_base_call(out, None, opts, "reduce_scatter", pi=base))
            keep.append((out, ins, flat))
        enqueue = calls[0] if len(calls) == 1 else self._group(calls)
        return self._submit("reduce_scatter", enqueue, output_tensors, getattr(opts, "asyncOp", True), keep=keep)

    def _reduce_scatter_base(self, output, input, opts=None):
        return self._submit("reduce_scatter_tensor", self._reduce_scatter_base_call(output, input, opts, "reduce_scatter_tensor"),
                            [output], getattr(opts, "asyncOp", True), keep=(output, input))

    reduce_scatter_single = _reduce_scatter_base

    def reduce_scatter_tensor_coalesced(self, outputs, inputs, opts=None):
        calls = [self._reduce_scatter_base_call(o, i, opts, "reduce_scatter_tensor_coalesced") for o, i in zip(outputs, inputs)]
        return self._submit("reduce_scatter_tensor_coalesced", self._group(calls), outputs,
                            getattr(opts, "asyncOp", True), keep=(outputs, inputs))

    reduce_scatter_single_coalesced = reduce_scatter_tensor_coalesced

    # -- gather / scatter --
    def gather(self, output_tensors, input_tensors, opts=None):
        root = getattr(opts, "rootRank", 0)
        n, lib, comm = self._size, self._lib, self._comm
        inp = input_tensors[0]
        pi = _ptr(inp, "input tensor of gather")
        nb = _nbytes(inp)
        keep, post, po = [inp], None, None
        if self._rank == root:
            outs = output_tensors[0]
            if len(outs) != n:
                raise ValueError(f"swccl: gather: the root's output list must hold {n} tensors, not {len(outs)}")
            for j, o in enumerate(outs):
                if _nbytes(o) != nb:
                    raise ValueError(f"swccl: gather: output tensor {j} must have the input's {inp.numel()} elements of {inp.dtype}")
                _sw.check_tensor(o, f"output tensor {j} of gather")
            po = _flat(outs)
            keep.append(outs)
            if po is None or nb == 0:
                flat = torch.empty(n * nb, dtype=torch.uint8)
                po = flat.data_ptr() if nb else None
                keep.append(flat)

                def post(flat=flat, outs=outs):
                    for o, c in zip(outs, flat.chunk(n)):
                        o.view(-1).view(torch.uint8).copy_(c)
                if nb == 0:
                    post = None
        return self._submit("gather", lambda s: lib.swcclGather(pi, po, nb, _sw.BYTES, root, comm, s),
                            output_tensors, getattr(opts, "asyncOp", True), keep=keep, post=post)

    def scatter(self, output_tensors, input_tensors, opts=None):
        root = getattr(opts, "rootRank", 0)
        n, lib, comm = self._size, self._lib, self._comm
        out = output_tensors[0]
        po = _ptr(out, "output tensor of scatter")
        nb = _nbytes(out)
        keep, pi = [out], None
        if self._rank == root:
            ins = input_tensors[0]
            if len(ins) != n:
                raise ValueError(f"swccl: scatter: the root's input list must hold {n} tensors, not {len(ins)}")
            for j, t in enumerate(ins):
                if _nbytes(t) != nb:
                    raise ValueError(f"swccl: scatter: input tensor {j} must have the output's {out.numel()} elements of {out.dtype}")
                _sw.check_tensor(t, f"input tensor {j} of scatter")
            pi = _flat(ins)
            if pi is None and nb:
                flat = torch.cat([t.reshape(-1).view(torch.uint8) for t in ins])
                pi = flat.data_ptr()
                keep.append(flat)
            keep.append(ins)
        return self._submit("scatter", lambda s: lib.swcclScatter(pi, po, nb, _sw.BYTES, root, comm, s),
                            output_tensors, getattr(opts, "asyncOp", True), keep=keep)

    # -- all-to-all --
    def _exchange(self, sends, recvs):
        """enqueue(stream): one group of sends (peer, address, bytes) and receives; empty ones skipped."""
        lib, comm = self._lib, self._comm

        def enqueue(stream):
            lib.swcclGroupStart()
            first = 0
            for peer, p, nb in recvs:
                if nb:
                    first = first or lib.swcclRecv(p, nb, _sw.BYTES, peer, comm, stream)
            for peer, p, nb in sends:
                if nb:
                    first = first or lib.swcclSend(p, nb, _sw.BYTES, peer, comm, stream)
            r = lib.swcclGroupEnd()
            return first or r
        return enqueue

    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        n = self._size
        name = "all_to_all_single"
        pi, po = _ptr(input, f"input tensor of {name}"), _ptr(output, f"output tensor of {name}")
        if input.dtype != output.dtype:
            raise ValueError(f"swccl: {name}: input ({input.dtype}) and output ({output.dtype}) dtypes differ")

        def blocks(t, splits, what):
            rows = t.shape[0] if t.dim() else 1
            row = _nbytes(t) // rows if rows else 0
            if not splits:
                if rows % n:
                    raise ValueError(f"swccl: {name}: the {what} tensor's {rows} rows do not split evenly into "
                                     f"{n} ranks; pass {what}_split_sizes")
                splits = [rows // n] * n
            if len(splits) != n or sum(splits) != rows or min(splits) < 0:
                raise ValueError(f"swccl: {name}: {what}_split_sizes {list(splits)} must be {n} sizes summing to "
                                 f"the {what} tensor's {rows} rows")
            out, at = [], 0
            for s in splits:
                out.append((at, int(s) * row))
                at += int(s) * row
            return out
        ib = blocks(input, list(input_split_sizes), "input")
        ob = blocks(output, list(output_split_sizes), "output")
        sends = [(j, (pi or 0) + off, nb) for j, (off, nb) in enumerate(ib)]
        recvs = [(j, (po or 0) + off, nb) for j, (off, nb) in enumerate(ob)]
        return self._submit(name, self._exchange(sends, recvs), [output], getattr(opts, "asyncOp", True),
                            keep=(output, input))

    all_to_all_single = alltoall_base

    def alltoall(self, output_tensors, input_tensors, opts=None):
        n = self._size
        if len(output_tensors) != n or len(input_tensors) != n:
            raise ValueError(f"swccl: alltoall: both lists must hold {n} tensors")
        sends = [(j, _ptr(t, f"input tensor {j} of alltoall"), _nbytes(t)) for j, t in enumerate(input_tensors)]
        recvs = [(j, _ptr(t, f"output tensor {j} of alltoall"), _nbytes(t)) for j, t in enumerate(output_tensors)]
        return self._submit("alltoall", self._exchange(sends, recvs), output_tensors, getattr(opts, "asyncOp", True),
                            keep=(output_tensors, input_tensors))

    # -- point to point --
    def send(self, tensors, dstRank, tag=0):
        lib, comm = self._lib, self._comm
        if not 0 <= dstRank < self._size:
            raise ValueError(f"swccl: send: destination rank {dstRank} is not in [0, {self._size})")
        calls = []
        for i, t in enumerate(tensors):
            p, nb = _ptr(t, f"tensor {i} of send"), _nbytes(t)
            calls.append(lambda s, p=p, nb=nb: lib.swcclSend(p, nb, _sw.BYTES, dstRank, comm, s))
        enqueue = calls[0] if len(calls) == 1 else self._group(calls)
        return self._submit("send", enqueue, tensors, True, keep=tensors)

    def recv(self, tensors, srcRank, tag=0):
        lib, comm = self._lib, self._comm
        if not 0 <= srcRank < self._size:
            raise ValueError(f"swccl: recv: source rank {srcRank} is not in [0, {self._size})")
        calls = []
        for i, t in enumerate(tensors):
            p, nb = _ptr(t, f"tensor {i} of recv"), _nbytes(t)
            calls.append(lambda s, p=p, nb=nb: lib.swcclRecv(p, nb, _sw.BYTES, srcRank, comm, s))
        enqueue = calls[0] if len(calls) == 1 else self._group(calls)
        return self._submit("recv", enqueue, tensors, True, keep=tensors)

    def recv_anysource(self, tensors, tag=0):
        raise ValueError("swccl: recv from any source is not supported (as NCCL): name the source rank")

    # -- barriers --
    def barrier(self, opts=None):
        lib, comm = self._lib, self._comm
        return self._submit("barrier", lambda s: lib.swcclBarrier(comm, s), [], getattr(opts, "asyncOp", True))

    def monitored_barrier(self, timeout=None, wait_all_ranks=False):
        """Gloo's monitored_barrier through the store, with Gloo's error texts: rank 0 waits (within
        timeout; None: the group's) for every rank's arrival key in rank order and names the first
        rank that did not arrive ("Rank 1 failed to pass monitoredBarrier in 100 ms"), or all of them
        with wait_all_ranks ("Ranks 1, 2 failed ..."); a zero timeout is spent at once ("Rank 0 timed
        out in monitoredBarrier after 0 ms"). The others wait for rank 0's release and fail when rank 0
        reports a failure or does not release them within timeout."""
        store = self._store
        ms = self._timeout_ms if timeout is None else _ms(timeout, 0)
        label = f"swccl: monitored_barrier on process group '{self._group_label()}'"
        gen = store.add(f"swccl/monitored_barrier/count/{self._rank}", 1)
        prefix = f"swccl/monitored_barrier/{gen}"
        store.set(f"{prefix}/arrived/{self._rank}", b"1")
        deadline = time.monotonic() + ms / 1000.0
        if self._rank == 0:
            missing = []
            for r in range(1, self._size):
                if ms == 0:
                    store.set(f"{prefix}/release", b"failed")
                    raise _BackendError(f"{label}: Rank 0 timed out in monitoredBarrier after 0 ms")
                while not store.check([f"{prefix}/arrived/{r}"]):
                    if time.monotonic() > deadline:
                        missing.append(r)
                        break
                    time.sleep(0.002)
                if missing and not wait_all_ranks:
                    break
            if missing:
                store.set(f"{prefix}/release", b"failed")
                which = ", ".join(str(r) for r in missing)
                raise _BackendError(f"{label}: Rank{'s' if len(missing) > 1 else ''} {which} failed to pass "
                                    f"monitoredBarrier in {ms} ms")
            store.set(f"{prefix}/release", b"ok")
        else:
            released = False
            while not released:
                released = store.check([f"{prefix}/release"])
                if not released and time.monotonic() > deadline:
                    break
                if not released:
                    time.sleep(0.002)
            if not released or bytes(store.get(f"{prefix}/release")) != b"ok":
                cause = "rank 0 reported ranks missing" if released else f"rank 0 did not release it within {ms} ms"
                raise _BackendError(f"{label}: Rank {self._rank} successfully reached monitoredBarrier, but received "
                                    f"errors while waiting for send/recv from rank 0 ({cause})")

    # -- coalescing (torch's _coalescing_manager, batch_isend_irecv) --
    def start_coalescing(self, device=None):
        with self._lock:
            self._usable("start_coalescing")
            if self._coalescing is not None:
                raise ValueError("swccl: start_coalescing inside a coalescing block")
            self._coalescing = []
            if self._gate is not None:  # no direct call until end_coalescing
                self._gate.acquire()
                self._gate.add(1)
                self._gate.release()
            self._lib.swcclGroupStart()

    def end_coalescing(self, device=None):
        gate = self._gate
        with self._lock:
            if gate is not None:
                gate.acquire()
            try:
                return self._end_coalescing_locked()
            finally:
                if gate is not None:
                    gate.release()

    def _end_coalescing_locked(self):
        was_open = self._coalescing is not None
        works, self._coalescing = self._coalescing or [], None
        r = self._lib.swcclGroupEnd()
        self._flush_ops()
        outputs = [t for w in works for t in (w._outputs or [])]
        try:
            if r != 0:
                err = self._error_text("end_coalescing", r)
                for w in works:
                    w._finish(r, err)
                raise _BackendError(err)
            batch = SwcclWork(self, "coalesced", outputs)
            self._track(works + [batch])
            return batch
        finally:
            if self._gate is not None and was_open:
                self._gate.add(-1)  # (the works tracked above keep it up while they are in flight)

    _start_coalescing = start_coalescing
    _end_coalescing = end_coalescing

    # -- subgroups --
    def split_group(self, new_ranks, timeout=None, opts=None, group_name=None, group_desc=None, device_types=None):
        """A new group of new_ranks (ranks of this group), its communicator made through this group's
        store; ranks outside new_ranks get None and do nothing."""
        if self._rank not in new_ranks:
            return None
        name = group_name or f"split{sorted(new_ranks)}"
        store = dist.PrefixStore(f"swccl/split/{name}/", self._store)
        options = opts if isinstance(opts, Options) else self._options
        pg = ProcessGroupSwccl(store, list(new_ranks).index(self._rank), len(new_ranks), timeout or self._timeout,
                               group_name=name, options=options,
                               global_ranks=[self._global_ranks[r] for r in new_ranks])
        pg._set_group_name(name)
        pg._set_group_desc(group_desc or name)
        return pg

    # -- ending --
    def _close(self, abort):
        gate = self._gate
        if gate is not None and not self._closed:
            gate.add(_GATE_CLOSED)  # the direct path stops here (an abort does not wait for a call in it)
        with self._lock:
            if self._closed:
                return
            if abort:
                self._aborted = True
                if self._comm.value:
                    self._lib.swcclCommAbort(self._comm)
            else:
                self._poke()
                self._wait_idle(self._timeout_ms / 1000.0 if self._timeout_ms else 1800)
            with self._cond:
                self._closed = True
                self._cond.notify_all()
        self._thread.join(timeout=(self._timeout_ms / 1000.0 + 5) if self._timeout_ms else None)
        with self._lock:
            if gate is not None:
                gate.acquire()  # a direct call still running ends before the communicator goes
            try:
                if self._stream.value:
                    self._lib.swcclStreamDestroy(self._stream)
                    self._stream = ctypes.c_void_p()
                if self._comm.value:
                    if not abort:
                        self._lib.swcclCommDestroy(self._comm)
                    self._comm = ctypes.c_void_p()
            finally:
                if gate is not None:
                    gate.release()

    def shutdown(self):
        """destroy_process_group: completes what is in flight, then frees the communicator."""
        self._close(abort=False)

    def abort(self):
        """Ends every operation in flight at once (their Works fail) and frees the communicator."""
        self._close(abort=True)

    def comm_split_count(self):
        return 0


def _info(text):
    """A line at SWCCL_DEBUG=INFO (or TRACE), in the library's format, on stderr."""
    if os.environ.get("SWCCL_DEBUG", "").upper() in ("INFO", "TRACE"):
        import socket
        import sys
        sys.stderr.write(f"{socket.gethostname()}:{os.getpid()}:{threading.get_native_id()} SWCCL INFO TORCH {text}\n")
        sys.stderr.flush()


_said = set()


def _info_once(text):
    if text not in _said:
        _said.add(text)
        _info(text)


def _native(pg):
    """The C++ backend serving pg's group through the fast path (csrc/swccl_torch.cpp), or pg itself
    (the Python backend) when the fast path is off or unavailable; the reason is logged once at INFO."""
    if getattr(pg._options, "native", True) is False:
        return pg
    from swccl import _torch_native
    ext = _torch_native.module()
    if ext is None:
        _info_once(f"the torch backend runs in Python (its C++ fast path is unavailable: {_torch_native.reason()})")
        return pg
    try:
        gate = ext.Gate(0 if pg._direct else _GATE_NO_DIRECT)
        backend = ext.make_backend(pg, gate, pg._lib._handle, pg._comm.value, pg._rank, pg._size, pg._timeout_ms)
    except Exception as e:
        _info_once(f"the torch backend runs in Python (its C++ fast path failed: {' '.join(str(e).split())})")
        return pg
    pg._gate = gate
    _info_once(f"the torch backend's C++ fast path: {ext.__file__}")
    return backend


def _native_split(parent, store, ranks, timeout, group_name):
    """Backend::split of the C++ backend (ProcessGroup.split_group): a new group of `ranks` (ranks of
    the parent) with its own communicator made through `store` (torch's, unique to the new group),
    served as the parent is; None for a rank outside `ranks`."""
    ranks = list(ranks)
    if parent._rank not in ranks:
        return None
    name = group_name or f"split{sorted(ranks)}"
    pg = ProcessGroupSwccl(store, ranks.index(parent._rank), len(ranks), timeout or parent._timeout,
                           group_name=name, options=parent._options,
                           global_ranks=[parent._global_ranks[r] for r in ranks])
    backend = _native(pg)
    if backend is pg:
        from swccl import _torch_native
        pg.abort()
        raise _BackendError(f"swccl: split_group on rank {parent._rank}: the C++ fast path of the new group failed "
                            f"({_torch_native.reason()})")
    return backend


def _create(dist_backend_opts, backend_options=None):
    o = dist_backend_opts
    pg = ProcessGroupSwccl(o.store, o.group_rank, o.group_size, o.timeout, group_name=str(o.group_id),
                           options=backend_options if isinstance(backend_options, Options) else None,
                           global_ranks=list(o.global_ranks_in_group) or None)
    return _native(pg)


def _backend_of(group):
    if group is None:
        group = dist.distributed_c10d._get_default_group()
    if isinstance(group, ProcessGroupSwccl):
        return group
    return group._get_backend(torch.device("cpu"))


def python_backend(group=None):
    """The ProcessGroupSwccl serving `group` (default: the default group), whether torch calls it
    directly (the Python backend) or through the C++ fast path; None if swccl does not serve it."""
    b = _backend_of(group)
    if isinstance(b, ProcessGroupSwccl):
        return b
    from swccl import _torch_native
    ext = _torch_native.module()
    return ext.python_backend(b) if ext is not None else None


def native_gate(group=None):
    """The C++ fast path's Gate of `group` (its counters: .direct, the operations run on the direct
    path; .delegated, those handed to the Python backend; .busy), or None when the group is served
    by the Python backend alone."""
    b = _backend_of(group)
    if isinstance(b, ProcessGroupSwccl):
        return None
    from swccl import _torch_native
    ext = _torch_native.module()
    return ext.gate(b) if ext is not None else None


def register():
    """Registers "swccl" with torch.distributed (idempotent). Its groups are served through the C++
    fast path when it is available (built on first use; SWCCL_TORCH_NATIVE=0 turns it off), else by
    the Python backend."""
    if BACKEND_NAME.upper() in dist.Backend._plugins:
        return
    dist.Backend.register_backend(BACKEND_NAME, _create, extended_api=True, devices=["cpu"])
    # torch attaches its backend-agnostic flight recorder (a hook recording every collective) to the
    # groups of a C++ backend that does not record itself: ≈3-5 µs per call, more than the rest of the
    # fast path's cost (docs/PERFORMANCE.md). Groups served by the Python backend never had it; swccl's
    # groups go without it unless SWCCL_TORCH_FLIGHT_RECORDER=1 (torch's TORCH_FR_BUFFER_SIZE=0 turns
    # it off for every backend).
    recording = getattr(dist.distributed_c10d, "_FR_SELF_RECORDING_BACKENDS", None)
    if os.environ.get("SWCCL_TORCH_FLIGHT_RECORDER", "0") != "1" and isinstance(recording, set):
        recording.add(BACKEND_NAME)


register()
