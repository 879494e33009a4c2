"""export --format oci: the capsule's image as an OCI image layout archive (`oci-archive`), with
the capsule itself inside the same file.

The file is one plain tar of an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`)
holding each recorded image, tagged with its variant (`cpu`, `gpu`: the layout's
`org.opencontainers.image.ref.name`), plus the capsule as extra members `capsule/…` (the same
names `capsule export` writes). Readers of an OCI layout go through `index.json` and the blobs it
names and ignore other files, so `apptainer build x.sif oci-archive://FILE`, `podman load -i
FILE`, `skopeo inspect oci-archive:FILE` and `umoci` (on the unpacked layout) all read it; no
daemon is needed to read it.

The layout is written here, from the engine's `docker save` archive: the image's config blob
byte for byte (so its digest, the image ID, is the one the manifest records and the Docker build
gave), each layer as saved (uncompressed, `…layer.v1.tar`; each must hash to its diff_id), one
OCI image manifest per variant. `skopeo copy docker-archive:… oci:…` is not used to convert:
containers/image re-marshals the config into OCI's struct when it converts a Docker manifest
(dropping `container_config`, `docker_version`…), which gives another image ID. skopeo is the
check instead: before the file gets its name, `skopeo inspect --raw --config
oci-archive:PARTIAL:VARIANT` must return a config that hashes to the recorded image ID.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import IO

from builder.engines.layout import LAYOUT_FILE, add_bytes, json_blob, saved_images
from builder.errors import BadInput, CapsuleError, EngineMissing
from builder.observer import SILENT, Observer
from builder.records.results import ExportResult
from builder.store import Capsule
from builder.transfer import add_file, capsule_members
from builder.trust import content_digest

SKOPEO_TIMEOUT = 1800  # seconds for one skopeo call (a CUDA image is several GB)


def skopeo() -> str:
    """skopeo's path, or EngineMissing (exit 4) naming the script that installs it."""
    found = shutil.which("skopeo")
    if found is None:
        raise EngineMissing("skopeo: not installed; run scripts/oci-up.sh (apt-get install skopeo)")
    return found


def export_oci(
    capsule: Capsule,
    out: Path,
    observer: Observer = SILENT,
    force: bool = False,
    engine_name: str = "docker",
) -> ExportResult:
    """Write the capsule and its recorded images (saved from the named engine) to `out` as an
    OCI archive."""
    from builder.engines import open_engine

    manifest, where = capsule.manifest, capsule.path
    digest = content_digest(manifest)
    if out.is_dir():
        out = out / f"{manifest.spec.name}-{digest[:12]}.oci.tar"
    if out.exists() and not force:
        raise BadInput(f"{out}: already exists (pass --force to replace it)")
    if not manifest.images:
        raise BadInput(f"{where}: images: none recorded; run `capsule build {where}` first")
    tool = skopeo()
    engine = open_engine(engine_name)
    engine.check()
    for variant, image in sorted(manifest.images.items()):
        if engine.has_image(image.image_id) is None:
            raise BadInput(
                f"images.{variant}: {image.image_id[:19]}… is not in {engine.label}; "
                f"rebuild it with `capsule build --engine {engine.name}` before exporting it"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    names = capsule_members(capsule)
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".oci-") as scratch:
            saved: dict[str, Path] = {}
            for variant, image in sorted(manifest.images.items()):
                observer.log(f"export: saving the {variant} image {image.image_id[:19]}… (OCI)")
                saved[variant] = Path(scratch) / f"{variant}.docker.tar"
                with saved[variant].open("wb") as f:
                    for chunk in engine.save(image.image_id):
                        f.write(chunk)
            with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
                for name in names:  # first: `capsule import` reads the manifest before the rest
                    add_file(tar, where / name, f"capsule/{name}")
                _write_layout(tar, saved, {v: i.image_id for v, i in manifest.images.items()})
        observer.log(f"export: checking {partial.name} with skopeo inspect")
        for variant, image in sorted(manifest.images.items()):
            raw = _skopeo(tool, "inspect", "--raw", "--config", f"oci-archive:{partial}:{variant}")
            got = "sha256:" + hashlib.sha256(raw).hexdigest()
            if got != image.image_id:
                raise CapsuleError(
                    f"images.{variant}: skopeo reads config {got[:19]}… from the archive, not "
                    f"the recorded image ID {image.image_id[:19]}…"
                )
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ExportResult(
        path=str(out), files=len(names), with_image=True, bytes=out.stat().st_size, digest=digest
    )


def _skopeo(tool: str, *args: str) -> bytes:
    result = subprocess.run([tool, *args], capture_output=True, timeout=SKOPEO_TIMEOUT)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        raise CapsuleError(f"skopeo {args[0]}: {lines[-1] if lines else 'failed'}")
    return result.stdout


def _blob(tar: tarfile.TarFile, digest: str, size: int, data: IO[bytes]) -> None:
    info = tarfile.TarInfo(f"blobs/sha256/{digest.removeprefix('sha256:')}")
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uname = info.gname = "root"
    tar.addfile(info, data)


def _write_layout(tar: tarfile.TarFile, saved: dict[str, Path], ids: dict[str, str]) -> None:
    """An OCI image layout of each `docker save` archive in `saved` (variant → file), written
    into `tar` (`layout.saved_images`)."""
    with contextlib.ExitStack() as stack:
        sources = {
            variant: stack.enter_context(tarfile.open(path))
            for variant, path in sorted(saved.items())
        }
        entries, blobs = saved_images(sources, ids)
        add_bytes(tar, "oci-layout", json_blob(LAYOUT_FILE))
        add_bytes(tar, "index.json", json_blob({"schemaVersion": 2, "manifests": entries}))
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for blob in blobs:
            with blob.open() as stream:
                _blob(tar, blob.digest, blob.size, stream)
