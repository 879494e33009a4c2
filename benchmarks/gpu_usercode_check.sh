#!/usr/bin/env bash
# The prepared GPU check of the user-code path (issue 5), for a machine with PyTorch and a CUDA
# GPU but no Docker: freeze benchmarks/gpu_usercode (user code on CUDA) → replay on CUDA (run-to-
# run) and on the CPU (device change) → verdicts, and the runtime audit's CUDA finding.
# Usage: benchmarks/gpu_usercode_check.sh   (results under $OUT, default /tmp/gpu-usercode)
set -uo pipefail
OUT=${OUT:-/tmp/gpu-usercode}
mkdir -p "$OUT"
source benchmarks/device_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt"
work=/tmp/gpu-usercode-work
rm -rf "$work" && mkdir -p "$work"
start=$(date +%s)
cap freeze benchmarks/gpu_usercode --out "$work/cap" 2> "$OUT/freeze.log"
cap replay "$work/cap" --out "$work/cuda-replay" 2>/dev/null
cap replay "$work/cap" --device cpu --out "$work/cpu-replay" 2>/dev/null
cap diff "$work/cap" "$work/cuda-replay" --json > "$OUT/cuda-vs-cuda.json"
cap diff "$work/cap" "$work/cpu-replay" --json > "$OUT/cuda-vs-cpu.json"
cap inspect "$work/cap" --json > "$OUT/manifest.json"
cap inspect "$work/cap" > "$OUT/inspect.txt"
echo "user-code GPU check: $(( $(date +%s) - start )) s"
for f in cuda-vs-cuda cuda-vs-cpu; do
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1], d['verdict'], d['first_divergent_step'])" "$OUT/$f.json"
done
grep -A3 "^audit" "$OUT/inspect.txt"
