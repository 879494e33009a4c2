# Capsule CUDA image: rendered by builder/engines/recipe.py (placeholders in braces).
# The base must carry the NVIDIA user-space libraries the framework's CUDA wheels need, e.g. an
# nvidia/cuda runtime image where a registry is reachable (pass it with --base); the wheelhouse
# holds the framework's CUDA build. The engine needs the NVIDIA container runtime to run it.
# Built like cpu.Dockerfile (see there): install in a first stage, copy only the installed tree;
# its layer and config are written again by Capsule (recipe.py, layer format 2).
FROM {base} AS install
ADD wheelhouse.tar /
ENV SOURCE_DATE_EPOCH={epoch} PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
RUN /usr/bin/python3 -m venv --without-pip /opt/capsule/venv \
 && /opt/capsule/venv/bin/python {wheelhouse}/{pip_wheel}/pip install --quiet --no-index \
        --no-deps --no-cache-dir --no-compile --disable-pip-version-check {wheelhouse}/*.whl \
 && (/opt/capsule/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        /opt/capsule/venv/lib > /dev/null || true) \
 && rm -rf {wheelhouse} \
 && mkdir -p /stage/opt && mv /opt/capsule /stage/opt/ \
 && find /stage -exec touch -h -d @{epoch} {{}} +

FROM {base}
COPY --from=install /stage/ /
ENV SOURCE_DATE_EPOCH={epoch} \
    PYTHONHASHSEED=0 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CUBLAS_WORKSPACE_CONFIG=:4096:8 \
    PATH=/opt/capsule/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/opt/capsule/venv/bin/capsule"]
