#!/usr/bin/env bash
# Bring up a Docker engine for Capsule's image tests, reusing one that already answers.
# Installs docker.io and debootstrap (for the local base image) when they are missing.
set -euo pipefail
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    echo "docker-up: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
engine_up() { timeout 10 docker info >/dev/null 2>&1; }
if engine_up; then
    echo "docker-up: engine already running" >&2
    exit 0
fi
log=/var/log/capsule-dockerd.log
echo "docker-up: starting dockerd (log: $log)" >&2
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 60); do
    if engine_up; then
        echo "docker-up: engine ready" >&2
        exit 0
    fi
    sleep 1
done
echo "docker-up: dockerd did not answer within 60 s; last log lines:" >&2
tail -n 20 "$log" >&2
exit 4
