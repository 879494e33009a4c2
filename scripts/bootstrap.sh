#!/usr/bin/env bash
# Create the project's virtual environment and install Capsule with its extras.
# Installs the Debian packages it needs first (python3 ≥ 3.11 with venv), when they are missing.
set -euo pipefail
venv="${1:-.venv}"
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "bootstrap: installing ${need_apt[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" python3-pip >/dev/null
fi
python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || { echo "bootstrap: Capsule needs Python 3.11 or newer" >&2; exit 1; }

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch is pinned (2.13.0, CPU build): any other version downloads gigabytes.
"$venv/bin/python" -m pip install -q -e '.[torch,tensorflow,examples,dev]' 2>&1 | grep -v '^WARNING: Location' || true
"$venv/bin/python" -c 'import builder, torch, tensorflow, pytest' \
    || { echo "bootstrap: installation failed" >&2; exit 1; }
echo "bootstrap: $venv ready ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))" >&2
