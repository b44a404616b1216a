#!/usr/bin/env python3
"""The membership model's figures beside the full simulation's, figure by figure.

Each side is one or more runs: a `figures.json` written by `shoal simulate FILE --figures`
(the full simulation) or a `model.json` written by `shoal simulate FILE --model`. With several
runs on a side, each statistic is the mean over its runs (ten crashes per run are too few for
one run's percentiles to say much). Prints p50 / p90 / max of every per-pair distribution and
the model's difference in per cent.

Usage: bench/model_vs_full.py --full A/figures.json [B/figures.json ...] --model M/model.json [...]
"""

import argparse
import json
import statistics

ROWS = [
    ("join, per pair", ("join", "pair_ms")),
    ("crash: first suspicion, per crash", ("crash", "first_suspect_ms")),
    ("crash: observer suspects, per pair", ("crash", "observer_suspect_ms")),
    ("crash: observer marks down, per pair", ("crash", "observer_down_ms")),
    ("crash: dissemination, per crash", ("crash", "dissemination_ms")),
]
CUT = [
    ("first suspicion, per member", "first_suspect_ms"),
    ("observer suspects, per pair", "observer_suspect_ms"),
    ("observer marks down, per pair", "observer_down_ms"),
    ("re-merge after the heal, per pair", "remerge_ms"),
]


def figures(path):
    with open(path) as f:
        doc = json.load(f)
    return doc.get("figures", doc)


def rows(fig):
    out = {}
    for name, (a, b) in ROWS:
        out[name] = fig[a][b]
    for k, p in enumerate(fig["partitions"]):
        for side in ("rest_sees_side", "side_sees_rest"):
            for name, key in CUT:
                out[f"partition {k}, {side.replace('_', ' ')}: {name}"] = p[side][key]
            out[f"partition {k}, {side.replace('_', ' ')}: pairs not down by the heal"] = {
                "count": 1, "p50": p[side]["not_down"], "p90": p[side]["not_down"],
                "max": p[side]["not_down"]}
    conv = fig.get("converged_at_ms")
    out["views converged at (ms)"] = {"count": 1, "p50": conv, "p90": conv, "max": conv}
    return out


def mean_of(runs, name, stat):
    vals = [r[name][stat] for r in runs if r[name].get(stat) is not None and r[name]["count"]]
    return statistics.mean(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", nargs="+", required=True)
    ap.add_argument("--model", nargs="+", required=True)
    args = ap.parse_args()
    full = [rows(figures(p)) for p in args.full]
    model = [rows(figures(p)) for p in args.model]
    print(f"full: {len(full)} run(s), model: {len(model)} run(s); ms, mean over runs")
    print(f"{'figure':<62} {'stat':>4} {'full':>9} {'model':>9} {'diff':>7}")
    for name in full[0]:
        for stat in ("p50", "p90", "max"):
            f, m = mean_of(full, name, stat), mean_of(model, name, stat)
            if f is None and m is None:
                continue
            diff = "" if not f or m is None else f"{100.0 * (m - f) / f:+.0f} %"
            fs = "-" if f is None else f"{f:.0f}"
            ms = "-" if m is None else f"{m:.0f}"
            print(f"{name:<62} {stat:>4} {fs:>9} {ms:>9} {diff:>7}")


if __name__ == "__main__":
    main()
