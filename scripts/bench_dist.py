#!/usr/bin/env python3
"""Scaling of Ember's multi-process commands: `ember reward train` and `ember sample` as 1 rank and
as N ranks (`ember launch -n N`) on the same synthetic data, alternating round after round so the
machine's drift hits every rank count alike. Prints tokens/s per round, the medians and the scaling
efficiency throughput_N / (N * throughput_1), and writes every measurement as a JSON line to --out.

  scripts/bench_dist.py [--ranks 1,2] [--rounds 3] [--only reward,sample] [--ember PATH] [--out FILE]

CPU only: several ranks run on c10d's Gloo, and Ember refuses --device cuda with several ranks
until its NCCL path exists.

The throughputs are the commands' own (`tokens_per_s` in each manifest: reward training counts
the tokens of every rank's shards, sampling the new tokens of every rank). On the CPU a rank is a
fixed share of the cores, cores / (most ranks measured) threads, as a GPU is on a GPU machine, so
1 rank uses one share and the most ranks fill the machine. Needs only the standard library.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# A reward model and a policy large enough that a step is mostly compute, small enough for a
# 2-core VM: reward d_model 128 × 2 blocks, global batch 128 pairs (synth sequences are short: ~12 tokens); policy d_model 128 × 2 blocks,
# 16 samples of 32 new tokens for each of 32 prompts.
REWARD = ["--steps", "30", "--batch", "128", "--d-model", "128", "--n-layer", "2", "--n-head", "4",
          "--eval-every", "1000", "--lr", "1e-3"]
POLICY = {"architecture": "gpt2", "n_ctx": 96, "d_model": 128, "n_layer": 2, "n_head": 4}
SAMPLE = ["-n", "16", "--batch", "16", "--max-new-tokens", "32"]


def run(cmd, cwd, env=None):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"bench_dist: {' '.join(cmd)} failed (exit {p.returncode}):\n{p.stderr.strip()}")
    return p.stdout


def tokens_per_s(out_dir):
    with open(os.path.join(out_dir, "manifest.json")) as f:
        return json.load(f)["metrics"]["tokens_per_s"]


def setup(ember, work):
    run([ember, "synth", "--task", "add", "--out", "data", "--pairs", "2000", "--demos", "256",
         "--eval-prompts", "32", "-q"], work)
    run([ember, "tokenizer", "train", "--data", "data", "--out", "tok", "-q"], work)
    vocab = json.load(open(os.path.join(work, "tok", "tokenizer.json")))["model"]["vocab"]
    cfg = dict(POLICY, vocab_size=len(vocab))
    with open(os.path.join(work, "policy.json"), "w") as f:
        json.dump(cfg, f)
    run([ember, "sft", "--data", "data", "--tokenizer", "tok", "--model-config", "policy.json",
         "--steps", "5", "--batch", "8", "--out", "policy", "-q"], work)


def command(ember, bench, ranks, out):
    if bench == "reward":
        args = ["reward", "train", "--data", "data", "--tokenizer", "tok", *REWARD]
    else:
        args = ["sample", "--policy", "policy", "--prompts", "data/eval_prompts.parquet", *SAMPLE]
    args += ["--device", "cpu", "--out", out, "-q"]
    if ranks == 1:
        return [ember, *args]
    return [ember, "launch", "-n", str(ranks), "--", *args]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="reward,sample")
    ap.add_argument("--ember", default=os.path.join(HERE, "..", "target", "release", "ember"))
    ap.add_argument("--out", help="append every JSON line to this file")
    a = ap.parse_args()
    ember = os.path.abspath(a.ember)
    ranks = [int(r) for r in a.ranks.split(",")]
    if 1 not in ranks:
        sys.exit("bench_dist: --ranks must include 1 (the baseline of the scaling efficiency)")
    benches = a.only.split(",")
    cores = os.cpu_count() or 1
    # On the CPU a rank is a fixed share of the cores, whatever the rank count: with the most
    # ranks measured, they fill the machine (the analogue of one GPU per rank).
    threads = max(1, cores // max(ranks))
    results = {(b, n): [] for b in benches for n in ranks}
    lines = []
    with tempfile.TemporaryDirectory() as work:
        setup(ember, work)
        for rnd in range(a.rounds):
            for bench in benches:
                for n in ranks:
                    out = f"{bench}-{n}-{rnd}"
                    env = dict(os.environ)
                    env["OMP_NUM_THREADS"] = str(threads)
                    run(command(ember, bench, n, out), work, env)
                    tps = tokens_per_s(os.path.join(work, out))
                    results[(bench, n)].append(tps)
                    line = {"bench": bench, "ranks": n, "round": rnd, "tokens_per_s": tps,
                            "device": "cpu", "cores": cores, "threads_per_rank": threads}
                    lines.append(line)
                    print(json.dumps(line), flush=True)
    print()
    print("| bench | ranks | tokens/s per round | median | scaling efficiency |")
    print("|---|---|---|---|---|")
    for bench in benches:
        base = statistics.median(results[(bench, 1)])
        for n in ranks:
            med = statistics.median(results[(bench, n)])
            rounds = ", ".join(f"{t:,.0f}" for t in results[(bench, n)])
            print(f"| {bench} | {n} | {rounds} | {med:,.0f} | {med / (n * base):.2f} |")
    if a.out:
        with open(a.out, "a") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
