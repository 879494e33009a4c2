# Sourced by the prepared scripts for a lent GPU machine (benchmarks/gpu_*.sh): install the
# wheels that machine lacks (pydantic and its parts, carried in .whl/), put this checkout on
# PYTHONPATH, and define `cap` (the capsule CLI with that machine's python3; PY overrides it).
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cap() { "${PY:-python3}" -m builder "$@"; }
