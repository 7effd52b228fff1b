#!/usr/bin/env python3
"""The ablation table of "refinement vs best-of-N": one `ember compare` per (energy model,
optimiser), then one Markdown row per energy model, optimiser and budget with best-of-N's,
refine's and the hybrid's gold (mean [95 % CI]) and the better of the two's paired difference
from best-of-N, read from each run's compare.json. Every run uses the same prompts, seeds and
budgets, so the rows share their best-of-N samples within an energy model.

    scripts/refine_ablation.py --policy RUN/03-sft --prompts RUN/01-data/eval_prompts.parquet \
        --reward old=RUN/04-reward --reward mined=MINED/04-reward \
        --method swap:beta=2,candidates=8 --method langevin:lr=0.03,noise=0.5,beta=2 \
        --method soft --budgets 8,16,32,64 --out /tmp/ablation

`--reuse` reads a run's compare.json when it is already there (same --out) instead of running it
again. Pick the optimisers' settings with scripts/refine_sweep.py on other prompts first.
"""
import argparse
import json
import pathlib
import subprocess
import sys


def parse_method(text):
    name, _, opts = text.partition(":")
    flags = ["--method", name]
    for kv in filter(None, opts.split(",")):
        key, _, value = kv.partition("=")
        if not value:
            sys.exit(f"--method {text}: expected NAME[:KEY=V,…]")
        flags += [f"--{key}", value]
    return name, text.replace(":", "_").replace(",", "_").replace("=", ""), flags


def ci(c):
    return f"{c['mean']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"


def signed(c):
    return f"{c['mean']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ember", default="target/release/ember")
    ap.add_argument("--policy", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--reward", action="append", required=True, help="NAME=DIR")
    ap.add_argument("--method", action="append", required=True, help="NAME[:FLAG=V,…]")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--budgets", default="8,16,32,64")
    ap.add_argument("--max-prompts", default="200")
    ap.add_argument("--seeds", default="3")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--reuse", action="store_true")
    a = ap.parse_args()
    rewards = []
    for r in a.reward:
        name, _, path = r.partition("=")
        if not path:
            sys.exit(f"--reward {r}: expected NAME=DIR")
        rewards.append((name, path))
    methods = [parse_method(m) for m in a.method]
    print("| energy model | optimiser | budget | best-of-N | refine | hybrid | better of the two − best-of-N (paired) |")
    print("|---|---|---:|---|---|---|---|")
    for rname, rdir in rewards:
        for mname, tag, flags in methods:
            out = a.out / f"{rname}-{tag}"
            if not (a.reuse and (out / "compare.json").exists()):
                cmd = [a.ember, "-q", "compare", "--policy", a.policy, "--reward", rdir,
                       "--prompts", a.prompts, "--out", str(out), "--force",
                       "--max-prompts", a.max_prompts, "--seeds", a.seeds, "--seed", a.seed,
                       "--budgets", a.budgets] + flags
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            report = json.loads((out / "compare.json").read_text())
            cells = {(c["method"], c["budget"]): c for c in report["cells"]}
            for b in sorted({c["budget"] for c in report["cells"]}):
                if b < 8:
                    continue
                h2h = next((h for h in report["head_to_head"] if h["budget"] == b
                            and h["metric"] == "gold"), None)
                diff = f"{h2h['challenger']} {signed(h2h['difference'])}" if h2h else "—"
                if h2h and h2h["separated"]:
                    diff += ", CIs apart"
                row = [rname, mname, str(b)] + [ci(cells[(m, b)]["gold"]) for m in ("best-of-n", "refine", "hybrid")] + [diff]
                print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
