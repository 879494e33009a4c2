"""Where a sweep's runs execute, behind one small interface, so `sweep.py` only plans, journals
and stores. Adding an executor is one module here and one entry in `EXECUTORS`.

Modules are imported only when picked: this package itself imports neither NumPy nor submitit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from builder.errors import BadInput

if TYPE_CHECKING:
    from builder.records.sweep import SweepRun
    from builder.store import Capsule

Key = tuple[int, int]  # (init seed, order seed): one run of a sweep
OnDone = Callable[["SweepRun"], None]


@dataclass(frozen=True)
class Failure:
    """A run that did not finish, and why (one line)."""

    init: int
    order: int
    error: str


class Executor(Protocol):
    """Runs a sweep's missing runs somewhere.

    `run` calls `on_done` in the calling process once for every finished run, only after that
    run is in the sweep's journal `journal` or one of its parts (`journal.part_name`), so an
    interrupted sweep keeps it; the runs that did not finish come back as failures. Ctrl-C
    (and SIGTERM, which the command line turns into it) propagates, after the executor has
    stopped what it started — within seconds, not after the runs in flight.
    """

    name: str

    def run(
        self, capsule: Capsule, todo: list[Key], jobs: int, on_done: OnDone, journal: str
    ) -> list[Failure]:
        """Run `todo` with up to `jobs` runs at a time."""
        ...


# name → the module whose EXECUTOR implements the protocol
EXECUTORS = {
    "local": "builder.executors.local",
    "slurm": "builder.executors.slurm",
    "batched": "builder.executors.batched",  # `sweep --batched`: portable capsules only
}


def get_executor(name: str) -> Executor:
    if name not in EXECUTORS:
        raise BadInput(f"executor {name!r}: expected one of {', '.join(EXECUTORS)}")
    executor: Executor = importlib.import_module(EXECUTORS[name]).EXECUTOR
    return executor
