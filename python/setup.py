"""Build hook of the swccl Python package (metadata is in pyproject.toml).

`pip install ./python` bundles the library it was built from into the package, so the installed
package needs no LD_LIBRARY_PATH: swccl/libswccl.so, copied from $SWCCL_LIBRARY or from the build
tree (../.build/release/libswccl.so, made by `swift build -c release`). It also records that build
tree in swccl/_build_info.py (the package's third place to look). Without a built library the package
installs without one and finds the library at run time through its lookup order (swccl/__init__.py).
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def built_library():
    env = os.environ.get("SWCCL_LIBRARY")
    if env and os.path.isfile(env):
        return os.path.realpath(env)
    path = os.path.realpath(os.path.join(HERE, "..", ".build", "release", "libswccl.so"))
    return path if os.path.isfile(path) else None


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


setup(cmdclass={"build_py": BuildWithLibrary})
