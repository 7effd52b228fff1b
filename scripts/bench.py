#!/usr/bin/env python3
"""Ember against PyTorch eager in one run: `ember bench X` and `scripts/torch_reference.py --only X`
alternate for every bench, round after round, so the machine's drift hits both alike. Prints each
round's tokens/s, the medians and the median of the per-round ratios (ember / PyTorch), and writes
every JSON line (tagged with `impl` and `round`) to --out.

  scripts/bench.py [--rounds 3] [--iters 3] [--only forward,sft,sample,reward]
                   [--shape reference|smollm2] [--device cpu|cuda] [--precision fp32|bf16]
                   [--ember target/release/ember] [--python PYTHON] [--out bench.jsonl]

--python runs the reference and needs torch 2.11.0 (the CPU wheel works here; on a GPU machine,
that machine's torch). This script itself needs only the standard library. `make bench` runs it.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_VERSION = "2.11.0"


def run_json(cmd):
    """Runs `cmd` and returns its last stdout line as JSON; exits with its stderr on failure."""
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed (exit {p.returncode}):\n{p.stderr.strip()}")
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    if not lines:
        sys.exit(f"bench: {' '.join(cmd)} printed nothing")
    return json.loads(lines[-1])


def check_torch(python):
    p = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench: {python} cannot import torch; the PyTorch reference needs torch "
                 f"{TORCH_VERSION} (`make bench-python` installs it into a virtual environment, "
                 f"or pass --python)")
    version = p.stdout.strip()
    if not version.startswith(TORCH_VERSION):
        print(f"bench: warning: {python} has torch {version}, Ember links {TORCH_VERSION}",
              file=sys.stderr)
    return version


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--only", default="forward,sft,sample,reward")
    ap.add_argument("--shape", default="reference", choices=["reference", "smollm2"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--ember", default=os.path.join(HERE, "..", "target", "release", "ember"))
    ap.add_argument("--python", default=os.environ.get("BENCH_PYTHON", sys.executable))
    ap.add_argument("--out", help="append every JSON line to this file")
    a = ap.parse_args()
    if a.rounds < 1 or a.iters < 1:
        sys.exit("bench: --rounds and --iters must be ≥ 1")
    benches = [b for b in a.only.split(",") if b]
    unknown = set(benches) - {"forward", "sft", "sample", "reward"}
    if unknown:
        sys.exit(f"bench: unknown bench {sorted(unknown)} in --only")
    if not os.access(a.ember, os.X_OK):
        sys.exit(f"bench: {a.ember} is not an executable (cargo build --release first)")
    version = check_torch(a.python)
    common = ["--iters", str(a.iters), "--shape", a.shape, "--device", a.device,
              "--precision", a.precision]
    tokens = {b: {"ember": [], "torch": []} for b in benches}
    out = open(a.out, "a") if a.out else None
    for r in range(a.rounds):
        for b in benches:
            for impl, cmd in [
                ("ember", [a.ember, "bench", b] + common),
                ("torch", [a.python, os.path.join(HERE, "torch_reference.py"), "--only", b] + common),
            ]:
                line = run_json(cmd)
                line.update(impl=impl, round=r)
                tokens[b][impl].append(line["tokens_per_s"])
                print(f"round {r + 1}/{a.rounds} {b:8} {impl:6} {line['tokens_per_s']:12,.0f} tokens/s",
                      file=sys.stderr, flush=True)
                if out:
                    out.write(json.dumps(line) + "\n")
                    out.flush()
    print(f"\n{a.shape} shape, {a.device}, {a.precision}, {a.rounds} alternating rounds of "
          f"{a.iters} iterations; PyTorch {version} eager\n")
    print(f"| bench | ember tokens/s (rounds) | PyTorch tokens/s (rounds) | median ratio |")
    print(f"|---|---|---|---|")
    for b in benches:
        e, t = tokens[b]["ember"], tokens[b]["torch"]
        ratio = statistics.median(x / y for x, y in zip(e, t))
        fmt = lambda xs: ", ".join(f"{x:,.0f}" for x in xs)
        print(f"| {b} | {statistics.median(e):,.0f} ({fmt(e)}) | "
              f"{statistics.median(t):,.0f} ({fmt(t)}) | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
