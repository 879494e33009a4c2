"""The command line's observer: what long work shows on stderr while it runs.

Services report events to an `Observer` (builder.observer); this one draws them with rich:
engine and phase lines, a bar with ETA over epochs (the built-in MLP) or over a sweep's runs,
a spinner with one line per metric the user's code logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from builder.cli.common import err
from builder.observer import Observer

if TYPE_CHECKING:
    from rich.progress import TaskID

    from builder.records.run import EpochMetrics
    from builder.records.spec import Spec, UserSpec
    from builder.records.sweep import SweepRun

COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TextColumn("eta"),
    TimeRemainingColumn(),
)


class RichObserver(Observer):
    """Lines on stderr; with `progress`, a bar that epochs or finished runs advance."""

    def __init__(self, progress: Progress | None = None, total: int | None = None) -> None:
        self.progress, self.total = progress, total
        self.task: TaskID | None = None
        if progress is not None:
            self.task = progress.add_task("", total=total)

    def _print(self, text: str, markup: bool = True) -> None:
        console = self.progress.console if self.progress is not None else err
        console.print(text, markup=markup)

    def log(self, line: str) -> None:
        self._print(line, markup=False)

    def epoch(self, metrics: EpochMetrics) -> None:
        from builder.report.text import render_epoch

        console = self.progress.console if self.progress is not None else err
        render_epoch(console, metrics, self.total or 0)
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)

    def metric(self, name: str, value: float, step: int | None) -> None:
        from builder.report.text import render_metric

        render_metric(err, name, value, step)

    def planned(self, todo: int, reused: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, total=todo, description=f"sweep ({reused} reused)")

    def run_done(self, run: SweepRun) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)


LINES = RichObserver()  # engine work: builds, containers, transfers, matrices, audits


@contextmanager
def training(spec: Spec | UserSpec, label: str) -> Iterator[Observer]:
    """Progress of one run: a bar over the built-in MLP's epochs, or a spinner with the
    metrics the user's code logs (it has no epochs Capsule knows of)."""
    from builder.records.spec import Spec

    if isinstance(spec, Spec):
        with Progress(*COLUMNS, console=err, transient=True) as progress:
            observer = RichObserver(progress, spec.train.epochs)
            progress.update(observer.task, description=label)  # type: ignore[arg-type]
            yield observer
    else:
        with err.status(f"{label}: running {spec.entrypoint}"):
            yield RichObserver()


@contextmanager
def sweeping() -> Iterator[Observer]:
    """A bar over a sweep's runs (its total comes with `planned`)."""
    with Progress(*COLUMNS, console=err, transient=True) as progress:
        observer = RichObserver(progress)
        progress.update(observer.task, description="sweep")  # type: ignore[arg-type]
        yield observer
