"""The image recipe every engine follows: build context, Dockerfile, the local base, and the
canonical image (one layer Capsule writes itself, one config made from the build's settings).

Why Capsule writes the capsule's layer itself: each engine's tar writer differs in header
details (Podman's leaves out the owner names Docker writes), so the same files make different
layer digests. Re-written here (sorted, owner 0 "root", mtime SOURCE_DATE_EPOCH, PAX), the same
files make the same bytes on every engine, and with a config that holds only the build's
settings and fixed times, the same image ID (issue 3's and issue 12's measurements).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from builder.records.manifest import Manifest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ROOT / "dockerfiles"
SOURCE_DATE_EPOCH = 315532800  # 1980-01-01: the earliest time a wheel's zip entries can carry
EPOCH_ISO = "1980-01-01T00:00:00Z"
CREATED_LABEL = "org.opencontainers.image.created"  # the OCI annotation, as a label


def created_label(epoch: int) -> dict[str, str]:
    """The label that gives a canonical image its creation date (the capsule's freeze time);
    none for SOURCE_DATE_EPOCH, so images recorded before it keep their IDs on `build --check`."""
    if epoch == SOURCE_DATE_EPOCH:
        return {}
    when = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {CREATED_LABEL: when}


WHEELHOUSE = "/opt/capsule/wheelhouse"
CODE_IN_IMAGE = "/opt/capsule/code"  # the user's code, for a replay in the image
IMAGE_TREE = "/opt/capsule"  # what the capsule's layer adds to the base: venv and code
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
ANNOTATION = "org.opencontainers.image.ref.name"  # the tag an OCI layout gives its image


# ---------------------------------------------------------------- deterministic tars


def _tarinfo(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = SOURCE_DATE_EPOCH, 0, 0, "root", "root"
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    return info


def deterministic_tar(files: dict[str, Path | bytes], out: io.BufferedIOBase | io.BytesIO) -> None:
    """A tar of `files` (archive name → path or bytes) with every parent directory, sorted
    names, mtime SOURCE_DATE_EPOCH and owner 0: the same inputs give the same bytes."""
    directories = sorted(
        {str(Path(n).parents[i]) for n in files for i in range(len(Path(n).parents) - 1)}
    )
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in directories:
            tar.addfile(_tarinfo(d + "/", directory=True))
        for name in sorted(files):
            source = files[name]
            if isinstance(source, bytes):
                tar.addfile(_tarinfo(name, len(source)), io.BytesIO(source))
            else:
                with source.open("rb") as f:
                    tar.addfile(_tarinfo(name, source.stat().st_size), f)


# ---------------------------------------------------------------- base image


def debian_mirror() -> str:
    """The Debian mirror the host's apt uses (CAPSULE_DEBIAN_MIRROR overrides it)."""
    if os.environ.get("CAPSULE_DEBIAN_MIRROR"):
        return os.environ["CAPSULE_DEBIAN_MIRROR"]
    sources = [
        Path("/etc/apt/sources.list"),
        *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
        *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
    ]
    for path in sources:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            if words[:1] not in (["URIs:"], ["deb"]):
                continue
            for word in words[1:]:
                if word.startswith("http") and word.rstrip("/").endswith("/debian"):
                    return word.rstrip("/")
    return "http://deb.debian.org/debian"


BASE_RELEASE = "bookworm"
BASE_LABELS = {  # the local base's labels: where it came from (see BaseRecord)
    "release": "org.capsule.base.release",
    "mirror": "org.capsule.base.mirror",
    "packages_date": "org.capsule.base.packages-date",
}


def local_base_tag() -> str:
    recipe = (DOCKERFILES / "base.sh").read_bytes()
    return f"capsule-base:{BASE_RELEASE}-{hashlib.sha256(recipe).hexdigest()[:12]}"


def debootstrap_rootfs(into: Path) -> tuple[Path, dict[str, str]]:
    """The local base's root file system as one tar (debootstrap by dockerfiles/base.sh, packed
    with sorted names, fixed times and numeric owners), and the labels saying where it came
    from (BASE_LABELS); raises RuntimeError with its reason."""
    from email.utils import parsedate_to_datetime
    from urllib.parse import urlsplit, urlunsplit

    rootfs, mirror = into / "rootfs", debian_mirror()
    result = subprocess.run(
        ["bash", str(DOCKERFILES / "base.sh"), str(rootfs), mirror],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"debootstrap failed: {result.stderr.strip()[-300:]}")
    try:
        packages = parsedate_to_datetime(result.stdout.strip()).astimezone(UTC)
    except (TypeError, ValueError):
        raise RuntimeError(
            f"{mirror}: its Release file gave no date ({result.stdout.strip()[:80]!r})"
        ) from None
    where = urlsplit(mirror)  # recorded without any user name or password in it
    host = f"{where.hostname}:{where.port}" if where.port else where.hostname or ""
    labels = {
        BASE_LABELS["release"]: BASE_RELEASE,
        BASE_LABELS["mirror"]: urlunsplit(where._replace(netloc=host)),
        BASE_LABELS["packages_date"]: packages.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    tar_path = into / "rootfs.tar"
    subprocess.run(
        ["tar", "--sort=name", f"--mtime=@{SOURCE_DATE_EPOCH}", "--owner=0", "--group=0",
         "--numeric-owner", "-C", str(rootfs), "-cf", str(tar_path), "."],
        check=True,
    )  # fmt: skip
    return tar_path, labels


# ---------------------------------------------------------------- Dockerfile and context


def render_dockerfile(gpu: bool, base: str, pip_wheel: str) -> str:
    template = (DOCKERFILES / ("cuda.Dockerfile" if gpu else "cpu.Dockerfile")).read_text()
    return template.format(
        base=base, epoch=SOURCE_DATE_EPOCH, wheelhouse=WHEELHOUSE, pip_wheel=pip_wheel
    )


def code_in_image(capsule: Path, manifest: Manifest) -> dict[str, Path]:
    """The user's code as the image holds it: relative path → the capsule's stored copy."""
    return {
        name.removeprefix("code/"): capsule / ref.path
        for name, ref in manifest.artifacts.items()
        if name.startswith("code/")
    }


def build_context(
    dockerfile: str, wheels: dict[str, Path], code: dict[str, Path] | None = None
) -> bytes:
    """The build context: the Dockerfile and wheelhouse.tar (which ADD unpacks at /), holding
    the wheels and, for the user's own code, the capsule's copy of it at CODE_IN_IMAGE."""
    inner = io.BytesIO()
    members: dict[str, Path | bytes] = {
        f"{WHEELHOUSE.lstrip('/')}/{name}": path for name, path in wheels.items()
    }
    members.update({f"{CODE_IN_IMAGE.lstrip('/')}/{name}": p for name, p in (code or {}).items()})
    deterministic_tar(members, inner)
    outer = io.BytesIO()
    deterministic_tar(
        {"Dockerfile": dockerfile.encode(), "wheelhouse.tar": inner.getvalue()}, outer
    )
    return outer.getvalue()


# ---------------------------------------------------------------- the canonical image


def _member_path(name: str) -> str:
    return name.removeprefix("./").rstrip("/")


def _walk_order(member: tarfile.TarInfo) -> list[str]:
    return _member_path(member.name).split("/")  # a directory, then its entries, sorted


def canonical_layer(archive: Iterable[bytes], into: Path) -> tuple[Path, str]:
    """The capsule's layer from an engine's archive of IMAGE_TREE (entries "capsule/…"):
    re-written under "opt/" with sorted names, owner 0 "root", mtime SOURCE_DATE_EPOCH and no
    extended attributes. Returns the layer file and its digest (the layer's diff ID)."""
    spooled = into / "engine-archive.tar"
    with spooled.open("wb") as f:
        for chunk in archive:
            f.write(chunk)
    parent = str(Path(IMAGE_TREE).parent).lstrip("/")  # "opt"
    layer = into / "layer.tar"
    with tarfile.open(spooled) as source, layer.open("wb") as out:
        members = sorted(source.getmembers(), key=_walk_order)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_tarinfo(f"{parent}/", directory=True))
            for member in members:
                if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                    continue  # devices and fifos have no place in a venv
                info = tarfile.TarInfo(f"{parent}/{_member_path(member.name)}")
                info.mode, info.size = member.mode & 0o7777, member.size
                if member.isdir():
                    info.type = tarfile.DIRTYPE
                elif member.issym():
                    info.type, info.linkname = tarfile.SYMTYPE, member.linkname
                else:  # a regular file of any tar flavour; a hard link becomes its own copy,
                    # so no entry depends on which copy an engine wrote first
                    info.type = tarfile.REGTYPE
                    if member.islnk():
                        info.size = source.getmember(member.linkname).size
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = SOURCE_DATE_EPOCH
                data = source.extractfile(member) if info.type == tarfile.REGTYPE else None
                tar.addfile(info, data)
    spooled.unlink()
    digest = hashlib.sha256()
    for block in _chunks(layer):
        digest.update(block)
    return layer, f"sha256:{digest.hexdigest()}"


OCI_CONFIG_FIELDS = (
    "User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
    "StopSignal",
)  # fmt: skip


def canonical_config(
    built: dict[str, Any], base: dict[str, Any], labels: dict[str, str], layer_digest: str
) -> bytes:
    """The image's config as a function of its layers and settings alone, from the engines'
    `inspect` of the built image and of its base: the OCI fields that are set, the base's labels
    and Capsule's (not the ones an engine adds, like io.buildah.version), fixed times (created: the
    freeze time its label gives, else 1980), no build
    history, and the base's layers plus the capsule's. Its sha256 is the image ID."""
    settings = dict(built.get("Config") or {})
    settings["Labels"] = {**((base.get("Config") or {}).get("Labels") or {}), **labels}
    config = {
        "architecture": built["Architecture"],
        "os": built["Os"],
        "config": {k: settings[k] for k in OCI_CONFIG_FIELDS if settings.get(k)},
        "created": labels.get(CREATED_LABEL, EPOCH_ISO),
        "rootfs": {"type": "layers", "diff_ids": [*base["RootFS"]["Layers"], layer_digest]},
    }
    return json.dumps(config, separators=(",", ":"), sort_keys=True).encode()


def _member(name: str, size: int, data: Iterable[bytes]) -> Iterator[bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = size, SOURCE_DATE_EPOCH
    yield info.tobuf(tarfile.PAX_FORMAT)
    yield from data
    yield b"\0" * (-size % tarfile.BLOCKSIZE)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            yield block


def image_archive(config: bytes, layer: Path, tag: str | None, oci: bool) -> Iterator[bytes]:
    """The canonical image as a load archive holding its config and the capsule's layer only
    (the engine has the base's layers already): Docker's `docker save` format, or an OCI
    layout (what Podman loads without the base's blobs). Streamed: nothing is written twice."""
    digest = hashlib.sha256(config).hexdigest()
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    if oci:
        layers = [{"mediaType": LAYER_MEDIA_TYPE, "digest": d, "size": 0} for d in diff_ids]
        layers[-1]["size"] = layer.stat().st_size  # the base's blobs are reused, not read
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": f"sha256:{digest}", "size": len(config)},
            "layers": layers,
        }).encode()  # fmt: skip
        manifest_digest = hashlib.sha256(manifest).hexdigest()
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{manifest_digest}", "size": len(manifest),
            **({"annotations": {ANNOTATION: tag}} if tag else {})}]}  # fmt: skip
        small = [
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
            (f"blobs/sha256/{digest}", config),
            (f"blobs/sha256/{manifest_digest}", manifest),
        ]
        layer_name = f"blobs/sha256/{diff_ids[-1].split(':', 1)[1]}"
    else:
        names = [f"{d.split(':', 1)[1]}/layer.tar" for d in diff_ids]
        entry = {"Config": f"{digest}.json", "RepoTags": [tag] if tag else [], "Layers": names}
        small = [(f"{digest}.json", config), ("manifest.json", json.dumps([entry]).encode())]
        layer_name = names[-1]
    for name, data in small:
        yield from _member(name, len(data), [data])
    yield from _member(layer_name, layer.stat().st_size, _chunks(layer))
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """Where the capsule's layer is written while it is made (CAPSULE_TMPDIR, else TMPDIR)."""
    return tempfile.TemporaryDirectory(
        prefix="capsule-layer-", dir=os.environ.get("CAPSULE_TMPDIR")
    )
