#!/usr/bin/env bash
# The paper's ablations on a CPU budget: every variant in configs/ablation/ trained with the same
# data, seed, schedule and number of steps, then scored on the same held-out synthetic pairs.
#   bash scripts/run_ablation.sh [STEPS] [CROP]      (defaults: 500 steps, 64-pixel crops)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-500}
CROP=${2:-64}
for config in configs/ablation/*.yaml; do
  name=$(basename "$config" .yaml)
  mrvae train --config "$config" --no-progress --set steps="$STEPS" --set data.crop="$CROP" \
    --set threads=1 --set run_dir="runs/ablation/$name"
done
mrvae eval --ablation configs/ablation/*.yaml --out "${OUT:-report/ablation}" --no-progress
