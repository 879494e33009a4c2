"""The base image travels with the capsule, so that a rebuild (`build --check`) needs no network
and no registry, years later.

The first build stores the engine's `docker save` archive of its base in the capsule, as the
artifact `base/<id12>.docker.tar.zst` (zstd), and records it in the image record
(`images.<variant>.base`: the archive, its image ID and layers, and for Capsule's own base the
Debian release, mirror and package-set date its labels carry). Like the build provenance, it
does not change the capsule digest the image is labelled with: an image recorded before bases
were carried keeps its ID when a later `build` stores its base. Every later build of the
capsule, `--check` included, uses that base: found in the engine with the same layers, or
loaded back from the capsule (its digest checked first), keeping its image ID.

Why the image's archive and not its root file system alone: a `--base` image has several
layers and settings (ENV, labels) that the capsule's image inherits, and a load keeps the base's
ID. Why a copy in the capsule rather than the exported image's lowest layer: the base is an
input of the build, so the proof that the image can be made again must not need the image.
Sizes and times: docs/architecture.md ("The base travels with the capsule").
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from builder.engines import Engine
from builder.engines.recipe import BASE_LABELS
from builder.errors import EngineMissing, IntegrityError
from builder.observer import Log
from builder.records.enums import Device
from builder.records.manifest import BaseRecord, ImageRecord, Manifest
from builder.records.run import ArtifactRef
from builder.store import BASE_PREFIX, Capsule, file_sha256

ARCHIVE_DIR = BASE_PREFIX.rstrip("/")
MEDIA_TYPE = "application/vnd.docker.image.archive+zstd"  # `docker save`'s tar, compressed
ZSTD_LEVEL = 10  # Capsule's base: 114 MB → 34 MB in ~2 s; level 19 saves 4 MB more in 40 s


def carried(manifest: Manifest, variant: Device) -> ImageRecord | None:
    """The image record whose base the capsule carries: `variant`'s, else another's."""
    for image in (manifest.images.get(variant), *manifest.images.values()):
        if image is not None and image.base is not None:
            return image
    return None


def carry(capsule: Capsule, engine: Engine, ref: str, image_id: str, log: Log) -> BaseRecord:
    """Store the engine's base `ref` (= `image_id`) in the capsule, once; its record."""
    info = engine.inspect(image_id)
    if info is None:
        raise EngineMissing(f"base: {ref} ({image_id[:19]}…) left {engine.label} meanwhile")
    name = f"{ARCHIVE_DIR}/{image_id.removeprefix('sha256:')[:12]}.docker.tar.zst"
    facts = {field: info.labels.get(label) for field, label in BASE_LABELS.items()}
    record = BaseRecord(archive=name, image_id=image_id, layers=info.layers, **facts)
    if name in capsule.manifest.artifacts:
        return record
    log(f"base: storing {ref} in the capsule (`{engine.name} save`, zstd), so rebuilds need it")
    staging = capsule.path / f".base.partial-{uuid.uuid4().hex[:8]}"
    try:
        _compress(engine.save(image_id), staging)
        artifact = ArtifactRef(
            path=name,
            sha256=file_sha256(staging),
            size=staging.stat().st_size,
            media_type=MEDIA_TYPE,
        )
        with capsule.writing() as manifest:  # as it is now: another build may have stored it
            if name not in manifest.artifacts:
                (capsule.path / ARCHIVE_DIR).mkdir(exist_ok=True)
                os.replace(staging, capsule.path / name)
                artifacts = {**manifest.artifacts, name: artifact}
                capsule.update(manifest.model_copy(update={"artifacts": artifacts}))
    finally:
        staging.unlink(missing_ok=True)
    log(f"base: stored {name} ({artifact.size / 1e6:.0f} MB)")
    return record


def restore(capsule: Capsule, image: ImageRecord, engine: Engine, log: Log) -> str:
    """The base `image` records, in the engine under its reference: there already with the
    recorded layers, or loaded from the capsule. Returns its image ID there."""
    assert image.base is not None
    ref, record = image.base_image, image.base
    found = engine.inspect(ref)
    if found is not None and found.layers == record.layers:
        return found.image_id
    artifact = capsule.manifest.artifacts.get(record.archive)
    if artifact is None:
        raise IntegrityError(
            f"{capsule.path}: artifacts: {record.archive!r}, the base that images.*.base names, "
            "is not listed"
        )
    path = capsule.path / artifact.path
    if not path.is_file() or file_sha256(path) != artifact.sha256:
        raise IntegrityError(f"{path}: missing or altered; the capsule's base cannot be loaded")
    if found is not None:
        log(f"base: {ref} in {engine.label} has other layers (another build of that recipe)")
    log(f"base: loading {ref} into {engine.label} from the capsule ({artifact.size / 1e6:.0f} MB)")
    engine.load(_decompressed(path))
    engine.tag(record.image_id, ref)
    found = engine.inspect(ref)
    if found is None or found.layers != record.layers:
        raise IntegrityError(f"{path}: loading it did not give the recorded base layers")
    return found.image_id


def _compress(chunks: Iterable[bytes], path: Path) -> None:
    import zstandard

    with path.open("wb") as f:
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
        with compressor.stream_writer(f, closefd=False) as writer:
            for chunk in chunks:
                writer.write(chunk)


def _decompressed(path: Path) -> Iterator[bytes]:
    import zstandard

    with path.open("rb") as f:
        yield from zstandard.ZstdDecompressor().read_to_iter(f, read_size=1 << 20)


def update_keeping_used(capsule: Capsule, manifest: Manifest) -> None:
    """Record `manifest` (inside `capsule.writing()`) without the base archives no image record
    names any more (an image built again on another --base), then remove their files: each
    is tens of megabytes."""
    named = {image.base.archive for image in manifest.images.values() if image.base}
    unused = {k: v for k, v in manifest.artifacts.items() if k.startswith(BASE_PREFIX)}
    unused = {k: v for k, v in unused.items() if k not in named}
    artifacts = {k: v for k, v in manifest.artifacts.items() if k not in unused}
    capsule.update(manifest.model_copy(update={"artifacts": artifacts}))
    for ref in unused.values():
        (capsule.path / ref.path).unlink(missing_ok=True)
