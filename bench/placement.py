#!/usr/bin/env python3
"""Placement at scale (issue 17): the placement bench, run 3 times per size, medians printed.

The bench (`docs/placement-bench.md`) drives the production scheduler cores of N simulated
nodes with a static all-alive view (no membership cores) and a stream of submissions, beside
the omniscient baseline on the same arrivals. It reports placements per second of wall time,
conflicts per 1,000 placements, goodput (CPU of one copy per slot) and waits against the
baseline. Everything but the wall time is a pure function of the seed, so the three runs
differ only in wall time and memory.

Usage: bench/placement.py [--runs 3] [--bin PATH] [--out FILE] [SIZE ...]

A SIZE is a preset name (below) or `N:extra flags` (e.g. `300:--jobs 100 --tasks 5`). Default:
the three presets. `--bin` runs another build (default target/release/examples/placement,
built with `cargo build --release -p shoal-simulations --example placement`).

Presets (why each looks as it does is in docs/placement-bench.md, "Sizes"):
  200   scheduling-200's load: 1,000 jobs x 10 tasks over 90 s on 8-core nodes (contended)
  1000  250 jobs x 10 tasks over 5 s on 1-core nodes, 50 s simulated (contended, ~13 GB)
  5000  10 jobs x 10 tasks over 3 s, 15 s simulated (uncontended; ~7 GB with the shared view)
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"), "release", "examples", "placement")

PRESETS = {
    "200": "--nodes 200",
    "1000": "--nodes 1000 --node-cpu 1000 --node-memory 2048 --jobs 250 --tasks 10 --start-s 2 "
            "--window-s 5 --duration-s 50 --run-min-s 10 --run-max-s 30",
    "5000": "--nodes 5000 --jobs 10 --tasks 10 --start-s 1 --window-s 3 --duration-s 15 "
            "--run-min-s 3 --run-max-s 10",
}

FIELDS = [
    ("wall_s", "wall s"), ("setup_s", "setup s"), ("placements_per_s", "placements/s"),
    ("placements_per_node_s", "per node share/s"), ("conflicts_per_1000", "conflicts/1000"),
    ("goodput", "goodput"), ("max_rss_mib", "max RSS MiB"),
]

def one(binary, flags):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        t0 = time.time()
        p = subprocess.run([binary] + flags.split() + ["--json", out], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        if p.returncode != 0:
            sys.exit(f"{binary} {flags} failed with {p.returncode}:\n{p.stdout}")
        r = json.load(open(out))
        r["process_s"] = round(time.time() - t0, 1)
        return r

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", nargs="*", default=list(PRESETS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=BIN)
    ap.add_argument("--out", help="write every run's report here (JSON)")
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        sys.exit(f"{a.bin} is missing: cargo build --release -p shoal-simulations --example placement")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE, text=True).stdout.strip()
    print(f"commit {commit}, binary {a.bin}, {a.runs} runs per size, load average {os.getloadavg()[0]:.1f}")
    every = {}
    for size in a.sizes:
        if size in PRESETS:
            flags = PRESETS[size]
        elif ":" in size:
            n, extra = size.split(":", 1)
            flags = f"--nodes {int(n)} {extra}"
        else:
            sys.exit(f"size {size!r} is neither a preset ({', '.join(PRESETS)}) nor N:flags")
        runs = []
        for k in range(a.runs):
            r = one(a.bin, flags)
            runs.append(r)
            print(f"  {size} run {k + 1}: wall {r['wall_s']} s, {r['placements_per_s']} placements/s, "
                  f"max RSS {r['max_rss_mib']} MiB", flush=True)
        every[size] = {"flags": flags, "runs": runs}
        med = {f: statistics.median(r[f] for r in runs) for f, _ in FIELDS}
        r = runs[0]  # the quality figures are the same in every run (one seed)
        b = r["baseline"]
        print(f"{size}: {flags}")
        print("  medians: " + ", ".join(f"{label} {med[f]}" for f, label in FIELDS))
        print(f"  {r['placements']} placements of {r['tasks']} tasks, {r['rejections']} rejections, "
              f"{r['starts_again']} starts again, {r['kills']} kills, double-run peak {r['double_run_peak']}")
        print(f"  goodput {r['goodput']} vs baseline {b['goodput']}; wait p50 {r['wait_ms']['p50'] / 1000} s "
              f"p90 {r['wait_ms']['p90'] / 1000} s vs baseline p50 {b['wait_ms']['p50'] / 1000} s "
              f"p90 {b['wait_ms']['p90'] / 1000} s")
        same = all((x["placements"], x["rejections"], x["wait_ms"]) == (r["placements"], r["rejections"], r["wait_ms"]) for x in runs)
        print(f"  runs identical apart from time and memory: {same}")
    if a.out:
        json.dump({"commit": commit, "sizes": every}, open(a.out, "w"), indent=1)

if __name__ == "__main__":
    main()
