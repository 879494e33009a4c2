"""The base image travels with the capsule, so that a rebuild (`build --check`) needs no network
and no registry, years later.

A build stores the engine's `docker save` archive of its base in the capsule, as the artifact
`base/<id12>.docker.tar.zst` (zstd), and records it in the image record (`images.<variant>.base`:
the archive, the base's image ID, layers and unpacked size, and for Capsule's own base the
Debian release, mirror and package-set date its labels carry). The image is built `FROM` that
ID, so every later build of the capsule, `--check` included, uses the very same base: in the
engine already, or loaded back from the capsule. Nothing is tagged: a capsule never moves a
name in the user's engine.

Loading someone else's archive into an engine is guarded: besides its sha256, the archive must
hold exactly one image whose config hashes to the recorded ID, with the recorded layers, no
tags (a `docker load` would apply them), and no more bytes than recorded.

Like the build provenance, the archive does not change the capsule digest the image is
labelled with: an image recorded before bases were carried keeps its ID when a later `build`
stores its base. Why the image's archive and not its root file system alone: a `--base`
image has several layers and settings (ENV, labels) that the capsule's image inherits, and a
load keeps the base's ID. Why a copy in the capsule rather than the exported image's lowest
layer: the base is an input of the build, so the proof that the image can be made again must
not need the image. Sizes and times: docs/architecture.md ("The base travels with the capsule").
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.engines import Engine
from builder.engines.recipe import BASE_LABELS
from builder.errors import BadInput, CapsuleError, EngineMissing, IntegrityError
from builder.observer import Log
from builder.records.enums import Device
from builder.records.manifest import BaseRecord, ImageRecord, Manifest
from builder.records.run import ArtifactRef
from builder.store import BASE_PREFIX, Capsule, check_artifact, file_sha256

ARCHIVE_DIR = BASE_PREFIX.rstrip("/")
MEDIA_TYPE = "application/vnd.docker.image.archive+zstd"  # `docker save`'s tar, compressed
ZSTD_LEVEL = 10  # Capsule's base: 114 MB → 34 MB in ~2 s; level 19 saves 4 MB more in 40 s
SMALL = 1 << 20  # manifest.json, repositories and the config are a few KiB


def carried(manifest: Manifest, variant: Device) -> ImageRecord | None:
    """The image record whose base the capsule carries: `variant`'s, else another's."""
    for image in (manifest.images.get(variant), *manifest.images.values()):
        if image is not None and image.base is not None:
            return image
    return None


@dataclass(frozen=True)
class Carried:
    """The base of the build in progress: its record and, if the capsule does not hold it
    yet, the archive staged beside the capsule's files, listed by `record` with the image."""

    base: BaseRecord
    staged: Path | None = None
    artifact: ArtifactRef | None = None

    def discard(self) -> None:
        if self.staged is not None:
            self.staged.unlink(missing_ok=True)


def carry(capsule: Capsule, engine: Engine, ref: str, image_id: str, log: Log) -> Carried:
    """The engine's base `ref` (= `image_id`), saved and compressed for the capsule."""
    info = engine.inspect(image_id)
    if info is None:
        raise EngineMissing(f"base: {ref} ({image_id[:19]}…) left {engine.label} meanwhile")
    log(f"base: saving {ref} for the capsule (`{engine.name} save`, zstd), so rebuilds need it")
    staged = capsule.path / f".base.partial-{uuid.uuid4().hex[:8]}"
    try:
        unpacked = compress(engine.save(image_id), staged)
        artifact = ArtifactRef(
            path=f"{ARCHIVE_DIR}/{image_id.removeprefix('sha256:')[:12]}.docker.tar.zst",
            sha256=file_sha256(staged),
            size=staged.stat().st_size,
            media_type=MEDIA_TYPE,
        )
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    facts = {field: info.labels.get(label) for field, label in BASE_LABELS.items()}
    base = BaseRecord(
        archive=artifact.path,
        image_id=image_id,
        layers=info.layers,
        unpacked_bytes=unpacked,
        **facts,
    )
    log(f"base: {artifact.path} ({artifact.size / 1e6:.0f} MB) goes into the capsule")
    return Carried(base, staged, artifact)


def record(capsule: Capsule, manifest: Manifest, base: Carried | None) -> None:
    """Record `manifest` (inside `capsule.writing()`): the staged archive put in place and
    listed, archives no image record names any more dropped with their files (an image built
    again on another --base: each is tens of megabytes)."""
    artifacts = dict(manifest.artifacts)
    if base is not None and base.staged is not None and base.base.archive not in artifacts:
        assert base.artifact is not None
        (capsule.path / ARCHIVE_DIR).mkdir(exist_ok=True)
        os.replace(base.staged, capsule.path / base.base.archive)
        artifacts[base.base.archive] = base.artifact
    named = {image.base.archive for image in manifest.images.values() if image.base}
    gone = sorted(named - set(artifacts))
    if gone:
        raise BadInput(
            f"{capsule.path}: {gone[0]}: another build removed that base meanwhile; build again"
        )
    unused = [
        name
        for name, ref in artifacts.items()
        if name.startswith(BASE_PREFIX) and name == ref.path and name not in named
    ]
    for name in unused:
        del artifacts[name]
    capsule.update(manifest.model_copy(update={"artifacts": artifacts}))
    for name in unused:
        (capsule.path / name).unlink(missing_ok=True)


def restore(capsule: Capsule, base: BaseRecord, engine: Engine, log: Log) -> None:
    """The carried base in the engine (by its image ID): there already, or loaded from the
    capsule once the archive is checked."""
    if engine.has_image(base.image_id) is not None:
        return
    artifact = capsule.manifest.artifacts.get(base.archive)
    if artifact is None:
        raise IntegrityError(
            f"{capsule.path}: artifacts: {base.archive!r}, the base an image record names, "
            "is not listed"
        )
    check_artifact(capsule.path, base.archive, artifact)  # no symlink, its recorded bytes
    path = capsule.path / artifact.path
    try:
        _check_archive(path, base)
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError, TypeError) as error:
        raise IntegrityError(f"{path}: not a readable image archive ({error})") from None
    log(f"base: loading {base.image_id[:19]}… into {engine.label} from the capsule "
        f"({artifact.size / 1e6:.0f} MB)")  # fmt: skip
    try:
        engine.load(decompressed(path, base.unpacked_bytes))
    except IntegrityError:
        raise
    except CapsuleError as error:
        raise IntegrityError(f"{path}: {engine.name} could not load it: {error}") from None
    if engine.has_image(base.image_id) is None:
        raise IntegrityError(f"{path}: loading it did not give the base {base.image_id[:19]}…")


def _check_archive(path: Path, base: BaseRecord) -> None:
    """Exactly one image, untagged, whose config hashes to the recorded ID and lists the
    recorded layers; IntegrityError naming what differs."""
    small: dict[str, bytes] = {}
    stream = _Stream(decompressed(path, base.unpacked_bytes))
    buffered = io.BufferedReader(stream, 1 << 20)
    with tarfile.open(fileobj=buffered, mode="r|") as tar:
        for member in tar:
            if member.isfile() and member.size <= SMALL and len(small) < 64:
                data = tar.extractfile(member)
                if data is not None:
                    small[member.name.removeprefix("./")] = data.read()
    while buffered.read(1 << 20):  # the tar's end padding
        pass
    if stream.total != base.unpacked_bytes:
        unpacked = f"unpacks to {stream.total} bytes, not the recorded {base.unpacked_bytes}"
        raise IntegrityError(f"{path}: {unpacked}")
    entries: Any = json.loads(small["manifest.json"])
    why = None
    if not isinstance(entries, list) or len(entries) != 1:
        why = "it must hold exactly one image"
    elif entries[0].get("RepoTags") or json.loads(small.get("repositories", b"{}")):
        why = "it names tags, which a load would apply"
    else:
        config = small.get(str(entries[0]["Config"]))
        if config is None or f"sha256:{hashlib.sha256(config).hexdigest()}" != base.image_id:
            why = f"its image is not the recorded base {base.image_id[:19]}…"
        elif json.loads(config)["rootfs"]["diff_ids"] != base.layers:
            why = "its layers are not the recorded ones"
    if why is not None:
        raise IntegrityError(f"{path}: {why}")


class _Stream(io.RawIOBase):
    """Chunks as a readable file (for tarfile's stream mode), counting the bytes."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.pending, self.total = chunks, memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.pending:
            chunk = next(self.chunks, b"")
            self.pending, self.total = memoryview(chunk), self.total + len(chunk)
        size = min(len(buffer), len(self.pending))
        buffer[:size], self.pending = self.pending[:size], self.pending[size:]
        return size


def compress(chunks: Iterable[bytes], path: Path) -> int:
    """Write `chunks` zstd-compressed to `path`; the number of bytes before compression."""
    import zstandard

    total = 0
    with path.open("wb") as f:
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
        with compressor.stream_writer(f, closefd=False) as writer:
            for chunk in chunks:
                writer.write(chunk)
                total += len(chunk)
    return total


def decompressed(path: Path, limit: int) -> Iterator[bytes]:
    """The archive's bytes, refused past `limit` (a small file may unpack to a huge one)."""
    import zstandard

    total = 0
    with path.open("rb") as f:
        for chunk in zstandard.ZstdDecompressor().read_to_iter(f, read_size=1 << 20):
            total += len(chunk)
            if total > limit:
                raise IntegrityError(f"{path}: unpacks to more than the recorded {limit} bytes")
            yield chunk
