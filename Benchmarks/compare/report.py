#!/usr/bin/env python3
"""report.py — the tables and chart data of Benchmarks/compare/compare.sh.

    report.py RESULTS.tsv REFERENCES.tsv OUT_DIR [--started T] [--finished T] [--rounds N] ...

RESULTS.tsv: round coll np peer size time_us busbw (one row per measured size). Prints a Markdown
report on stdout: per collective and rank count, the median busbw of every peer over the rounds
and the median over rounds of the same-round ratios SwiftCCL/peer (shared memory: swccl-shm over
ompi-shm; TCP: swccl-tcp over ompi-tcp and over gloo). Writes OUT_DIR/series-COLL-NP.json (JSON
lines {"series", "size", "busbw"} of the medians) for `swccl-perf plot`.
"""
import argparse
import collections
import csv
import json
import os
import statistics

NAMES = {
    "swccl-shm": "SwiftCCL shm",
    "ompi-shm": "Open MPI vader (shm)",
    "swccl-tcp": "SwiftCCL tcp",
    "ompi-tcp": "Open MPI tcp",
    "gloo": "Gloo (torch, tcp)",
}
PAIRS = [("swccl-shm", "ompi-shm"), ("swccl-tcp", "ompi-tcp"), ("swccl-tcp", "gloo")]


def bus_factor(coll, n):
    if coll == "all_reduce":
        return 2 * (n - 1) / n
    if coll in ("all_gather", "reduce_scatter", "alltoall"):
        return (n - 1) / n
    return 1.0


def human(b):
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if b >= 1 << shift and b % (1 << shift) == 0:
            return f"{b >> shift} {unit}iB"
    return f"{b} B"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("references")
    ap.add_argument("out_dir")
    for k in ("started", "finished", "rounds", "iters", "warmup", "mpi", "torch"):
        ap.add_argument("--" + k, default="?")
    a = ap.parse_args()

    # busbw[(coll, np, peer, size)][round] and time likewise
    bw = collections.defaultdict(dict)
    tm = collections.defaultdict(dict)
    colls, nps, peers, sizes = [], [], [], set()
    with open(a.results) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            key = (row["coll"], int(row["np"]), row["peer"], int(row["size"]))
            # From the time (printed with more digits than the small sizes' busbw), nccl-tests' formula.
            t = float(row["time_us"])
            bw[key][int(row["round"])] = int(row["size"]) / (t * 1e3) * bus_factor(row["coll"], int(row["np"])) if t > 0 else 0.0
            tm[key][int(row["round"])] = float(row["time_us"])
            for lst, v in ((colls, row["coll"]), (nps, int(row["np"])), (peers, row["peer"])):
                if v not in lst:
                    lst.append(v)
            sizes.add(int(row["size"]))
    refs = collections.defaultdict(list)
    if os.path.exists(a.references):
        with open(a.references) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                refs[row["reference"]].append(float(row["GBps"]))

    out = []
    p = out.append
    p(f"Run {a.started} to {a.finished}; {a.rounds} rounds, peer order reversed every round; "
      f"timed iterations per size: {a.iters} (warm-up {a.warmup}); float32, sum; out-of-place "
      f"except broadcast, in place for all (as MPI_Bcast is); Gloo in place (its only mode). {a.mpi}; torch {a.torch} (Gloo).")
    p("")
    p("Only same-run ratios mean anything on this machine (its speed drifts up to 4x between "
      "minutes); the absolute GB/s are medians of this run only.")
    if refs:
        p("")
        p("Yardsticks measured in each round (median): " + "; ".join(
            f"{'single-thread memcpy of the largest size' if k == 'memcpy' else 'one loopback TCP stream (iperf3)'} "
            f"{statistics.median(v):.2f} GB/s" for k, v in refs.items()) + ".")
    for coll in colls:
        for np_ in nps:
            here = [pe for pe in peers if any((coll, np_, pe, s) in bw for s in sizes)]
            if not here:
                continue
            ss = sorted(s for s in sizes if any((coll, np_, pe, s) in bw for pe in here))
            pairs = [(x, y) for x, y in PAIRS if x in here and y in here]
            p("")
            p(f"### {coll}, {np_} ranks")
            p("")
            p("busbw in GB/s (median over rounds); ratio = median of per-round SwiftCCL/peer busbw (> 1: SwiftCCL faster)")
            p("")
            head = ["size"] + [NAMES.get(pe, pe) for pe in here] + [f"ratio {x} / {y}" for x, y in pairs]
            p("| " + " | ".join(head) + " |")
            p("|" + "---|" * len(head))
            series = collections.OrderedDict((pe, []) for pe in here)
            for s in ss:
                cells = [human(s)]
                for pe in here:
                    v = bw.get((coll, np_, pe, s))
                    if v:
                        m = statistics.median(v.values())
                        cells.append(f"{m:.3f}" if m >= 0.01 else f"{m:.2g}")
                        series[pe].append((s, m))
                    else:
                        cells.append("—")
                for x, y in pairs:
                    vx, vy = bw.get((coll, np_, x, s), {}), bw.get((coll, np_, y, s), {})
                    ratios = [vx[r] / vy[r] for r in vx if r in vy and vy[r] > 0]
                    cells.append(f"**{statistics.median(ratios):.2f}**" if ratios else "—")
                p("| " + " | ".join(cells) + " |")
            with open(os.path.join(a.out_dir, f"series-{coll}-{np_}.json"), "w") as f:
                for pe, pts in series.items():
                    for s, m in pts:
                        f.write(json.dumps({"series": NAMES.get(pe, pe), "size": s, "busbw": m}) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
