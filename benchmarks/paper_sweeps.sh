#!/usr/bin/env bash
# The paper's variance studies for every paper capsule: 100 init seeds (primes:100) and 100
# data orders (1…100), each in its own copy of the capsule, with --jobs 2. Resumable: run it
# again and every sweep continues where it stopped (finished runs are kept in the capsules).
# Tables go to docs/results/paper-sweeps/NAME-{seeds,orders}.json (kept in the repository).
# Usage: benchmarks/paper_sweeps.sh [WORKDIR] [NAMES...]   (default /work/sweeps, all six)
set -uo pipefail
cd "$(dirname "$0")/.."
work=${1:-/work/sweeps}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(paper-2d-torch paper-2d-tensorflow paper-26d-torch \
    paper-26d-tensorflow paper-5d-tensorflow paper-5d-torch)
cap=.venv/bin/capsule
results=docs/results/paper-sweeps
mkdir -p "$work" "$results"
for name in "${names[@]}"; do
    base="$work/$name"
    [ -d "$base" ] || $cap freeze "capsules/$name" --out "$base" 2>/dev/null || exit 1
    for study in seeds orders; do
        copy="$work/$name-$study"
        [ -d "$copy" ] || cp -r "$base" "$copy"
        if [ "$study" = seeds ]; then axis=(--seeds primes:100); else axis=(--orders 100); fi
        start=$(date +%s)
        $cap sweep "$copy" "${axis[@]}" --jobs 2 2>/dev/null >/dev/null || exit 1
        $cap stats "$copy" --json > "$results/$name-$study.json"
        echo "$name $study: done in $(( $(date +%s) - start )) s" >&2
    done
done
