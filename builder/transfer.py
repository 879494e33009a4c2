"""export / import: one file that carries a capsule, and optionally its image, to another machine.

The file is a plain tar: `capsule/…` (the manifest, its digest and every artifact) and, with
`--with-image`, `images/<variant>.tar.gz` (`docker save`'s format, gzip: `docker load` and
`podman load` read it as is).
Import never calls tar's extractall: it writes only regular files under the target, refuses any
other member (absolute paths, `..`, links, devices), re-verifies every digest, and loads the
image only if its ID is the one the manifest records.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path, PurePosixPath

from builder.errors import BadInput, IntegrityError
from builder.observer import SILENT, Log, Observer
from builder.records.manifest import Manifest
from builder.records.results import ExportResult, ImportResult
from builder.store import MANIFEST, Capsule, StagedDir, verify_capsule

GZIP_LEVEL = 1  # the image is mostly compressed wheels and binaries: higher levels buy little


def _add_file(tar: tarfile.TarFile, source: Path, name: str) -> None:
    info = tar.gettarinfo(str(source), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    with source.open("rb") as f:
        tar.addfile(info, f)


def export(
    capsule: Capsule,
    out: Path,
    with_image: bool,
    observer: Observer = SILENT,
    force: bool = False,
    engine_name: str = "docker",
) -> ExportResult:
    """Write the capsule (and its recorded images, saved from the named engine) to `out`."""
    from builder.trust import SIGNATURE, content_digest

    manifest, where = capsule.manifest, capsule.path
    digest = content_digest(manifest)
    if out.is_dir():  # a folder: the file is named after the capsule and its digest
        out = out / f"{manifest.spec.name}-{digest[:12]}.capsule.tar"
    if out.exists() and not force:
        raise BadInput(f"{out}: already exists (pass --force to replace it)")
    if with_image and not manifest.images:
        raise BadInput(f"{where}: images: none recorded; run `capsule build {where}` first")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    names = [MANIFEST, "manifest.sha256", *sorted(ref.path for ref in manifest.artifacts.values())]
    if (where / SIGNATURE).is_file() and not (where / SIGNATURE).is_symlink():
        names.append(SIGNATURE)
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                _add_file(tar, where / name, f"capsule/{name}")
            if with_image:
                _add_images(tar, manifest, partial.parent, engine_name, observer.log)
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ExportResult(
        path=str(out),
        files=len(names),
        with_image=with_image,
        bytes=out.stat().st_size,
        digest=digest,
    )


def _add_images(
    tar: tarfile.TarFile, manifest: Manifest, scratch: Path, engine_name: str, log: Log
) -> None:
    from builder.engines import open_engine

    engine = open_engine(engine_name)
    for variant, image in sorted(manifest.images.items()):
        if engine.has_image(image.image_id) is None:
            raise BadInput(
                f"images.{variant}: {image.image_id[:19]}… is not in {engine.label}; "
                f"rebuild it with `capsule build --engine {engine.name}` before exporting it"
            )
        log(f"export: saving the {variant} image {image.image_id[:19]}… (gzip)")
        with tempfile.NamedTemporaryFile(dir=scratch, prefix=".image-", suffix=".tar.gz") as tmp:
            with gzip.GzipFile(fileobj=tmp, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as gz:
                for chunk in engine.save(image.image_id):
                    gz.write(chunk)
            tmp.flush()
            _add_file(tar, Path(tmp.name), f"images/{variant}.tar.gz")


def _safe_name(member: tarfile.TarInfo, source: Path) -> PurePosixPath:
    """The member's path if it is a plain file or directory inside capsule/ or images/."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BadInput(f"{source}: member {member.name!r}: path leaves the archive; refused")
    if not (member.isfile() or member.isdir()):
        raise BadInput(f"{source}: member {member.name!r}: links and devices are refused")
    if path.parts[0] not in ("capsule", "images"):
        raise BadInput(f"{source}: member {member.name!r}: not part of a capsule export")
    if path.parts[0] == "images" and (len(path.parts) != 2 or not path.name.endswith(".tar.gz")):
        raise BadInput(f"{source}: member {member.name!r}: unexpected file under images/")
    return path


def import_capsule(
    source: Path,
    out: Path,
    observer: Observer = SILENT,
    force: bool = False,
    engine_name: str = "docker",
) -> ImportResult:
    """Unpack an export safely, verify every digest, load its images into the named engine;
    write the capsule to `out`. A signature it carries must be over its digest."""
    from builder.trust import check_signature_covers, content_digest

    if not source.is_file():
        raise BadInput(f"{source}: export file not found")
    if not tarfile.is_tarfile(source):
        raise BadInput(f"{source}: not a capsule export (not a tar file)")
    with tarfile.open(source, "r:") as tar, StagedDir(out, force=force) as stage:
        images: list[Path] = []
        for member in tar:
            path = _safe_name(member, source)
            if member.isdir():
                continue
            rel = PurePosixPath(*path.parts[1:])
            target = stage.stage / ("images" if path.parts[0] == "images" else "") / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as data, target.open("wb") as f:  # type: ignore[union-attr]
                shutil.copyfileobj(data, f, 1 << 20)
            if path.parts[0] == "images":
                images.append(target)
        if not (stage.stage / MANIFEST).is_file():
            raise BadInput(f"{source}: capsule/{MANIFEST}: missing; not a capsule export")
        images_dir = stage.stage / "images"
        manifest = verify_capsule(stage.stage)
        check_signature_covers(stage.stage, content_digest(manifest))
        for image_file in images:
            _load_image(manifest, image_file, engine_name, observer.log)
        shutil.rmtree(images_dir, ignore_errors=True)
        stage.commit(None)
    return ImportResult(
        name=manifest.spec.name,
        path=str(out),
        verified=True,
        images={variant: image.image_id for variant, image in manifest.images.items()},
    )


def _load_image(manifest: Manifest, image_file: Path, engine_name: str, log: Log) -> None:
    from builder.engines import open_engine

    variant = image_file.name.removesuffix(".tar.gz")
    recorded = manifest.images.get(variant)  # type: ignore[call-overload]
    if recorded is None:
        raise IntegrityError(f"images/{image_file.name}: the manifest records no {variant} image")
    engine = open_engine(engine_name)
    log(f"import: loading the {variant} image into {engine.label}")
    with gzip.open(image_file, "rb") as f:  # plain tar: Podman's service does not read gzip
        engine.load(iter(lambda: f.read(1 << 20), b""))
    if engine.has_image(recorded.image_id) is None:
        raise IntegrityError(
            f"images/{image_file.name}: loading it did not give the recorded image "
            f"{recorded.image_id[:19]}…"
        )
    engine.tag(recorded.image_id, recorded.tag)
