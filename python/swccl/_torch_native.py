"""The C++ fast path of the torch backend (csrc/swccl_torch.cpp): built once, cached, loaded.

    python -m swccl._torch_native build     # build (or find) it now and print where it is and how long it took
    python -m swccl._torch_native status    # whether it is available, and if not why

The extension is compiled against the torch that is running, with torch.utils.cpp_extension (a C++
compiler, Python's headers and ninja are needed: scripts/setup.sh and scripts/torch-venv.sh install
them), into

    $SWCCL_TORCH_EXTENSIONS_DIR (default ~/.cache/swccl/torch_extensions)/<python>-torch<version>-<source hash>/

on first use, and loaded from there afterwards without invoking the compiler (a stamp file records the
source, torch and compiler flags it was built from; a change of any of them builds a new one). Concurrent
processes (the ranks of a job) build once: one builds under an advisory lock (released by the kernel if
the builder dies), the others wait for it (SWCCL_TORCH_BUILD_TIMEOUT seconds, default 900) and load the result.

module() returns the extension module, or None when it is unavailable (SWCCL_TORCH_NATIVE=0, no
compiler, a build failure, ...); reason() then says why. Never raises.
"""
import fcntl
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "csrc", "swccl_torch.cpp")
_CFLAGS = ["-O2", "-Wall", "-Wno-unused-function"]

_module = None
_reason = None
_tried = False


def _header_dir():
    """Where swccl.h is: beside the source (an installed package carries a copy), else in the source
    tree above the package, else in the source tree of the build the package was installed from."""
    places = [os.path.join(HERE, "csrc"), os.path.join(HERE, "..", "..", "include")]
    try:
        from . import _build_info
        d = _build_info.BUILD_DIR
        for _ in range(5):  # (.build/release, or the directory it links to)
            places.append(os.path.join(d, "include"))
            d = os.path.dirname(d)
    except ImportError:
        pass
    for d in places:
        if os.path.isfile(os.path.join(d, "swccl.h")):
            return os.path.normpath(d)
    return None


def cache_root():
    d = os.environ.get("SWCCL_TORCH_EXTENSIONS_DIR")
    if d:
        return d
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "swccl", "torch_extensions")


def _fingerprint(torch, header):
    h = hashlib.sha256()
    for path in (SOURCE, os.path.join(header, "swccl.h")):
        with open(path, "rb") as f:
            h.update(f.read())
    h.update(repr((torch.__version__, torch.__file__, sys.version, _CFLAGS,
                   getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", None))).encode())
    return h.hexdigest()[:16]


def _import(path, name):
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _with_ninja_on_path():
    """torch.utils.cpp_extension runs `ninja` from PATH: add the one pip installed beside this python
    (a venv's bin/ is on PATH only when the venv is activated)."""
    dirs = [os.path.dirname(sys.executable)]
    try:
        import ninja  # noqa: F401  (the pip package)
        dirs.insert(0, ninja.BIN_DIR)
    except Exception:
        pass
    path = os.environ.get("PATH", "")
    for d in dirs:
        if os.path.isfile(os.path.join(d, "ninja")) and d not in path.split(os.pathsep):
            path = d + os.pathsep + path
    os.environ["PATH"] = path


def _first_error(text):
    """The compiler's first error line out of a failed build's output, on one line (not ninja's
    progress, the command lines or torch's summary)."""
    def noise(line):
        return (line.startswith(("[", "FAILED:", "ninja:", "Error building extension", "W1", "E1"))
                or (" -c " in line and " -o " in line))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not noise(line)]
    for line in useful:
        if "error" in line.lower() or "not found" in line or "No such file" in line:
            return " ".join(line.split())[:500]
    return " ".join(useful[-1].split())[:500] if useful else " ".join(text.split())[-500:]


def _build(torch, build_dir, name, header, verbose):
    from torch.utils import cpp_extension
    _with_ninja_on_path()
    if shutil.which("ninja") is None:
        raise RuntimeError("ninja is not installed (pip install ninja; scripts/torch-venv.sh does)")
    # A lock file torch's builder left behind when a build was killed would make it wait forever;
    # we hold our own lock, so no build of ours is running: remove it.
    stale = os.path.join(build_dir, "lock")
    if os.path.exists(stale):
        os.unlink(stale)
    cpp_extension.load(name=name, sources=[SOURCE], extra_cflags=_CFLAGS, extra_include_paths=[header],
                       build_directory=build_dir, verbose=verbose, is_python_module=False)
    return os.path.join(build_dir, name + ".so")


def load(verbose=False, build=True):
    """The extension module (building it if needed and build is true). Raises with the reason."""
    if not os.path.isfile(SOURCE):
        raise RuntimeError(f"its source {SOURCE} is not installed")
    header = _header_dir()
    if header is None:
        raise RuntimeError("swccl.h is not installed with the package nor in a source tree above it")
    import torch
    key = _fingerprint(torch, header)
    pyver = f"py{sys.version_info[0]}{sys.version_info[1]}"
    build_dir = os.path.join(cache_root(), f"{pyver}-torch{torch.__version__.replace('+', '_')}-{key}")
    name = f"swccl_torch_native_{key}"
    so = os.path.join(build_dir, name + ".so")
    stamp = os.path.join(build_dir, "built-from")
    if os.path.isfile(so) and os.path.isfile(stamp):
        return _import(so, name)
    if not build:
        raise RuntimeError(f"not built yet in {build_dir}")
    os.makedirs(build_dir, exist_ok=True)
    limit = float(os.environ.get("SWCCL_TORCH_BUILD_TIMEOUT", "900"))
    deadline = time.monotonic() + limit
    with open(os.path.join(build_dir, "swccl-build.lock"), "a+") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another process has been building it in {build_dir} for more than "
                                       f"{limit:.0f} s (SWCCL_TORCH_BUILD_TIMEOUT)")
                time.sleep(0.2)
        try:
            if not (os.path.isfile(so) and os.path.isfile(stamp)):  # (built meanwhile by the lock's holder)
                t0 = time.monotonic()
                try:
                    _build(torch, build_dir, name, header, verbose)
                except Exception as e:
                    raise RuntimeError(f"building it in {build_dir} failed: {_first_error(str(e))}") from None
                with open(stamp, "w") as f:
                    f.write(f"{SOURCE}\ntorch {torch.__version__} ({torch.__file__})\npython {sys.version.split()[0]}\n"
                            f"cflags {' '.join(_CFLAGS)}\nbuilt in {time.monotonic() - t0:.1f} s\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _import(so, name)


def module():
    """The extension module, or None (reason() says why). Tried once per process."""
    global _module, _reason, _tried
    if _tried:
        return _module
    _tried = True
    if os.environ.get("SWCCL_TORCH_NATIVE", "1") == "0":
        _reason = "SWCCL_TORCH_NATIVE=0"
        return None
    try:
        _module = load()
    except Exception as e:  # never fatal: the Python backend serves instead
        _reason = " ".join(str(e).split()) or type(e).__name__
    return _module


def reason():
    return _reason


def _main(argv):
    what = argv[1] if len(argv) > 1 else "status"
    if what == "build":
        t0 = time.monotonic()
        try:
            mod = load(verbose="-v" in argv)
        except Exception as e:
            print(f"swccl: the C++ fast path of the torch backend is unavailable: {e}")
            return 1
        print(f"swccl: the C++ fast path of the torch backend: {mod.__file__} ({time.monotonic() - t0:.1f} s)")
        return 0
    if what == "status":
        mod = module()
        print(f"swccl torch backend: {'C++ fast path ' + mod.__file__ if mod else 'Python only: ' + str(reason())}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
