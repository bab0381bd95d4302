#!/usr/bin/env bash
# Rebuild the shipped default model detector/models/inscope-nuclei.onnx (+ .json card).
#
#   benchmarks/train_default_model.sh [OUT.onnx]
#
# The whole recipe from random weights, one run (24-28 min on 2 CPU cores, plus ~1.5-3
# min to render the pool once; it is cached in ~/.cache/inscope). The shipped file is
# exactly one run of this script (2026-12-05):
#
# 1. the anti-aliased TinyCenterNet (detector/train/model.py: a fixed binomial blur in
#    front of every strided layer, bilinear upsampling) trained from scratch for 6000
#    steps (batch 16, AdamW lr 3e-3, warm-up then cosine, 45 min cap) on the version-4
#    pool of 4800 simulated 256 x 256 crops (pool seed 1);
# 2. the decoding of detector/train/export.py DEFAULT_VOTE (written by the export;
#    chosen on simulated frames by benchmarks/decode_variants.py), then score
#    calibration (Platt scaling on 16 simulated frames, seed 950000), the best-F1
#    threshold on them and the measured centre error (a centre_shift_px in the card
#    only when it reaches 0.1 px; this network's is 0.05 px, none).
#
# (A second stage of 3000 steps at lr 1e-3 on a fresh pool was tried and not kept: on
# the simulated tuning frames its AP50 was 0.003 lower; see the model card.)
#
# Needs the [train] extra: pip install 'inscope[train]'.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--from-scratch" ]]; then shift; fi  # the only recipe now (old flag)
OUT="${1:-detector/models/inscope-nuclei.onnx}"
inscope train --synthetic 4800 --preset default --seed 0 --threads 2 --workers 2 \
    --name inscope-nuclei --out "$OUT"
python -m inscope.detector.calibration "$OUT"
