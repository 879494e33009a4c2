# Capsule CPU image: rendered by builder/image.py (placeholders in braces).
# Installs only from the capsule's own wheelhouse, offline, and resets every time stamp it
# writes to SOURCE_DATE_EPOCH, so two builds of one capsule give byte-identical layers.
# Bytecode is compiled as unchecked-hash .pyc: reproducible (no time stamps) and, unlike pip's
# checked-hash .pyc, not re-validated by hashing every source file at each import.
FROM {base}
ADD wheelhouse.tar /
ENV SOURCE_DATE_EPOCH={epoch} \
    PYTHONHASHSEED=0 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    PATH=/opt/capsule/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN /usr/bin/python3 -m venv --without-pip /opt/capsule/venv \
 && /opt/capsule/venv/bin/python {wheelhouse}/{pip_wheel}/pip install --quiet --no-index \
        --no-deps --no-cache-dir --no-compile --disable-pip-version-check {wheelhouse}/*.whl \
 && (/opt/capsule/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        /opt/capsule/venv/lib > /dev/null || true) \
 && find /opt/capsule -exec touch -h -d @{epoch} {{}} + \
 && touch -h -d @{epoch} /opt /tmp /root
ENTRYPOINT ["/opt/capsule/venv/bin/capsule"]
