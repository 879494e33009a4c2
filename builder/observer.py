"""One observer for the progress of long work, instead of a callback shape per service.

Services report what happens (a log line, an epoch of the built-in MLP, a metric the user's
code logged, the plan of a sweep, a finished run) and never print; the CLI hands them a rich
observer (cli/progress.py) that draws bars and lines on stderr, everything else gets SILENT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.records.run import EpochMetrics
    from builder.records.sweep import SweepRun


Log = Callable[[str], None]  # what engines and the wheelhouse take: an observer's `log`


class Observer:
    """Every event, ignored: the silent default. Subclasses override what they show."""

    def log(self, line: str) -> None:
        """A line of progress: a build step, an engine's output, a phase of a matrix."""

    def epoch(self, metrics: EpochMetrics) -> None:
        """The built-in MLP finished an epoch."""

    def metric(self, name: str, value: float, step: int | None) -> None:
        """The user's code logged a metric (`run.log`)."""

    def planned(self, todo: int, reused: int) -> None:
        """A sweep knows its work: `todo` runs to do, `reused` kept from before."""

    def run_done(self, run: SweepRun) -> None:
        """A sweep's run finished (and is journalled)."""


SILENT = Observer()
