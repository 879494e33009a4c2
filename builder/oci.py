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
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import IO

from builder.errors import BadInput, CapsuleError, EngineMissing
from builder.observer import SILENT, Observer
from builder.records.results import ExportResult
from builder.store import Capsule
from builder.transfer import add_file, capsule_members
from builder.trust import content_digest

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"  # as saved: uncompressed
REF_NAME = "org.opencontainers.image.ref.name"
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
                _write_layout(tar, saved, {v: i.image_id for v, i in manifest.images.items()})
                for name in names:
                    add_file(tar, where / name, f"capsule/{name}")
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


def _json_blob(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _write_layout(tar: tarfile.TarFile, saved: dict[str, Path], ids: dict[str, str]) -> None:
    """An OCI image layout of each `docker save` archive in `saved` (variant → file), written
    into `tar`: the config blob byte for byte (its digest stays the image ID in `ids`), the
    layers as they are (uncompressed; each must hash to its config's diff_id)."""
    written: set[str] = set()
    entries = []
    with contextlib.ExitStack() as stack:
        sources = {
            variant: stack.enter_context(tarfile.open(path))
            for variant, path in sorted(saved.items())
        }
        plans = []
        for variant, source in sources.items():
            archive = json.loads(_member(source, "manifest.json"))
            if len(archive) != 1:
                raise CapsuleError(
                    f"images.{variant}: the saved archive holds {len(archive)} images"
                )
            config = _member(source, archive[0]["Config"])
            config_id = "sha256:" + hashlib.sha256(config).hexdigest()
            if config_id != ids[variant]:
                raise CapsuleError(
                    f"images.{variant}: the engine saved config {config_id[:19]}…, not the "
                    f"recorded image ID {ids[variant][:19]}…"
                )
            diff_ids = json.loads(config)["rootfs"]["diff_ids"]
            layers = []
            for name, diff_id in zip(archive[0]["Layers"], diff_ids, strict=True):
                size, digest = _hash_member(source, name)
                if digest != diff_id:
                    raise CapsuleError(f"images.{variant}: layer {name} is not its diff_id")
                layers.append((name, digest, size))
            image_manifest = _json_blob(
                {
                    "schemaVersion": 2,
                    "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": CONFIG_TYPE, "digest": config_id, "size": len(config)},
                    "layers": [
                        {"mediaType": LAYER_TYPE, "digest": d, "size": n} for _, d, n in layers
                    ],
                }
            )
            manifest_id = "sha256:" + hashlib.sha256(image_manifest).hexdigest()
            entries.append(
                {
                    "mediaType": MANIFEST_TYPE,
                    "digest": manifest_id,
                    "size": len(image_manifest),
                    "annotations": {REF_NAME: variant},
                }
            )
            plans.append((source, config, config_id, image_manifest, manifest_id, layers))
        for name, data in (
            ("oci-layout", _json_blob({"imageLayoutVersion": "1.0.0"})),
            ("index.json", _json_blob({"schemaVersion": 2, "manifests": entries})),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for source, config, config_id, image_manifest, manifest_id, layers in plans:
            for digest, data in ((manifest_id, image_manifest), (config_id, config)):
                if digest not in written:
                    _blob(tar, digest, len(data), io.BytesIO(data))
                    written.add(digest)
            for name, digest, size in layers:
                if digest not in written:
                    member = source.extractfile(name)
                    assert member is not None
                    _blob(tar, digest, size, member)
                    written.add(digest)


def _member(source: tarfile.TarFile, name: str) -> bytes:
    member = source.extractfile(name)
    if member is None:
        raise CapsuleError(f"the saved image archive has no file {name!r}")
    return member.read()


def _hash_member(source: tarfile.TarFile, name: str) -> tuple[int, str]:
    member = source.extractfile(name)
    if member is None:
        raise CapsuleError(f"the saved image archive has no file {name!r}")
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
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
            algo, hexdigest = entry["digest"].split(":", 1)
            image_manifest = json.loads((layout / "blobs" / algo / hexdigest).read_bytes())
            algo, hexdigest = image_manifest["config"]["digest"].split(":", 1)
            blob = (layout / "blobs" / algo / hexdigest).read_bytes()
            return "sha256:" + hashlib.sha256(blob).hexdigest()
    raise CapsuleError(f"{layout}: no image tagged {ref!r} in index.json")
