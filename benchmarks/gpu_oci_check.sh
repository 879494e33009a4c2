#!/usr/bin/env bash
# The prepared GPU check of the daemonless engine (issue 16, item 4), for a machine with a CUDA
# GPU, root, runc, umoci and NVIDIA's container toolkit (nvidia-container-runtime-hook and
# nvidia-container-cli, or a CDI spec from `nvidia-ctk cdi generate`), and no Docker:
#   1. import a capsule's OCI export that holds its CUDA image (`capsule build --gpu` then
#      `capsule export --format oci` where Docker is) into the OCI store;
#   2. replay it with --device cuda on the host and in the image from the runc bundle;
#   3. what it must show: `capsule diff` of the two replays says `identical`.
# Usage: benchmarks/gpu_oci_check.sh CAPSULE.oci.tar   (results under $OUT, default /tmp/gpu-oci)
# The GPU machines lent to this project have no container runtime: not yet run (docs/results).
set -uo pipefail
archive=${1:?usage: $0 CAPSULE.oci.tar}
OUT=${OUT:-/tmp/gpu-oci}
mkdir -p "$OUT"
source benchmarks/device_env.sh
work=/tmp/gpu-oci-work
rm -rf "$work" && mkdir -p "$work"
export CAPSULE_OCI_STORE="$work/store"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>/dev/null
{ command -v runc; command -v umoci; command -v nvidia-container-runtime-hook;
  command -v nvidia-container-cli; ls /etc/cdi /var/run/cdi 2>/dev/null; } > "$OUT/tools.txt"
cap import "$archive" --engine oci --out "$work/capsule" 2> "$work/import.log" || {
    tail -3 "$work/import.log"; exit 1; }
start=$(date +%s)
cap replay "$work/capsule" --device cuda --out "$work/host" 2> "$work/host.log" \
    || tail -3 "$work/host.log"
echo "host CUDA replay: $(( $(date +%s) - start )) s"
start=$(date +%s)
cap replay "$work/capsule" --device cuda --on oci --out "$work/oci" 2> "$work/oci.log" \
    || tail -3 "$work/oci.log"
echo "CUDA replay from the runc bundle: $(( $(date +%s) - start )) s"
cap diff "$work/host" "$work/oci" --json > "$OUT/host-vs-oci.json"
cap diff "$work/host" "$work/oci" | tee "$OUT/host-vs-oci.txt"
cap diff "$work/capsule" "$work/oci" --json > "$OUT/capsule-vs-oci.json"
cp "$work/host.log" "$work/oci.log" "$OUT/" 2>/dev/null
