"""SwiftCCL from Python: the collectives of libswccl.so on torch tensors, numpy arrays and buffers (ctypes).

    import numpy as np, swccl
    uid = swccl.get_unique_id()            # on one process; send the 128 bytes to the others
    comm = swccl.Communicator(uid, rank, nranks)
    x = np.ones(1024, dtype=np.float32)    # or a contiguous CPU torch tensor (zero-copy, bfloat16 too)
    comm.allreduce(x)                      # in place; comm.allreduce(x, out) for out of place
    comm.destroy()

With torch installed, `import swccl` also registers the torch.distributed backend "swccl"
(`swccl.torch`): `torch.distributed.init_process_group("swccl")` (docs/PYTORCH.md).

Every failure raises `SwcclError`, whose message is the library's `swcclGetLastError` line (operation,
rank, peer, host and cause). The library is found, in this order (the first that loads wins):
  1. $SWCCL_LIBRARY (a path to libswccl.so);
  2. libswccl.so inside this package (bundled by `pip install ./python` from the build tree);
  3. the build tree the package came from (recorded at install time in swccl/_build_info.py, or
     ../../.build/release of a source checkout);
  4. the system loader: libswccl.so.0 (after scripts/install.sh, or on LD_LIBRARY_PATH).
`swccl.library_path` names the file that was loaded.
"""
import ctypes
import os

__all__ = ["SwcclError", "Communicator", "Stream", "get_unique_id", "version", "library_path",
           "group_start", "group_end", "dtype_code", "UNSUPPORTED_OPS"]

UNIQUE_ID_BYTES = 128

# Result codes, element types and operators: the values of include/swccl.h.
RESULTS = {0: "success", 2: "system error", 3: "internal error", 4: "invalid argument", 5: "invalid usage",
           6: "remote error", 7: "in progress", 8: "timeout"}
IN_PROGRESS = 7
OPS = {"sum": 0, "prod": 1, "product": 1, "max": 2, "min": 3, "avg": 4}
# Bitwise reductions: SwiftCCL has none (its kernels are arithmetic); refused with this reason.
UNSUPPORTED_OPS = ("band", "bor", "bxor")
TYPE_NAMES = {0: "int8", 1: "uint8", 2: "int32", 3: "uint32", 4: "int64", 5: "uint64", 6: "float16",
              7: "float32", 8: "float64", 9: "bfloat16", 10: "float8_e4m3", 11: "float8_e5m2"}
# numpy dtype names and torch dtype names (str(torch.dtype) without "torch.") → swcclDataType_t.
_DTYPES = {"int8": 0, "uint8": 1, "int32": 2, "uint32": 3, "int64": 4, "uint64": 5,
           "float16": 6, "float32": 7, "float64": 8, "bfloat16": 9,
           "float8_e4m3fn": 10, "float8_e5m2": 11}
_ITEMSIZE = {0: 1, 1: 1, 2: 4, 3: 4, 4: 8, 5: 8, 6: 2, 7: 4, 8: 8, 9: 2, 10: 1, 11: 1}
_FORMATS = {("b", 1): 0, ("c", 1): 0, ("B", 1): 1, ("i", 4): 2, ("l", 4): 2, ("I", 4): 3, ("L", 4): 3,
            ("q", 8): 4, ("l", 8): 4, ("Q", 8): 5, ("L", 8): 5, ("e", 2): 6, ("f", 4): 7, ("d", 8): 8}
BYTES = 1  # swcclUint8: the type under which data-moving operations carry any element type


class SwcclError(RuntimeError):
    """A call of the C library failed. `result` is the swcclResult_t, `message` the library's text."""

    def __init__(self, result, message):
        self.result = result
        self.message = message
        super().__init__(f"{RESULTS.get(result, f'result {result}')}: {message}")


class _UniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_char * UNIQUE_ID_BYTES)]


class _Config(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("magic", ctypes.c_uint), ("version", ctypes.c_uint),
                ("timeoutMs", ctypes.c_int), ("transports", ctypes.c_char_p), ("commName", ctypes.c_char_p)]


_lib = None
library_path = None
has_events = False


def _candidates():
    env = os.environ.get("SWCCL_LIBRARY")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libswccl.so")  # bundled into the installed package
    try:
        from . import _build_info  # written by python/setup.py at install time
        yield os.path.join(_build_info.BUILD_DIR, "libswccl.so")
    except ImportError:
        pass
    yield os.path.normpath(os.path.join(here, "..", "..", ".build", "release", "libswccl.so"))  # source tree
    yield "libswccl.so.0"  # the system loader


def _declare(lib):
    global has_events
    p, sz, i, v = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p
    lib.swcclGetErrorString.restype = ctypes.c_char_p
    lib.swcclGetErrorString.argtypes = [i]
    lib.swcclGetLastError.restype = ctypes.c_char_p
    lib.swcclGetLastError.argtypes = [v]
    lib.swcclCommInitRank.argtypes = [ctypes.POINTER(v), i, _UniqueId, i]
    lib.swcclCommInitRankConfig.argtypes = [ctypes.POINTER(v), i, _UniqueId, i, ctypes.POINTER(_Config)]
    lib.swcclCommInitFromEnv.argtypes = [ctypes.POINTER(v), v]
    for name in ("swcclCommDestroy", "swcclCommAbort", "swcclCommFinalize"):
        getattr(lib, name).argtypes = [v]
    lib.swcclCommGetAsyncError.argtypes = [v, ctypes.POINTER(i)]
    lib.swcclCommCount.argtypes = [v, ctypes.POINTER(i)]
    lib.swcclCommUserRank.argtypes = [v, ctypes.POINTER(i)]
    lib.swcclAllReduce.argtypes = [p, p, sz, i, i, v, v]
    lib.swcclBroadcast.argtypes = [p, p, sz, i, i, v, v]
    lib.swcclReduce.argtypes = [p, p, sz, i, i, i, v, v]
    lib.swcclAllGather.argtypes = [p, p, sz, i, v, v]
    lib.swcclReduceScatter.argtypes = [p, p, sz, i, i, v, v]
    lib.swcclAlltoAll.argtypes = [p, p, sz, i, v, v]
    lib.swcclGather.argtypes = [p, p, sz, i, i, v, v]
    lib.swcclScatter.argtypes = [p, p, sz, i, i, v, v]
    lib.swcclSend.argtypes = [p, sz, i, i, v, v]
    lib.swcclRecv.argtypes = [p, sz, i, i, v, v]
    lib.swcclBarrier.argtypes = [v, v]
    lib.swcclGroupStart.argtypes = []
    lib.swcclGroupEnd.argtypes = []
    lib.swcclRedOpCreatePreMulSum.argtypes = [ctypes.POINTER(i), p, i, i, v]
    lib.swcclRedOpDestroy.argtypes = [i, v]
    lib.swcclStreamCreate.argtypes = [ctypes.POINTER(v)]
    for name in ("swcclStreamDestroy", "swcclStreamSynchronize", "swcclStreamQuery"):
        getattr(lib, name).argtypes = [v]
    # Stream events (swcclEventCreate/Record/Query/Wait/Destroy): used when the library has them.
    if hasattr(lib, "swcclEventCreate"):
        lib.swcclEventCreate.argtypes = [ctypes.POINTER(v)]
        lib.swcclEventDestroy.argtypes = [v]
        lib.swcclEventRecord.argtypes = [v, v]
        lib.swcclEventQuery.argtypes = [v]
        lib.swcclEventWait.argtypes = [v, i]
        has_events = os.environ.get("SWCCL_PY_NO_EVENTS", "") in ("", "0")
    else:
        has_events = False


def _load():
    global _lib, library_path
    if _lib is not None:
        return _lib
    errors = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            errors.append(f"{path}: no such file")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            errors.append(f"{path}: {e}")
            continue
        _declare(lib)
        _lib, library_path = lib, path
        return lib
    raise OSError("libswccl.so not found; tried, in order:\n  " + "\n  ".join(errors)
                  + "\n(set SWCCL_LIBRARY=/path/to/libswccl.so, reinstall with `pip install ./python` after "
                  "`swift build -c release`, or install the library with scripts/install.sh)")


def last_error(comm=None):
    """The library's last error line (of comm, or of this thread's last call with comm=None)."""
    lib = _load()
    return (lib.swcclGetLastError(comm) or b"").decode(errors="replace")


def _check(result, comm=None):
    if result != 0:
        lib = _load()
        text = lib.swcclGetLastError(comm) or lib.swcclGetErrorString(result)
        raise SwcclError(result, text.decode(errors="replace"))


def version():
    """The loaded library's version code (MAJOR*10000 + MINOR*100 + PATCH)."""
    v = ctypes.c_int()
    _check(_load().swcclGetVersion(ctypes.byref(v)))
    return v.value


def get_unique_id():
    """A fresh rendezvous id (128 bytes) to hand to every rank of a new communicator."""
    uid = _UniqueId()
    _check(_load().swcclGetUniqueId(ctypes.byref(uid)))
    return ctypes.string_at(ctypes.addressof(uid), UNIQUE_ID_BYTES)  # (.internal would stop at a NUL)


def group_start():
    """swcclGroupStart: until group_end, this thread's calls are recorded and run together."""
    _check(_load().swcclGroupStart())


def group_end():
    """swcclGroupEnd: runs (or, with a stream, enqueues) the operations recorded since group_start."""
    _check(_load().swcclGroupEnd())


def _is_tensor(obj):
    return type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr") and hasattr(obj, "is_contiguous")


def tensor_type_name(t):
    return str(t.dtype).replace("torch.", "")


def dtype_code(obj):
    """The swcclDataType_t of a torch tensor / numpy array's element type, or None if SwiftCCL has none."""
    name = tensor_type_name(obj) if _is_tensor(obj) else getattr(getattr(obj, "dtype", None), "name", None)
    return _DTYPES.get(name)


def check_tensor(t, what="tensor", writable=False):
    """Raises a clear error unless t is a contiguous CPU torch tensor; returns its address (data_ptr)."""
    if t.device.type != "cpu":
        raise ValueError(f"swccl: {what} is on device {t.device}: SwiftCCL works on host memory; move it "
                         f"with .cpu() (or use a 'cpu:swccl,cuda:nccl' backend for device tensors)")
    layout = str(getattr(t, "layout", "torch.strided"))
    if layout != "torch.strided":  # sparse (COO, CSR, ...) before contiguity: a sparse tensor has no strides to show
        raise ValueError(f"swccl: {what} is a sparse tensor ({layout}); SwiftCCL moves and reduces dense tensors "
                         f"only: pass {what}.to_dense(), or use Gloo for sparse all-reduce")
    if not t.is_contiguous():
        raise ValueError(f"swccl: {what} (shape {tuple(t.shape)}, strides {t.stride()}) is not contiguous; "
                         f"pass {what}.contiguous() (and copy the result back for an output)")
    return t.data_ptr()


class _Buffer:
    """Address, element count and swccl type of a C-contiguous buffer: a CPU torch tensor (zero-copy
    through data_ptr()), a numpy array or any buffer-protocol object."""

    def __init__(self, obj, writable, what="buffer", need_type=True):
        self.obj = obj
        if _is_tensor(obj):
            self.address = check_tensor(obj, what, writable)
            self.nbytes = obj.numel() * obj.element_size()
            name = tensor_type_name(obj)
            code = _DTYPES.get("uint8" if name == "bool" else name)
            if code is None:
                if need_type:
                    raise TypeError(f"swccl: {what} has dtype {obj.dtype}, which SwiftCCL cannot reduce "
                                    f"(supported: {', '.join(_DTYPES)} and bool); data-moving operations "
                                    f"(broadcast, gathers, all-to-all, send/recv) take every dtype")
                code = BYTES
                self.count = self.nbytes
            else:
                self.count = obj.numel()
            self.type = code
            if self.count == 0:
                self.address = None
            return
        if hasattr(obj, "__array_interface__") and hasattr(obj, "dtype"):
            if not obj.flags["C_CONTIGUOUS"]:
                raise ValueError(f"swccl: {what} must be C-contiguous (np.ascontiguousarray)")
            if writable and not obj.flags["WRITEABLE"]:
                raise ValueError(f"swccl: {what} is read-only")
            name = obj.dtype.name
            if name == "bool":
                name = "uint8"
            if name not in _DTYPES:
                if need_type:
                    raise TypeError(f"swccl: unsupported dtype {obj.dtype} of {what} (supported: {', '.join(_DTYPES)})")
                self.type, self.count = BYTES, obj.nbytes
            else:
                self.type = _DTYPES[name]
                self.count = obj.size
            self.nbytes = obj.nbytes
            self.address = obj.__array_interface__["data"][0] if obj.nbytes else None
            return
        view = memoryview(obj)
        if not view.c_contiguous:
            raise ValueError(f"swccl: {what} must be C-contiguous")
        key = (view.format.lstrip("@=<"), view.itemsize)
        if key not in _FORMATS:
            if need_type:
                raise TypeError(f"swccl: unsupported buffer format {view.format!r} of {view.itemsize} bytes in {what}")
            self.type, self.count = BYTES, view.nbytes
        else:
            self.type = _FORMATS[key]
            self.count = view.nbytes // view.itemsize
        self.nbytes = view.nbytes
        if view.readonly:
            if writable:
                raise ValueError(f"swccl: {what} is read-only")
            self._keep = (ctypes.c_char * view.nbytes).from_buffer_copy(view)
        else:
            self._keep = (ctypes.c_char * view.nbytes).from_buffer(view.cast("B"))
        self.address = ctypes.addressof(self._keep) if view.nbytes else None


def _op(op):
    if isinstance(op, int):
        return op
    key = str(op).lower().rsplit(".", 1)[-1]
    if key in UNSUPPORTED_OPS:
        raise ValueError(f"swccl: reduction {op} is not supported: SwiftCCL has no bitwise reductions "
                         f"(sum, prod, max, min, avg and premul_sum are)")
    if key not in OPS:
        raise ValueError(f"unknown op {op!r} (known: {', '.join(OPS)})")
    return OPS[key]


class Stream:
    """A swcclStream_t: operations given `stream=` run in order on its thread while the call returns."""

    def __init__(self):
        self.handle = ctypes.c_void_p()
        _check(_load().swcclStreamCreate(ctypes.byref(self.handle)))

    def synchronize(self):
        _check(_load().swcclStreamSynchronize(self.handle))

    def query(self):
        """True when all enqueued work finished, False while some is pending; raises its error."""
        r = _load().swcclStreamQuery(self.handle)
        if r == IN_PROGRESS:
            return False
        _check(r)
        return True

    def destroy(self):
        if self.handle is not None and self.handle.value:
            h, self.handle = self.handle, None
            _check(_load().swcclStreamDestroy(h))

    def __del__(self):
        try:
            self.destroy()
        except Exception:
            pass


def _stream(stream):
    return None if stream is None else stream.handle


class Communicator:
    """One rank of a communicator. Without `stream=`, calls block until the operation is complete on
    this rank; with a Stream they are enqueued on it (keep the buffers alive until it has run them)."""

    def __init__(self, unique_id=None, rank=None, size=None, timeout_ms=0, transports=None, name=None):
        lib = _load()
        self._comm = ctypes.c_void_p()
        self._keep = []
        if unique_id is None:  # torchrun-style environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT, ...)
            _check(lib.swcclCommInitFromEnv(ctypes.byref(self._comm), None))
        else:
            if len(unique_id) != UNIQUE_ID_BYTES:
                raise ValueError(f"unique_id must be {UNIQUE_ID_BYTES} bytes, not {len(unique_id)}")
            uid = _UniqueId()
            ctypes.memmove(ctypes.addressof(uid), bytes(unique_id), UNIQUE_ID_BYTES)
            cfg = _Config(ctypes.sizeof(_Config), 0x5357434C, version(), int(timeout_ms),
                          transports.encode() if transports else None, name.encode() if name else None)
            _check(lib.swcclCommInitRankConfig(ctypes.byref(self._comm), int(size), uid, int(rank), ctypes.byref(cfg)))

    @classmethod
    def from_env(cls):
        return cls()

    def _handle(self):
        if self._comm is None or not self._comm.value:
            raise SwcclError(5, "the communicator was destroyed")
        return self._comm

    @property
    def handle(self):
        """The swcclComm_t as a ctypes.c_void_p (for direct calls into the library)."""
        return self._handle()

    @property
    def rank(self):
        r = ctypes.c_int()
        _check(_load().swcclCommUserRank(self._handle(), ctypes.byref(r)), self._comm)
        return r.value

    @property
    def size(self):
        n = ctypes.c_int()
        _check(_load().swcclCommCount(self._handle(), ctypes.byref(n)), self._comm)
        return n.value

    def async_error(self):
        """The result code of the error that broke the communicator, 0 if none."""
        e = ctypes.c_int()
        _check(_load().swcclCommGetAsyncError(self._handle(), ctypes.byref(e)), self._comm)
        return e.value

    def last_error(self):
        return last_error(self._comm)

    def _io(self, send, recv, recv_factor=1, send_factor=1, need_type=True):
        s = _Buffer(send, writable=False, what="send", need_type=need_type)
        r = _Buffer(send if recv is None else recv, writable=True, what="recv", need_type=need_type)
        if r.type != s.type:
            raise TypeError(f"swccl: send ({TYPE_NAMES.get(s.type)}) and recv ({TYPE_NAMES.get(r.type)}) "
                            f"have different element types")
        if s.count * recv_factor != r.count * send_factor:
            raise ValueError(f"swccl: recv holds {r.count} elements, {s.count * recv_factor // send_factor} expected")
        return s, r

    def _reduce_type(self, buf, op):
        """(type, op) for a reduction; bool tensors reduce as uint8 max/min (sum = or, prod = and)."""
        code = _op(op)
        dtype = getattr(buf.obj, "dtype", None)
        if str(dtype) == "torch.bool" or getattr(dtype, "name", None) == "bool":
            if code == 4:
                raise ValueError("swccl: op avg is meaningless on bool tensors (use max or min)")
            code = {0: 2, 1: 3}.get(code, code)
        return code

    def _run(self, result, stream, *keep):
        _check(result, self._comm)
        if stream is not None:
            self._keep.append(keep)  # buffers of enqueued operations stay alive until the next synchronize
            if len(self._keep) > 4096:
                del self._keep[:2048]

    def allreduce(self, send, recv=None, op="sum", stream=None):
        """Reduces `send` over all ranks into `recv` (default: in place into `send`); returns the output."""
        s, r = self._io(send, recv)
        self._run(_load().swcclAllReduce(s.address, r.address, s.count, s.type, self._reduce_type(s, op),
                                         self._handle(), _stream(stream)), stream, s, r)
        return send if recv is None else recv

    def broadcast(self, buf, root=0, stream=None):
        """Copies `buf` of rank `root` into `buf` of every rank (in place)."""
        b = _Buffer(buf, writable=True, what="buffer", need_type=False)
        self._run(_load().swcclBroadcast(b.address, b.address, b.count, b.type, int(root), self._handle(), _stream(stream)), stream, b)
        return buf

    def reduce(self, send, recv=None, op="sum", root=0, stream=None):
        """Reduces `send` over all ranks into `recv` on `root` (default: in place into `send`)."""
        s, r = self._io(send, recv)
        self._run(_load().swcclReduce(s.address, r.address, s.count, s.type, self._reduce_type(s, op), int(root),
                                      self._handle(), _stream(stream)), stream, s, r)
        return send if recv is None else recv

    def allgather(self, send, recv, stream=None):
        """Concatenates every rank's `send` in rank order into `recv` (size × len(send) elements)."""
        n = self.size
        s, r = self._io(send, recv, recv_factor=n, need_type=False)
        self._run(_load().swcclAllGather(s.address, r.address, s.count, s.type, self._handle(), _stream(stream)), stream, s, r)
        return recv

    def reduce_scatter(self, send, recv, op="sum", stream=None):
        """Reduces `send` (size × len(recv) elements) and leaves block `rank` in `recv`."""
        n = self.size
        s, r = self._io(send, recv, send_factor=n)
        self._run(_load().swcclReduceScatter(s.address, r.address, r.count, s.type, self._reduce_type(s, op),
                                             self._handle(), _stream(stream)), stream, s, r)
        return recv

    def alltoall(self, send, recv, stream=None):
        """Block j of `send` goes to rank j; block i of `recv` comes from rank i (size equal blocks)."""
        n = self.size
        s, r = self._io(send, recv, need_type=False)
        if s.count % n:
            raise ValueError(f"swccl: {s.count} elements do not split into {n} equal blocks")
        self._run(_load().swcclAlltoAll(s.address, r.address, s.count // n, s.type, self._handle(), _stream(stream)), stream, s, r)
        return recv

    def gather(self, send, recv=None, root=0, stream=None):
        """Concatenates every rank's `send` in rank order into `recv` on `root` (recv unused elsewhere)."""
        s = _Buffer(send, writable=False, what="send", need_type=False)
        r = _Buffer(recv, writable=True, what="recv", need_type=False) if recv is not None else None
        if self.rank == root and (r is None or r.count != s.count * self.size or r.type != s.type):
            raise ValueError(f"swccl: gather's recv on the root must hold {s.count * self.size} elements of send's type")
        self._run(_load().swcclGather(s.address, r.address if r else None, s.count, s.type, int(root),
                                      self._handle(), _stream(stream)), stream, s, r)
        return recv

    def scatter(self, send, recv, root=0, stream=None):
        """Block r of `send` (on `root`) goes to `recv` of rank r."""
        r = _Buffer(recv, writable=True, what="recv", need_type=False)
        s = _Buffer(send, writable=False, what="send", need_type=False) if send is not None else None
        if self.rank == root and (s is None or s.count != r.count * self.size or r.type != s.type):
            raise ValueError(f"swccl: scatter's send on the root must hold {r.count * self.size} elements of recv's type")
        self._run(_load().swcclScatter(s.address if s else None, r.address, r.count, r.type, int(root),
                                       self._handle(), _stream(stream)), stream, s, r)
        return recv

    def send(self, buf, peer, stream=None):
        b = _Buffer(buf, writable=False, what="send", need_type=False)
        self._run(_load().swcclSend(b.address, b.count, b.type, int(peer), self._handle(), _stream(stream)), stream, b)

    def recv(self, buf, peer, stream=None):
        b = _Buffer(buf, writable=True, what="recv", need_type=False)
        self._run(_load().swcclRecv(b.address, b.count, b.type, int(peer), self._handle(), _stream(stream)), stream, b)
        return buf

    def barrier(self, stream=None):
        self._run(_load().swcclBarrier(self._handle(), _stream(stream)), stream)

    def premul_sum(self, scalar, dtype_or_buffer):
        """A run-time operator (swcclRedOpCreatePreMulSum, the scalar copied now): each rank's input
        times `scalar`, then summed. Pass the result as `op=`; release it with destroy_op."""
        code = dtype_or_buffer if isinstance(dtype_or_buffer, int) else _Buffer(dtype_or_buffer, False).type
        value = scalar_bytes(scalar, code)
        op = ctypes.c_int()
        _check(_load().swcclRedOpCreatePreMulSum(ctypes.byref(op), value, code, 1, self._handle()), self._comm)
        return op.value

    def destroy_op(self, op):
        _check(_load().swcclRedOpDestroy(int(op), self._handle()), self._comm)

    def abort(self):
        """Ends every operation at once (any thread); the communicator is unusable afterwards."""
        if self._comm is not None and self._comm.value:
            h, self._comm = self._comm, None
            _check(_load().swcclCommAbort(h))

    def destroy(self):
        if self._comm is not None and self._comm.value:
            h, self._comm = self._comm, None
            _check(_load().swcclCommDestroy(h))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    def __del__(self):
        try:
            self.destroy()
        except Exception:
            pass


def _f32_bits(x):
    import struct
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


def _to_fp8(x, exp_bits, man_bits, bias, finite_max):
    """Round-to-nearest-even float → OCP fp8 bits (saturating to the largest finite for e4m3)."""
    import math
    x = float(x)
    sign = 0x80 if math.copysign(1.0, x) < 0 else 0
    a = abs(x)
    if a == 0:
        return sign
    a = min(a, finite_max)
    e = max(math.floor(math.log2(a)), 1 - bias)
    q = round(a / 2.0 ** (e - man_bits))  # Python's round is half-to-even
    if q >= 2 << man_bits:
        e, q = e + 1, q >> 1
    if q < 1 << man_bits:  # subnormal
        return sign | q
    return sign | ((e + bias) << man_bits) | (q - (1 << man_bits))


def scalar_bytes(x, code):
    """A ctypes object holding x in swccl type `code` (for swcclRedOpCreatePreMulSum)."""
    import struct
    if code in (0, 1, 2, 3, 4, 5):
        fmt = {0: "b", 1: "B", 2: "i", 3: "I", 4: "q", 5: "Q"}[code]
        raw = struct.pack("<" + fmt, int(x))
    elif code == 6:
        raw = struct.pack("<e", float(x))
    elif code == 7:
        raw = struct.pack("<f", float(x))
    elif code == 8:
        raw = struct.pack("<d", float(x))
    elif code == 9:  # bfloat16: round-to-nearest-even of the float32 bits
        b = _f32_bits(x)
        raw = struct.pack("<H", ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF)
    elif code == 10:
        raw = bytes([_to_fp8(x, 4, 3, 7, 448.0)])
    elif code == 11:
        raw = bytes([_to_fp8(x, 5, 2, 15, 57344.0)])
    else:
        raise TypeError(f"swccl: no scalar of type {code}")
    return ctypes.create_string_buffer(raw, len(raw))


# The torch.distributed backend registers itself when torch can be imported (without importing torch
# when it is absent, and without failing `import swccl` if torch is broken).
def _register_torch():
    import importlib.util
    if os.environ.get("SWCCL_NO_TORCH", "") not in ("", "0") or importlib.util.find_spec("torch") is None:
        return
    try:
        from . import torch as _backend  # noqa: F401  (registers "swccl" with torch.distributed)
    except ImportError:
        pass


_register_torch()
