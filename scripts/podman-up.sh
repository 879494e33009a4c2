#!/usr/bin/env bash
# Bring up Podman's Docker-compatible API service for Capsule (`--engine podman`, `--on podman`),
# reusing one that already answers. Installs Debian's podman when it is missing.
set -euo pipefail
socket=/run/podman/podman.sock
if ! command -v podman >/dev/null; then
    echo "podman-up: installing podman" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null
fi
service_up() { timeout 10 podman --remote --url "unix://$socket" version >/dev/null 2>&1; }
if service_up; then
    echo "podman-up: service already running ($socket)" >&2
    exit 0
fi
mkdir -p "$(dirname "$socket")"
log=/var/log/capsule-podman.log
echo "podman-up: starting podman system service (log: $log)" >&2
nohup podman system service --time=0 "unix://$socket" >"$log" 2>&1 &
for _ in $(seq 30); do
    if service_up; then
        echo "podman-up: service ready ($socket)" >&2
        exit 0
    fi
    sleep 1
done
echo "podman-up: the service did not answer within 30 s; last log lines:" >&2
tail -n 20 "$log" >&2
exit 4
