"""What commands print as JSON (`--json`) and never store: one model per command result, so
that the JSON and the text view are two renderings of the same thing (cli.common.emit)."""

from pathlib import Path
from typing import Self

from pydantic import Field

from builder.model_base import Printed
from builder.records.audit import AuditRecord
from builder.records.enums import Device, Where
from builder.records.history import HistoryEvent
from builder.records.manifest import ImageRecord, Manifest
from builder.records.replay import ReplayRecord
from builder.records.run import Finding
from builder.records.sweep import Summary, SweepRecord, SweepRun, Tost, Welch


class RunSummary(Printed):
    """`freeze`, `replay`: the record written and its final figures."""

    kind: str  # capsule or replay
    name: str
    path: str
    final: dict[str, float | None]
    steps: int
    train_seconds: float
    audit: list[Finding]  # the nondeterminism findings (the manifest's field keeps its name)
    artifacts: dict[str, str]  # name → sha256
    digest: str | None = Field(default=None, exclude_if=lambda v: v is None)  # a capsule's

    @classmethod
    def of(cls, record: Manifest | ReplayRecord, where: Path, digest: str | None = None) -> Self:
        return cls(
            kind=record.kind,
            name=record.spec.name,
            path=str(where),
            final=record.outcome.final_values(),
            steps=record.outcome.steps,
            train_seconds=record.outcome.train_seconds,
            audit=record.audit,
            artifacts={name: ref.sha256 for name, ref in record.artifacts.items()},
            digest=digest,
        )


class BuildResult(Printed):
    """`build`: the image recorded, or (`--check`) whether the rebuild gave the same ID."""

    variant: Device
    checked: bool
    matches: bool | None
    rebuilt_id: str | None
    image: ImageRecord


class VerifyResult(Printed):
    """`verify`: ok with the number of artifacts re-hashed, or not ok with the reason."""

    ok: bool
    path: str
    artifacts: int | None = Field(default=None, exclude_if=lambda v: v is None)
    digest: str | None = Field(default=None, exclude_if=lambda v: v is None)  # capsules only
    signed: bool | None = Field(default=None, exclude_if=lambda v: v is None)  # by --key
    error: str | None = Field(default=None, exclude_if=lambda v: v is None)


class SignResult(Printed):
    """`sign`: the digest signed and where the signature was stored."""

    path: str
    digest: str
    signature: str


class ExportResult(Printed):
    path: str
    files: int
    with_image: bool
    bytes: int
    digest: str  # the capsule's (builder.trust), also in the file's name when --out is a folder


class ImportResult(Printed):
    name: str
    path: str
    verified: bool
    images: dict[str, str]  # variant → image ID


class RunFailure(Printed):
    """A sweep run that did not finish, and why (one line)."""

    init: int
    order: int
    error: str


class SweepResult(Printed):
    """`sweep`: what ran now, what was reused, what failed, and the statistics of all runs."""

    path: str
    ran: int
    reused: int
    failures: list[RunFailure]
    stats: list[Summary]
    runs: list[SweepRun]  # every run now stored, sorted by (init, order)
    warnings: list[str] = Field(
        default=[],
        description="What makes the sweep say less than it seems: a metric or the weights "
        "the same in every run although the seeds varied",
    )


class StatsResult(Printed):
    """`stats`: the sweep's summary per metric, Welch's test against another sweep, TOST."""

    path: str
    stats: list[Summary]
    welch: list[Welch]
    tost: Tost | None
    runs: list[SweepRun]  # the sweep the statistics are over


class SweepStudy(Printed):
    """A capsule's sweep as `inspect` shows it: the runs and their statistics."""

    record: SweepRecord
    stats: list[Summary]


class Studies(Printed):
    """What `inspect` adds to a capsule's manifest: its sweep and its upgrade audits."""

    sweep: SweepStudy | None
    audits: list[AuditRecord]
    history: list[HistoryEvent]
    """This directory's history (not part of the capsule's digest, not exported)."""
    ran_on: list[Where]
    """Every place the capsule ran: host (the freeze), and where its sweep's runs, replays
    and matrices ran."""
