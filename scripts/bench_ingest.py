#!/usr/bin/env python3
"""`ember ingest` against python-polars doing the same work, on HH-RLHF at 1x and 10x input.

The inputs are the shared HH-RLHF test splits at 1x and at 10x (each file concatenated 10 times,
in a temporary directory; nothing is written into the repository). Rounds alternate Ember and
Polars at each scale so that the machine's drift hits both alike. Reports, per implementation and
scale, the medians of: wall time of the process, in-process time (Ember: the stage's own
`duration_s` from the output's manifest.json; Polars: read to last write) and peak RSS of the
process; then the ratios Ember / Polars and RSS 10x / 1x.

  scripts/bench_ingest.py [--rounds 3] [--scales 1,10] [--data ../shared/data/hh-rlhf]
                          [--ember target/release/ember] [--python PYTHON] [--out bench.jsonl]

The Polars peer reads each .jsonl.gz (NDJSON, Polars' own reader and gzip), splits every
transcript into prompt / chosen / rejected at the chosen transcript's last "\\n\\nAssistant:"
(vectorised: split, drop the last part, join), adds the prompt's turns, drops empty and identical
answers and repeated pairs (keeping them, with their raw JSON, in a quarantine table), hashes the
prompt into train/val/test and writes the four Parquet files, as Ember does. It runs under
--python, which needs polars (`python3 -m venv /tmp/ingest-venv &&
/tmp/ingest-venv/bin/pip install polars`, then `--python /tmp/ingest-venv/bin/python`). This
script itself needs only the standard library.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ["harmless-base", "helpful-online", "helpful-rejection-sampled"]


def peer(files, out, seed):
    """The Polars equivalent of `ember ingest --format hh-rlhf`; returns its in-process seconds."""
    import polars as pl

    started = time.perf_counter()
    common = os.path.commonpath([os.path.dirname(f) for f in files])
    frames = []
    for f in files:
        df = pl.read_ndjson(f, schema={"chosen": pl.String, "rejected": pl.String})
        frames.append(df.with_columns(source=pl.lit(os.path.relpath(f, common)),
                                      line=pl.int_range(1, pl.len() + 1, dtype=pl.UInt64)))
    df = pl.concat(frames)
    marker = "\n\nAssistant:"
    parts = pl.col("chosen").str.split(marker)
    prompt = pl.when(parts.list.len() > 1).then(
        parts.list.slice(0, parts.list.len() - 1).list.join(marker) + marker)
    df = df.with_columns(prompt=prompt, original=pl.struct("chosen", "rejected"))
    df = df.with_columns(
        chosen=pl.col("chosen").str.strip_prefix(pl.col("prompt")),
        rejected=pl.col("rejected").str.strip_prefix(pl.col("prompt")),
        prompt_turns=pl.col("prompt").str.strip_suffix(marker).str.split("\n\nHuman: "),
    )
    reason = (pl.when(pl.col("prompt").is_null()).then(pl.lit("no_assistant_turn"))
              .when(pl.col("chosen") == pl.col("rejected")).then(pl.lit("identical_answers"))
              .when((pl.col("chosen").str.strip_chars() == "")
                    | (pl.col("rejected").str.strip_chars() == "")).then(pl.lit("empty_answer"))
              .when(~pl.struct("prompt", "chosen", "rejected").is_first_distinct())
              .then(pl.lit("duplicate")))
    df = df.with_columns(reason=reason)
    kept = df.filter(pl.col("reason").is_null()).with_columns(
        id=pl.struct("prompt", "chosen", "rejected").hash(seed).cast(pl.String),
        unit=(pl.col("prompt").hash(seed) % 1_000_000) / 1_000_000,
        margin=pl.lit(None, dtype=pl.Float32), tie=pl.lit(False)).sort("id")
    columns = ["id", "source", "prompt", "chosen", "rejected", "margin", "tie", "prompt_turns"]
    bounds = [("train", 0.0, 0.9), ("val", 0.9, 0.95), ("test", 0.95, 1.01)]
    for name, lo, hi in bounds:
        part = kept.filter((pl.col("unit") >= lo) & (pl.col("unit") < hi)).select(columns)
        part.write_parquet(os.path.join(out, f"{name}.parquet"))
    quarantine = df.filter(pl.col("reason").is_not_null()).select(
        "source", "line", "reason", detail=pl.col("reason"),
        raw=pl.col("original").struct.json_encode())
    quarantine.write_parquet(os.path.join(out, "quarantine.parquet"))
    return time.perf_counter() - started


def run_measured(cmd):
    """Runs `cmd` and returns (wall seconds, peak RSS in MiB, stdout) of that child alone."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            sys.exit(f"bench_ingest: {' '.join(cmd)} failed (exit {code}):\n"
                     f"{err.read().decode().strip()}")
    return wall, usage.ru_maxrss / 1024, out.decode()


def make_inputs(data, tmp, scales):
    """`tmp/x{N}/<split>/test.jsonl.gz` for each scale: each shared file concatenated N times
    (a multi-member gzip stream); returns {scale: [files]}."""
    inputs = {}
    for n in scales:
        files = []
        for split in SPLITS:
            src = os.path.join(data, split, "test.jsonl.gz")
            if not os.path.isfile(src):
                sys.exit(f"bench_ingest: {src} is missing (pass --data DIR with the HH-RLHF splits)")
            dst = os.path.join(tmp, f"x{n}", split, "test.jsonl.gz")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(src, "rb") as f:
                chunk = f.read()
            with open(dst, "wb") as f:
                for _ in range(n):
                    f.write(chunk)
            files.append(dst)
        inputs[n] = files
    return inputs


def check_polars(python):
    p = subprocess.run([python, "-c", "import polars; print(polars.__version__)"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench_ingest: {python} cannot import polars; the peer needs it:\n"
                 f"  python3 -m venv /tmp/ingest-venv && /tmp/ingest-venv/bin/pip install polars\n"
                 f"then pass --python /tmp/ingest-venv/bin/python")
    return p.stdout.strip()


def bench_ember(ember, files, tmp):
    out = tempfile.mkdtemp(dir=tmp, prefix="ember-")
    shutil.rmtree(out)
    wall, rss, _ = run_measured([ember, "ingest", "--format", "hh-rlhf", *files, "--out", out])
    with open(os.path.join(out, "manifest.json")) as f:
        stage = json.load(f)["duration_s"]
    shutil.rmtree(out)
    return {"wall_s": wall, "stage_s": stage, "rss_mib": rss}


def bench_polars(python, files, tmp):
    out = tempfile.mkdtemp(dir=tmp, prefix="polars-")
    cmd = [python, os.path.abspath(__file__), "--peer", out, *files]
    wall, rss, stdout = run_measured(cmd)
    stage = json.loads(stdout.strip().splitlines()[-1])["seconds"]
    shutil.rmtree(out)
    return {"wall_s": wall, "stage_s": stage, "rss_mib": rss}


def median(rows, impl, scale, key):
    return statistics.median(r[key] for r in rows if r["impl"] == impl and r["scale"] == scale)


def report(rows, scales):
    print(f"{'impl':8} {'scale':>5} {'wall_s':>8} {'stage_s':>8} {'rss_mib':>8}")
    for scale in scales:
        for impl in ["ember", "polars"]:
            m = [median(rows, impl, scale, k) for k in ["wall_s", "stage_s", "rss_mib"]]
            print(f"{impl:8} {scale:>4}x {m[0]:8.3f} {m[1]:8.3f} {m[2]:8.1f}")
    for scale in scales:
        ratio = median(rows, "ember", scale, "stage_s") / median(rows, "polars", scale, "stage_s")
        wall = median(rows, "ember", scale, "wall_s") / median(rows, "polars", scale, "wall_s")
        print(f"{scale}x: ember/polars in-process {ratio:.2f}x, wall {wall:.2f}x")
    if len(scales) > 1:
        lo, hi = min(scales), max(scales)
        for impl in ["ember", "polars"]:
            growth = median(rows, impl, hi, "rss_mib") / median(rows, impl, lo, "rss_mib")
            print(f"{impl}: peak RSS {hi}x / {lo}x = {growth:.2f}")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--peer":
        seconds = peer(sys.argv[3:], sys.argv[2], seed=0)
        print(json.dumps({"seconds": seconds}))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--scales", default="1,10", help="input multiples (default 1,10)")
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "hh-rlhf"),
                    help="the HH-RLHF directory with <split>/test.jsonl.gz")
    ap.add_argument("--ember", default=os.path.join(HERE, "..", "target", "release", "ember"),
                    help="the ember binary (default target/release/ember)")
    ap.add_argument("--python", default=os.environ.get("BENCH_PYTHON", sys.executable),
                    help="a Python with polars for the peer (default $BENCH_PYTHON or this one)")
    ap.add_argument("--out", help="append every JSON line to this file")
    args = ap.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    if not os.access(args.ember, os.X_OK):
        sys.exit(f"bench_ingest: {args.ember} is not an executable (cargo build --release)")
    version = check_polars(args.python)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        inputs = make_inputs(args.data, tmp, scales)
        for rnd in range(args.rounds):
            for scale in scales:
                order = ["ember", "polars"] if rnd % 2 == 0 else ["polars", "ember"]
                for impl in order:
                    if impl == "ember":
                        r = bench_ember(args.ember, inputs[scale], tmp)
                    else:
                        r = bench_polars(args.python, inputs[scale], tmp)
                    r.update(impl=impl, scale=scale, round=rnd, polars=version)
                    print(json.dumps(r), flush=True)
                    rows.append(r)
    report(rows, scales)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
