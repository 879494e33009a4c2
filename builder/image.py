"""Docker images for capsules: wheelhouse, Dockerfile, offline build, canonical image ID, run.

Why the steps look the way they do (issue 3's measurements): the docker SDK drives only the
classic builder; images install from the capsule's own wheelhouse (no index in containers);
layers are byte-identical when the tool makes the tars itself (sorted, fixed mtime, uid 0) and
the install step runs with SOURCE_DATE_EPOCH and touches what it wrote back to that epoch; the
image ID then differs only by the config's creation times, which `canonicalize` fixes: a config
made from the engine's inspect/history (fixed times), loaded as a tar of that config and a
manifest (the engine already holds every layer, so nothing multi-gigabyte is saved).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from builder.errors import BadInput, EngineMissing

if TYPE_CHECKING:
    from docker import APIClient

    from builder.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ROOT / "dockerfiles"
SOURCE_DATE_EPOCH = 315532800  # 1980-01-01: the earliest time a wheel's zip entries can carry
EPOCH_ISO = "1980-01-01T00:00:00Z"
TOOL_DISTRIBUTION = "capsule-builder"
WHEELHOUSE = "/opt/capsule/wheelhouse"
CODE_IN_IMAGE = "/opt/capsule/code"  # the user's code, for `replay --on docker`
Log = Callable[[str], None]


# ---------------------------------------------------------------- engine


def engine() -> APIClient:
    """A connected low-level docker client, or EngineMissing saying how to start one."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise EngineMissing("the docker Python SDK is not installed (pip install docker)") from None
    try:
        client = docker.from_env(timeout=600).api
        client.ping()
    except DockerException as error:
        raise EngineMissing(
            f"no Docker engine answers ({str(error).splitlines()[0][:160]}); start one with "
            "scripts/docker-up.sh or `dockerd &`"
        ) from None
    return client


def image_exists(api: APIClient, ref: str) -> str | None:
    from docker.errors import ImageNotFound

    try:
        return str(api.inspect_image(ref)["Id"])
    except ImageNotFound:
        return None


def drop_superseded(api: APIClient, previous: str | None, current: str) -> None:
    """Remove the raw image a rebuild replaced: untagged, it would only hold disk (its layers
    stay while the new image shares them)."""
    from docker.errors import APIError

    if previous and previous != current:
        with contextlib.suppress(APIError):  # still used elsewhere: the engine keeps it
            api.remove_image(previous, noprune=False)


# ---------------------------------------------------------------- wheelhouse


def requirement_closure(root: str, extras: set[str]) -> list[str]:
    """Canonical names of `root` and everything it requires (with `extras`), from installed
    metadata: the distributions a run of this Capsule actually imports, no dev tools."""
    seen: dict[str, None] = {}
    pending: list[tuple[str, set[str]]] = [(root, extras)]
    while pending:
        name, wanted = pending.pop()
        key = str(canonicalize_name(name))
        if key in seen and not wanted:
            continue
        seen[key] = None
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            raise BadInput(f"wheelhouse: '{name}' is required but not installed here") from None
        for text in requires:
            req = Requirement(text)
            env_extras = wanted or {""}
            applies = req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in env_extras
            )
            if applies and str(canonicalize_name(req.name)) not in seen:
                pending.append((req.name, set(req.extras)))
    return sorted(seen)


def pinned_distributions(
    distributions: dict[str, str], framework: str, log: Log, requires: list[str] | None = None
) -> dict[str, str]:
    """name → version for the wheelhouse: the requirement closure of Capsule with its framework
    and of what the user's code `requires`, versions from the fingerprint.

    A distribution the fingerprint lacks (a dependency Capsule gained after the freeze) is
    taken at the version installed here, and said so."""
    names = [*requirement_closure(TOOL_DISTRIBUTION, {framework}), "pip"]
    for extra in requires or []:
        names += [n for n in requirement_closure(extra, set()) if n not in names]
    from builder.frameworks import FRAMEWORKS

    framework_dist = FRAMEWORKS[framework].cpu_distribution
    if framework_dist not in names:
        raise BadInput(
            f"wheelhouse: Capsule's installed metadata has no '{framework}' extra; reinstall it "
            f"(pip install -e '.[{framework}]') before building"
        )
    pins = {}
    for name in names:
        if name == TOOL_DISTRIBUTION:
            continue
        if name in distributions:
            pins[name] = distributions[name]
        else:
            pins[name] = importlib.metadata.version(name)
            log(f"wheelhouse: {name} is not in the capsule's fingerprint; using {pins[name]} here")
    return pins


def download_wheels(pins: dict[str, str], into: Path, log: Log, with_deps: bool = False) -> None:
    """pip download each pinned distribution as a wheel. Without `with_deps` the pins are the
    whole set; with it (the CUDA variant) pip adds what the framework's CUDA build requires."""
    requirements = [f"{name}=={version}" for name, version in sorted(pins.items())]
    log(f"wheelhouse: downloading {len(requirements)} pinned wheels")
    deps = [] if with_deps else ["--no-deps"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        *deps,
        "--only-binary=:all:",
        "--dest",
        str(into),
        *requirements,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or [""]
        raise BadInput(f"wheelhouse: pip download failed: {last[-1] or result.stderr[-300:]}")


def build_tool_wheel(into: Path, log: Log) -> None:
    """Capsule's own wheel, built reproducibly (SOURCE_DATE_EPOCH fixes its zip timestamps)."""
    if not (ROOT / "pyproject.toml").is_file():
        raise BadInput(f"{ROOT}: Capsule's source is not here, so its wheel cannot be built")
    log("wheelhouse: building Capsule's own wheel")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--wheel-dir",
        str(into),
        str(ROOT),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise BadInput(f"wheelhouse: building Capsule's wheel failed: {result.stderr[-300:]}")


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


def local_base_tag() -> str:
    recipe = (DOCKERFILES / "base.sh").read_bytes()
    return f"capsule-base:bookworm-{hashlib.sha256(recipe).hexdigest()[:12]}"


def ensure_base(api: APIClient, base: str | None, log: Log) -> tuple[str, str]:
    """(reference, image ID) of the base: the one given (never pulled), or the local base built
    once by debootstrap from dockerfiles/base.sh and reused, tagged by the recipe's digest."""
    if base is not None:
        found = image_exists(api, base)
        if found is None:
            raise EngineMissing(
                f"--base {base}: not in the local engine and there is no registry here to pull it "
                "from; `docker load` it first, or leave --base out to use Capsule's local base"
            )
        return base, found
    tag = local_base_tag()
    found = image_exists(api, tag)
    if found is not None:
        return tag, found
    if shutil.which("debootstrap") is None:
        raise EngineMissing(
            "debootstrap is not installed; it makes the local base image "
            "(apt-get install debootstrap), or pass --base IMAGE"
        )
    log(f"base: building {tag} with debootstrap (about a minute, once)")
    with tempfile.TemporaryDirectory(prefix="capsule-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        result = subprocess.run(
            ["bash", str(DOCKERFILES / "base.sh"), str(rootfs), debian_mirror()],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise EngineMissing(f"base: debootstrap failed: {result.stderr.strip()[-300:]}")
        tar_path = Path(tmp) / "rootfs.tar"
        subprocess.run(
            [
                "tar",
                "--sort=name",
                f"--mtime=@{SOURCE_DATE_EPOCH}",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-C",
                str(rootfs),
                "-cf",
                str(tar_path),
                ".",
            ],
            check=True,
        )
        repository, _, version = tag.partition(":")
        api.import_image(src=str(tar_path), repository=repository, tag=version)
    found = image_exists(api, tag)
    if found is None:
        raise EngineMissing(f"base: importing {tag} into the engine failed")
    return tag, found


# ---------------------------------------------------------------- Dockerfile and build


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


def build_image(
    api: APIClient, context: bytes, tag: str, labels: dict[str, str], nocache: bool, log: Log
) -> str:
    """Run the classic build, streaming its steps to `log`; return the raw image ID.

    The install stage's image (wheelhouse and installed tree, gigabytes with a framework) is
    removed afterwards: the engine keeps only the image itself."""
    from docker.errors import APIError

    image_id, last_step, stages = None, None, []
    try:
        stream = api.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            tag=tag,
            labels=labels,
            nocache=nocache,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            network_mode="none",
        )
        for chunk in stream:
            if "error" in chunk:
                raise BadInput(f"image build failed: {chunk['error'].strip()}")
            for line in chunk.get("stream", "").splitlines():
                text = line.strip()
                if text.startswith("Step "):
                    log(f"build: {text[:140]}")
                    if " : FROM " in text and last_step:
                        stages.append(last_step)  # the previous stage ended there
                elif text.startswith("---> ") and " " not in text[5:]:
                    last_step = text[5:]
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    except APIError as error:
        raise BadInput(f"image build failed: {error.explanation or error}") from None
    finally:  # a failed or interrupted build leaves no install stage behind either
        for stage in stages:
            with contextlib.suppress(APIError):  # the engine keeps what something still uses
                api.remove_image(stage)
    found = image_id or image_exists(api, tag)
    if found is None:
        raise BadInput("image build finished without an image")
    return found


OCI_CONFIG_FIELDS = (
    "User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
    "StopSignal",
)  # fmt: skip


def canonical_config(api: APIClient, image_id: str) -> dict[str, Any]:
    """The image's config as a function of its layers and settings alone: the OCI fields that
    are set, fixed times, no build history (build-container IDs, each engine's own wording).
    Read from `inspect`, so no multi-gigabyte `save` is needed."""
    found = api.inspect_image(image_id)
    settings = found.get("Config") or {}
    return {
        "architecture": found["Architecture"],
        "os": found["Os"],
        "config": {k: settings[k] for k in OCI_CONFIG_FIELDS if settings.get(k)},
        "created": EPOCH_ISO,
        "rootfs": {"type": "layers", "diff_ids": list(found["RootFS"]["Layers"])},
    }


def raw_tag(tag: str) -> str:
    """Where the builder's own (non-canonical) result is tagged: it keeps the cache warm."""
    return f"capsule-raw/{tag.split('/', 1)[-1]}"


def canonicalize(
    api: APIClient, image_id: str, tag: str, previous_raw: str | None, log: Log
) -> str:
    """Give the built layers a canonical config (fixed times, no build-container IDs) and load it;
    the same layers then always get the same image ID.

    The load needs only manifest.json and the config: the engine already holds every layer.
    A warm build gives the raw image it gave last time (`previous_raw`); its canonical image is
    then already under `tag`."""
    canonical_now = image_exists(api, tag)
    if previous_raw == image_id and canonical_now is not None:
        return canonical_now
    log("build: canonicalizing the image config")
    config = canonical_config(api, image_id)
    config_bytes = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    digest = hashlib.sha256(config_bytes).hexdigest()
    # the engine holds every layer already, so the load reads only these two files
    layers = [f"{d.split(':', 1)[1]}/layer.tar" for d in config["rootfs"]["diff_ids"]]
    entry = {"Config": f"{digest}.json", "RepoTags": [tag], "Layers": layers}
    small = io.BytesIO()
    with tarfile.open(fileobj=small, mode="w") as tar:
        for name, data in (
            (f"{digest}.json", config_bytes),
            ("manifest.json", json.dumps([entry]).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), SOURCE_DATE_EPOCH
            tar.addfile(info, io.BytesIO(data))
    load_image(api, io.BytesIO(small.getvalue()))
    canonical = f"sha256:{digest}"
    if image_exists(api, canonical) is None:
        raise BadInput("build: the canonical image did not load")
    return canonical


# ---------------------------------------------------------------- save, load, run


def save_image(api: APIClient, image_id: str, out: io.BufferedIOBase) -> None:
    for chunk in api.get_image(image_id):
        out.write(chunk)


def load_image(api: APIClient, data: io.BufferedIOBase) -> None:
    """`docker load` (a plain or gzip tar), consuming the engine's reply so errors surface."""
    for message in api.load_image(data):
        if isinstance(message, dict) and message.get("error"):
            raise BadInput(f"docker load failed: {message['error']}")


@contextmanager
def container(
    api: APIClient,
    image_id: str,
    command: list[str],
    mounts: dict[str, tuple[str, str]],
    environment: dict[str, str],
    user: str,
    gpu: bool,
) -> Iterator[str]:
    """A created container that is always removed afterwards, whatever happens."""
    from docker.errors import APIError
    from docker.types import DeviceRequest

    host_config = api.create_host_config(
        binds={
            str(Path(src).resolve()): {"bind": dst, "mode": mode}
            for src, (dst, mode) in mounts.items()
        },
        network_mode="none",
        security_opt=["no-new-privileges"],
        device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else None,
    )
    try:
        created = api.create_container(
            image_id,
            command=command,
            environment=environment,
            user=user,
            host_config=host_config,
            working_dir="/tmp",
        )
    except APIError as error:
        reason = error.explanation or str(error)
        raise EngineMissing(f"the Docker engine refused the container: {reason}") from None
    try:
        yield created["Id"]
    finally:
        api.remove_container(created["Id"], force=True)


def run_in_container(api: APIClient, container_id: str, log: Log) -> tuple[int, str]:
    """Start, stream its output to `log`, wait; return (exit code, its last stderr line)."""
    from docker.errors import APIError

    try:
        api.start(container_id)
    except APIError as error:
        message = str(error.explanation or error)
        if "could not select device driver" in message or "nvidia" in message.lower():
            raise EngineMissing(
                "the Docker engine has no NVIDIA runtime, so it cannot give the container a GPU "
                f"({message.strip()[:160]}); install nvidia-container-toolkit, or replay with "
                "--device cpu"
            ) from None
        raise EngineMissing(f"the container did not start: {message[:200]}") from None
    last = ""
    for raw in api.logs(container_id, stream=True, follow=True, stdout=True, stderr=True):
        for line in raw.decode(errors="replace").splitlines():
            if line.strip():
                last = line.strip()
                log(line)
    code = api.wait(container_id)["StatusCode"]
    return int(code), last
