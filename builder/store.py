"""A capsule (or replay) on disk: staged atomic writes, digests, loading, verification.

A capsule directory holds a record (`manifest.json`, or `replay.json` for a replay), a sidecar
with the record's sha256, and artifacts the record names by path and sha256. Nothing is ever
unpickled or executed when loading.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import numpy as np

from builder import locks
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
MAX_RECORD_BYTES = 64 << 20  # a manifest or replay record (a few KiB to a few MiB in practice)
MAX_SIDECAR_BYTES = 4096  # "<sha256>  manifest.json\n"
PROVENANCE_PREFIX = "provenance/"  # an image's build provenance: provenance/<variant>
BASE_PREFIX = "base/"  # the base image the capsule carries (builder/base_image.py)

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

    Entering claims the final path (`locks.claimed`) before any work: a second command for the
    same path is refused (exit 2) at once, not after its own work. A crash, Ctrl-C or error
    before `commit` removes the staging directory, so nothing that looks like a complete capsule
    is ever left behind; what a killed command left (SIGKILL runs no cleanup) is removed by the
    next command that writes into the same parent (`locks.clean_stale`).
    """

    def __init__(self, final: Path, force: bool = False) -> None:
        self.final = final
        self.force = force
        self._check()  # before any work; again under the claim
        self.stage = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
        self.committed = False
        self._claim = ExitStack()

    def _check(self) -> None:
        final = self.final
        if final.exists() and not self.force:
            raise BadInput(f"{final}: already exists (pass --force to replace it)")
        if final.exists() and not (final / MANIFEST).exists() and not (final / REPLAY).exists():
            raise BadInput(
                f"{final}: exists and is not a capsule or replay; refusing to replace it"
            )

    def __enter__(self) -> StagedDir:
        parent = self.final.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._claim.enter_context(locks.claimed(self.final))
        try:
            self._check()  # another command may have made it since
            locks.remove_leftovers(parent, self.final.name)  # ours to clean: we hold its claim
            locks.clean_stale(parent, keep=self.final.name)
            self.stage.mkdir()
        except BaseException:
            self._claim.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self.committed:
                shutil.rmtree(self.stage, ignore_errors=True)
        finally:
            self._claim.close()

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
        give the staging directory its final name. A capsule gets its lock file from birth;
        a capsule it replaces (--force) is swapped out under that capsule's write lock, so
        no command is writing into it meanwhile."""
        if record is not None:
            name = MANIFEST if isinstance(record, Manifest) else REPLAY
            text = record_bytes(record)
            (self.stage / name).write_bytes(text)
            _sidecar(self.stage / name).write_text(f"{sha256_bytes(text)}  {name}\n")
        if (self.stage / MANIFEST).is_file():
            (self.stage / locks.LOCK).touch(mode=0o644)
        trash = None
        replacing = (self.final / MANIFEST).is_file()
        with locks.writing(self.final) if replacing else nullcontext():
            if self.final.exists():
                trash = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
                self.final.rename(trash)
            self.stage.rename(self.final)
            self.committed = True
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def record_bytes(record: Record) -> bytes:
    return record.model_dump_json(indent=2).encode() + b"\n"


def is_study(artifact: str) -> bool:
    """Studies made after the freeze (a sweep, audits) and the images' build provenance:
    stored in the capsule, yet not part of what its image is built from."""
    return artifact == SWEEP or artifact.startswith((AUDIT_PREFIX, PROVENANCE_PREFIX))


def capsule_digest(manifest: Manifest) -> str:
    """The capsule's identity for images: the manifest's digest without its image records, its
    studies and the base it carries (whose layers the image ID pins already), so recording an
    image, a sweep, an audit or the base does not relabel the image."""
    kept = {k: v for k, v in manifest.artifacts.items() if not is_study(k)}
    artifacts = {k: v for k, v in kept.items() if not k.startswith(BASE_PREFIX)}
    return sha256_bytes(
        record_bytes(manifest.model_copy(update={"images": {}, "artifacts": artifacts}))
    )


def update_manifest(directory: Path, manifest: Manifest) -> None:
    """Replace a capsule's manifest and its digest sidecar, each by an atomic rename."""
    text = record_bytes(manifest)
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
    capsule that verifies. Under the capsule's write lock, on the manifest as it is now.
    Returns the artifact it replaced."""
    with capsule.writing():
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
    sidecar = _sidecar(path)
    with locks.reading(directory):  # never a manifest half replaced by a writer
        data = _read_record_file(path, "record", MAX_RECORD_BYTES)
        expected = None
        if sidecar.is_file():
            sidecar_text = _read_record_file(sidecar, "digest sidecar", MAX_SIDECAR_BYTES)
            expected = (sidecar_text.decode(errors="replace").split() or [""])[0]
    if expected is None:
        raise IntegrityError(f"{sidecar}: missing; the record's digest cannot be checked")
    if expected != sha256_bytes(data):
        raise IntegrityError(
            f"{path}: record was altered (its sha256 does not match {sidecar.name})"
        )
    record = parse(data, str(path))
    model = Manifest if path.name == MANIFEST else ReplayRecord
    if not isinstance(record, model):
        raise BadInput(f"{path}: kind: {record.kind!r} does not belong in {path.name}")
    return record


def _read_record_file(path: Path, what: str, limit: int) -> bytes:
    """A record or its sidecar: a regular file (no symlink, FIFO or device) of bounded size."""
    _, data, longer = _read_inside(path.parent, PurePosixPath(path.name), what, limit, True)
    if longer:
        raise IntegrityError(f"{path}: {what} is larger than {limit} bytes; refused")
    return data


def load_manifest(directory: Path) -> Manifest:
    return _capsule_only(load_record(directory), directory)


def _capsule_only(record: Record, directory: Path) -> Manifest:
    if not isinstance(record, Manifest):
        raise BadInput(f"{directory}: is a replay, not a capsule (it has {REPLAY})")
    return record


def _artifact_path(directory: Path, ref: ArtifactRef) -> Path:
    rel = PurePosixPath(ref.path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or "\x00" in ref.path:
        raise IntegrityError(f"{directory}: artifact path {ref.path!r} leaves the capsule")
    return directory / rel


def _open_inside(directory: Path, rel: PurePosixPath, what: str) -> int:
    """A read-only descriptor of the regular file `rel` under `directory`, reached without
    following any symlink (every directory on the way is opened with O_NOFOLLOW) and checked
    with lstat before it is opened, so a FIFO or a device is never opened; O_NONBLOCK as well,
    in case one is swapped in between. IntegrityError naming `what` otherwise."""
    path = directory / rel
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise IntegrityError(f"{path}: {what} is missing") from None
    try:
        for part in rel.parts[:-1]:
            info = os.stat(part, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory"
                raise IntegrityError(f"{path}: {what}: {part!r} on its path is {kind}; refused")
            inner = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            os.close(fd)
            fd = inner
        info = os.stat(rel.name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            raise IntegrityError(f"{path}: {what} is a symlink; refused (never followed)")
        if not stat.S_ISREG(info.st_mode):
            raise IntegrityError(
                f"{path}: {what} is not a regular file (FIFO, device or directory); refused"
            )
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        handle = os.open(rel.name, flags, dir_fd=fd)
        opened = os.fstat(handle)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            os.close(handle)
            raise IntegrityError(f"{path}: {what} was replaced while it was opened; refused")
        return handle
    except (FileNotFoundError, NotADirectoryError):
        raise IntegrityError(f"{path}: {what} is missing") from None
    except OSError as error:
        raise IntegrityError(f"{path}: {what} cannot be read ({error.strerror})") from None
    finally:
        os.close(fd)


def _read_inside(
    directory: Path, rel: PurePosixPath, what: str, limit: int, keep: bool
) -> tuple[str, bytes, bool]:
    """sha256 of a file of the capsule (and its bytes, when `keep`), opened by `_open_inside`
    and read to at most `limit` + 1 bytes; the flag says it held more than `limit`."""
    handle = _open_inside(directory, rel, what)
    h, chunks, left = hashlib.sha256(), [], limit + 1
    try:
        with os.fdopen(handle, "rb", buffering=0) as f:
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
                h.update(chunk)
                if keep:
                    chunks.append(chunk)
    except OSError as error:
        raise IntegrityError(
            f"{directory / rel}: {what} cannot be read ({error.strerror})"
        ) from None
    return h.hexdigest(), b"".join(chunks), left <= 0


def _read_bounded(directory: Path, name: str, ref: ArtifactRef, keep: bool) -> bytes:
    """An artifact checked against its ref, reading at most its recorded size plus one byte:
    a longer file is altered and is not read further."""
    path = _artifact_path(directory, ref)
    digest, data, longer = _read_inside(
        directory, PurePosixPath(ref.path), f"artifact '{name}'", ref.size, keep
    )
    if longer:
        raise IntegrityError(
            f"{path}: artifact '{name}' was altered (longer than its recorded {ref.size} bytes)"
        )
    if digest != ref.sha256:
        raise IntegrityError(
            f"{path}: artifact '{name}' was altered "
            f"(sha256 {digest[:12]}…, recorded {ref.sha256[:12]}…)"
        )
    return data


def check_artifact(directory: Path, name: str, ref: ArtifactRef) -> None:
    """Re-hash one artifact in chunks; IntegrityError naming it if missing, altered, a symlink
    or not a regular file. Reads at most its recorded size plus one byte."""
    _read_bounded(directory, name, ref, keep=False)


def read_artifact(directory: Path, name: str, ref: ArtifactRef) -> bytes:
    """An artifact's bytes, refused unless they still hash to the recorded sha256 (the same
    checks as `check_artifact`: no symlink, regular files only, bounded by the recorded size)."""
    return _read_bounded(directory, name, ref, keep=True)


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
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_safetensors  # NumPy: only where tensors are read

    data = read_artifact(directory, name, record.artifacts[name])
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError, TypeError) as error:  # its digest matches: exit 2
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise BadInput(
            f"{directory / record.artifacts[name].path}: artifact '{name}' is not a safetensors "
            f"file NumPy can read: {reason}"
        ) from None


def verify(directory: Path) -> Record:
    """Re-hash the record and every artifact; the first mismatch raises IntegrityError."""
    with locks.reading(directory):  # no writer swaps a study out while it is re-hashed
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

    @contextmanager
    def writing(self) -> Iterator[Manifest]:
        """Hold the capsule's write lock (`locks.writing`: a second writer waits), with the
        manifest re-read under it, for a read-modify-write: what another command recorded
        meanwhile is kept. Refused if the capsule was replaced (freeze --force) meanwhile.
        Nests: an inner `writing` of the same capsule re-reads nothing."""
        with locks.writing(self.path) as fresh:
            if fresh:
                now = load_manifest(self.path)
                if _identity(now) != _identity(self.manifest):
                    raise BadInput(
                        f"{self.path}: was replaced by another capsule while this command ran; "
                        "nothing was written"
                    )
                self.manifest = now
            yield self.manifest

    def update(self, manifest: Manifest) -> None:
        """Record a new manifest (an image, a wheelhouse, a study) on disk and in the handle;
        only inside `writing()`, on the manifest it re-read."""
        if not locks.holds(self.path):
            raise RuntimeError(f"{self.path}: Capsule.update outside Capsule.writing()")
        update_manifest(self.path, manifest)
        self.manifest = manifest


def _identity(manifest: Manifest) -> tuple[object, ...]:
    """What tells one freeze from another: its time, spec and trained weights."""
    return manifest.created, manifest.spec, manifest.artifacts.get("weights")
