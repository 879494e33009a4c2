#!/usr/bin/env bash
# The prepared GPU check: the host CUDA path of freeze / replay / diff on a machine with PyTorch
# and a CUDA GPU but no Docker. For each of paper-2d and paper-5d (PyTorch) it freezes the
# capsule on the CPU and a CUDA twin of it on the GPU, replays the CUDA capsule on the GPU
# (run-to-run determinism) and the CPU capsule on the GPU (CPU vs GPU), and writes the verdicts.
# Usage: benchmarks/gpu_check.sh   (results under $OUT, default /tmp/gpu-check)
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
source benchmarks/device_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt"
work=/tmp/gpu-check-work
rm -rf "$work" && mkdir -p "$work"
for n in 2d 5d; do
    spec=capsules/paper-$n-torch/capsule.toml
    sed -e 's/device = "cpu"/device = "cuda"/' -e 's/^name = "\(.*\)"/name = "\1-cuda"/' \
        "$spec" > "$work/$n-cuda.toml"
    start=$(date +%s)
    cap freeze "$spec" --out "$work/$n-cpu" 2>/dev/null
    cap freeze "$work/$n-cuda.toml" --out "$work/$n-cuda" 2>/dev/null
    cap replay "$work/$n-cuda" --out "$work/$n-cuda-replay" 2>/dev/null
    cap replay "$work/$n-cpu" --device cuda --out "$work/$n-cpu-on-cuda" 2>/dev/null
    cap diff "$work/$n-cuda" "$work/$n-cuda-replay" --json > "$OUT/$n-cuda-vs-cuda.json"
    cap diff "$work/$n-cpu" "$work/$n-cpu-on-cuda" --json > "$OUT/$n-cpu-vs-cuda.json"
    cap inspect "$work/$n-cuda" --json > "$OUT/$n-cuda-manifest.json"
    echo "$n: $(( $(date +%s) - start )) s"
done
