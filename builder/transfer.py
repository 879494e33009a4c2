"""export / import: one file that carries a capsule, and optionally its image, to another machine.

The file is a plain tar: `capsule/…` (the manifest, its digest and every artifact) and, with
`--with-image`, `images/<variant>.tar.gz` (`docker save`'s format, gzip: `docker load` and
`podman load` read it as is).

Import takes exactly what the manifest lists, read member by member (never tar's extractall):

- the file must be a plain tar: a gzip/xz/bzip2/zstd-compressed, empty, truncated or otherwise
  unreadable file is refused (exit 2, one line naming it);
- `capsule/manifest.json` comes first, `capsule/manifest.sha256` right after it, each once; the
  manifest must match its sidecar (exit 3) and parse as a capsule before anything else is read;
- then each artifact the manifest lists (`capsule/<ArtifactRef.path>`), exactly once, of exactly
  its recorded size (checked on the member's header, before a byte is written) and sha256
  (exit 3), each recorded image `images/<variant>.tar.gz` at most once, and the signature
  `capsule/capsule.sig` at most once (up to 1 MiB; it must sign the capsule's digest, exit 3);
- anything else is refused (exit 2): unlisted members (a pickle in artifacts/, a
  code/sitecustomize.py), duplicates (a second manifest.json), links, devices, FIFOs, sparse
  members, absolute or `..` paths, names over 1024 bytes (or a part over 255), directories
  other than the listed files' parents, more members than the manifest lists, and artifacts
  that add up to more than the file holds (a truncated export or a forged size);
- modes are not taken from the archive: files are written 0644, directories 0755 (no setuid);
- everything is written into a staging directory next to `--out` that is removed on any
  failure, the staged capsule is verified again as `capsule verify` would, and images are loaded
  only if loading gives the image ID the manifest records.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from builder.errors import BadInput, IntegrityError
from builder.observer import SILENT, Log, Observer
from builder.records import parse
from builder.records.manifest import Manifest
from builder.records.results import ExportResult, ImportResult
from builder.records.run import ArtifactRef
from builder.store import (
    MANIFEST,
    MAX_RECORD_BYTES,
    REPLAY,
    Capsule,
    StagedDir,
    sha256_bytes,
    verify_capsule,
)
from builder.trust import SIGNATURE, check_signature_covers, content_digest

GZIP_LEVEL = 1  # the image is mostly compressed wheels and binaries: higher levels buy little
MAX_NAME_BYTES = 1024  # a member's whole name; each of its parts at most NAME_PART_BYTES
NAME_PART_BYTES = 255
MAX_SIDECAR_BYTES = 4096
MAX_SIGNATURE_BYTES = 1 << 20  # a Sigstore bundle is a few KiB; a keyless one carries a cert chain
COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bzip2",
    b"\x28\xb5\x2f\xfd": "zstd",
}
SIDECAR = "manifest.sha256"
BLOB = re.compile(r"blobs/sha256/[0-9a-f]{64}")  # a blob of an OCI export's image layout
MAX_LAYOUT_BLOBS = 1024  # manifests, configs and layers of an OCI export's images
# what tarfile raises on a damaged or crafted archive (a bad sparse map is a ValueError)
UNREADABLE = (tarfile.TarError, EOFError, ValueError, OverflowError, UnicodeError, OSError)


def add_file(tar: tarfile.TarFile, source: Path, name: str) -> None:
    """One regular file, owned by root: an export's members carry no owner of this machine."""
    info = tar.gettarinfo(str(source), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    with source.open("rb") as f:
        tar.addfile(info, f)


def capsule_members(capsule: Capsule) -> list[str]:
    """What an export carries of the capsule, in the order import reads it: the manifest, its
    digest, every artifact once, and the signature when there is one."""
    where = capsule.path
    names = [MANIFEST, SIDECAR, *sorted({r.path for r in capsule.manifest.artifacts.values()})]
    if (where / SIGNATURE).is_file() and not (where / SIGNATURE).is_symlink():
        names.append(SIGNATURE)
    return names


def export(
    capsule: Capsule,
    out: Path,
    with_image: bool,
    observer: Observer = SILENT,
    force: bool = False,
    engine_name: str = "docker",
) -> ExportResult:
    """Write the capsule (and its recorded images, saved from the named engine) to `out`."""
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
    names = capsule_members(capsule)
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                add_file(tar, where / name, f"capsule/{name}")
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
            add_file(tar, Path(tmp.name), f"images/{variant}.tar.gz")


def _show(name: str) -> str:
    """A member's name for a one-line message: quoted (no raw newlines), at most 80 characters."""
    return repr(name) if len(name) <= 80 else f"{name[:80]!r}… ({len(name)} characters)"


def _reason(error: BaseException) -> str:
    return str(error).splitlines()[0][:200] if str(error).strip() else type(error).__name__


def _unreadable(source: Path, error: BaseException) -> BadInput:
    return BadInput(f"{source}: truncated or unreadable export ({_reason(error)})")


def _safe_name(member: tarfile.TarInfo, source: Path) -> PurePosixPath:
    """The member's path if it is a plain file or directory inside capsule/ or images/."""
    name = member.name
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_NAME_BYTES or any(
        len(part.encode("utf-8", "surrogateescape")) > NAME_PART_BYTES for part in name.split("/")
    ):
        raise BadInput(f"{source}: member {_show(name)}: name too long; refused")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\x00" in name:
        raise BadInput(f"{source}: member {_show(name)}: path leaves the archive; refused")
    if not (member.isfile() or member.isdir()):
        raise BadInput(f"{source}: member {_show(name)}: links and devices are refused")
    if member.isfile() and (
        member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.issparse()
    ):
        raise BadInput(f"{source}: member {_show(name)}: sparse and contiguous files are refused")
    if path.parts[0] not in ("capsule", "images", "oci-layout", "index.json", "blobs"):
        raise BadInput(f"{source}: member {_show(name)}: not part of a capsule export")
    if path.parts[0] == "images" and (len(path.parts) != 2 or not path.name.endswith(".tar.gz")):
        raise BadInput(f"{source}: member {_show(name)}: unexpected file under images/")
    return path


def _open_export(source: Path) -> tarfile.TarFile:
    """The export as a plain tar; a compressed, empty or unreadable file is refused."""
    try:
        if not stat.S_ISREG(source.stat().st_mode):
            raise BadInput(f"{source}: not a regular file; an export is one tar file")
        with source.open("rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise BadInput(f"{source}: export file not found") from None
    except OSError as error:
        raise BadInput(f"{source}: cannot read: {error.strerror or error}") from None
    for magic, kind in COMPRESSED.items():
        if head.startswith(magic):
            raise BadInput(
                f"{source}: {kind}-compressed; `capsule export` writes a plain tar "
                "(decompress it first)"
            )
    try:
        return tarfile.open(source, "r:")
    except UNREADABLE as error:
        raise BadInput(
            f"{source}: not a capsule export (not a tar file: {_reason(error)})"
        ) from None


def _members(tar: tarfile.TarFile, source: Path) -> Iterator[tarfile.TarInfo]:
    """The members one by one, as the archive is read (never all of them up front)."""
    while True:
        try:
            member = tar.next()
        except UNREADABLE as error:
            raise _unreadable(source, error) from None
        if member is None:
            break
        yield member
    try:  # tarfile takes a cut-off header for the end: a real end is a block of zeros
        tar.fileobj.seek(tar.offset)  # type: ignore[union-attr]
        end = tar.fileobj.read(tarfile.BLOCKSIZE)  # type: ignore[union-attr]
    except UNREADABLE as error:
        raise _unreadable(source, error) from None
    if end != bytes(tarfile.BLOCKSIZE):
        raise BadInput(f"{source}: truncated or unreadable export (no end-of-archive marker)")


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, source: Path, limit: int) -> bytes:
    if member.size > limit:
        raise BadInput(
            f"{source}: member {_show(member.name)}: {member.size} bytes, over the "
            f"{limit}-byte limit; refused"
        )
    try:
        data = tar.extractfile(member).read(member.size)  # type: ignore[union-attr]
    except UNREADABLE as error:
        raise _unreadable(source, error) from None
    if len(data) != member.size:
        raise BadInput(f"{source}: member {_show(member.name)}: truncated export")
    return data


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, source: Path, target: Path) -> str:
    """Write exactly the member's bytes to a new file (mode 0644, whatever the member says);
    their sha256."""
    try:
        reader = tar.extractfile(member)
    except UNREADABLE as error:
        raise _unreadable(source, error) from None
    assert reader is not None  # a regular file
    h, left = hashlib.sha256(), member.size
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(target, flags, 0o644), "wb") as f:
        os.fchmod(f.fileno(), 0o644)
        while left > 0:
            try:
                chunk = reader.read(min(left, 1 << 20))
            except UNREADABLE as error:
                raise _unreadable(source, error) from None
            if not chunk:
                raise BadInput(f"{source}: member {_show(member.name)}: truncated export")
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def _write_new(target: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(target, flags, 0o644), "wb") as f:
        os.fchmod(f.fileno(), 0o644)
        f.write(data)


def _make_dirs(root: Path, rel: PurePosixPath) -> None:
    """The directories of `rel` under `root` (a fresh staging directory), each mode 0755."""
    here = root
    for part in rel.parts:
        here = here / part
        if not here.is_dir():
            here.mkdir(mode=0o755)
            here.chmod(0o755)


def _check_manifest(record: bytes, sidecar: bytes, source: Path) -> Manifest:
    where = f"{source}: capsule/{MANIFEST}"
    expected = (sidecar.decode(errors="replace").split() or [""])[0]
    if expected != sha256_bytes(record):
        raise IntegrityError(f"{where}: record was altered (its sha256 does not match {SIDECAR})")
    manifest = parse(record, where)
    if not isinstance(manifest, Manifest):
        raise BadInput(f"{where}: kind: {manifest.kind!r}; an export carries a capsule")
    return manifest


def _listed(manifest: Manifest, source: Path) -> dict[str, ArtifactRef]:
    """Member name → ArtifactRef for every artifact the manifest lists, each path checked:
    relative, normalised, inside the capsule, not the record itself, never both a file and
    the directory of another."""
    where = f"{source}: capsule/{MANIFEST}"
    listed: dict[str, ArtifactRef] = {}
    for name, ref in sorted(manifest.artifacts.items()):
        rel = PurePosixPath(ref.path)
        field = f"{where}: artifacts.{name}.path"
        encoded = ref.path.encode("utf-8", "surrogateescape")
        if (
            rel.is_absolute()
            or not rel.parts
            or ".." in rel.parts
            or str(rel) != ref.path
            or "\x00" in ref.path
        ):
            raise BadInput(f"{field}: {_show(ref.path)} is not a plain path inside the capsule")
        if len(encoded) + len("capsule/") > MAX_NAME_BYTES or any(
            len(part.encode("utf-8", "surrogateescape")) > NAME_PART_BYTES for part in rel.parts
        ):
            raise BadInput(f"{field}: {_show(ref.path)}: name too long")
        if ref.path in (MANIFEST, SIDECAR, REPLAY) or ref.size < 0:
            raise BadInput(f"{field}: {_show(ref.path)} cannot be an artifact")
        member = f"capsule/{ref.path}"
        if member in listed and listed[member] != ref:
            raise BadInput(f"{field}: {_show(ref.path)} is listed twice with different digests")
        listed[member] = ref
    for member in listed:
        for parent in PurePosixPath(member).parents:
            if str(parent) in listed:
                raise BadInput(
                    f"{where}: artifacts: {_show(str(parent))} is a file and a directory"
                )
    return listed


def import_capsule(
    source: Path,
    out: Path,
    observer: Observer = SILENT,
    force: bool = False,
    engine_name: str = "docker",
) -> ImportResult:
    """Unpack an export (exactly what its manifest lists, see the module's docstring), verify
    every digest, load its images into the named engine; write the capsule to `out`. A
    signature it carries must be over the capsule's digest."""
    tar = _open_export(source)
    with tar, StagedDir(out, force=force) as stage:
        stage.stage.chmod(0o755)
        images_dir = stage.stage / f".images-{uuid.uuid4().hex[:8]}"
        manifest, images = _unpack(tar, source, stage.stage, images_dir)
        verify_capsule(stage.stage)
        check_signature_covers(stage.stage, content_digest(manifest))
        for image_file in images:
            if image_file.name == "layout":
                _load_layout(manifest, image_file, engine_name, observer.log)
            else:
                _load_image(manifest, image_file, engine_name, observer.log)
        shutil.rmtree(images_dir, ignore_errors=True)
        stage.commit(None)
    return ImportResult(
        name=manifest.spec.name,
        path=str(out),
        verified=True,
        images={variant: image.image_id for variant, image in manifest.images.items()},
    )


def _unpack(
    tar: tarfile.TarFile, source: Path, root: Path, images_dir: Path
) -> tuple[Manifest, list[Path]]:
    """Stage the capsule's members under `root` and its images under `images_dir`, refusing
    any member the manifest does not list (see the module's docstring)."""
    record: bytes | None = None
    manifest: Manifest | None = None
    listed: dict[str, ArtifactRef] = {}
    images_listed: set[str] = set()
    layout_names = {"oci-layout", "index.json"}  # an OCI export's image: these, and its blobs
    directories = {"capsule"}
    limit = 3  # before the manifest: capsule/, manifest.json, manifest.sha256
    seen: set[str] = set()
    images: list[Path] = []
    for count, member in enumerate(_members(tar, source), start=1):
        path = _safe_name(member, source)
        name = str(path)
        if count > limit:
            raise BadInput(
                f"{source}: member {_show(name)}: more members than the manifest lists "
                f"({limit}); refused"
            )
        if name in seen:
            raise BadInput(f"{source}: member {_show(name)}: appears twice; refused")
        seen.add(name)
        if member.isdir():
            if name not in directories:
                raise BadInput(
                    f"{source}: member {_show(name)}: a directory the manifest does not list; "
                    "refused"
                )
            continue
        if record is None:
            if name != f"capsule/{MANIFEST}":
                raise BadInput(
                    f"{source}: member {_show(name)}: capsule/{MANIFEST} must come first; refused"
                )
            record = _read_member(tar, member, source, MAX_RECORD_BYTES)
            continue
        if manifest is None:
            if name != f"capsule/{SIDECAR}":
                raise BadInput(
                    f"{source}: member {_show(name)}: capsule/{SIDECAR} must follow "
                    f"capsule/{MANIFEST}; refused"
                )
            sidecar = _read_member(tar, member, source, MAX_SIDECAR_BYTES)
            manifest = _check_manifest(record, sidecar, source)
            listed = _listed(manifest, source)
            images_listed = {f"images/{variant}.tar.gz" for variant in manifest.images}
            directories |= {"images"} | {
                str(parent)
                for member_name in listed
                for parent in PurePosixPath(member_name).parents
            }
            directories.discard(".")
            limit = count + len(listed) + len(images_listed) + len(directories) + 1  # + .sig
            total = sum(ref.size for ref in listed.values())
            if total > source.stat().st_size:
                raise BadInput(
                    f"{source}: truncated export: the manifest lists {total} bytes of artifacts, "
                    f"the file holds {source.stat().st_size}"
                )
            _write_new(root / MANIFEST, record)
            _write_new(root / SIDECAR, sidecar)
            continue
        if name in listed:
            ref = listed[name]
            if member.size != ref.size:
                raise IntegrityError(
                    f"{source}: member {_show(name)}: {member.size} bytes, the manifest records "
                    f"{ref.size}; refused"
                )
            rel = PurePosixPath(ref.path)
            _make_dirs(root, rel.parent)
            digest = _copy_member(tar, member, source, root / rel)
            if digest != ref.sha256:
                raise IntegrityError(
                    f"{source}: member {_show(name)}: was altered (sha256 {digest[:12]}…, "
                    f"recorded {ref.sha256[:12]}…)"
                )
        elif name == f"capsule/{SIGNATURE}":
            _write_new(root / SIGNATURE, _read_member(tar, member, source, MAX_SIGNATURE_BYTES))
        elif name in images_listed:
            if images_dir / "layout" in images:
                raise BadInput(f"{source}: member {_show(name)}: an image in two forms; refused")
            _make_dirs(images_dir.parent, PurePosixPath(images_dir.name))
            images.append(images_dir / path.name)
            _copy_member(tar, member, source, images[-1])
        elif manifest.images and (name in layout_names or BLOB.fullmatch(name)):
            if images and images != [images_dir / "layout"]:
                raise BadInput(f"{source}: member {_show(name)}: an image in two forms; refused")
            if not images:  # the first member of an OCI layout: room for its blobs
                images.append(images_dir / "layout")
                limit += len(layout_names) + 2 + MAX_LAYOUT_BLOBS
                directories |= {"blobs", "blobs/sha256"}
            target = images[0] / name
            _make_dirs(images_dir.parent, PurePosixPath(images_dir.name) / "layout" / path.parent)
            digest = _copy_member(tar, member, source, target)
            if BLOB.fullmatch(name) and digest != path.name:
                raise IntegrityError(
                    f"{source}: member {_show(name)}: was altered (sha256 {digest[:12]}…)"
                )
        else:
            raise BadInput(f"{source}: member {_show(name)}: not listed in the manifest; refused")
    if record is None or manifest is None:
        missing = MANIFEST if record is None else SIDECAR
        raise BadInput(f"{source}: capsule/{missing}: missing; not a capsule export")
    absent = sorted(set(listed) - seen)
    if absent:
        raise IntegrityError(
            f"{source}: member {_show(absent[0])}: listed in the manifest, missing from the export"
        )
    return manifest, images


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


def _load_layout(manifest: Manifest, layout: Path, engine_name: str, log: Log) -> None:
    """An OCI export's image layout: exactly the recorded images, tagged with their variants
    and referring only to blobs it holds (each was checked against its name while copied),
    each config hashing to the recorded image ID; loaded as a `docker save` archive."""
    from builder.engines import open_engine
    from builder.engines.layout import REF_NAME, archive_chunks, image_manifest, read_index

    try:
        entries = read_index(layout)
        tags = sorted(str(e.get("annotations", {}).get(REF_NAME)) for e in entries)
        if tags != sorted(manifest.images):
            raise BadInput(
                f"index.json: tags {tags}; the manifest records images {sorted(manifest.images)}"
            )
        used = set()
        for entry in entries:
            found = image_manifest(layout, str(entry["annotations"][REF_NAME]))
            assert found is not None
            used |= {entry["digest"], found["config"]["digest"]}
            used |= {layer["digest"] for layer in found["layers"]}
        held = {f"sha256:{p.name}" for p in (layout / "blobs" / "sha256").iterdir()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise BadInput(f"the OCI layout in the export is unreadable: {_reason(error)}") from None
    if used - held or held - used:
        what, odd = ("missing", used - held) if used - held else ("not used", held - used)
        raise IntegrityError(f"blobs/sha256/{sorted(odd)[0][7:19]}…: {what} by the images")
    engine = open_engine(engine_name)
    for variant, recorded in sorted(manifest.images.items()):
        log(f"import: loading the {variant} image into {engine.label}")
        engine.load(archive_chunks(layout, variant, layout.parent))
        if engine.has_image(recorded.image_id) is None:
            raise IntegrityError(
                f"index.json: the {variant} image did not load as the recorded image "
                f"{recorded.image_id[:19]}…"
            )
        engine.tag(recorded.image_id, recorded.tag)
