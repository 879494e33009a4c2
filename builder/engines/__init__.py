"""Container engines behind one interface (the shape of repo2docker's ContainerEngine).

Services reach an engine only through `open_engine(name)` and the `Engine` protocol; adding an
engine is one module here and one entry in ENGINES. Every engine builds the same image (the
recipe in recipe.py: the capsule's layer and config are written by Capsule, so the image ID does
not depend on the engine) and runs jobs under the same confinement (CONFINEMENT).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, get_args

from builder.observer import Log

EngineName = Literal["docker", "podman"]
Where = Literal["host", "docker", "podman"]  # where a job runs: this host or an engine's container
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)
ENGINES: dict[str, str] = {
    "docker": "builder.engines.docker:DockerEngine",
    "podman": "builder.engines.podman:PodmanEngine",
}


@dataclass(frozen=True)
class Confinement:
    """What every container of a job gets, on every engine: no network, not root (the job's
    user), no new privileges, no capabilities, bounded processes, memory and open files."""

    network: str = "none"
    capabilities: tuple[str, ...] = ()  # all dropped
    no_new_privileges: bool = True
    pids: int = 4096
    memory_fraction: float = 0.75  # of this machine's memory
    open_files: int = 4096
    processes: int = 4096  # RLIMIT_NPROC; set explicitly: without CAP_SYS_RESOURCE it cannot rise

    def memory_bytes(self) -> int:
        import os

        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * self.memory_fraction)


CONFINEMENT = Confinement()


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


class Engine(Protocol):
    name: str  # as on the command line and in the image record: "docker", "podman"
    label: str  # in sentences: "the Docker engine"

    def check(self) -> None:
        """EngineMissing (exit 4), saying how to start it, unless the engine answers."""
        ...

    def has_image(self, ref: str) -> str | None:
        """The image ID `ref` names in this engine, or None."""
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
        """Run the job to its end under CONFINEMENT, streaming its output to `log`; the
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
    module, _, cls = ENGINES[name].partition(":")
    engine: Engine = getattr(importlib.import_module(module), cls)()
    return engine
