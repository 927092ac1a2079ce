#!/usr/bin/env bash
# scripts/check-layers.sh - the layering of docs/ARCHITECTURE.md ("Layers"), checked against the build:
#   1. the dependency graph stated there (the block between `layers-begin` and `layers-end`) equals the
#      dependencies of those targets in Package.swift — no more, no fewer;
#   2. every Swift file of those targets imports only what its target may use (the graph, plus Glibc
#      and Synchronization; never Foundation).
# Prints what differs and exits 1, or "layers: N targets match docs/ARCHITECTURE.md" and exits 0.
# Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import re, sys, glob, os
doc = open("docs/ARCHITECTURE.md").read()
m = re.search(r"<!-- layers-begin -->\s*```[a-z]*\n(.*?)```\s*<!-- layers-end -->", doc, re.S)
if not m:
    sys.exit("check-layers: no layers-begin/layers-end block in docs/ARCHITECTURE.md")
stated = {}
for line in m.group(1).splitlines():
    line = line.split("#")[0].strip()
    if not line: continue
    name, _, deps = line.partition(":")
    stated[name.strip()] = set(deps.split())
pkg = open("Package.swift").read()
built = {}
for t in re.finditer(r'\.(?:target|executableTarget|testTarget)\(\s*name:\s*"([^"]+)"(.*?)\)\s*,\s*(?=//|\.|\])', pkg, re.S):
    name, rest = t.group(1), t.group(2)
    d = re.search(r'dependencies:\s*\[(.*?)\]', rest, re.S)
    built[name] = set(re.findall(r'"([^"]+)"', d.group(1))) if d else set()
problems = []
for name, deps in stated.items():
    if name not in built:
        problems.append(f"{name}: stated in docs/ARCHITECTURE.md, not a target in Package.swift"); continue
    if built[name] != deps:
        extra, missing = built[name] - deps, deps - built[name]
        if extra: problems.append(f"{name}: Package.swift adds {sorted(extra)}, which docs/ARCHITECTURE.md does not allow")
        if missing: problems.append(f"{name}: docs/ARCHITECTURE.md lists {sorted(missing)}, which Package.swift lacks")
allowed_system = {"Glibc", "Synchronization"}
for name, deps in stated.items():
    folder = f"Sources/{name}"
    if not os.path.isdir(folder): continue
    for f in sorted(glob.glob(f"{folder}/**/*.swift", recursive=True)):
        for i in re.findall(r'^(?:@\w+(?:\([^)]*\))?\s+)*import\s+(?:(?:struct|class|enum|func|var)\s+)?(\w+)', open(f).read(), re.M):
            if i not in deps and i not in allowed_system:
                problems.append(f"{f}: imports {i}, which {name} may not use")
if problems:
    print("\n".join("check-layers: " + p for p in problems))
    sys.exit(1)
print(f"layers: {len(stated)} targets match docs/ARCHITECTURE.md")
PY
