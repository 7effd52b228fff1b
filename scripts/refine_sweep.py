#!/usr/bin/env python3
"""A measured sweep of refinement settings: one `ember compare` per point of a grid, then one
Markdown row per point with best-of-N's, refine's and hybrid's mean gold (and energy) at the
chosen budgets, read from each run's compare.json.

Sweep on prompts the comparison you report does not use (e.g. the validation split's), then
run the chosen setting once on the evaluation prompts: picking the best of many settings on the
prompts you report inflates the winner.

    scripts/refine_sweep.py --policy RUN/03-sft --reward RUN/04-reward \
        --prompts val_prompts.parquet --out /tmp/sweep --method swap \
        --grid beta=0.5,1,2 --grid candidates=2,4,8 --grid hybrid-share=0.5,0.75
"""
import argparse
import itertools
import json
import pathlib
import subprocess
import sys


def parse_grid(items):
    grid = []
    for item in items:
        key, _, values = item.partition("=")
        if not key or not values:
            sys.exit(f"--grid {item}: expected KEY=V1,V2,…")
        grid.append((key, values.split(",")))
    return grid


def cell(cells, method, budget):
    return next((c for c in cells if c["method"] == method and c["budget"] == budget), None)


def mean(c, key):
    v = c and c.get(key)
    return f"{v['mean']:.3f}" if v else "—"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ember", default="target/release/ember")
    ap.add_argument("--policy", required=True)
    ap.add_argument("--reward", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--method", default="swap")
    ap.add_argument("--max-prompts", default="200")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--budgets", default="1,2,4,8,16,32")
    ap.add_argument("--report", default="16,32", help="budgets shown in the table")
    ap.add_argument("--grid", action="append", default=[], help="FLAG=V1,V2 (an ember compare flag)")
    a = ap.parse_args()
    grid = parse_grid(a.grid)
    shown = [int(b) for b in a.report.split(",")]
    header = [k for k, _ in grid]
    cols = [f"{m} {b}" for b in shown for m in ("best-of-n", "refine", "hybrid")]
    print("| " + " | ".join(header + [f"gold {c}" for c in cols] + [f"energy hybrid {b}" for b in shown]) + " |")
    print("|" + "---|" * (len(header) + len(cols) + len(shown)))
    a.out.mkdir(parents=True, exist_ok=True)
    for values in itertools.product(*(v for _, v in grid)):
        name = "_".join(f"{k}{v}" for (k, _), v in zip(grid, values))
        out = a.out / name
        cmd = [a.ember, "-q", "compare", "--policy", a.policy, "--reward", a.reward,
               "--prompts", a.prompts, "--out", str(out), "--force", "--method", a.method,
               "--max-prompts", a.max_prompts, "--seeds", a.seeds, "--budgets", a.budgets]
        for (k, _), v in zip(grid, values):
            cmd += [f"--{k}", v]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        cells = json.loads((out / "compare.json").read_text())["cells"]
        golds = [mean(cell(cells, m, b), "gold") for b in shown for m in ("best-of-n", "refine", "hybrid")]
        energies = [mean(cell(cells, "hybrid", b), "energy") for b in shown]
        print("| " + " | ".join(list(values) + golds + energies) + " |", flush=True)


if __name__ == "__main__":
    main()
