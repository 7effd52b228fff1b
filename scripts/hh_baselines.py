#!/usr/bin/env python3
"""Test accuracy on HH-RLHF pairs of an energy model and of the two baselines it must beat, with
bootstrap 95% confidence intervals, overall and per source:

- the energy model (`ember reward score`: the lower energy wins),
- the length heuristic (the longer answer, in characters, wins; equal lengths count one half),
- the untrained base policy's own log-likelihood of each answer (`ember logprob`, in the policy's
  chat format): summed and per-token mean (the higher wins).

Usage (after `make pretrained`, `ember ingest` and `ember reward train`):
  python3 scripts/hh_baselines.py --table runs/hh-data/test.parquet --model runs/hh-rm \
      --policy ~/.cache/ember/models/smollm2-135m-instruct --work runs/hh-baselines
Needs pyarrow (and numpy) to read the Parquet tables; everything else is the `ember` binary.
"""
import argparse
import json
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

RESAMPLES = 2000


def ember(binary, *args):
    subprocess.run([binary, *map(str, args), "-q"], check=True)


def bootstrap_ci(correct, seed=0):
    rng = np.random.default_rng(seed)
    x = np.asarray(correct, dtype=float)
    idx = rng.integers(0, len(x), size=(RESAMPLES, len(x)))
    means = x[idx].mean(axis=1)
    return float(x.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, type=Path)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--policy", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--ember", default=str(Path(__file__).resolve().parent.parent / "target/release/ember"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    t = pq.read_table(args.table).to_pylist()
    rows = args.work / "rows.jsonl"
    with rows.open("w") as f:
        for r in t:
            for answer in (r["chosen"], r["rejected"]):
                f.write(json.dumps({"prompt": r["prompt"], "answer": answer}) + "\n")
    scored = args.work / "scored.jsonl"
    logprobs = args.work / "logprobs.parquet"
    ember(args.ember, "reward", "score", "--model", args.model, "--input", rows, "--out", scored)
    ember(args.ember, "logprob", "--policy", args.policy, "--input", rows, "--out", logprobs)

    energy = [json.loads(line)["energy"] for line in scored.open()]
    lp = pq.read_table(logprobs).to_pylist()
    methods = defaultdict(lambda: defaultdict(list))  # method -> source -> [correct]
    for i, r in enumerate(t):
        c, j = 2 * i, 2 * i + 1
        lc, lr = len(r["chosen"]), len(r["rejected"])
        mean = lambda k: lp[k]["logprob_sum"] / max(lp[k]["n_tokens"], 1)
        outcomes = {
            "energy model": float(energy[c] < energy[j]),
            "longer answer": 1.0 if lc > lr else 0.5 if lc == lr else 0.0,
            "base log-likelihood (sum)": float(lp[c]["logprob_sum"] > lp[j]["logprob_sum"]),
            "base log-likelihood (mean)": float(mean(c) > mean(j)),
        }
        for m, v in outcomes.items():
            methods[m][r["source"]].append(v)
            methods[m]["all"].append(v)

    report = {}
    sources = sorted({s for m in methods.values() for s in m})
    print(f"{'method':30}" + "".join(f"{s:>34}" for s in sources))
    for m, by in methods.items():
        report[m] = {s: dict(zip(("accuracy", "ci_low", "ci_high"), bootstrap_ci(by[s])), pairs=len(by[s])) for s in sources}
        cells = "".join(
            f"{report[m][s]['accuracy']:>12.3f} [{report[m][s]['ci_low']:.3f}, {report[m][s]['ci_high']:.3f}] n={report[m][s]['pairs']:<4}"
            for s in sources
        )
        print(f"{m:30}{cells}")
    (args.work / "baselines.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
