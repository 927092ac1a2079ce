"""SwiftCCL from Python: the collectives of libswccl.so on numpy arrays and other buffers (ctypes only).

    import numpy as np, swccl
    uid = swccl.get_unique_id()            # on one process; send the 128 bytes to the others
    comm = swccl.Communicator(uid, rank, nranks)
    x = np.ones(1024, dtype=np.float32)
    comm.allreduce(x)                      # in place; comm.allreduce(x, out) for out of place
    comm.destroy()

Every failure raises `SwcclError`, whose message is the library's `swcclGetLastError` line (operation,
rank, peer, host and cause). The library is found through $SWCCL_LIBRARY, then the loader
(libswccl.so.0, e.g. after scripts/install.sh), then the package's own source tree (.build/release).
"""
import ctypes
import os

__all__ = ["SwcclError", "Communicator", "get_unique_id", "version", "library_path"]

UNIQUE_ID_BYTES = 128

# Result codes, element types and operators: the values of include/swccl.h.
RESULTS = {0: "success", 2: "system error", 3: "internal error", 4: "invalid argument", 5: "invalid usage",
           6: "remote error", 7: "in progress", 8: "timeout"}
OPS = {"sum": 0, "prod": 1, "max": 2, "min": 3, "avg": 4}
# numpy dtype names and buffer-protocol format characters → swcclDataType_t.
_DTYPES = {"int8": 0, "uint8": 1, "int32": 2, "uint32": 3, "int64": 4, "uint64": 5,
           "float16": 6, "float32": 7, "float64": 8}
_FORMATS = {("b", 1): 0, ("c", 1): 0, ("B", 1): 1, ("i", 4): 2, ("l", 4): 2, ("I", 4): 3, ("L", 4): 3,
            ("q", 8): 4, ("l", 8): 4, ("Q", 8): 5, ("L", 8): 5, ("e", 2): 6, ("f", 4): 7, ("d", 8): 8}


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


def _candidates():
    env = os.environ.get("SWCCL_LIBRARY")
    if env:
        yield env
    yield "libswccl.so.0"
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "..", "..", ".build", "release", "libswccl.so")


def _load():
    global _lib, library_path
    if _lib is not None:
        return _lib
    errors = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            errors.append(f"{path}: {e}")
            continue
        lib.swcclGetErrorString.restype = ctypes.c_char_p
        lib.swcclGetErrorString.argtypes = [ctypes.c_int]
        lib.swcclGetLastError.restype = ctypes.c_char_p
        lib.swcclGetLastError.argtypes = [ctypes.c_void_p]
        lib.swcclCommInitRank.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, _UniqueId, ctypes.c_int]
        lib.swcclCommInitRankConfig.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, _UniqueId, ctypes.c_int,
                                                ctypes.POINTER(_Config)]
        lib.swcclCommInitFromEnv.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
        for name in ("swcclCommDestroy", "swcclCommAbort", "swcclCommFinalize"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.swcclCommGetAsyncError.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        lib.swcclCommCount.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        lib.swcclCommUserRank.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        p, sz, i, v = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p
        lib.swcclAllReduce.argtypes = [p, p, sz, i, i, v, v]
        lib.swcclBroadcast.argtypes = [p, p, sz, i, i, v, v]
        lib.swcclReduce.argtypes = [p, p, sz, i, i, i, v, v]
        lib.swcclAllGather.argtypes = [p, p, sz, i, v, v]
        lib.swcclReduceScatter.argtypes = [p, p, sz, i, i, v, v]
        lib.swcclAlltoAll.argtypes = [p, p, sz, i, v, v]
        lib.swcclSend.argtypes = [p, sz, i, i, v, v]
        lib.swcclRecv.argtypes = [p, sz, i, i, v, v]
        lib.swcclBarrier.argtypes = [v, v]
        _lib, library_path = lib, path
        return lib
    raise OSError("libswccl.so not found (set SWCCL_LIBRARY, or install it with scripts/install.sh):\n  "
                  + "\n  ".join(errors))


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


class _Buffer:
    """Address, element count and swccl type of a C-contiguous buffer (numpy array or buffer protocol)."""

    def __init__(self, obj, writable):
        self.obj = obj
        if hasattr(obj, "__array_interface__") and hasattr(obj, "dtype"):
            if not obj.flags["C_CONTIGUOUS"]:
                raise ValueError("the array must be C-contiguous")
            if writable and not obj.flags["WRITEABLE"]:
                raise ValueError("the output array is read-only")
            if obj.dtype.name not in _DTYPES:
                raise TypeError(f"unsupported dtype {obj.dtype} (supported: {', '.join(_DTYPES)})")
            self.type = _DTYPES[obj.dtype.name]
            self.count = obj.size
            self.address = obj.__array_interface__["data"][0]
            return
        view = memoryview(obj)
        if not view.c_contiguous:
            raise ValueError("the buffer must be C-contiguous")
        key = (view.format.lstrip("@=<"), view.itemsize)
        if key not in _FORMATS:
            raise TypeError(f"unsupported buffer format {view.format!r} of {view.itemsize} bytes")
        self.type = _FORMATS[key]
        self.count = view.nbytes // view.itemsize
        if view.readonly:
            if writable:
                raise ValueError("the output buffer is read-only")
            self._keep = (ctypes.c_char * view.nbytes).from_buffer_copy(view)
        else:
            self._keep = (ctypes.c_char * view.nbytes).from_buffer(view.cast("B"))
        self.address = ctypes.addressof(self._keep) if view.nbytes else None


def _op(op):
    if isinstance(op, int):
        return op
    if op not in OPS:
        raise ValueError(f"unknown op {op!r} (known: {', '.join(OPS)})")
    return OPS[op]


class Communicator:
    """One rank of a communicator. Calls block until the operation is complete on this rank."""

    def __init__(self, unique_id=None, rank=None, size=None, timeout_ms=0, transports=None, name=None):
        lib = _load()
        self._comm = ctypes.c_void_p()
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

    def _io(self, send, recv, recv_factor=1, send_factor=1):
        s = _Buffer(send, writable=False)
        r = _Buffer(send if recv is None else recv, writable=True)
        if r.type != s.type:
            raise TypeError("send and recv have different element types")
        if s.count * recv_factor != r.count * send_factor:
            raise ValueError(f"recv holds {r.count} elements, {s.count * recv_factor // send_factor} expected")
        return s, r

    def allreduce(self, send, recv=None, op="sum"):
        """Reduces `send` over all ranks into `recv` (default: in place into `send`); returns the output."""
        s, r = self._io(send, recv)
        _check(_load().swcclAllReduce(s.address, r.address, s.count, s.type, _op(op), self._handle(), None), self._comm)
        return send if recv is None else recv

    def broadcast(self, buf, root=0):
        """Copies `buf` of rank `root` into `buf` of every rank (in place)."""
        b = _Buffer(buf, writable=True)
        _check(_load().swcclBroadcast(b.address, b.address, b.count, b.type, int(root), self._handle(), None), self._comm)
        return buf

    def reduce(self, send, recv=None, op="sum", root=0):
        """Reduces `send` over all ranks into `recv` on `root` (default: in place into `send`)."""
        s, r = self._io(send, recv)
        _check(_load().swcclReduce(s.address, r.address, s.count, s.type, _op(op), int(root), self._handle(), None), self._comm)
        return send if recv is None else recv

    def allgather(self, send, recv):
        """Concatenates every rank's `send` in rank order into `recv` (size × len(send) elements)."""
        n = self.size
        s, r = self._io(send, recv, recv_factor=n)
        _check(_load().swcclAllGather(s.address, r.address, s.count, s.type, self._handle(), None), self._comm)
        return recv

    def reduce_scatter(self, send, recv, op="sum"):
        """Reduces `send` (size × len(recv) elements) and leaves block `rank` in `recv`."""
        n = self.size
        s, r = self._io(send, recv, send_factor=n)
        _check(_load().swcclReduceScatter(s.address, r.address, r.count, s.type, _op(op), self._handle(), None), self._comm)
        return recv

    def alltoall(self, send, recv):
        """Block j of `send` goes to rank j; block i of `recv` comes from rank i (size equal blocks)."""
        n = self.size
        s, r = self._io(send, recv)
        if s.count % n:
            raise ValueError(f"{s.count} elements do not split into {n} equal blocks")
        _check(_load().swcclAlltoAll(s.address, r.address, s.count // n, s.type, self._handle(), None), self._comm)
        return recv

    def send(self, buf, peer):
        b = _Buffer(buf, writable=False)
        _check(_load().swcclSend(b.address, b.count, b.type, int(peer), self._handle(), None), self._comm)

    def recv(self, buf, peer):
        b = _Buffer(buf, writable=True)
        _check(_load().swcclRecv(b.address, b.count, b.type, int(peer), self._handle(), None), self._comm)
        return buf

    def barrier(self):
        _check(_load().swcclBarrier(self._handle(), None), self._comm)

    def abort(self):
        """Ends every operation at once (any thread); the communicator is unusable afterwards."""
        if self._comm is not None and self._comm.value:
            _check(_load().swcclCommAbort(self._comm))
            self._comm = None

    def destroy(self):
        if self._comm is not None and self._comm.value:
            _check(_load().swcclCommDestroy(self._comm))
            self._comm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    def __del__(self):
        try:
            self.destroy()
        except Exception:
            pass
