"""Build hook of the swccl Python package (metadata is in pyproject.toml).

`pip install ./python` bundles the library it was built from into the package, so the installed
package needs no LD_LIBRARY_PATH: swccl/libswccl.so, copied from $SWCCL_LIBRARY or from the build
tree (../.build/release/libswccl.so, made by `swift build -c release`). It also records that build
tree in swccl/_build_info.py (the package's third place to look). Without a built library the package
installs without one and finds the library at run time through its lookup order (swccl/__init__.py).

The torch backend's C++ fast path (swccl/csrc/swccl_torch.cpp, with a copy of include/swccl.h beside
it) is compiled against the torch that runs it, into a cache (swccl/_torch_native.py): when torch can
be imported while the package is built (`pip install --no-build-isolation ./python` in an environment
with torch) it is built (or found) there now, else on first use.
"""
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def built_library():
    env = os.environ.get("SWCCL_LIBRARY")
    if env and os.path.isfile(env):
        return os.path.realpath(env)
    path = os.path.realpath(os.path.join(HERE, "..", ".build", "release", "libswccl.so"))
    return path if os.path.isfile(path) else None


def swccl_header(lib):
    """include/swccl.h of the source tree: above this directory, else above the library's build tree."""
    starts = [os.path.join(HERE, "..")]
    for path in (os.environ.get("SWCCL_LIBRARY"), lib):
        if path:
            starts.append(os.path.dirname(os.path.abspath(path)))
    for start in starts:
        d = start
        for _ in range(5):
            header = os.path.join(d, "include", "swccl.h")
            if os.path.isfile(header):
                return os.path.realpath(header)
            d = os.path.dirname(d)
    return None


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "swccl")
        lib = built_library()
        build_dir = os.path.dirname(lib) if lib else os.path.realpath(os.path.join(HERE, "..", ".build", "release"))
        with open(os.path.join(target, "_build_info.py"), "w") as f:
            f.write(f"# Written by python/setup.py when the package was built.\nBUILD_DIR = {build_dir!r}\n"
                    f"BUNDLED = {bool(lib)!r}\n")
        if lib:
            shutil.copy2(lib, os.path.join(target, "libswccl.so"))
            print(f"swccl: bundled {lib}")
        else:
            print("swccl: no built libswccl.so found (run `swift build -c release` first, or set SWCCL_LIBRARY); "
                  "the package will look for the library at run time")
        header = swccl_header(lib)
        if header:
            os.makedirs(os.path.join(target, "csrc"), exist_ok=True)
            shutil.copy2(header, os.path.join(target, "csrc", "swccl.h"))
        self.prebuild_torch_native(target)

    def prebuild_torch_native(self, target):
        """With torch importable here (no build isolation), builds the C++ fast path now (into the cache
        it is loaded from); never fails the install."""
        if os.environ.get("SWCCL_TORCH_NATIVE", "1") == "0":
            return
        try:
            import importlib.util
            if importlib.util.find_spec("torch") is None:
                print("swccl: torch is not importable while building; the torch backend's C++ fast path is built on first use")
                return
        except Exception:
            return
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from swccl import _torch_native as n; "
                "sys.exit(n._main(['', 'build']))")
        env = dict(os.environ, SWCCL_NO_TORCH="1")
        r = subprocess.run([sys.executable, "-c", code, os.path.dirname(target)], env=env)
        if r.returncode != 0:
            print("swccl: the torch backend's C++ fast path could not be built now; it is tried again on first use")


setup(cmdclass={"build_py": BuildWithLibrary})
