"""What a worker does: the runs themselves, in a spawned pool process or a Slurm task.

The executors hand these functions to other processes by reference (module and name, pickled),
so they live here, apart from the executors: a worker imports this module, the journal and the
records, and nothing of the executor that sent it or of `builder.sweep`, so no import cycle
arises.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from builder.executors import Failure, Key
from builder.executors.journal import append_journal, part_name
from builder.observer import SILENT
from builder.records.enums import Where
from builder.records.run import Outcome
from builder.records.spec import Spec, UserSpec
from builder.records.sweep import SweepRun
from builder.store import Capsule

_LOADED: dict[str, tuple[Capsule, object]] = {}


def _load(capsule: str) -> tuple[Capsule, object]:
    """The capsule and its dataset, kept warm. The command that sent the work has verified
    the whole capsule once; a worker checks the manifest's digest and each artifact it reads."""
    if capsule not in _LOADED:
        from builder.data import Dataset

        handle = Capsule.trusted(Path(capsule))
        manifest = handle.manifest
        dataset = None
        if isinstance(manifest.spec, Spec) and manifest.data is not None:
            dataset = Dataset.from_tensors(handle.tensors("data"), manifest.data.classes)
        _LOADED[capsule] = (handle, dataset)
    return _LOADED[capsule]


def run_one(capsule: str, init: int, order: int) -> SweepRun:
    """The capsule's experiment with init seed `init` and order seed `order`."""
    from builder.replay import replay_order
    from builder.run import execute

    handle, dataset = _load(capsule)
    seeds = handle.manifest.spec.seeds.model_copy(update={"init": init, "order": order})
    spec = handle.manifest.spec.model_copy(update={"seeds": seeds})
    if isinstance(spec, Spec):
        permutation = replay_order(handle, spec)
        result = execute(spec, dataset, permutation)  # type: ignore[arg-type]
        outcome, weights = result.outcome, result.weights
    else:
        outcome, weights = _run_code(handle, spec)
    return SweepRun(
        init=init,
        order=order,
        final=outcome.final_values(),
        weights_sha256=weights_digest(weights),
        seconds=outcome.train_seconds,
        on=Where.host,  # a container's relay (executors/in_image.py) writes its engine instead
        node=socket.gethostname(),
    )


def _run_code(capsule: Capsule, spec: Spec | UserSpec) -> tuple[Outcome, dict[str, np.ndarray]]:
    """The user's code, imported afresh for each run (its module state must not carry over)."""
    from builder.replay import code_directory, replay_code

    assert isinstance(spec, UserSpec)
    code_dir = code_directory(capsule)
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(code_dir.resolve()):
            del sys.modules[name]
    with tempfile.TemporaryDirectory(prefix="capsule-outputs-") as outputs:
        result = replay_code(capsule, spec, SILENT, Path(outputs))
    return result.outcome, result.weights


def worker_start(parent: int) -> None:
    """A pool worker's first act: die with the command that started it (Linux: the parent's
    death sends it SIGKILL), so a killed sweep leaves no worker running on."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def run_journalled(capsule: str, init: int, order: int, journal: str) -> SweepRun:
    """`run_one` in a pool worker, journalled by the worker itself (its part of `journal`)
    before the command hears of it."""
    run = run_one(capsule, init, order)
    append_journal(Path(capsule), run, part_name(journal, f"w{os.getpid()}"))
    return run


def worker_error(error: BaseException) -> str:
    """A failed run's reason, one line."""
    if isinstance(error, BrokenProcessPool):
        return "the worker process died (killed or crashed) during this run"
    return f"{type(error).__name__}: {error}".splitlines()[0]


def run_serially(
    capsule: str, keys: list[Key], on_done: Callable[[SweepRun], None]
) -> list[Failure]:
    """The runs one after another in this process; a run that raises is a failure, not the end."""
    failures = []
    for init, order in keys:
        try:
            run = run_one(capsule, init, order)
        except Exception as error:
            failures.append(Failure(init, order, worker_error(error)))
            continue
        on_done(run)
    return failures


def run_chunk(capsule: str, keys: list[Key], journal: str) -> list[Failure]:
    """One Slurm task: its share of the runs in one warm process, each finished run appended
    to the task's own journal at once (so a task that crashes later keeps it)."""
    return run_serially(capsule, keys, lambda run: append_journal(Path(capsule), run, journal))


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    """A run's `weights_sha256`: one digest over every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name])
        h.update(f"{name}:{array.dtype}:{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()
