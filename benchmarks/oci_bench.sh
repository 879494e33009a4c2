#!/usr/bin/env bash
# The daemonless engine on one capsule (issue 16): build with Docker, export --format oci,
# import into a fresh OCI store with no daemon reachable, replay in the image with runc twice
# (the first unpacks the bundle), replay on the host; every replay judged by diff.
# Usage: benchmarks/oci_bench.sh CAPSULE_SPEC_DIR   (prints one line per step with seconds)
set -euo pipefail
spec=${1:?usage: $0 capsules/NAME}
work=$(mktemp -d /tmp/capsule-oci-bench-XXXX)
trap 'rm -rf "$work"' EXIT
cap() { .venv/bin/capsule "$@"; }
node=(env DOCKER_HOST=unix:///nonexistent/docker.sock CAPSULE_PODMAN_HOST=unix:///nonexistent/p.sock
      CAPSULE_OCI_STORE="$work/store")
step() { local name=$1; shift; local t0=$EPOCHREALTIME
         "$@" > "$work/log" 2>&1 || { tail -3 "$work/log"; exit 1; }
         awk -v n="$name" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%-28s %7.1f s\n", n, b - a }'; }
step freeze cap freeze "$spec" --out "$work/cap"
step "build (docker)" cap build "$work/cap"
step "export --format oci" cap export "$work/cap" --format oci --out "$work/cap.oci.tar"
echo "export size: $(du -m "$work/cap.oci.tar" | cut -f1) MiB"
step "import --engine oci" "${node[@]}" .venv/bin/capsule import "$work/cap.oci.tar" --engine oci --out "$work/in"
step "replay --on oci (unpack)" "${node[@]}" .venv/bin/capsule replay "$work/in" --on oci --out "$work/r1"
step "replay --on oci" "${node[@]}" .venv/bin/capsule replay "$work/in" --on oci --out "$work/r2"
step "replay --on host" cap replay "$work/in" --out "$work/r3"
echo "bundle: $(du -sm "$work/store/bundles" | cut -f1) MiB, layout: $(du -sm "$work/store/layout" | cut -f1) MiB"
for r in r1 r2 r3; do echo "$r: $(cap diff "$work/cap" "$work/$r" | head -1)"; done
docker rmi -f "$(python3 -c "import json,sys; print(json.load(open('$work/cap/manifest.json'))['images']['cpu']['image_id'])")" > /dev/null
