"""A capsule (or replay) on disk: staged atomic writes, digests, loading, verification.

A capsule directory holds a record (`manifest.json`, or `replay.json` for a replay), a sidecar
with the record's sha256, and artifacts the record names by path and sha256. Nothing is ever
unpickled or executed when loading.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import numpy as np

from builder.errors import BadInput, IntegrityError
from builder.records import kind_of, parse
from builder.records.audit import AuditRecord
from builder.records.manifest import Manifest
from builder.records.replay import ReplayRecord
from builder.records.run import ArtifactRef
from builder.records.sweep import SweepRecord

MANIFEST = "manifest.json"
REPLAY = "replay.json"
SAFETENSORS = "application/vnd.safetensors"
SWEEP = "sweep"  # the artifact name of a capsule's sweep record
AUDIT_PREFIX = "audit/"  # audits are artifacts audit/<sha12>
PROVENANCE_PREFIX = "provenance/"  # an image's build provenance: provenance/<variant>

Record = Manifest | ReplayRecord
Stored = TypeVar("Stored", SweepRecord, AuditRecord)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file read in chunks (wheels and images are too large to read at once)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(record_file: Path) -> Path:
    return record_file.with_suffix(".sha256")


class StagedDir:
    """Builds a capsule in a hidden sibling directory; only `commit` gives it its final name.

    A crash, Ctrl-C or error before `commit` removes the staging directory, so nothing that
    looks like a complete capsule is ever left behind.
    """

    def __init__(self, final: Path, force: bool = False) -> None:
        self.final = final
        if final.exists() and not force:
            raise BadInput(f"{final}: already exists (pass --force to replace it)")
        if final.exists() and not (final / MANIFEST).exists() and not (final / REPLAY).exists():
            raise BadInput(
                f"{final}: exists and is not a capsule or replay; refusing to replace it"
            )
        self.stage = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
        self.committed = False

    def __enter__(self) -> StagedDir:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.stage.mkdir()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.committed:
            shutil.rmtree(self.stage, ignore_errors=True)

    def add_bytes(self, relpath: str, data: bytes, media_type: str) -> ArtifactRef:
        target = self.stage / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return ArtifactRef(
            path=relpath, sha256=sha256_bytes(data), size=len(data), media_type=media_type
        )

    def add_tensors(self, relpath: str, tensors: dict[str, np.ndarray]) -> ArtifactRef:
        """Tensors as safetensors: a format that cannot carry code, unlike pickle."""
        import numpy as np
        from safetensors.numpy import save as save_safetensors

        contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        return self.add_bytes(relpath, save_safetensors(contiguous), SAFETENSORS)

    def commit(self, record: Record | None) -> None:
        """Write the record (or keep the one already staged, when `record` is None), then
        give the staging directory its final name."""
        if record is not None:
            name = MANIFEST if isinstance(record, Manifest) else REPLAY
            text = _record_bytes(record)
            (self.stage / name).write_bytes(text)
            _sidecar(self.stage / name).write_text(f"{sha256_bytes(text)}  {name}\n")
        trash = None
        if self.final.exists():
            trash = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
            self.final.rename(trash)
        self.stage.rename(self.final)
        self.committed = True
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def _record_bytes(record: Record) -> bytes:
    return record.model_dump_json(indent=2).encode() + b"\n"


def is_study(artifact: str) -> bool:
    """Studies made after the freeze (a sweep, audits) and the images' build provenance:
    stored in the capsule, yet not part of what its image is built from."""
    return artifact == SWEEP or artifact.startswith((AUDIT_PREFIX, PROVENANCE_PREFIX))


def capsule_digest(manifest: Manifest) -> str:
    """The capsule's identity for images: the manifest's digest without its image records and
    its studies, so recording an image, a sweep or an audit does not relabel the image."""
    artifacts = {k: v for k, v in manifest.artifacts.items() if not is_study(k)}
    return sha256_bytes(
        _record_bytes(manifest.model_copy(update={"images": {}, "artifacts": artifacts}))
    )


def update_manifest(directory: Path, manifest: Manifest) -> None:
    """Replace a capsule's manifest and its digest sidecar, each by an atomic rename."""
    text = _record_bytes(manifest)
    target = directory / MANIFEST
    for path, data in (
        (target, text),
        (_sidecar(target), f"{sha256_bytes(text)}  {MANIFEST}\n".encode()),
    ):
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        temporary.write_bytes(data)
        temporary.replace(path)


def store_json(
    capsule: Capsule, name: str, folder: str, stem: str, data: bytes
) -> ArtifactRef | None:
    """Write `data` as artifact `name` at FOLDER/STEM-<sha12>.json (a name of its own digest,
    written by atomic rename), then point the manifest at it: a crash at any point leaves a
    capsule that verifies. Returns the artifact it replaced."""
    directory, manifest = capsule.path, capsule.manifest
    digest = sha256_bytes(data)
    relpath = f"{folder}/{stem}-{digest[:12]}.json"
    target = directory / relpath
    target.parent.mkdir(exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    temporary.write_bytes(data)
    temporary.replace(target)
    previous = manifest.artifacts.get(name)
    artifacts = dict(manifest.artifacts)
    artifacts[name] = ArtifactRef(
        path=relpath, sha256=digest, size=len(data), media_type="application/json"
    )
    capsule.update(manifest.model_copy(update={"artifacts": artifacts}))
    return previous


def record_file(directory: Path) -> Path:
    """manifest.json or replay.json of a directory, or a BadInput saying it is neither."""
    if not directory.is_dir():
        raise BadInput(f"{directory}: not a directory")
    for name in (MANIFEST, REPLAY):
        if (directory / name).is_file():
            return directory / name
    raise BadInput(f"{directory}: not a capsule (no {MANIFEST} or {REPLAY})")


def load_record(directory: Path) -> Record:
    """The capsule's manifest or the replay's record, after checking its own digest. The
    record's `kind` picks its model; it must be the one its file holds."""
    path = record_file(directory)
    data = path.read_bytes()
    sidecar = _sidecar(path)
    if sidecar.is_file():
        expected = (sidecar.read_text().split() or [""])[0]
        if expected != sha256_bytes(data):
            raise IntegrityError(
                f"{path}: record was altered (its sha256 does not match {sidecar.name})"
            )
    else:
        raise IntegrityError(f"{sidecar}: missing; the record's digest cannot be checked")
    record = parse(data, str(path))
    model = Manifest if path.name == MANIFEST else ReplayRecord
    if not isinstance(record, model):
        raise BadInput(f"{path}: kind: {record.kind!r} does not belong in {path.name}")
    return record


def load_manifest(directory: Path) -> Manifest:
    return _capsule_only(load_record(directory), directory)


def _capsule_only(record: Record, directory: Path) -> Manifest:
    if not isinstance(record, Manifest):
        raise BadInput(f"{directory}: is a replay, not a capsule (it has {REPLAY})")
    return record


def _artifact_path(directory: Path, ref: ArtifactRef) -> Path:
    rel = PurePosixPath(ref.path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise IntegrityError(f"{directory}: artifact path {ref.path!r} leaves the capsule")
    return directory / rel


def check_artifact(directory: Path, name: str, ref: ArtifactRef) -> None:
    """Re-hash one artifact in chunks; IntegrityError naming it if missing or altered."""
    path = _artifact_path(directory, ref)
    try:
        digest = file_sha256(path)
    except OSError:
        raise IntegrityError(f"{path}: artifact '{name}' is missing") from None
    if digest != ref.sha256:
        raise IntegrityError(
            f"{path}: artifact '{name}' was altered "
            f"(sha256 {digest[:12]}…, recorded {ref.sha256[:12]}…)"
        )


def read_artifact(directory: Path, name: str, ref: ArtifactRef) -> bytes:
    """An artifact's bytes, refused unless they still hash to the recorded sha256."""
    path = _artifact_path(directory, ref)
    try:
        data = path.read_bytes()
    except OSError:
        raise IntegrityError(f"{path}: artifact '{name}' is missing") from None
    if sha256_bytes(data) != ref.sha256:
        raise IntegrityError(
            f"{path}: artifact '{name}' was altered (sha256 {sha256_bytes(data)[:12]}…, "
            f"recorded {ref.sha256[:12]}…)"
        )
    return data


def read_record(directory: Path, name: str, ref: ArtifactRef, model: type[Stored]) -> Stored:
    """A record stored as an artifact (a sweep, an audit): re-hashed, then read through the
    records' union; it must be of `model`'s kind."""
    source = directory / ref.path
    record = parse(read_artifact(directory, name, ref), str(source))
    if not isinstance(record, model):
        raise BadInput(
            f"{source}: kind: {record.kind!r}, but artifact '{name}' holds a "
            f"{kind_of(model)} record"
        )
    return record


def load_sweep(directory: Path, manifest: Manifest) -> SweepRecord | None:
    """The capsule's seed/order sweep, if it has one."""
    ref = manifest.artifacts.get(SWEEP)
    return None if ref is None else read_record(directory, SWEEP, ref, SweepRecord)


def load_audits(directory: Path, manifest: Manifest) -> list[AuditRecord]:
    """The capsule's library-upgrade audits, in artifact-name order."""
    return [
        read_record(directory, name, ref, AuditRecord)
        for name, ref in sorted(manifest.artifacts.items())
        if name.startswith(AUDIT_PREFIX)
    ]


def read_tensors(directory: Path, record: Record, name: str) -> dict[str, np.ndarray]:
    if name not in record.artifacts:
        raise BadInput(f"{directory}: artifacts.{name}: not in this record")
    from safetensors.numpy import load as load_safetensors  # NumPy: only where tensors are read

    return load_safetensors(read_artifact(directory, name, record.artifacts[name]))


def verify(directory: Path) -> Record:
    """Re-hash the record and every artifact; the first mismatch raises IntegrityError."""
    record = load_record(directory)
    for name, ref in sorted(record.artifacts.items()):
        check_artifact(directory, name, ref)
    return record


def verify_capsule(directory: Path) -> Manifest:
    """`verify`, for commands that need a capsule (not a replay)."""
    return _capsule_only(verify(directory), directory)


class Capsule:
    """A capsule opened once per command: `open` reads its manifest and re-hashes every
    artifact (wheelhouse included) once; services take the handle instead of re-verifying.
    Artifacts read through it are checked again as they are read, so it never hands back
    altered bytes. `trusted` is for the worker processes of a command that opened it already:
    the manifest's own digest is checked, the artifacts as they are read."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def open(cls, path: Path) -> Capsule:
        return cls(path, verify_capsule(path))

    @classmethod
    def trusted(cls, path: Path) -> Capsule:
        return cls(path, load_manifest(path))

    def tensors(self, name: str) -> dict[str, np.ndarray]:
        return read_tensors(self.path, self.manifest, name)

    def update(self, manifest: Manifest) -> None:
        """Record a new manifest (an image, a wheelhouse, a study) on disk and in the handle."""
        update_manifest(self.path, manifest)
        self.manifest = manifest
