#!/usr/bin/env bash
# Installs the C library: header, libswccl.so.MAJOR.MINOR.PATCH with its symlinks, and swccl.pc.
#
#   usage: scripts/install.sh              PREFIX=/usr/local by default; DESTDIR for staged installs
#          PREFIX=$HOME/.local scripts/install.sh
#
# Builds the release library first if it is missing. The library links the Swift runtime statically:
# the installed files run on a machine without the Swift toolchain (Tests/c/run.sh checks it).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
lib=".build/release/libswccl.so"
[ -f "$lib" ] || swift build -c release --product swccl >/dev/null
major=$(sed -n 's/^#define SWCCL_MAJOR \([0-9]*\).*/\1/p' include/swccl.h)
minor=$(sed -n 's/^#define SWCCL_MINOR \([0-9]*\).*/\1/p' include/swccl.h)
patch=$(sed -n 's/^#define SWCCL_PATCH \([0-9]*\).*/\1/p' include/swccl.h)
version="$major.$minor.$patch"
root="$DESTDIR$PREFIX"
install -d "$root/include" "$root/lib/pkgconfig"
install -m 0644 include/swccl.h "$root/include/swccl.h"
install -m 0755 "$lib" "$root/lib/libswccl.so.$version"
ln -sfn "libswccl.so.$version" "$root/lib/libswccl.so.$major"   # the SONAME the loader looks for
ln -sfn "libswccl.so.$major" "$root/lib/libswccl.so"             # what -lswccl links against
sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@VERSION@|$version|g" Sources/swccl/swccl.pc.in > "$root/lib/pkgconfig/swccl.pc"
chmod 0644 "$root/lib/pkgconfig/swccl.pc"
echo "installed SwiftCCL $version under $root: include/swccl.h, lib/libswccl.so{,.$major,.$version}, lib/pkgconfig/swccl.pc"
