"""inspect: what a capsule or replay holds, read (never run): its record and, for a capsule,
the studies stored in it since the freeze (its sweep with statistics, its upgrade audits)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder.history import read_history
from builder.records.enums import Where
from builder.records.history import HistoryEvent
from builder.records.manifest import Manifest
from builder.records.replay import ReplayRecord
from builder.records.results import Studies, SweepStudy
from builder.records.sweep import SweepRecord
from builder.store import load_audits, load_record, load_sweep


def inspect(path: Path) -> tuple[Manifest | ReplayRecord, Studies | None]:
    """The record (its own digest checked) and, for a capsule, its studies (each artifact's
    digest checked as it is read)."""
    record = load_record(path)
    if not isinstance(record, Manifest):
        return record, None
    sweep = load_sweep(path, record)
    study = None
    if sweep is not None:
        from builder.stats import summaries

        study = SweepStudy(record=sweep, stats=summaries(sweep))
    history = read_history(path)
    return record, Studies(
        sweep=study,
        audits=load_audits(path, record),
        history=history,
        ran_on=places(sweep, history),
    )


def as_document(
    record: Manifest | ReplayRecord, studies: Studies | None, digest: str | None = None
) -> dict[str, Any]:
    """`inspect --json`: the record as stored, then (a capsule) `sweep`, `audits`, `history`
    (this directory's, builder.history), `ran_on` and `digest` (builder.trust)."""
    document: dict[str, Any] = json.loads(record.model_dump_json())
    if studies is not None:
        document.update(json.loads(studies.model_dump_json()))
    if digest is not None:
        document["digest"] = digest
    return document


def places(sweep: SweepRecord | None, events: list[HistoryEvent]) -> list[Where]:
    """Every place the capsule ran, in `Where`'s order: the freeze (host), its sweep's runs
    (each records where), and the replays, sweeps and matrices of its history."""
    seen = {Where.host}
    seen |= {run.on for run in (sweep.runs if sweep else []) if run.on is not None}
    seen |= {event.on for event in events if event.on is not None}
    return [where for where in Where if where in seen]
