#!/usr/bin/env bash
# Create the project's virtual environment and install Capsule with its extras, saying what it
# does: the Debian packages it adds (python3 ≥ 3.11 with venv), what pip will download (and,
# when it picks PyTorch's CUDA build, how big that is and how to get the CPU build), pip's own
# progress, and the size of the result.
# TORCH_INDEX_URL: an extra package index for torch (e.g. PyTorch's CPU index), when reachable.
set -euo pipefail
venv="${1:-.venv}"
cd "$(dirname "$0")/.."
say() { echo "bootstrap: $*" >&2; }

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    say "installing ${need_apt[*]} python3-pip with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" python3-pip >/dev/null
fi
python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || { say "Capsule needs Python 3.11 or newer"; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv with $(python3 --version)"
    python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)
quiet_locations() { grep --line-buffered -v '^WARNING: Location' || true; }
say "upgrading pip in $venv"
"${pip[@]}" install -q --upgrade pip 2>&1 | quiet_locations \
    || say "could not upgrade pip; going on with $("${pip[@]}" --version | cut -d' ' -f1-2)"
extra=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then extra=(--extra-index-url "$TORCH_INDEX_URL"); fi
target='.[torch,tensorflow,examples,dev]'
say "resolving $target (torch is pinned to 2.13.0, TensorFlow to 2.21.0)"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
if "${pip[@]}" install --dry-run --quiet --report "$report" ${extra[@]+"${extra[@]}"} -e "$target" 2>&1 \
        | quiet_locations; then
    "$venv/bin/python" scripts/install_plan.py "$report" || true
fi
say "installing (pip's own output follows: a line per download, with its size)"
"${pip[@]}" install --progress-bar on ${extra[@]+"${extra[@]}"} -e "$target" 2>&1 | quiet_locations
TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" -c 'import builder, torch, tensorflow, pytest' \
    || { say "installation failed"; exit 1; }
# an editable install leaves Capsule's modules as source: byte-compile them once, or every command
# compiles them again where PYTHONDONTWRITEBYTECODE is set (~30 ms of each start)
"$venv/bin/python" -m compileall -q builder
torch_build=$("$venv/bin/python" -c 'import torch
print(torch.__version__, "(CUDA build)" if torch.version.cuda else "(CPU build)")')
say "$venv ready: torch $torch_build, $(du -sh "$venv" | cut -f1) on disk"
