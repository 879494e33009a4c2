#!/usr/bin/env bash
# A fresh-machine stand-in: a clean clone, Debian's python3 (3.11.2), pip reaching PyPI only
# (no local wheels, no constraints, empty cache), no capsule images or base image in Docker.
set -euo pipefail
rm -rf /tmp/fresh /tmp/fresh-home; mkdir -p /tmp/fresh-home
git clone -q /work/main /tmp/fresh/capsule
cd /tmp/fresh/capsule
docker rmi -f $(docker images -q 'capsule*' ; docker images -q 'capsule-base') >/dev/null 2>&1 || true
docker image prune -f >/dev/null
if command -v podman >/dev/null; then podman rmi -af >/dev/null 2>&1 || true; fi
export HOME=/tmp/fresh-home PATH=/usr/sbin:/usr/bin:/sbin:/bin PIP_CONFIG_FILE=/dev/null CI=true
unset PIP_FIND_LINKS PIP_DEFAULT_TIMEOUT PIP_DISABLE_PIP_VERSION_CHECK
start=$(date +%s)
make demo
demo=$(date +%s)
echo "=== make demo: $((demo - start)) s"
make test
end=$(date +%s)
echo "=== make test: $((end - demo)) s"
du -sh .venv
docker images
