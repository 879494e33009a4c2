# Capsule CPU image: rendered by builder/engines/recipe.py (placeholders in braces).
# Two stages: the first installs from the capsule's own wheelhouse, offline; the image is the
# second, which copies only the installed /opt/capsule (venv and the user's code), so it holds
# each wheel once, installed, and no wheelhouse layer. Every time stamp written is reset to
# SOURCE_DATE_EPOCH, so two builds of one capsule give byte-identical layers; the tree is
# copied from /stage to / because COPY sets the times of the directories it copies but not
# those of the destination directory itself (/opt would get the build's time). Only
# /opt/capsule moves: whatever a --base image keeps in /opt stays in its own layers.
# The image stage's layer and config are then written again by Capsule itself (recipe.py, layer
# format 2: sorted, owner root, fixed times), so Docker and Podman give the same image ID.
# Bytecode is compiled as unchecked-hash .pyc: reproducible (no time stamps) and, unlike pip's
# checked-hash .pyc, not re-validated by hashing every source file at each import.
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
    PATH=/opt/capsule/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/opt/capsule/venv/bin/capsule"]
