#!/usr/bin/env bash
# Tests/c/run.sh - checks of the C ABI of libswccl.so, from C and C++ compilers.
#
#   usage: Tests/c/run.sh [DIR]     DIR holds libswccl.so (default: .build/release)
#
# Checks, each counted:
#   - include/swccl.h compiles standalone as C99, C11 -pedantic and C++17 (Tests/c/header_test.c: also
#     checks enum values and every prototype), and with clang if one is on PATH;
#   - libswccl.so exists, its SONAME is libswccl.so.0 (the symlink libswccl.so.0 is created if missing);
#   - it exports only swccl* symbols;
#   - every function declared in swccl.h is exported (missing ones are listed);
#   - Tests/c/allreduce_test.c builds against it and passes with 3 and with 4 ranks;
#   - Tests/c/collectives_test.c (broadcast, reduce, all-gather, reduce-scatter, all-to-all, gather,
#     scatter, send/recv, barrier, then streams, groups and an error on a stream) builds against it and
#     passes with 3 and with 4 ranks;
#   - Tests/c/lifecycle_test.c: misuse in process (uninitialised config, NULL, bad ranks, unknown type
#     and op, finalize/destroy twice, use after destroy), initAll with threads, then forked ranks:
#     init from torchrun variables, split, abort from another thread while blocked, async error;
#   - Tests/c/fork_test.c: a threaded process forks children that each run swcclCommInitAll (no
#     livelock in the Swift runtime), and a forked child's use and teardown of an inherited
#     communicator leave the parent's job intact (tcp and shm);
#   - Tests/c/event_test.c: stream events with 2 and 4 ranks (bad handles, an event pending while a
#     peer has not joined, 12 operations in flight completing in order, a failed operation's error in
#     its event and the later ones, an event outliving its stream, a forked child, a dead peer);
#   - Tests/c/port_test.c: NCCL habits with 2 and 4 ranks: several swcclCommInitRank calls in one group
#     from one thread, swcclBcast, swcclConfig_t's NCCL fields (netName, blocking, splitShare, CTA
#     settings, an older caller's shorter struct), nonblocking communicators (init, operations in the
#     background, split, finalize, a failure seen by swcclCommGetAsyncError);
#   - Tests/c/cxx_test.cpp: the ABI from C++17 (initAll driven by std::thread, RAII owner, errors);
#   - scripts/install.sh into a scratch prefix; collectives_test.c built with pkg-config against the
#     installed library runs on 3 ranks with the Swift toolchain hidden (PATH, no LD_LIBRARY_PATH);
#   - the Python package (python/swccl): Tests/python/test_swccl.py with 2 and 4 processes
#     (collectives on numpy arrays and buffers, init from torchrun variables, mismatched sizes, a
#     killed rank, a rank that forks: os.fork and multiprocessing, over shm and tcp).
# Prints "N passed, M failed" last; exits non-zero if any check failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
include="$root/include"
header="$include/swccl.h"

libdir_arg="${1:-.build/release}"
if [[ ! -d "$libdir_arg" ]]; then
  echo "error: $libdir_arg is not a directory (pass the directory holding libswccl.so)" >&2
  exit 2
fi
libdir="$(cd "$libdir_arg" && pwd)"
lib="$libdir/libswccl.so"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/swccl-ctest.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
note() { echo "      $*"; }
# Runs a command quietly; shows its output only when it fails.
quiet() {
  local log="$tmp/log.$$"
  if "$@" >"$log" 2>&1; then rm -f "$log"; return 0; fi
  sed 's/^/      | /' "$log" | head -n 60
  rm -f "$log"
  return 1
}

echo "== SwiftCCL C ABI checks: header $header, library $lib"

# --- header, standalone -----------------------------------------------------------------------
header_tu="$here/header_test.c"
check_compile() { # name, command...
  local name="$1"; shift
  if quiet "$@"; then pass "header compiles: $name"; else fail "header compiles: $name"; fi
}
check_compile "gcc -std=c99 -Wall -Wextra -Werror" \
  gcc -std=c99 -Wall -Wextra -Werror -I"$include" -c "$header_tu" -o "$tmp/h_c99.o"
check_compile "gcc -std=c11 -pedantic -Wall -Wextra -Werror" \
  gcc -std=c11 -pedantic -Wall -Wextra -Werror -I"$include" -c "$header_tu" -o "$tmp/h_c11.o"
check_compile "g++ -std=c++17 -Wall -Wextra -Werror" \
  g++ -std=c++17 -Wall -Wextra -Werror -x c++ -I"$include" -c "$header_tu" -o "$tmp/h_cxx17.o"
if command -v clang >/dev/null 2>&1; then
  check_compile "clang -std=c99 -Wall -Wextra -Werror -pedantic" \
    clang -std=c99 -Wall -Wextra -Werror -pedantic -I"$include" -c "$header_tu" -o "$tmp/h_clang.o"
else
  note "(clang not on PATH: clang header check skipped)"
fi

# --- library file and SONAME --------------------------------------------------------------------
have_lib=0
if [[ -f "$lib" ]]; then
  pass "library exists: $lib"
  have_lib=1
else
  fail "library exists: $lib not found"
fi

if [[ $have_lib == 1 ]]; then
  soname="$(readelf -d "$lib" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')"
  if [[ "$soname" == "libswccl.so.0" ]]; then
    pass "SONAME is libswccl.so.0"
  else
    fail "SONAME is libswccl.so.0 (found '${soname:-none}')"
  fi
  if [[ ! -e "$libdir/libswccl.so.0" ]]; then
    if ln -s libswccl.so "$libdir/libswccl.so.0"; then
      note "created symlink $libdir/libswccl.so.0 -> libswccl.so"
    else
      note "could not create $libdir/libswccl.so.0"
    fi
  fi
fi

# --- exported symbols ---------------------------------------------------------------------------
if [[ $have_lib == 1 ]]; then
  # Defined dynamic symbols; drop absolute ones (version nodes such as SWCCL_0) and @VERSION suffixes.
  # Global (upper-case type) symbols only: local entries of the dynamic table are not visible to programs.
  nm -D --defined-only "$lib" | awk '$2 ~ /^[BCDGRSTUVWi]$/ { print $3 }' | sed 's/@.*//' | sort -u >"$tmp/exported"
  grep -v '^swccl' "$tmp/exported" >"$tmp/foreign" || true
  if [[ ! -s "$tmp/foreign" ]]; then
    pass "exports only swccl* symbols ($(wc -l <"$tmp/exported") exported)"
  else
    fail "exports only swccl* symbols: $(wc -l <"$tmp/foreign") others, e.g.:"
    head -n 20 "$tmp/foreign" | sed 's/^/      | /'
  fi

  # Functions declared in the header (comments stripped by the preprocessor).
  gcc -E -P -x c -I"$include" "$header" | grep -oE '\bswccl[A-Za-z0-9_]*[[:space:]]*\(' |
    sed 's/[[:space:](]//g' | sort -u >"$tmp/declared"
  comm -23 "$tmp/declared" "$tmp/exported" >"$tmp/missing"
  ndecl="$(wc -l <"$tmp/declared")"
  nmiss="$(wc -l <"$tmp/missing")"
  if [[ "$nmiss" == 0 ]]; then
    pass "all $ndecl functions of swccl.h are exported"
  else
    fail "$nmiss of $ndecl functions of swccl.h are not exported: $(tr '\n' ' ' <"$tmp/missing")"
  fi
  comm -13 "$tmp/declared" "$tmp/exported" | grep '^swccl' >"$tmp/extra" || true
  if [[ -s "$tmp/extra" ]]; then
    note "note: swccl* symbols exported but not declared in swccl.h: $(tr '\n' ' ' <"$tmp/extra")"
  fi
fi

# --- allreduce_test -----------------------------------------------------------------------------
test_bin="$tmp/allreduce_test"
built=0
if [[ $have_lib == 1 ]]; then
  if quiet gcc -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -I"$include" \
      "$here/allreduce_test.c" -o "$test_bin" -L"$libdir" -lswccl -Wl,-rpath,"$libdir"; then
    pass "allreduce_test.c builds and links"
    built=1
  else
    fail "allreduce_test.c builds and links"
  fi
else
  fail "allreduce_test.c builds and links (no library)"
fi

for n in 3 4; do
  if [[ $built == 1 ]]; then
    echo "-- allreduce_test $n"
    # The test kills itself after 120 s; the outer timeout is a last resort.
    if SWCCL_SOCKET_IFNAME=lo timeout -k 5 180 "$test_bin" "$n" 2>&1 | sed 's/^/      | /'; then
      pass "allreduce_test with $n ranks"
    else
      fail "allreduce_test with $n ranks"
    fi
  else
    fail "allreduce_test with $n ranks (not built)"
  fi
done

# --- collectives_test ---------------------------------------------------------------------------
coll_bin="$tmp/collectives_test"
coll_built=0
if [[ $have_lib == 1 ]]; then
  if quiet gcc -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -I"$include" \
      "$here/collectives_test.c" -o "$coll_bin" -L"$libdir" -lswccl -Wl,-rpath,"$libdir"; then
    pass "collectives_test.c builds and links"
    coll_built=1
  else
    fail "collectives_test.c builds and links"
  fi
else
  fail "collectives_test.c builds and links (no library)"
fi

for n in 1 2 3 4; do
  if [[ $coll_built == 1 ]]; then
    echo "-- collectives_test $n"
    # The test kills itself after 120 s; the outer timeout is a last resort.
    if SWCCL_SOCKET_IFNAME=lo timeout -k 5 180 "$coll_bin" "$n" 2>&1 | sed 's/^/      | /'; then
      pass "collectives_test with $n ranks"
    else
      fail "collectives_test with $n ranks"
    fi
  else
    fail "collectives_test with $n ranks (not built)"
  fi
done

# --- without rdma-core ---------------------------------------------------------------------------
# libswccl.so loads libibverbs at run time (dlopen): it must not link it, and must load and run a TCP
# allreduce where rdma-core is absent. Absence is made real in a private mount namespace with the
# library files replaced by empty ones (dlopen then fails as on a machine without rdma-core).
if [[ $have_lib == 1 ]]; then
  if env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$libdir" ldd "$lib" | grep -qE "libibverbs|librdmacm"; then
    fail "libswccl.so does not link libibverbs or librdmacm (ldd lists them)"
  else
    pass "libswccl.so does not link libibverbs or librdmacm"
  fi
fi
if [[ $coll_built == 1 ]]; then
  verbs_files=()
  for name in libibverbs.so.1 librdmacm.so.1; do
    f="$( (ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n { print $NF; exit }') || true)"
    [[ -n "$f" ]] && verbs_files+=("$(readlink -f "$f")")
  done
  if [[ ${#verbs_files[@]} -eq 0 ]]; then
    runner=(sh -c 'exec "$@"' sh)
    note "rdma-core is not installed here: running as is"
  elif unshare -m --propagation private true 2>/dev/null; then
    mounts=""
    for f in "${verbs_files[@]}"; do mounts="$mounts mount --bind /dev/null '$f' &&"; done
    runner=(unshare -m --propagation private sh -c "$mounts exec \"\$0\" \"\$@\"")
    note "rdma-core hidden (${verbs_files[*]} replaced by empty files in a private mount namespace)"
  else
    runner=()
  fi
  if [[ ${#runner[@]} -gt 0 ]]; then
    echo "-- collectives_test 2 without rdma-core (TCP)"
    out="$(SWCCL_SOCKET_IFNAME=lo SWCCL_TRANSPORTS=tcp SWCCL_DEBUG=INFO SWCCL_DEBUG_SUBSYS=INIT timeout -k 5 180 "${runner[@]}" "$coll_bin" 2 2>&1)"
    rc=$?
    echo "$out" | grep -vE " INFO " | sed 's/^/      | /'
    echo "$out" | grep -E "ib: unavailable" | head -1 | sed 's/^/      | /'
    if [[ $rc -eq 0 ]] && echo "$out" | grep -qE "ib: unavailable: libibverbs.so.1"; then
      pass "without rdma-core: libswccl.so loads, says why ib is unavailable, and a TCP allreduce runs"
    else
      fail "without rdma-core: libswccl.so loads, says why ib is unavailable, and a TCP allreduce runs (exit $rc)"
    fi
  else
    echo "SKIP: without rdma-core: cannot hide rdma-core here (needs a private mount namespace: root or user namespaces)"
  fi
fi

# --- fork_test ------------------------------------------------------------------------------------
fork_bin="$tmp/fork_test"
if [[ $have_lib == 1 ]] && quiet gcc -std=c99 -Wall -Wextra -Werror -I"$include" \
    "$here/fork_test.c" -o "$fork_bin" -L"$libdir" -lswccl -Wl,-rpath,"$libdir" -pthread; then
  pass "fork_test.c builds and links"
  echo "-- fork_test"
  # Its own checks are counted here one by one; each child has a deadline, the outer timeout is a last resort.
  frc=0; SWCCL_SOCKET_IFNAME=lo timeout -k 5 400 "$fork_bin" 8 >"$tmp/fork.log" 2>&1 || frc=$?
  sed 's/^/      | /' "$tmp/fork.log"
  fp=$(grep -c '^PASS: ' "$tmp/fork.log" || true); ff=$(grep -c '^FAIL: ' "$tmp/fork.log" || true)
  passed=$((passed + fp)); failed=$((failed + ff))
  if [[ $fp -lt 3 ]] || [[ $frc -ne 0 && $ff -eq 0 ]]; then fail "fork_test ended early or badly (exit $frc)"; fi
else
  fail "fork_test.c builds and links"
fi

# --- lifecycle_test, event_test, port_test: forking C tests (Tests/c/fork_ranks.h) ---------------
# forked_test NAME "RANK COUNTS" OUTER_TIMEOUT: builds Tests/c/NAME.c against the library and runs it once
# per rank count (each test kills itself at its own deadline; the outer timeout is a last resort).
forked_test() {
  local name="$1" counts="$2" limit="$3" bin="$tmp/$1" n
  if [[ $have_lib == 1 ]] && quiet gcc -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -I"$include" \
      "$here/$name.c" -o "$bin" -L"$libdir" -lswccl -Wl,-rpath,"$libdir" -pthread; then
    pass "$name.c builds and links"
    for n in $counts; do
      echo "-- $name $n"
      if SWCCL_SOCKET_IFNAME=lo timeout -k 5 "$limit" "$bin" "$n" 2>&1 | grep -v " WARN " | sed 's/^/      | /'; then
        pass "$name with $n ranks"
      else
        fail "$name with $n ranks"
      fi
    done
  else
    fail "$name.c builds and links"
  fi
}
forked_test lifecycle_test "3 4" 180
forked_test event_test "2 4" 200
forked_test port_test "2 4" 200

# --- C++ -------------------------------------------------------------------------------------------
cxx_bin="$tmp/cxx_test"
if [[ $have_lib == 1 ]] && quiet g++ -std=c++17 -Wall -Wextra -Werror -I"$include" "$here/cxx_test.cpp" -o "$cxx_bin" \
    -L"$libdir" -lswccl -Wl,-rpath,"$libdir" -pthread; then
  if SWCCL_SOCKET_IFNAME=lo timeout -k 5 120 "$cxx_bin" 2>&1 | grep -v " WARN " | sed 's/^/      | /'; then
    pass "cxx_test.cpp (C++17: initAll with std::thread, RAII, errors)"
  else
    fail "cxx_test.cpp (C++17: initAll with std::thread, RAII, errors)"
  fi
else
  fail "cxx_test.cpp builds with g++ -std=c++17"
fi

# --- installed library, through pkg-config, without the toolchain -------------------------------
# scripts/install.sh into a scratch prefix; a program built only with `pkg-config --cflags --libs
# swccl` (and an rpath to its libdir) runs every collective on 3 processes with an environment that
# has neither the Swift toolchain on PATH nor LD_LIBRARY_PATH: the Swift runtime is inside the library.
prefix="$tmp/prefix"
if [[ $have_lib == 1 ]] && quiet env PREFIX="$prefix" bash "$root/scripts/install.sh"; then
  pass "scripts/install.sh installs header, library, symlinks and swccl.pc"
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  if [[ -L "$prefix/lib/libswccl.so" && -L "$prefix/lib/libswccl.so.0" && -f "$prefix/include/swccl.h" ]] &&
     [[ "$(pkg-config --modversion swccl)" == "$(sed -n 's/^#define SWCCL_MAJOR \([0-9]*\).*/\1/p' "$header").$(sed -n 's/^#define SWCCL_MINOR \([0-9]*\).*/\1/p' "$header").$(sed -n 's/^#define SWCCL_PATCH \([0-9]*\).*/\1/p' "$header")" ]]; then
    pass "installed layout and pkg-config version ($(pkg-config --modversion swccl))"
  else
    fail "installed layout and pkg-config version"
  fi
  if readelf -d "$prefix/lib/libswccl.so.0" | grep NEEDED | grep -qi swift; then
    fail "installed library needs no Swift runtime library: $(readelf -d "$prefix/lib/libswccl.so.0" | grep NEEDED | grep -i swift | tr '\n' ' ')"
  else
    pass "installed library needs no Swift runtime library ($(readelf -d "$prefix/lib/libswccl.so.0" | grep -c NEEDED) NEEDED entries, none Swift)"
  fi
  # The example program of docs/C-API.md, exactly as printed there, on 3 processes (torchrun variables).
  awk '/^```c$/ { n++; if (n == 1) { on = 1; next } } /^```$/ { on = 0 } on' "$root/docs/C-API.md" >"$tmp/example.c"
  # shellcheck disable=SC2046
  if [[ -s "$tmp/example.c" ]] && quiet gcc -std=c99 -Wall -Wextra -Werror "$tmp/example.c" $(pkg-config --cflags --libs swccl) \
       -Wl,-rpath,"$(pkg-config --variable=libdir swccl)" -o "$tmp/example"; then
    port=$((20000 + RANDOM % 20000)) ok=1 pids=()
    for r in 0 1 2; do
      env -i PATH=/usr/bin:/bin RANK=$r WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port SWCCL_SOCKET_IFNAME=lo \
        timeout -k 5 120 "$tmp/example" >"$tmp/example.$r.log" 2>&1 &
      pids+=($!)
    done
    for r in 0 1 2; do wait "${pids[$r]}" || ok=0; grep -v " WARN " "$tmp/example.$r.log" | sed 's/^/      | /'; done
    if [[ $ok == 1 ]]; then pass "the example of docs/C-API.md, built with pkg-config, on 3 processes"
    else fail "the example of docs/C-API.md, built with pkg-config, on 3 processes"; fi
  else
    fail "the example of docs/C-API.md builds with pkg-config"
  fi
  pc_bin="$tmp/collectives_pc"
  # shellcheck disable=SC2046
  if quiet gcc -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L $(pkg-config --cflags swccl) \
      "$here/collectives_test.c" -o "$pc_bin" $(pkg-config --libs swccl) -Wl,-rpath,"$(pkg-config --variable=libdir swccl)"; then
    pass "collectives_test.c builds with pkg-config against the installed library"
    echo "-- collectives_test 3 (installed library, toolchain hidden)"
    # Hide the toolchain itself where possible: a private mount namespace with an empty tmpfs over
    # the toolchain's root (needs root or user namespaces); otherwise only PATH and the loader's
    # search path hide it, and the log says so.
    hide=()
    swift_bin="$(command -v swift || true)"
    toolchain="${swift_bin:+$(cd "$(dirname "$(readlink -f "$swift_bin")")/../.." && pwd)}"
    if [[ -n "$toolchain" && "$toolchain" != / ]] && unshare -m --propagation private true 2>/dev/null; then
      hide=(unshare -m --propagation private sh -c "mount -t tmpfs swccl-hidden '$toolchain' && exec \"\$0\" \"\$@\"")
      note "toolchain $toolchain hidden by an empty tmpfs in a private mount namespace"
    else
      note "toolchain hidden from PATH and the loader only (no mount namespace here)"
    fi
    if env -i PATH=/usr/bin:/bin HOME="$tmp" SWCCL_SOCKET_IFNAME=lo timeout -k 5 180 "${hide[@]}" "$pc_bin" 3 2>&1 | sed 's/^/      | /' &&
       [[ "$(env -i PATH=/usr/bin:/bin ldd "$pc_bin")" == *"$prefix/lib/libswccl.so.0"* ]]; then
      pass "collectives_test with 3 ranks on the installed library, without the toolchain"
    else
      fail "collectives_test with 3 ranks on the installed library, without the toolchain"
    fi
  else
    fail "collectives_test.c builds with pkg-config against the installed library"
  fi
else
  fail "scripts/install.sh installs header, library, symlinks and swccl.pc"
fi

# --- the Python package (python/swccl, ctypes) -------------------------------------------------------
for run in "collectives 2" "collectives 4" "fromenv 3" "mismatch 4" "dead 4" "fork 2" "fork-tcp 3"; do
  if [[ $have_lib == 1 ]]; then
    echo "-- python $run"
    # shellcheck disable=SC2086
    if SWCCL_LIBRARY="$lib" SWCCL_SOCKET_IFNAME=lo timeout -k 5 200 python3 "$root/Tests/python/test_swccl.py" $run 2>&1 |
         grep -v " WARN " | sed 's/^/      | /'; then
      pass "python package: $run processes"
    else
      fail "python package: $run processes"
    fi
  else
    fail "python package: $run processes (no library)"
  fi
done

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
