#!/usr/bin/env bash
# An energy model on the pretrained SmolLM2-135M-Instruct trunk, trained on the shared HH-RLHF
# splits on a CPU, and compared on the test split with the two baselines it has to beat: picking
# the longer answer, and the base model's own log-likelihood of each answer.
#
#   make pretrained build && examples/hh-smollm2.sh [RUN_DIR]
#
# The trunk's top 4 of 30 blocks train (with its final norm and the energy head); the rest is
# frozen and its output cached per sequence. The score starts as the base model's mean answer
# log-likelihood (head+nll). 100 steps × 8 pairs see 800 of the 5,500 training pairs once, in
# about 35 minutes on 2 CPU cores; this does NOT yet beat the baselines (see the README). Prompts are rendered in SmolLM2's chat template (HH turns become user/assistant
# turns) and each answer ends with <|im_end|>, where the head reads. On a GPU, add
# `--device cuda --precision bf16` and drop --train-blocks to train every block.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
E="$ROOT/target/release/ember"
RUN="${1:-runs/hh-smollm2}"
BASE="${EMBER_BASE:-${XDG_CACHE_HOME:-$HOME/.cache}/ember/models/smollm2-135m-instruct}"
HH="${EMBER_HH:-$ROOT/../shared/data/hh-rlhf}"
mkdir -p "$RUN"

[ -f "$RUN/data/manifest.json" ] || "$E" ingest --format hh-rlhf "$HH" --out "$RUN/data" -q
start=$(date +%s)
"$E" reward train --data "$RUN/data" --init "$BASE" --out "$RUN/rm" --train-blocks 4 \
  --score head+nll --steps 100 --batch 8 --max-len 192 --lr 1e-4 --eval-every 50 \
  --eval-pairs 64 --checkpoint-every 50 --stats-pairs 64 --seed 0 -q
echo "reward train: $(( $(date +%s) - start )) s"
"$E" reward eval --model "$RUN/rm" --data "$RUN/data/test.parquet" --out "$RUN/eval.json"
# Accuracy with bootstrap 95% CIs, per source, against both baselines (needs numpy + pyarrow).
python3 "$ROOT/scripts/hh_baselines.py" --table "$RUN/data/test.parquet" --model "$RUN/rm" \
  --policy "$BASE" --work "$RUN/baselines"
