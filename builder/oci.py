"""export --format oci: the capsule's image as an OCI image layout archive (`oci-archive`), with
the capsule itself inside the same file.

The file is one plain tar of an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`)
holding each recorded image, tagged with its variant (`cpu`, `gpu`: the layout's
`org.opencontainers.image.ref.name`), plus the capsule as extra members `capsule/…` (the same
names `capsule export` writes). Readers of an OCI layout go through `index.json` and the blobs it
names and ignore other files, so `apptainer build x.sif oci-archive://FILE`, `podman load -i
FILE`, `skopeo inspect oci-archive:FILE` and `umoci` (on the unpacked layout) all read it; no
daemon is needed to read it.

The layout is written by `skopeo copy docker-archive:SAVED oci:LAYOUT:VARIANT` from the engine's
`docker save` archive; skopeo keeps the image's config blob byte for byte, so the config digest
(the image ID) is the one the manifest records (checked here before the file is written).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from pathlib import Path

from builder.errors import BadInput, CapsuleError, EngineMissing
from builder.observer import SILENT, Observer
from builder.records.results import ExportResult
from builder.store import MANIFEST, Capsule
from builder.transfer import SIDECAR
from builder.trust import SIGNATURE, content_digest

SKOPEO_TIMEOUT = 1800  # seconds for one `skopeo copy` (a CUDA image is several GB)


def _add_file(tar: tarfile.TarFile, source: Path, name: str) -> None:
    """One regular file, owned by root (as transfer's export writes its members)."""
    info = tar.gettarinfo(str(source), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    with source.open("rb") as f:
        tar.addfile(info, f)


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
    names = [MANIFEST, SIDECAR, *sorted({ref.path for ref in manifest.artifacts.values()})]
    if (where / SIGNATURE).is_file() and not (where / SIGNATURE).is_symlink():
        names.append(SIGNATURE)
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".oci-") as scratch:
            layout = Path(scratch) / "layout"
            for variant, image in sorted(manifest.images.items()):
                observer.log(f"export: saving the {variant} image {image.image_id[:19]}… (OCI)")
                saved = Path(scratch) / f"{variant}.docker.tar"
                with saved.open("wb") as f:
                    for chunk in engine.save(image.image_id):
                        f.write(chunk)
                _skopeo_copy(tool, f"docker-archive:{saved}", f"oci:{layout}:{variant}")
                saved.unlink()
                got = config_digest(layout, variant)
                if got != image.image_id:
                    raise CapsuleError(
                        f"images.{variant}: the OCI config digest {got[:19]}… is not the "
                        f"recorded image ID {image.image_id[:19]}…"
                    )
            with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(p for p in layout.rglob("*") if p.is_file()):
                    _add_file(tar, path, path.relative_to(layout).as_posix())
                for name in names:
                    _add_file(tar, where / name, f"capsule/{name}")
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ExportResult(
        path=str(out), files=len(names), with_image=True, bytes=out.stat().st_size, digest=digest
    )


def _skopeo_copy(tool: str, source: str, dest: str) -> None:
    result = subprocess.run(
        [tool, "copy", "--quiet", source, dest],
        capture_output=True,
        text=True,
        timeout=SKOPEO_TIMEOUT,
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise CapsuleError(f"skopeo copy {source} → {dest}: {lines[-1] if lines else 'failed'}")


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
