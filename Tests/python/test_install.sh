#!/usr/bin/env bash
# `pip install ./python` makes a package that finds the library it was installed with: installs into a
# throw-away virtual environment that also sees PYTHON's packages (so torch is not downloaded again;
# --no-deps --no-build-isolation: nothing is downloaded), then, from another directory, with no
# LD_LIBRARY_PATH and no SWCCL_LIBRARY, checks that `import swccl` loads the libswccl.so bundled inside
# the installed package, runs a one-rank all-reduce, and (with torch) a one-rank "swccl" process group
# served through the C++ fast path (its source installed with the package; built at install time, or
# found in the cache scripts/torch-tests.sh filled).
#   usage: Tests/python/test_install.sh [PYTHON]      (default: python3)
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
py="${1:-python3}"
[ -f "$root/.build/release/libswccl.so" ] || { echo "FAIL: build the library first (swift build -c release)"; exit 1; }
tmp=$(mktemp -d /tmp/swccl-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$py" -m venv --without-pip "$tmp/venv" || { echo "FAIL: python -m venv"; exit 1; }
# The new environment sees PYTHON's packages (pip, setuptools, torch, numpy) through a .pth file: a
# venv's --system-site-packages would give the base interpreter's instead when PYTHON is itself a venv.
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
newsite=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$site" > "$newsite/outer-environment.pth"
# Build from a copy of the package (the source tree stays clean), pointing at this build tree.
cp -r "$root/python" "$tmp/src"
SWCCL_LIBRARY="$root/.build/release/libswccl.so" "$tmp/venv/bin/python" -m pip install -q --no-deps --no-build-isolation "$tmp/src" \
  || { echo "FAIL: pip install ./python"; exit 1; }
rm -rf "$tmp/src"
cd "$tmp"
env -u LD_LIBRARY_PATH -u SWCCL_LIBRARY "$tmp/venv/bin/python" - "$tmp/venv" <<'PYEOF'
import os, sys
import swccl
venv = os.path.realpath(sys.argv[1])
swccl.version()  # loads the library
lib = os.path.realpath(swccl.library_path)
print(f"swccl {swccl.__file__} loaded {lib}")
if not lib.startswith(venv):
    sys.exit(f"FAIL: the library was not the one bundled in the installed package ({lib})")
comm = swccl.Communicator(swccl.get_unique_id(), 0, 1)
import array
buf = array.array("f", [1.5, 2.5])
comm.allreduce(buf)
assert list(buf) == [1.5, 2.5], buf
comm.destroy()
try:
    import torch
except ImportError:
    print("PASS (torch not installed: the backend was not checked)")
    sys.exit(0)
import datetime, tempfile
import torch.distributed as dist
store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
dist.init_process_group("swccl", store=store, rank=0, world_size=1, timeout=datetime.timedelta(seconds=30))
t = torch.arange(4, dtype=torch.bfloat16)
dist.all_reduce(t)
assert torch.equal(t, torch.arange(4, dtype=torch.bfloat16)), t
import swccl.torch as st
from swccl import _torch_native
gate = st.native_gate()
if os.environ.get("SWCCL_TORCH_NATIVE", "1") != "0":
    # the installed package carries the fast path's source and swccl.h (built at install time or found in the cache)
    if gate is None or gate.direct < 1:
        sys.exit(f"FAIL: the installed package's torch backend does not run its C++ fast path ({_torch_native.reason()})")
    print(f"the C++ fast path: {_torch_native.module().__file__} (from {_torch_native.SOURCE})")
dist.destroy_process_group()
print("PASS: the installed package found its bundled library; one-rank swccl process group works")
PYEOF
