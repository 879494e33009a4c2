#!/usr/bin/env bash
# The prepared GPU check of portable numerics (issue 17), for a machine with PyTorch and a CUDA
# GPU but no Docker: for paper-2d, paper-5d and paper-26d (PyTorch, numerics = "portable",
# init = "shared") freeze on the CPU, replay on CUDA, and `diff` — which must say `identical` —
# with the training seconds of both. paper-5d runs EPOCHS_5D epochs (default 2 of its 10: its
# 3,125 steps an epoch would take most of a lent machine's time at full length).
# Usage: benchmarks/gpu_portable_check.sh   (results under $OUT, default /tmp/gpu-portable)
set -uo pipefail
OUT=${OUT:-/tmp/gpu-portable}
mkdir -p "$OUT"
source benchmarks/device_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt"
work=/tmp/gpu-portable-work
rm -rf "$work" && mkdir -p "$work"
for n in 2d 26d 5d; do
    sed -e 's/^activation = "relu"/activation = "relu"\ninit = "shared"/' \
        -e 's/^\[controls\]/[controls]\nnumerics = "portable"/' \
        -e 's/^name = "\(.*\)"/name = "\1-portable"/' \
        capsules/paper-$n-torch/capsule.toml > "$work/$n.toml"
    if [ "$n" = 5d ]; then sed -i "s/^epochs = .*/epochs = ${EPOCHS_5D:-2}/" "$work/$n.toml"; fi
    start=$(date +%s)
    cap freeze "$work/$n.toml" --out "$work/$n-cpu" 2>/dev/null
    cap replay "$work/$n-cpu" --device cuda --out "$work/$n-on-cuda" 2>/dev/null
    cap diff "$work/$n-cpu" "$work/$n-on-cuda" --json > "$OUT/$n-cpu-vs-cuda.json"
    python3 - "$work/$n-cpu/manifest.json" "$work/$n-on-cuda/replay.json" "$OUT/$n-cpu-vs-cuda.json" <<'PY' | tee "$OUT/$n.txt"
import json, sys
cpu, cuda, diff = (json.load(open(p)) for p in sys.argv[1:])
print(f"verdict {diff['verdict']}; training s: cpu {cpu['outcome']['train_seconds']}, "
      f"cuda {cuda['outcome']['train_seconds']}; final {cpu['outcome']['final']}; "
      f"gpu {[g['name'] for g in cuda['fingerprint']['gpus']]}")
PY
    echo "$n: $(( $(date +%s) - start )) s"
done
