#!/usr/bin/env bash
# The prepared GPU check of the cross-device matrix (issue 7, item 4), for a machine with
# PyTorch and a CUDA GPU but no Docker: freeze paper-2d-torch and paper-5d-torch on the CPU,
# then `capsule matrix` over CPU thread counts and CUDA: every trained model evaluated on every
# configuration, and whether each training is bit-identical to the CPU baseline.
# Usage: benchmarks/gpu_matrix_check.sh   (results under $OUT, default /tmp/gpu-matrix)
# DEVICES_2D / DEVICES_5D override the configurations (e.g. cpu:1,cpu:2 to try it without a GPU).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-matrix}
mkdir -p "$OUT"
source benchmarks/device_env.sh
work=/tmp/gpu-matrix-work  # logs stay here: $OUT holds the 7 result files
rm -rf "$work" && mkdir -p "$work"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>/dev/null
for pair in "2d ${DEVICES_2D:-cpu:1,cpu:4,cuda}" "5d ${DEVICES_5D:-cpu:1,cuda}"; do
    set -- $pair
    start=$(date +%s)
    cap freeze "capsules/paper-$1-torch" --out "$work/$1" 2> "$work/freeze-$1.log" || {
        tail -3 "$work/freeze-$1.log"; continue; }
    cap matrix "$work/$1" --devices "$2" --out "$work/m$1" --csv "$OUT/matrix-$1.csv" \
        > "$OUT/matrix-$1.txt" 2> "$work/matrix-$1.log" || tail -3 "$work/matrix-$1.log"
    cp "$work/m$1/matrix.json" "$OUT/matrix-$1.json" 2>/dev/null
    cat "$OUT/matrix-$1.txt"
    echo "paper-$1-torch matrix over $2: $(( $(date +%s) - start )) s"
done
