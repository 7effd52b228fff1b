#!/usr/bin/env bash
# An energy model on the pretrained SmolLM2-135M-Instruct trunk, trained on the shared HH-RLHF
# splits on a CPU, and compared on the test split with the two baselines it has to beat: picking
# the longer answer, and the base model's own log-likelihood of each answer.
#
#   make pretrained build && examples/hh-smollm2.sh [RUN_DIR]
#
# The trunk's top 2 of 30 blocks train (with its final norm and a linear head on the mean of the
# answer's hidden states); the rest is frozen and its output cached per sequence, so the first
# epoch is the expensive one (about 0.65 s per sequence on 2 CPU cores) and the second is cheap:
# 1,630 pairs drawn by the seed, 200 steps × 16 pairs, about 45 minutes. This does NOT yet beat
# the baselines on the test split (see the README). Prompts are rendered in SmolLM2's chat
# template (HH turns become user/assistant turns) and each answer ends with <|im_end|>. On a
# GPU, add `--device cuda --precision bf16` and drop --train-blocks and --train-pairs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
E="$ROOT/target/release/ember"
RUN="${1:-runs/hh-smollm2}"
BASE="${EMBER_BASE:-${XDG_CACHE_HOME:-$HOME/.cache}/ember/models/smollm2-135m-instruct}"
HH="${EMBER_HH:-$ROOT/../shared/data/hh-rlhf}"
mkdir -p "$RUN"

[ -f "$RUN/data/manifest.json" ] || "$E" ingest --format hh-rlhf "$HH" --out "$RUN/data" -q
start=$(date +%s)
"$E" reward train --data "$RUN/data" --init "$BASE" --out "$RUN/rm" --train-blocks 2 \
  --pooling mean --score head --train-pairs 1630 --steps 200 --batch 16 --max-len 192 --lr 2e-4 \
  --eval-every 100 --eval-pairs 64 --checkpoint-every 50 --stats-pairs 32 --seed 0 -q
echo "reward train: $(( $(date +%s) - start )) s"
# Accuracy with bootstrap 95% CIs, per source, against both baselines (needs numpy + pyarrow).
python3 "$ROOT/scripts/hh_baselines.py" --table "$RUN/data/test.parquet" --model "$RUN/rm" \
  --policy "$BASE" --work "$RUN/baselines"
