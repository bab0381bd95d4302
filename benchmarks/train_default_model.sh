#!/usr/bin/env bash
# Rebuild the shipped default model detector/models/inscope-nuclei.onnx (+ .json card).
#
#   benchmarks/train_default_model.sh [OUT.onnx]                 # what was shipped
#   benchmarks/train_default_model.sh --from-scratch [OUT.onnx]  # the whole recipe, 1 run
#
# Default (what the shipped file is): the previous shipped model (commit b2d2961, trained
# from scratch for 6000 steps on the version-2 pool; taken from git history) fine-tuned
# for 400 steps (batch 16, lr 1e-3, one torch thread: ~11 min on a loaded 2-core VM) on
# the version-3 pool (4800 crops, up to tissue-like packing, every object a heatmap
# peak) with the 3 x 3 neighbourhood size/offset targets and uneven-excitation
# augmentation; decoding (written by the export, detector/train/export.py DEFAULT_VOTE):
# centre vote over 5 x 5 cells with soft agreement (sigma 0.5 cell) and NMS at IoU 0.5,
# chosen on simulated frames by benchmarks/decode_variants.py; then score calibration (Platt scaling on 16 simulated frames, seed
# 950000) and the best-F1 threshold on them. (A second 700-step stage was tried: HeLa
# AP50 0.936 vs 0.941, jitter 0.85 vs 0.81 px; not kept.)
#
# --from-scratch: the same recipe as one run from random weights (6000 steps, ~25 min on
# 2 idle cores, 45 min cap), then calibration. Renders the pool once (cached in
# ~/.cache/inscope). Needs the [train] extra: pip install 'inscope[train]'.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=finetune
if [[ "${1:-}" == "--from-scratch" ]]; then MODE=scratch; shift; fi
OUT="${1:-detector/models/inscope-nuclei.onnx}"
WORK=runs/default-model
mkdir -p "$WORK"
if [[ "$MODE" == scratch ]]; then
    inscope train --synthetic 4800 --preset default --seed 0 --threads 2 --workers 2 \
        --name inscope-nuclei --out "$OUT"
else
    git show b2d2961:detector/models/inscope-nuclei.onnx > "$WORK/base.onnx"
    git show b2d2961:detector/models/inscope-nuclei.json > "$WORK/base.json"
    inscope train --synthetic 4800 --init "$WORK/base.onnx" --steps 400 --batch 16 \
        --lr 1e-3 --seed 0 --threads 1 --workers 2 --eval-sim 8 --name inscope-nuclei \
        --out "$OUT"
fi
python -m inscope.detector.calibration "$OUT"
