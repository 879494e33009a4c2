"""OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`): written from engines'
`docker save` archives, read back as one, kept as the daemonless engine's image store.

A layout holds each image with its config blob byte for byte, so the config's digest stays the
image ID the capsule records (a converter that re-marshals the config, as `skopeo copy
docker-archive:… oci:…` does, would change it), and its layers as saved (uncompressed; each
must hash to its config's diff_id). Every blob is checked against its digest as it is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from builder.errors import CapsuleError, IntegrityError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"  # as saved: uncompressed
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}


def json_blob(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Blob:
    """One blob of a layout being written: its digest, size and where its bytes are."""

    digest: str
    size: int
    data: bytes | None = None  # small blobs (manifests, configs)
    source: tarfile.TarFile | None = None  # or a member of a saved archive
    member: str = ""

    def open(self) -> IO[bytes]:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.source is not None
        found = self.source.extractfile(self.member)
        assert found is not None
        return found


def saved_images(sources: dict[str, tarfile.TarFile], ids: dict[str, str]) -> tuple[
    list[dict[str, object]], list[Blob]
]:  # fmt: skip
    """The index entries and blobs of an OCI image layout holding each `docker save` archive
    of `sources` (tag → open archive), tagged as keyed: the config blob byte for byte (its
    digest must be the image ID in `ids`), the layers as they are (uncompressed; each must hash
    to its config's diff_id). Blobs are listed once each."""
    entries: list[dict[str, object]] = []
    blobs: dict[str, Blob] = {}
    for ref, source in sources.items():
        archive = json.loads(_member(source, "manifest.json"))
        if len(archive) != 1:
            raise CapsuleError(f"images.{ref}: the saved archive holds {len(archive)} images")
        config = _member(source, archive[0]["Config"])
        config_id = "sha256:" + hashlib.sha256(config).hexdigest()
        if config_id != ids[ref]:
            raise CapsuleError(
                f"images.{ref}: the engine saved config {config_id[:19]}…, not the "
                f"recorded image ID {ids[ref][:19]}…"
            )
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        layers = []
        if len(archive[0]["Layers"]) != len(diff_ids):
            raise IntegrityError(f"images.{ref}: the archive's layers are not its config's")
        for name, diff_id in zip(archive[0]["Layers"], diff_ids, strict=True):
            size, digest = _hash_member(source, name)
            if digest != diff_id:
                raise IntegrityError(f"images.{ref}: layer {name} is not its diff_id")
            layers.append(Blob(digest, size, source=source, member=name))
        image_manifest = json_blob(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": config_id, "size": len(config)},
                "layers": [
                    {"mediaType": LAYER_TYPE, "digest": b.digest, "size": b.size} for b in layers
                ],
            }
        )
        manifest_id = "sha256:" + hashlib.sha256(image_manifest).hexdigest()
        entries.append(
            {
                "mediaType": MANIFEST_TYPE,
                "digest": manifest_id,
                "size": len(image_manifest),
                "annotations": {REF_NAME: ref},
            }
        )
        for blob in [
            Blob(manifest_id, len(image_manifest), image_manifest),
            Blob(config_id, len(config), config),
            *layers,
        ]:
            blobs.setdefault(blob.digest, blob)
    return entries, list(blobs.values())


def _open_member(source: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        member = source.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise CapsuleError(f"the saved image archive has no file {name!r}")
    return member


def _member(source: tarfile.TarFile, name: str) -> bytes:
    return _open_member(source, name).read()


def _hash_member(source: tarfile.TarFile, name: str) -> tuple[int, str]:
    member = _open_member(source, name)
    digest, size = hashlib.sha256(), 0
    while chunk := member.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return size, "sha256:" + digest.hexdigest()


def config_digest(layout: Path, ref: str) -> str:
    """The config digest (image ID) of the image tagged `ref` in an OCI layout directory,
    hashed from the config blob itself (not taken on trust from the manifest)."""
    index = json.loads((layout / "index.json").read_text())
    for entry in index.get("manifests", []):
        if entry.get("annotations", {}).get(REF_NAME) == ref:
            algo, hexdigest = entry["digest"].split(":", 1)
            image_manifest = json.loads((layout / "blobs" / algo / hexdigest).read_bytes())
            algo, hexdigest = image_manifest["config"]["digest"].split(":", 1)
            blob = (layout / "blobs" / algo / hexdigest).read_bytes()
            return "sha256:" + hashlib.sha256(blob).hexdigest()
    raise CapsuleError(f"{layout}: no image tagged {ref!r} in index.json")


# ---------------------------------------------------------------- a layout directory


def blob_path(layout: Path, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    if (
        algo != "sha256"
        or len(hexdigest) != 64
        or not all(c in "0123456789abcdef" for c in hexdigest)
    ):
        raise IntegrityError(f"{layout}: {digest[:80]!r} is not a sha256 digest")
    return layout / "blobs" / "sha256" / hexdigest


def write_blob(layout: Path, digest: str, stream: IO[bytes]) -> None:
    """Store one blob, checked against its digest; written under a temporary name and renamed,
    so a layout never holds a partial blob under a digest's name. Present already: kept."""
    target = blob_path(layout, digest)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".partial-", delete=False) as f:
        try:
            while chunk := stream.read(1 << 20):
                hasher.update(chunk)
                f.write(chunk)
            if "sha256:" + hasher.hexdigest() != digest:
                raise IntegrityError(f"blob {digest[:19]}…: its bytes hash to another digest")
            f.flush()
            os.fsync(f.fileno())  # on disk before it has its digest's name
            os.chmod(f.name, 0o644)
            os.replace(f.name, target)
        except BaseException:
            os.unlink(f.name)
            raise


def read_index(layout: Path) -> list[dict[str, Any]]:
    """The layout's index entries (none for a layout not yet written)."""
    index = layout / "index.json"
    if not index.exists():
        return []
    try:
        entries = json.loads(index.read_text()).get("manifests", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("manifests is not a list of objects")
    except (ValueError, AttributeError, OSError) as error:
        raise IntegrityError(f"{index}: unreadable ({error})") from None
    return entries


def write_index(layout: Path, entries: list[dict[str, Any]]) -> None:
    """index.json (and oci-layout) replaced at once: readers see the old or the new index."""
    layout.mkdir(parents=True, exist_ok=True)
    for name, document in (
        ("oci-layout", LAYOUT_FILE),
        ("index.json", {"schemaVersion": 2, "manifests": entries}),
    ):
        partial = layout / f".{name}.partial"
        partial.write_bytes(json_blob(document))
        os.replace(partial, layout / name)


def add_saved(layout: Path, sources: dict[str, tarfile.TarFile], ids: dict[str, str]) -> None:
    """Add each `docker save` archive of `sources` to the layout directory, tagged as keyed
    (an image already tagged so is replaced in the index; its blobs are shared)."""
    entries, blobs = saved_images(sources, ids)
    for blob in blobs:
        with blob.open() as stream:
            write_blob(layout, blob.digest, stream)
    tags = {entry["annotations"][REF_NAME] for entry in entries}  # type: ignore[index]
    kept = [e for e in read_index(layout) if e.get("annotations", {}).get(REF_NAME) not in tags]
    write_index(layout, kept + entries)


def image_manifest(layout: Path, ref: str) -> dict[str, Any] | None:
    """The image manifest tagged `ref`, or None; its blob checked against its digest."""
    for entry in read_index(layout):
        if entry.get("annotations", {}).get(REF_NAME) == ref:
            try:
                data = blob_path(layout, str(entry["digest"])).read_bytes()
                if "sha256:" + hashlib.sha256(data).hexdigest() != entry["digest"]:
                    raise ValueError("its blob was altered")
                manifest = json.loads(data)
                manifest["config"]["digest"], manifest["layers"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise IntegrityError(f"{layout}: the manifest of {ref!r}: {error}") from None
            return dict(manifest)
    return None


def docker_archive(layout: Path, ref: str, out: IO[bytes]) -> None:
    """Write the image tagged `ref` as a `docker save` archive (what Docker and Podman load):
    manifest.json, the config blob as it is, the layers as they are."""
    manifest = image_manifest(layout, ref)
    if manifest is None:
        raise CapsuleError(f"{layout}: no image tagged {ref!r}")
    config = manifest["config"]["digest"].removeprefix("sha256:")
    layers = [layer["digest"].removeprefix("sha256:") for layer in manifest["layers"]]
    archive = [
        {"Config": f"{config}.json", "RepoTags": None, "Layers": [f"{d}/layer.tar" for d in layers]}
    ]
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        add_bytes(tar, "manifest.json", json_blob(archive))
        for name, digest in [(f"{config}.json", config), *((f"{d}/layer.tar", d) for d in layers)]:
            path = blob_path(layout, f"sha256:{digest}")
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            with path.open("rb") as stream:
                tar.addfile(info, stream)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def archive_chunks(layout: Path, ref: str, scratch: Path) -> Iterator[bytes]:
    """`docker_archive` as a stream of chunks (spooled through a file in `scratch`): what
    `Engine.load` takes."""
    with tempfile.TemporaryFile(dir=scratch) as f:
        docker_archive(layout, ref, f)
        f.seek(0)
        while chunk := f.read(1 << 20):
            yield chunk
