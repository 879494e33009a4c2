"""A sweep's journals: every finished run is a line of one at once (the command's own, one per
Slurm task), so an interrupted sweep keeps what finished. The executors write them, the sweep
reads them back and clears them once the record is stored."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from builder.records.sweep import SweepRun

JOURNAL = ".sweep-journal.jsonl"


def journals(capsule: Path) -> list[Path]:
    """The sweep's journals: the command's own, and one per Slurm task."""
    return sorted(capsule.glob(".sweep-journal*.jsonl"))


def read_journal(capsule: Path) -> list[SweepRun]:
    """Finished runs of an interrupted sweep; a torn last line (a crash mid-write) is skipped."""
    runs = []
    for path in journals(capsule):
        for line in path.read_text().splitlines():
            try:
                runs.append(SweepRun.model_validate_json(line))
            except ValidationError:
                continue
    return runs


def append_journal(capsule: Path, run: SweepRun, name: str = JOURNAL) -> None:
    with (capsule / name).open("a") as f:
        f.write(run.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())
