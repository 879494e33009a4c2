"""A sweep's journals: every finished run is a line of one at once, so an interrupted sweep
keeps what finished. The executors write them, the sweep reads them back and removes them once
the record holding their runs is stored.

Each sweep has a journal of its own, `.sweep-journal.<token>.jsonl`, which it holds an `flock`
on for as long as it runs; its workers and tasks write parts of it,
`.sweep-journal.<token>.<part>.jsonl` (a spawned worker `w<pid>`, a Slurm task `task<i>`). A
journal whose owner holds no lock belongs to a sweep that ended or was killed: the next sweep
stores its runs and removes it. Two sweeps of one capsule at once never remove each other's.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path
from types import TracebackType

from pydantic import ValidationError

from builder.records.sweep import SweepRun

PREFIX = ".sweep-journal"
SUFFIX = ".jsonl"
JOURNAL = f"{PREFIX}{SUFFIX}"  # the journal of Capsule before per-sweep journals: no owner


def journal_name(token: str) -> str:
    return f"{PREFIX}.{token}{SUFFIX}"


def part_name(journal: str, part: str) -> str:
    """The journal of one worker or task of the sweep whose own journal is `journal`."""
    return f"{journal.removesuffix(SUFFIX)}.{part}{SUFFIX}"


def journals(capsule: Path, journal: str | None = None) -> list[Path]:
    """Every sweep's journals, or one sweep's (its own and its parts)."""
    if journal is None:
        return sorted(capsule.glob(f"{PREFIX}*{SUFFIX}"))
    own = [capsule / journal] if (capsule / journal).exists() else []
    return own + sorted(capsule.glob(part_name(journal, "*")))


def read_journal(capsule: Path, journal: str | None = None) -> list[SweepRun]:
    """Finished runs of the sweeps (or of one); a torn last line (a crash mid-write) is skipped."""
    runs = []
    for path in journals(capsule, journal):
        try:
            text = path.read_text()
        except FileNotFoundError:  # removed by the sweep that stored it
            continue
        for line in text.splitlines():
            try:
                runs.append(SweepRun.model_validate_json(line))
            except ValidationError:
                continue
    return runs


def append_journal(capsule: Path, run: SweepRun, name: str) -> None:
    """One line, one write on an O_APPEND descriptor, synced."""
    fd = os.open(capsule / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (run.model_dump_json() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def owner(path: Path) -> Path:
    """The journal whose lock says whether `path`'s sweep still runs (itself, for a sweep's own
    journal and for journals of earlier versions)."""
    parts = path.name.removeprefix(PREFIX).removesuffix(SUFFIX).split(".")[1:]
    return path.with_name(journal_name(parts[0]) if parts else JOURNAL)


def _held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def ended(capsule: Path, journal: str) -> list[Path]:
    """The journals that may go once their runs are stored: this sweep's, and those of sweeps
    that are no longer running (their owner's lock is free)."""
    found, live = [], {}
    for path in journals(capsule):
        holder = owner(path)
        if holder.name != journal:
            if holder not in live:
                live[holder] = _held(holder)
            if live[holder]:
                continue
        found.append(path)
    return found


class OwnJournal:
    """This sweep's journal, created empty and locked for as long as the sweep runs."""

    def __init__(self, capsule: Path) -> None:
        self.name = journal_name(uuid.uuid4().hex[:12])
        self.path = capsule / self.name
        self.fd = -1

    def __enter__(self) -> OwnJournal:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        os.close(self.fd)
