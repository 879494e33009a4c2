"""What every command shares: the consoles, option types, error reporting and `emit`.

A command parses its arguments, calls one service and hands the result to `emit`, which prints
it as one JSON document (`--json`) or renders it as text (builder.report.text).
"""

from __future__ import annotations

import gc
import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from builder.errors import BadInput, CapsuleError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from builder.store import Capsule

DEFAULT_GC_THRESHOLD = (700, 10, 10)  # CPython's
app = typer.Typer(
    name="capsule",
    help="Freeze an ML experiment into a reproducibility capsule, replay it, and judge the replay.",
    epilog="Exit codes: 0 ok; 1 verdict below --require; 2 bad usage or input; "
    "3 integrity failure (a digest does not match); 4 an engine is missing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# emoji=False: a user's text (a spec's description, a file name) is printed as written, never
# with ":name:" turned into an emoji
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


ENGINE_CLIENTS = ("docker.", "requests.", "urllib3.")  # what an engine's client raises


class BadUsage(BadInput):
    """Options that do not go together (exit 2)."""


# Choices as typer needs them (plain StrEnums, so that `--help` needs no record models); each
# matches a closed set in builder.records.enums, which tests/test_house.py checks.
class DeviceChoice(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


class WhereChoice(StrEnum):
    host = "host"
    docker = "docker"
    podman = "podman"
    oci = "oci"


class EngineChoice(StrEnum):
    docker = "docker"
    podman = "podman"
    oci = "oci"


class TierChoice(StrEnum):
    identical = "identical"
    close = "close"
    equivalent = "equivalent"
    diverged = "diverged"


class KindChoice(StrEnum):
    capsule = "capsule"
    replay = "replay"
    sweep = "sweep"
    audit = "audit"
    matrix = "matrix"


class FormatChoice(StrEnum):
    html = "html"
    md = "md"


class ExecutorChoice(StrEnum):
    local = "local"
    slurm = "slurm"
    batched = "batched"


EngineOption = Annotated[
    EngineChoice,
    typer.Option(
        "--engine",
        help="Container engine: docker, podman (its Docker-compatible service), or oci (no "
        "daemon: an OCI store run by umoci and runc; it imports and runs images, docker or "
        "podman build them). The image ID is the same on all three.",
    ),
]


def fail(error: CapsuleError) -> NoReturn:
    details = getattr(error, "details", "")
    if details:  # the user's own frames, when their training code failed
        err.print("Traceback (the training code's frames):\n" + details.rstrip(), markup=False)
    err.print(f"capsule: error: {error}", markup=False, soft_wrap=True)
    raise typer.Exit(error.exit_code)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _notice(line: str) -> None:
    err.print(line, markup=False)


@contextmanager
def reported() -> Iterator[None]:
    """Turn CapsuleError into its exit code; SIGTERM and Ctrl-C unwind cleanly (no half capsule).
    A wait for another command's write lock is said on stderr."""
    from builder import locks

    gc.set_threshold(*DEFAULT_GC_THRESHOLD)  # start-up is over (see builder/cli/__init__.py)
    signal.signal(signal.SIGTERM, _interrupt)
    locks.notify = _notice
    try:
        yield
    except CapsuleError as error:
        fail(error)
    except Exception as error:
        if not type(error).__module__.startswith(ENGINE_CLIENTS):
            raise  # a defect of Capsule's own: its traceback is the report
        from builder.errors import EngineMissing

        reason = str(error).splitlines()[0][:240] if str(error) else type(error).__name__
        fail(EngineMissing(f"the engine failed: {reason}"))
    except KeyboardInterrupt:
        err.print("capsule: interrupted; nothing was written")
        raise typer.Exit(130) from None


def open_capsule(path: Path, opened: bool = False) -> Capsule:
    """The capsule, verified once for the whole command (the services take the handle).
    `opened`: a step of a command that verified it already (`matrix` runs each training and
    evaluation as a process of its own): only the manifest's digest is checked here, and each
    artifact as it is read."""
    from builder.store import Capsule

    return Capsule.trusted(path) if opened else Capsule.open(path)


OpenedFlag = Annotated[
    bool,
    typer.Option(
        "--opened", hidden=True, help="Internal: the calling command verified the capsule."
    ),
]


def emit(result: BaseModel | dict[str, Any], as_json: bool, render: Callable[[], None]) -> None:
    """One JSON document on stdout, or the text `render` prints."""
    if not as_json:
        render()
    elif isinstance(result, dict):
        print(json.dumps(result, indent=2))
    else:
        print(result.model_dump_json(indent=2))
