"""Container engines behind one interface (the shape of repo2docker's ContainerEngine).

Services reach an engine only through `open_engine(name)` and the `Engine` protocol; adding an
engine is one module here and one entry in ENGINES. Every engine builds the same image (the
recipe in recipe.py: the capsule's layer and config are written by Capsule, so the image ID does
not depend on the engine) and runs jobs under the same confinement (`confinement()`:
CONFINEMENT with the limits this command's environment overrides).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, get_args

from builder.observer import Log

EngineName = Literal["docker", "podman", "oci"]
Where = Literal["host", "docker", "podman", "oci"]  # this host, or an engine's container
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)
ENGINES: dict[str, str] = {
    "docker": "builder.engines.docker:DockerEngine",
    "podman": "builder.engines.podman:PodmanEngine",
    "oci": "builder.engines.oci:OciEngine",  # daemonless: umoci + runc
}


MEMORY_ENV = "CAPSULE_CONTAINER_MEMORY"  # e.g. 8g, 512m, 50% (of this machine's memory)
PIDS_ENV = "CAPSULE_CONTAINER_PIDS"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MIN_MEMORY = 64 << 20  # below this not even Python starts


def machine_memory() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class Confinement:
    """What every container of a job gets, on every engine: no network, not root (the job's
    user), no new privileges, no capabilities, a read-only root file system with a private
    tmpfs at /tmp (HOME), bounded processes, memory and open files."""

    network: str = "none"
    capabilities: tuple[str, ...] = ()  # all dropped
    no_new_privileges: bool = True
    read_only_root: bool = True  # the job writes only to /tmp and its /out mount
    pids: int = 4096
    memory: int | None = None  # bytes; None: memory_fraction of this machine's
    memory_fraction: float = 0.75
    open_files: int = 4096
    processes: int = 4096  # RLIMIT_NPROC; set explicitly: without CAP_SYS_RESOURCE it cannot rise

    def memory_bytes(self) -> int:
        if self.memory is not None:
            return self.memory
        return int(machine_memory() * self.memory_fraction)

    def tmpfs(self) -> dict[str, str]:
        """/tmp as a tmpfs, sticky and world-writable as /tmp is; its pages count against the
        container's memory limit, so it is bounded by it (size: a quarter of it). `exec`
        stated, because the engines' defaults differ (Podman adds noexec, Docker does not) and
        code that loads what it compiled into a cache under HOME=/tmp needs it."""
        return {"/tmp": f"rw,exec,nosuid,nodev,mode=1777,size={self.memory_bytes() // 4}"}


CONFINEMENT = Confinement()


def _parse_memory(text: str) -> int:
    from builder.errors import BadInput

    value = text.strip().lower().removesuffix("b")
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if not 0 < percent <= 100:
                raise ValueError
            amount = int(machine_memory() * percent / 100)
        else:
            unit = value[-1:] if value[-1:] in _UNITS else ""
            amount = int(float(value[: len(value) - len(unit)]) * _UNITS[unit])
    except (ValueError, OverflowError):
        amount = -1
    if amount < MIN_MEMORY:
        raise BadInput(
            f"{MEMORY_ENV}={text!r}: expected a size of at least 64m (e.g. 8g, 512m) or a "
            "percentage of this machine's memory (e.g. 50%)"
        )
    return amount


def confinement() -> Confinement:
    """CONFINEMENT, with the memory and pids limits `CAPSULE_CONTAINER_MEMORY` and
    `CAPSULE_CONTAINER_PIDS` set for this command (exit 2 on a value that is not one)."""
    import dataclasses
    import os

    from builder.errors import BadInput

    memory = os.environ.get(MEMORY_ENV, "").strip()
    pids = os.environ.get(PIDS_ENV, "").strip()
    if pids and (not pids.isdigit() or not 16 <= int(pids) <= 1 << 22):
        raise BadInput(f"{PIDS_ENV}={pids!r}: expected a whole number from 16 to 4194304")
    return dataclasses.replace(
        CONFINEMENT,
        memory=_parse_memory(memory) if memory else CONFINEMENT.memory,
        pids=int(pids) if pids else CONFINEMENT.pids,
    )


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    writable: bool = False


@dataclass(frozen=True)
class Job:
    """One command in a container of an image: argv (the program first), what it sees."""

    argv: list[str]
    mounts: list[Mount] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str = "65534:65534"  # nobody: jobs never run as root
    gpu: bool = False
    name: str | None = None  # the container's name, so that `stop` can reach it


@dataclass(frozen=True)
class ImageInfo:
    """What Capsule reads of an image in an engine: its ID, layer diff IDs and labels."""

    image_id: str
    layers: list[str]
    labels: dict[str, str]


class Engine(Protocol):
    name: str  # as on the command line and in the image record: "docker", "podman", "oci"
    label: str  # in sentences: "the Docker engine"
    missing_hint: str  # how an image gets into it ("" : build it, or import an export)
    builds: bool  # False: it runs images only (the daemonless engine)

    def check(self) -> None:
        """EngineMissing (exit 4), saying how to start it, unless the engine answers."""
        ...

    def has_image(self, ref: str) -> str | None:
        """The image ID `ref` names in this engine, or None."""
        ...

    def inspect(self, ref: str) -> ImageInfo | None:
        """The image `ref` names in this engine, or None."""
        ...

    def base(self, ref: str | None, log: Log) -> tuple[str, str]:
        """(reference, image ID) of the base: `ref` as given (never pulled), or Capsule's local
        base, made once (debootstrap) and reused."""
        ...

    def build(self, context: bytes, tag: str | None, labels: dict[str, str], base_ref: str,
              nocache: bool, log: Log) -> str:  # fmt: skip
        """Build the context offline; return the canonical image ID (tagged `tag`, unless
        None: a `--check` rebuild must not move the recorded image's tag)."""
        ...

    def save(self, image_id: str) -> Iterable[bytes]:
        """The image as a `docker save` archive (both engines load it)."""
        ...

    def load(self, data: Iterable[bytes]) -> None:
        """Load an image archive (`docker save`'s format, uncompressed), streamed."""
        ...

    def tag(self, image_id: str, tag: str) -> None: ...

    def run(self, image_id: str, job: Job, log: Log) -> tuple[int, str]:
        """Run the job to its end under `confinement()`, streaming its output to `log`; the
        container is removed whatever happens. Returns (exit code, last output line)."""
        ...

    def stop(self, name: str) -> None:
        """Stop and remove the named job's container, if it still exists (an interrupted
        command stops the containers it started from other threads)."""
        ...

    def remove(self, image_id: str) -> None:
        """Remove the image if nothing else uses it."""
        ...


def open_engine(name: str) -> Engine:
    """The named engine, connected: EngineMissing (exit 4) says how to start it if it is not."""
    if name not in ENGINES:
        from builder.errors import BadInput

        raise BadInput(f"--engine {name!r}: expected one of {', '.join(ENGINES)}")
    confinement()  # a bad CAPSULE_CONTAINER_* value is refused before any work
    module, _, cls = ENGINES[name].partition(":")
    engine: Engine = getattr(importlib.import_module(module), cls)()
    return engine
