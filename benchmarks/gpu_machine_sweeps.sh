#!/usr/bin/env bash
# paper-5d-torch's variance studies (100 init seeds, 100 data orders) on a lent GPU machine's
# 16 CPU cores (--jobs 16): the 5-D runs take ~40 s each on the 2-core development machine.
# Usage: benchmarks/gpu_machine_sweeps.sh   (tables under $OUT, default /tmp/machine-sweeps)
set -uo pipefail
OUT=${OUT:-/tmp/machine-sweeps}
mkdir -p "$OUT"
source benchmarks/device_env.sh
work=/tmp/machine-sweeps-work
rm -rf "$work" && mkdir -p "$work"
lscpu | grep -E "^Model name|^CPU\(s\)" > "$OUT/machine.txt"
python3 -c "import torch; print('torch', torch.__version__)" >> "$OUT/machine.txt"
cap freeze capsules/paper-5d-torch --out "$work/base" 2>/dev/null | tee -a "$OUT/machine.txt"
for study in seeds orders; do
    cp -r "$work/base" "$work/$study"
    if [ "$study" = seeds ]; then axis=(--seeds primes:100); else axis=(--orders 100); fi
    start=$(date +%s)
    cap sweep "$work/$study" "${axis[@]}" --jobs "${JOBS:-16}" > /dev/null 2> "$work/$study.log" \
        || tail -3 "$work/$study.log"
    cap stats "$work/$study" --json > "$OUT/paper-5d-torch-$study.json"
    cap stats "$work/$study"
    echo "paper-5d-torch $study: $(( $(date +%s) - start )) s"
done
